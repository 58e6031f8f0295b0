//! A cluster of real `flotilla-node` processes for fault tests: each node in a network namespace
//! of its own on a [`Fabric`] (so that links can be cut), or on 127.0.0.1 where namespaces
//! cannot be made (then every fault but partitions works).
//!
//! The binary is given by the caller (a test of the node package passes
//! `env!("CARGO_BIN_EXE_flotilla-node")`). Node 0 bootstraps, the others join through it; each
//! node's data directory (with `node.log`, the process's output) lives in a temporary directory
//! removed on drop unless `FLOTILLA_KEEP_TEST_DIRS=1`. Dropping the cluster kills every process
//! and, while a test is failing, prints the tail of every node's log.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flotilla_client::{Client, ClientOptions, MetaRole};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::netns::Fabric;
use crate::progress;

/// Lines of each node's log shown when a test fails.
const LOG_TAIL_LINES: usize = 30;

/// Fixed ports of a node in its own namespace.
const CLIENT_PORT: u16 = 7100;
const PEER_PORT: u16 = 7101;
const HTTP_PORT: u16 = 7102;

/// Where the nodes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// One network namespace per node: partitions possible (needs root).
    Namespaces,
    /// All nodes on 127.0.0.1: no partitions.
    Loopback,
}

/// Settings of a fault-test cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub network: Network,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    /// Further `serve` flags for every node.
    pub extra_args: Vec<String>,
    /// How long a node may take to become ready.
    pub ready_timeout: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            network: Network::Namespaces,
            heartbeat_interval_ms: 50,
            election_timeout_ms: 500,
            extra_args: Vec::new(),
            ready_timeout: Duration::from_secs(60),
        }
    }
}

/// One node process, running or not.
#[derive(Debug)]
pub struct Node {
    pub index: usize,
    pub name: String,
    pub data_dir: PathBuf,
    pub client_addr: String,
    pub peer_addr: String,
    pub http_addr: String,
    /// The namespace the node runs in, if any.
    pub namespace: Option<String>,
    bootstrap: bool,
    join: Vec<String>,
    child: Option<Child>,
    frozen: bool,
}

impl Node {
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("node.log")
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn note(&self, what: &str) {
        if let Ok(mut log) = OpenOptions::new().append(true).open(self.log_path()) {
            let _ = writeln!(log, "---- harness: {what}");
        }
    }

    fn args(&self, options: &ClusterOptions) -> Vec<String> {
        let mut args: Vec<String> = [
            "serve",
            "--name",
            &self.name,
            "--data-dir",
            &self.data_dir.display().to_string(),
            "--client-addr",
            &self.client_addr,
            "--peer-addr",
            &self.peer_addr,
            "--http-addr",
            &self.http_addr,
            "--heartbeat-interval",
            &options.heartbeat_interval_ms.to_string(),
            "--election-timeout",
            &options.election_timeout_ms.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if self.bootstrap {
            args.extend(["--initial-cluster-state".into(), "new".into()]);
        } else {
            args.extend([
                "--initial-cluster-state".into(),
                "existing".into(),
                "--join".into(),
                self.join.join(","),
            ]);
        }
        args.extend(options.extra_args.iter().cloned());
        args
    }

    fn spawn(&mut self, binary: &Path, options: &ClusterOptions) -> Result<()> {
        if self.is_running() {
            return Err(Error::Parse(format!("{} is already running", self.name)));
        }
        let args = self.args(options);
        let spawn_error = |e: std::io::Error| Error::Spawn {
            command: format!("{} {}", binary.display(), args.join(" ")),
            source: e,
        };
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(spawn_error)?;
        let _ = writeln!(log, "---- harness: starting {}", args.join(" "));
        let stderr = log.try_clone().map_err(spawn_error)?;
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
        for (key, _) in std::env::vars() {
            if key.starts_with("FLOTILLA_") && key != "FLOTILLA_LOG" {
                command.env_remove(key);
            }
        }
        self.child = Some(command.spawn().map_err(spawn_error)?);
        self.frozen = false;
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process has not exited (a frozen process counts as running).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    fn signal(&self, signal: Signal) -> Result<()> {
        let pid = self
            .pid()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| Error::Parse(format!("{} is not running", self.name)))?;
        kill(Pid::from_raw(pid), signal)
            .map_err(|e| Error::Parse(format!("sending {signal} to {}: {e}", self.name)))
    }

    pub fn endpoint(&self) -> String {
        self.client_addr.clone()
    }

    pub fn describe(&self) -> String {
        format!(
            "== {} (client {}, peer {}, namespace {:?}, pid {:?}) log {}:\n{}\n",
            self.name,
            self.client_addr,
            self.peer_addr,
            self.namespace,
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

/// Real node processes forming one cluster, with faults to inject.
pub struct Cluster {
    binary: PathBuf,
    options: ClusterOptions,
    root: Option<tempfile::TempDir>,
    root_path: PathBuf,
    pub nodes: Vec<Node>,
    /// Declared after the nodes: the processes die before their namespaces go.
    fabric: Option<Fabric>,
}

fn free_addrs() -> Result<[String; 3]> {
    let listeners = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::Unavailable(format!("no free port on 127.0.0.1: {e}")))?;
    let addrs = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.to_string()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::Unavailable(format!("no local address: {e}")))?;
    Ok([addrs[0].clone(), addrs[1].clone(), addrs[2].clone()])
}

impl Cluster {
    /// Starts `n` nodes of `binary` and waits until each is ready and the meta group has its
    /// voters.
    pub async fn start(binary: &Path, n: usize, options: ClusterOptions) -> Result<Cluster> {
        let root = tempfile::Builder::new()
            .prefix("flotilla-faults-")
            .tempdir()
            .map_err(|e| Error::Unavailable(format!("no temporary directory: {e}")))?;
        let root_path = root.path().to_path_buf();
        let fabric = match options.network {
            Network::Namespaces => Some(Fabric::create(n)?),
            Network::Loopback => None,
        };
        let mut cluster = Cluster {
            binary: binary.to_path_buf(),
            options,
            root: Some(root),
            root_path,
            nodes: Vec::new(),
            fabric,
        };
        for i in 0..n {
            let [client_addr, peer_addr, http_addr] = match &cluster.fabric {
                Some(f) => {
                    let a = f.addr(i);
                    [CLIENT_PORT, PEER_PORT, HTTP_PORT].map(|p| format!("{a}:{p}"))
                }
                None => free_addrs()?,
            };
            let data_dir = cluster.root_path.join(format!("node-{i}"));
            std::fs::create_dir_all(&data_dir)
                .map_err(|e| Error::Unavailable(format!("{}: {e}", data_dir.display())))?;
            let join = if i == 0 {
                Vec::new()
            } else {
                vec![cluster.nodes[0].endpoint()]
            };
            cluster.nodes.push(Node {
                index: i,
                name: format!("node-{i}"),
                data_dir,
                client_addr,
                peer_addr,
                http_addr,
                namespace: cluster.fabric.as_ref().map(|f| f.namespace(i)),
                bootstrap: i == 0,
                join,
                child: None,
                frozen: false,
            });
        }
        cluster.restart(0)?;
        cluster.wait_ready(0).await?;
        for i in 1..n {
            cluster.restart(i)?;
        }
        cluster.wait_all_ready().await?;
        cluster.wait_for_meta_voters().await?;
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn network(&self) -> Network {
        self.options.network
    }

    /// Every node's client endpoint.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(Node::endpoint).collect()
    }

    /// A client over every node with `options`.
    pub fn client_with(&self, options: ClientOptions) -> Result<Client> {
        Client::with_options(self.endpoints(), options)
            .map_err(|e| Error::Parse(format!("a client over the cluster: {e}")))
    }

    /// A client over every node, patient enough for elections.
    pub fn client(&self) -> Result<Client> {
        self.client_with(ClientOptions {
            total_timeout: Duration::from_secs(30),
            ..ClientOptions::default()
        })
    }

    /// A client that talks to node `i` only.
    pub fn node_client(&self, i: usize, options: ClientOptions) -> Result<Client> {
        Client::with_options(vec![self.nodes[i].endpoint()], options)
            .map_err(|e| Error::Parse(format!("a client for node {i}: {e}")))
    }

    /// Starts node `i` again (same addresses, data and flags) without waiting for it.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        let (binary, options) = (self.binary.clone(), self.options.clone());
        self.nodes[i].spawn(&binary, &options)?;
        progress(format!("node {i} started"));
        Ok(())
    }

    /// `kill -9` node `i` (a no-op when it is not running).
    pub fn kill9(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            node.note("killed with SIGKILL");
            progress(format!("node {i} killed with SIGKILL"));
        }
        node.frozen = false;
    }

    /// Freezes node `i` (`SIGSTOP`): it keeps its sockets and answers nothing.
    pub fn sigstop(&mut self, i: usize) -> Result<()> {
        self.nodes[i].signal(Signal::SIGSTOP)?;
        self.nodes[i].frozen = true;
        self.nodes[i].note("frozen with SIGSTOP");
        progress(format!("node {i} frozen with SIGSTOP"));
        Ok(())
    }

    /// Lets a frozen node run again.
    pub fn sigcont(&mut self, i: usize) -> Result<()> {
        self.nodes[i].signal(Signal::SIGCONT)?;
        self.nodes[i].frozen = false;
        self.nodes[i].note("resumed with SIGCONT");
        progress(format!("node {i} resumed with SIGCONT"));
        Ok(())
    }

    fn fabric(&mut self) -> Result<&mut Fabric> {
        self.fabric.as_mut().ok_or_else(|| {
            Error::Unavailable("partitions need the nodes in network namespaces".into())
        })
    }

    /// Cuts node `i` off from every other node (clients still reach it).
    pub fn isolate(&mut self, i: usize) -> Result<()> {
        self.fabric()?.isolate(i)?;
        self.nodes[i].note("isolated from the other nodes");
        Ok(())
    }

    /// Splits the nodes into `groups` (a node in none is isolated).
    pub fn partition(&mut self, groups: &[Vec<usize>]) -> Result<()> {
        self.fabric()?.partition(groups)?;
        for node in &self.nodes {
            node.note(&format!("network partitioned: {groups:?}"));
        }
        Ok(())
    }

    /// Restores every link.
    pub fn heal(&mut self) -> Result<()> {
        if let Some(fabric) = self.fabric.as_mut() {
            fabric.heal()?;
            for node in &self.nodes {
                node.note("network healed");
            }
            progress("network healed");
        }
        Ok(())
    }

    /// Heals the network, resumes frozen nodes and starts stopped ones.
    pub fn heal_all(&mut self) -> Result<()> {
        self.heal()?;
        for i in 0..self.nodes.len() {
            if self.nodes[i].frozen {
                self.sigcont(i)?;
            }
            if !self.nodes[i].is_running() {
                self.nodes[i].child = None;
                self.restart(i)?;
            }
        }
        Ok(())
    }

    async fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await?;
            Ok::<_, std::io::Error>(response)
        };
        let response = tokio::time::timeout(Duration::from_secs(2), exchange)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no HTTP answer"))??;
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response")
            })?;
        Ok((code, body.to_string()))
    }

    /// Waits until node `i` answers `/readyz` with 200.
    pub async fn wait_ready(&mut self, i: usize) -> Result<()> {
        let deadline = Instant::now() + self.options.ready_timeout;
        loop {
            if !self.nodes[i].is_running() {
                return Err(Error::Parse(format!(
                    "node {i} exited before it was ready\n{}",
                    self.nodes[i].describe()
                )));
            }
            let last = match Self::http_get(&self.nodes[i].http_addr, "/readyz").await {
                Ok((200, _)) => return Ok(()),
                Ok((code, body)) => format!("{code} {}", body.trim()),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("node {i} ready"),
                    waited: self.options.ready_timeout,
                    last: format!("{last}\n{}", self.nodes[i].describe()),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running node is ready.
    pub async fn wait_all_ready(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_running() {
                self.wait_ready(i).await?;
            }
        }
        Ok(())
    }

    /// Waits until the meta group has min(3, nodes) voters (odd).
    pub async fn wait_for_meta_voters(&self) -> Result<()> {
        let n = self.nodes.len().min(3);
        let want = if n.is_multiple_of(2) { n - 1 } else { n }.max(1);
        let client = self.client()?;
        wait_for(
            self.options.ready_timeout,
            "the meta group's voters",
            async || {
                let status = client.cluster_status().await.map_err(|e| e.to_string())?;
                let voters = status
                    .nodes
                    .iter()
                    .filter(|n| matches!(n.meta_role, MetaRole::Leader | MetaRole::Follower))
                    .count();
                Ok((voters >= want).then_some(()))
            },
        )
        .await
    }

    /// Creates a database and waits until every shard has a leader.
    pub async fn create_database(&self, name: &str, rf: Option<u32>, shards: u32) -> Result<()> {
        let client = self.client()?;
        client
            .create_database(name, rf, Some(shards))
            .await
            .map_err(|e| Error::Parse(format!("creating database {name}: {e}")))?;
        client
            .wait_for_database(name, self.options.ready_timeout, |_| {})
            .await
            .map_err(|e| Error::Parse(format!("database {name} not ready: {e}")))?;
        Ok(())
    }

    /// The index of the leader of `shard` of `database`, as the cluster reports it right now.
    pub async fn shard_leader(&self, database: &str, shard: u32) -> Option<usize> {
        self.shard_leader_by(database, shard, self.endpoints())
            .await
    }

    /// The index of the leader of `shard` of `database` as node `node` sees it (an isolated
    /// old leader may still believe it leads: ask a node of the majority).
    pub async fn shard_leader_seen_by(
        &self,
        database: &str,
        shard: u32,
        node: usize,
    ) -> Option<usize> {
        self.shard_leader_by(database, shard, vec![self.nodes[node].endpoint()])
            .await
    }

    async fn shard_leader_by(
        &self,
        database: &str,
        shard: u32,
        endpoints: Vec<String>,
    ) -> Option<usize> {
        let options = ClientOptions {
            total_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(1),
            ..ClientOptions::default()
        };
        let status = Client::with_options(endpoints, options)
            .ok()?
            .database_status(database)
            .await
            .ok()?;
        let leader = status.shards.iter().find(|s| s.shard == shard)?.leader()?;
        self.nodes
            .iter()
            .position(|n| n.client_addr == leader.client_addr)
    }

    /// Every node's addresses, state and log tail.
    pub fn describe(&self) -> String {
        self.nodes.iter().map(Node::describe).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].frozen {
                let _ = self.nodes[i].signal(Signal::SIGCONT);
            }
            self.kill9(i);
        }
        if std::thread::panicking() {
            eprintln!(
                "---- fault-test cluster in {} at the failure:\n{}",
                self.root_path.display(),
                self.describe()
            );
        }
        if std::env::var_os("FLOTILLA_KEEP_TEST_DIRS").is_some()
            && let Some(root) = self.root.take()
        {
            eprintln!("---- kept the cluster's files in {}", root.keep().display());
        }
    }
}

/// Polls `probe` until it returns `Ok(Some(value))`, at most `timeout`; `Ok(None)` and
/// `Err(state)` mean "not yet" (the last state is given in the timeout error).
pub async fn wait_for<T, F>(timeout: Duration, what: &str, mut probe: F) -> Result<T>
where
    F: AsyncFnMut() -> std::result::Result<Option<T>, String>,
{
    let started = Instant::now();
    let deadline = started + timeout;
    let mut delay = Duration::from_millis(10);
    loop {
        let last = match probe().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => "not yet".to_string(),
            Err(state) => state,
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::Timeout {
                what: what.to_string(),
                waited: started.elapsed(),
                last,
            });
        }
        tokio::time::sleep(delay.min(deadline - now)).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}
