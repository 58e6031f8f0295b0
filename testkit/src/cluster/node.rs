//! One node process of a test cluster: its addresses, network namespace, data directory, log
//! file and signals.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use flotilla_client::Client;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::time::Instant;

use super::options::{ClusterOptions, Entry};
use crate::http;

/// Log lines shown of each node when something fails.
pub const LOG_TAIL_LINES: usize = 40;

/// How many times a node is started on fresh ports when its ports were taken meanwhile.
pub const PORT_ATTEMPTS: usize = 3;

/// One node process (running or not) of a [`Cluster`].
#[derive(Debug)]
pub struct Node {
    pub index: usize,
    pub name: String,
    /// The node's data directory.
    pub data_dir: PathBuf,
    /// The process's output, beside the data directory (`node-N.log`), so that a full or
    /// wiped data volume keeps it.
    log: PathBuf,
    pub client_addr: String,
    pub peer_addr: String,
    pub http_addr: String,
    pub entry: Entry,
    pub options: ClusterOptions,
    /// The network namespace the node runs in, if any.
    pub namespace: Option<String>,
    pub child: Option<Child>,
    /// Set by SIGSTOP, cleared by SIGCONT.
    pub frozen: bool,
}

/// Three free ports on 127.0.0.1 per node (client, peer, HTTP). The listeners are held until all
/// ports are chosen, so no port is handed out twice, then released for the nodes to bind.
pub fn free_addrs(nodes: usize) -> Vec<[String; 3]> {
    let listeners: Vec<TcpListener> = (0..nodes * 3)
        .map(|_| {
            TcpListener::bind("127.0.0.1:0")
                .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
        })
        .collect();
    let addrs: Vec<String> = listeners
        .iter()
        .map(|l| match l.local_addr() {
            Ok(addr) => addr.to_string(),
            Err(e) => panic!("no local address: {e}"),
        })
        .collect();
    addrs
        .chunks(3)
        .map(|c| [c[0].clone(), c[1].clone(), c[2].clone()])
        .collect()
}

impl Node {
    pub fn new(
        index: usize,
        root: &Path,
        addrs: [String; 3],
        entry: Entry,
        options: ClusterOptions,
        namespace: Option<String>,
    ) -> Node {
        let [client_addr, peer_addr, http_addr] = addrs;
        let data_dir = root.join(format!("node-{index}"));
        let log = root.join(format!("node-{index}.log"));
        std::fs::create_dir_all(&data_dir)
            .unwrap_or_else(|e| panic!("creating {}: {e}", data_dir.display()));
        Node {
            index,
            name: format!("node-{index}"),
            data_dir,
            log,
            client_addr,
            peer_addr,
            http_addr,
            entry,
            options,
            namespace,
            child: None,
            frozen: false,
        }
    }

    /// The file holding the process's stdout and stderr (kept across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }

    /// The file whose offset (`+N` or `-N` seconds) a node with a fake clock adds to its wall
    /// clock (beside its log).
    pub fn clock_path(&self) -> PathBuf {
        self.log.with_extension("clock")
    }

    /// Shifts the node's wall clock to `seconds` from the real time (it reads the file again
    /// within a second); the node must run with a fake clock.
    pub fn shift_clock(&self, seconds: i64) {
        assert!(
            self.options.fake_clock.is_some(),
            "{} runs without a fake clock: start the cluster with ClusterOptions::fake_clock",
            self.name
        );
        let path = self.clock_path();
        std::fs::write(&path, format!("{seconds:+}\n"))
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// The last `lines` lines of the node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The `serve` command line.
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            self.options.subcommand.clone(),
            "--name".into(),
            self.name.clone(),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
            "--client-addr".into(),
            self.client_addr.clone(),
            "--peer-addr".into(),
            self.peer_addr.clone(),
            "--http-addr".into(),
            self.http_addr.clone(),
        ];
        match &self.entry {
            Entry::Bootstrap => args.extend(["--initial-cluster-state".into(), "new".into()]),
            Entry::Join(addrs) => args.extend([
                "--initial-cluster-state".into(),
                "existing".into(),
                "--join".into(),
                addrs.join(","),
            ]),
        }
        let o = &self.options;
        let numbers = [
            ("--heartbeat-interval", o.heartbeat_interval_ms),
            ("--election-timeout", o.election_timeout_ms),
            ("--snapshot-threshold", o.snapshot_threshold),
            ("--max-document-bytes", o.max_document_bytes),
            ("--meta-voters", o.meta_voters.map(|v| v as u64)),
        ];
        for (flag, value) in numbers {
            if let Some(v) = value {
                args.extend([flag.to_string(), v.to_string()]);
            }
        }
        args.extend(o.extra_args.iter().cloned());
        args
    }

    /// Starts the process (it must not be running), appending its output to its log.
    pub fn spawn(&mut self) {
        assert!(!self.is_running(), "{} is already running", self.name);
        let args = self.args();
        let binary = &self.options.binary;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.log_path().display()));
        let _ = writeln!(
            log,
            "---- harness: starting {} {}",
            binary.display(),
            args.join(" ")
        );
        let stderr = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cloning the log file handle: {e}"));
        let mut command = match &self.namespace {
            // `ip netns exec` enters the namespace and then execs the node: same process id.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr));
        // The node dies with the thread that started it (a test, or the benchmark), even when
        // that is killed before it can clean up.
        // SAFETY: the closure runs in the forked child before exec and makes one system call
        // (prctl), which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        // Settings of the test's own environment must not leak into the node.
        for (key, _) in std::env::vars() {
            if key.starts_with("FLOTILLA_") && key != "FLOTILLA_LOG" {
                command.env_remove(key);
            }
        }
        command.envs(self.options.env.iter().map(|(k, v)| (k, v)));
        if let Some(library) = &self.options.fake_clock {
            let clock = self.clock_path();
            if !clock.exists() {
                std::fs::write(&clock, "+0\n")
                    .unwrap_or_else(|e| panic!("writing {}: {e}", clock.display()));
            }
            command
                .env("LD_PRELOAD", library)
                .env("FAKETIME_TIMESTAMP_FILE", &clock)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_CACHE_DURATION", "1");
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} for {}: {e}", binary.display(), self.name));
        self.child = Some(child);
        self.frozen = false;
    }

    /// The process id while the node runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process has not exited (a frozen process counts as running).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_))) | Some(Err(_)) | None => false,
        }
    }

    /// The exit status once the process has exited (`None` while it runs or was never started).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn signal(&self, signal: Signal) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("{} was never started", self.name));
        let pid = i32::try_from(pid).unwrap_or_else(|e| panic!("pid {pid}: {e}"));
        let pid = Pid::from_raw(pid);
        kill(pid, signal).unwrap_or_else(|e| panic!("sending {signal} to {}: {e}", self.name));
    }

    /// `kill -9`: the process dies at once, without any chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.note("killed with SIGKILL");
        }
        self.frozen = false;
    }

    /// `SIGTERM`, then waits until the process has exited (graceful stop: it hands over its
    /// leaderships first). Panics if it does not exit within the stop timeout.
    pub async fn sigterm(&mut self) -> ExitStatus {
        if self.frozen {
            self.sigcont();
        }
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + self.options.stop_timeout;
        loop {
            if let Some(status) = self.exit_status() {
                self.note(&format!("exited after SIGTERM: {status}"));
                self.child = None;
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} did not exit within {:?} of SIGTERM\n{}",
                    self.name,
                    self.options.stop_timeout,
                    self.describe()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// True between SIGSTOP and SIGCONT.
    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// `SIGTERM`, then `SIGKILL` if the process has not exited after `grace`; never panics (a
    /// node not running is left as it is).
    pub async fn stop_within(&mut self, grace: Duration) {
        if !self.is_running() {
            self.child = None;
            return;
        }
        if self.frozen {
            self.sigcont();
        }
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exit_status() {
                self.note(&format!("exited after SIGTERM: {status}"));
                self.child = None;
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill9();
    }

    /// Freezes the process (it keeps its sockets but answers nothing, like a hung machine).
    pub fn sigstop(&mut self) {
        self.signal(Signal::SIGSTOP);
        self.frozen = true;
        self.note("frozen with SIGSTOP");
    }

    /// Lets a frozen process run again.
    pub fn sigcont(&mut self) {
        self.signal(Signal::SIGCONT);
        self.frozen = false;
        self.note("resumed with SIGCONT");
    }

    /// Deletes the node's data (a lost disk). The node must not be running. When restarted it
    /// is a new node and joins through the other nodes.
    pub fn wipe(&mut self, join: Vec<String>) {
        assert!(
            !self.is_running(),
            "wipe {} only while it is down",
            self.name
        );
        let entries = std::fs::read_dir(&self.data_dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", self.data_dir.display()));
        for entry in entries.flatten() {
            let path = entry.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
        }
        self.entry = Entry::Join(join);
        self.note("data wiped");
    }

    /// Starts the node again with the same ports, data directory and flags. Does not wait for
    /// it to become ready (a restarted node may need the others to be up): see
    /// [`Node::wait_ready`].
    pub fn restart(&mut self) {
        if self.is_running() {
            panic!("restart {}: it is still running", self.name);
        }
        self.child = None;
        self.spawn();
    }

    /// The client endpoint (`host:port`).
    pub fn endpoint(&self) -> String {
        self.client_addr.clone()
    }

    /// A client that talks to this node only.
    pub fn client(&self) -> Client {
        Client::with_options(vec![self.endpoint()], self.options.client_options.clone())
            .unwrap_or_else(|e| panic!("a client for {}: {e}", self.name))
    }

    /// `GET path` on the node's HTTP port: the status code and body.
    pub async fn http_get(&self, path: &str) -> crate::Result<(u16, String)> {
        http::get(&self.http_addr, path).await
    }

    /// One probe of `/readyz`.
    pub async fn is_ready(&self) -> bool {
        matches!(self.http_get("/readyz").await, Ok((200, _)))
    }

    /// Waits until `/readyz` answers 200; panics with the node's log when the process exits or
    /// the ready timeout passes.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + self.options.ready_timeout;
        loop {
            match self.poll_ready().await {
                Probe::Ready => return,
                Probe::Exited(status) => panic!(
                    "{} exited before it was ready ({status})\n{}",
                    self.name,
                    self.describe()
                ),
                Probe::NotYet(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Probe::NotYet(last) => panic!(
                    "{} not ready after {:?} (last /readyz: {last})\n{}",
                    self.name,
                    self.options.ready_timeout,
                    self.describe()
                ),
            }
        }
    }

    pub async fn poll_ready(&mut self) -> Probe {
        if let Some(status) = self.exit_status() {
            return Probe::Exited(status);
        }
        match self.http_get("/readyz").await {
            Ok((200, _)) => Probe::Ready,
            Ok((code, body)) => Probe::NotYet(format!("{code} {}", body.trim())),
            Err(e) => Probe::NotYet(e.to_string()),
        }
    }

    /// True when the log says a port could not be bound (on 127.0.0.1, where ports are chosen
    /// free and may be taken before the node binds them; a namespace's fixed ports are its own).
    pub fn failed_to_bind(&self) -> bool {
        if self.namespace.is_some() {
            return false;
        }
        let tail = self.log_tail(LOG_TAIL_LINES).to_ascii_lowercase();
        tail.contains("address already in use") || tail.contains("os error 98")
    }

    /// Picks new ports (the old ones were taken by someone else).
    pub fn move_ports(&mut self) {
        let [client, peer, http] = free_addrs(1).remove(0);
        self.note(&format!(
            "ports taken, moving to client {client}, peer {peer}, http {http}"
        ));
        self.client_addr = client;
        self.peer_addr = peer;
        self.http_addr = http;
    }

    /// A line in the node's log from the harness, so the log tells the whole story.
    pub fn note(&self, what: &str) {
        if let Ok(mut log) = OpenOptions::new().append(true).open(self.log_path()) {
            let _ = writeln!(log, "---- harness: {what}");
        }
    }

    /// Name, addresses, state and log tail, for failure messages.
    pub fn describe(&self) -> String {
        let namespace = match &self.namespace {
            Some(ns) => format!(", namespace {ns}"),
            None => String::new(),
        };
        format!(
            "== {} (client {}, peer {}, http {}{namespace}, pid {:?}) log {}:\n{}\n",
            self.name,
            self.client_addr,
            self.peer_addr,
            self.http_addr,
            self.pid(),
            self.log_path().display(),
            self.log_tail(LOG_TAIL_LINES)
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub enum Probe {
    Ready,
    NotYet(String),
    Exited(ExitStatus),
}
