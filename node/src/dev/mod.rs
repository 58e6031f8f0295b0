//! `flotilla-node dev`: a local cluster of real node processes on 127.0.0.1 for trying Flotilla
//! out. Node i listens on client port base+10*i (peer +1, HTTP +2); node 0 bootstraps, the others
//! join it. A database `default` is created. Ctrl-C / SIGTERM stops every process. With `--tls`
//! every port speaks TLS (mutual TLS between the nodes), with certificates made for the run
//! ([`certs`]).

pub mod certs;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use flotilla_proto::v1::admin_client::AdminClient;
use flotilla_proto::v1::{CreateDatabaseRequest, DatabaseStatusRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

use self::certs::DevCerts;
use crate::tls::reload::Reloading;

#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Number of node processes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Directory for the nodes' data (node-0, node-1, ...); kept between runs.
    #[arg(long, default_value = "flotilla-dev-data")]
    pub data_dir: PathBuf,
    /// Client port of node 0; node i uses base + 10*i (peer +1, HTTP +2).
    #[arg(long, default_value_t = 7100)]
    pub base_port: u16,
    /// Serve every port over TLS (mutual TLS between the nodes), with a CA and certificates
    /// made for this run under DATA_DIR/tls/.
    #[arg(long)]
    pub tls: bool,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > 9 {
        bail!("--nodes must be between 1 and 9");
    }
    let exe = std::env::current_exe().context("locating the flotilla-node binary")?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let port = |i: usize, off: u16| args.base_port + 10 * i as u16 + off;
    let first_client = format!("127.0.0.1:{}", port(0, 0));
    let certs = match args.tls {
        true => Some(certs::write(&args.data_dir.join("tls"), args.nodes)?),
        false => None,
    };
    let mut children: Vec<Child> = Vec::new();
    for i in 0..args.nodes {
        let dir = args.data_dir.join(format!("node-{i}"));
        std::fs::create_dir_all(&dir)?;
        let fresh = !dir.join("flotilla.redb").exists();
        let log = std::fs::File::create(dir.join("node.log"))?;
        let mut cmd = Command::new(&exe);
        cmd.arg("serve")
            .args(["--name", &format!("node-{i}")])
            .arg("--data-dir")
            .arg(&dir)
            .args(["--client-addr", &format!("127.0.0.1:{}", port(i, 0))])
            .args(["--peer-addr", &format!("127.0.0.1:{}", port(i, 1))])
            .args(["--http-addr", &format!("127.0.0.1:{}", port(i, 2))])
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        if let Some(certs) = &certs {
            let own = &certs.nodes[i];
            for (flag, path) in [
                ("--tls-cert", &own.cert),
                ("--tls-key", &own.key),
                ("--tls-ca", &certs.ca),
                ("--peer-tls-cert", &own.cert),
                ("--peer-tls-key", &own.key),
                ("--peer-tls-ca", &certs.ca),
            ] {
                cmd.arg(flag).arg(path);
            }
        }
        if i == 0 && fresh {
            cmd.args(["--initial-cluster-state", "new"]);
        } else {
            cmd.args(["--join", &first_client]);
        }
        children.push(cmd.spawn().with_context(|| format!("starting node-{i}"))?);
    }
    let result = tokio::select! {
        r = bring_up(&args, &first_client, certs.as_ref()) => r,
        e = first_exit(&mut children, &args.data_dir) => Err(e),
        _ = stop_signal() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Err(e) = &result {
        eprintln!("dev cluster failed to come up: {e:#}");
        eprintln!(
            "node logs are in {}/node-*/node.log",
            args.data_dir.display()
        );
    } else {
        print_banner(&args, certs.as_ref());
        stop_signal().await;
        eprintln!("stopping {} nodes...", children.len());
    }
    stop_all(&mut children).await;
    result
}

/// Waits until one of the nodes exits (during start-up, that is a failure: a port in use, a data
/// directory it cannot open), and answers why, with the end of its log.
async fn first_exit(children: &mut [Child], data_dir: &Path) -> anyhow::Error {
    loop {
        for (i, child) in children.iter_mut().enumerate() {
            match child.try_wait() {
                Ok(Some(status)) => {
                    let log = data_dir.join(format!("node-{i}")).join("node.log");
                    let tail = std::fs::read_to_string(&log)
                        .map(|text| last_lines(&text, LOG_TAIL_LINES))
                        .unwrap_or_else(|e| format!("(cannot read {}: {e})", log.display()));
                    return anyhow::anyhow!("node-{i} exited during start-up ({status}):\n{tail}");
                }
                Ok(None) => {}
                Err(e) => return anyhow::anyhow!("watching node-{i}: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Lines of a failed node's log shown.
const LOG_TAIL_LINES: usize = 20;

/// The last `n` lines of `text`.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

async fn bring_up(
    args: &DevArgs,
    first_client: &str,
    certs: Option<&DevCerts>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let https = certs.map(https_config).transpose()?;
    for i in 0..args.nodes {
        let url = format!("127.0.0.1:{}", args.base_port + 10 * i as u16 + 2);
        let ready = match &https {
            None => wait_ready(&url, deadline).await,
            Some(tls) => wait_https_ready(&url, tls, deadline).await,
        };
        ready.with_context(|| format!("node-{i} did not become ready"))?;
        eprintln!("node-{i} ready");
    }
    let mut admin = AdminClient::new(admin_channel(first_client, certs)?);
    loop {
        let req = CreateDatabaseRequest {
            name: "default".into(),
            replication_factor: 0,
            shards: 0,
            ..Default::default()
        };
        match admin.create_database(req).await {
            Ok(_) => break,
            Err(s) if s.code() == tonic::Code::AlreadyExists => break,
            Err(s) if Instant::now() > deadline => {
                bail!("creating database default: {}", s.message())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
    loop {
        let status = admin
            .database_status(DatabaseStatusRequest {
                name: "default".into(),
            })
            .await;
        if let Ok(s) = status
            && s.get_ref().shards.iter().all(|s| s.leader_id != 0)
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("database default has no leader");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// A channel to the client port at `addr`, over TLS with the client certificate when `certs`
/// are given (connected on first use).
fn admin_channel(addr: &str, certs: Option<&DevCerts>) -> anyhow::Result<Channel> {
    let endpoint = crate::tls::connect::endpoint(addr)
        .map_err(|e| anyhow::anyhow!("{}: {}", e.addr, e.reason))?;
    let tls = match certs {
        None => None,
        Some(c) => {
            let files = vec![c.ca.clone(), c.client.cert.clone(), c.client.key.clone()];
            let config = Reloading::new("dev client", files, |f| {
                crate::tls::client_config(&f[0], Some((&f[1], &f[2])))
            })?;
            Some(Arc::new(config))
        }
    };
    Ok(crate::tls::connect::channel(endpoint, tls))
}

/// The TLS configuration of the readiness probe: the dev CA trusted, HTTP/1.1.
fn https_config(certs: &DevCerts) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let ca = std::fs::read(&certs.ca).with_context(|| format!("reading {}", certs.ca.display()))?;
    let mut config = crate::tls::client_config(&ca, None)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Polls `GET /readyz` over HTTPS on `addr` until it answers 200.
async fn wait_https_ready(
    addr: &str,
    tls: &Arc<rustls::ClientConfig>,
    deadline: Instant,
) -> anyhow::Result<()> {
    loop {
        let answer = tokio::time::timeout(Duration::from_secs(2), https_get(addr, "/readyz", tls));
        if let Ok(Ok(text)) = answer.await
            && text.starts_with("HTTP/1.1 200")
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("https://{addr}/readyz not ready in time");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `GET path` over HTTPS on `addr` (a 127.0.0.1 address): the whole answer as text.
async fn https_get(
    addr: &str,
    path: &str,
    tls: &Arc<rustls::ClientConfig>,
) -> std::io::Result<String> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1")
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    // A server closing without close_notify still gave its whole answer.
    let _ = stream.read_to_end(&mut answer).await;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// Polls `GET /readyz` on `addr` until it answers 200.
pub async fn wait_ready(addr: &str, deadline: Instant) -> anyhow::Result<()> {
    loop {
        if http_get_status(addr, "/readyz").await == Some(200) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{addr}/readyz not ready in time");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The status code of `GET http://{addr}{path}`, or `None` when no answer came in time.
async fn http_get_status(addr: &str, path: &str) -> Option<u16> {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let client: Client<_, http_body_util::Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let uri: hyper::Uri = format!("http://{addr}{path}").parse().ok()?;
    let answer = tokio::time::timeout(Duration::from_secs(2), client.get(uri))
        .await
        .ok()?
        .ok()?;
    Some(answer.status().as_u16())
}

fn print_banner(args: &DevArgs, certs: Option<&DevCerts>) {
    let scheme = if certs.is_some() { "https" } else { "http" };
    let endpoints: Vec<String> = (0..args.nodes)
        .map(|i| format!("127.0.0.1:{}", args.base_port + 10 * i as u16))
        .collect();
    let list = endpoints.join(",");
    println!(
        "Flotilla dev cluster is up: {} nodes, database `default`.",
        args.nodes
    );
    for (i, e) in endpoints.iter().enumerate() {
        println!(
            "  node-{i}: client {e}  metrics {scheme}://127.0.0.1:{}/metrics",
            args.base_port + 10 * i as u16 + 2
        );
    }
    println!();
    println!("Try it (in another terminal):");
    println!("  export FLOTILLA_ENDPOINTS={list}");
    if let Some(c) = certs {
        println!("  export FLOTILLA_TLS_CA={}", absolute(&c.ca));
        println!("  export FLOTILLA_TLS_CERT={}", absolute(&c.client.cert));
        println!("  export FLOTILLA_TLS_KEY={}", absolute(&c.client.key));
        println!("  (or pass --tls-ca, --tls-cert and --tls-key; curl: --cacert, --cert, --key)");
    }
    println!("  cargo run -p flotilla-cli -- doc put default users alice '{{\"name\":\"Alice\"}}'");
    println!("  cargo run -p flotilla-cli -- doc get default users alice");
    println!("  cargo run -p flotilla-cli -- cluster status");
    println!();
    println!(
        "Data: {}   Press Ctrl-C to stop every node.",
        absolute(&args.data_dir)
    );
}

fn absolute(p: &Path) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

/// SIGTERM to every node, then SIGKILL to any still running after 15 s.
async fn stop_all(children: &mut [Child]) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    for child in children.iter() {
        if let Some(pid) = child.id()
            && let Ok(pid) = i32::try_from(pid)
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    for child in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_nodes_log_is_shown_from_its_end() {
        assert_eq!(last_lines("a\nb\nc", 2), "b\nc");
        assert_eq!(last_lines("a", 5), "a");
    }

    #[tokio::test]
    async fn a_node_that_exits_during_start_up_stops_the_dev_cluster_with_its_log() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let node_dir = dir.path().join("node-0");
        std::fs::create_dir_all(&node_dir).expect("node directory");
        std::fs::write(
            node_dir.join("node.log"),
            "starting\nbinding the client address: in use\n",
        )
        .expect("log");
        let child = Command::new("false").spawn().expect("a process that exits");
        let mut children = vec![child];
        let error = tokio::time::timeout(
            Duration::from_secs(10),
            first_exit(&mut children, dir.path()),
        )
        .await
        .expect("the exit is noticed");
        let message = format!("{error:#}");
        assert!(
            message.contains("node-0 exited during start-up"),
            "{message}"
        );
        assert!(message.contains("in use"), "{message}");
    }
}
