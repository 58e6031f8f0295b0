//! A 3-node Flotilla cluster of real node processes on 127.0.0.1: this binary re-executed with
//! its hidden `node` subcommand (so `cargo run -p flotilla-bench` needs no other binary), each
//! node with its own data directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flotilla_client::{Client, ClientOptions};
use tokio::process::{Child, Command};

use crate::process::{free_port, spawn_logged, stop_child};
use crate::stats::histogram_sum_count;

/// The database the workloads use: one shard (one Raft group, like etcd's one log), on all
/// three nodes.
pub const DATABASE: &str = "bench";

struct Node {
    name: String,
    dir: PathBuf,
    client: String,
    peer: String,
    http: String,
    child: Option<Child>,
}

/// The Flotilla cluster. Dropping it kills every node.
pub struct FlotillaCluster {
    exe: PathBuf,
    nodes: Vec<Node>,
}

impl FlotillaCluster {
    /// Starts `n` nodes with data under `root` (node 0 bootstraps, the others join it),
    /// creates the benchmark database and waits until its shard has a leader.
    pub async fn start(root: &Path, n: usize) -> anyhow::Result<FlotillaCluster> {
        let exe = std::env::current_exe().context("locating the flotilla-bench binary")?;
        let mut nodes = Vec::new();
        for i in 0..n {
            let dir = root.join(format!("flotilla-{i}"));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            nodes.push(Node {
                name: format!("node-{i}"),
                dir,
                client: format!("127.0.0.1:{}", free_port()?),
                peer: format!("127.0.0.1:{}", free_port()?),
                http: format!("127.0.0.1:{}", free_port()?),
                child: None,
            });
        }
        let mut cluster = FlotillaCluster { exe, nodes };
        for i in 0..n {
            cluster.spawn(i, i == 0)?;
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        for i in 0..n {
            cluster.wait_ready(i, deadline).await?;
        }
        let client = cluster.admin_client()?;
        client
            .create_database(DATABASE, Some(n as u32), Some(1))
            .await
            .context("creating the benchmark database")?;
        client
            .wait_for_database(DATABASE, Duration::from_secs(60), |_| {})
            .await
            .context("waiting for the benchmark database")?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize, bootstrap: bool) -> anyhow::Result<()> {
        let join: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| n.client.clone())
            .collect();
        let n = &mut self.nodes[i];
        let mut cmd = Command::new(&self.exe);
        cmd.arg("node")
            .args(["--name", &n.name])
            .arg("--data-dir")
            .arg(n.dir.join("data"))
            .args(["--client-addr", &n.client])
            .args(["--peer-addr", &n.peer])
            .args(["--http-addr", &n.http]);
        if bootstrap {
            cmd.args(["--initial-cluster-state", "new"]);
        } else {
            cmd.args(["--join", &join.join(",")]);
        }
        n.child = Some(spawn_logged(cmd, &n.dir.join("node.log"))?);
        Ok(())
    }

    async fn wait_ready(&self, i: usize, deadline: Instant) -> anyhow::Result<()> {
        let n = &self.nodes[i];
        flotilla_node::dev::wait_ready(&n.http, deadline)
            .await
            .with_context(|| {
                format!(
                    "{} did not become ready (log: {})",
                    n.name,
                    n.dir.join("node.log").display()
                )
            })
    }

    /// Client addresses of every node.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.client.clone()).collect()
    }

    pub fn endpoint(&self, i: usize) -> String {
        self.nodes[i].client.clone()
    }

    /// Process ids of the running nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.child.as_ref().and_then(Child::id))
            .collect()
    }

    /// A client for administration over every node.
    pub fn admin_client(&self) -> anyhow::Result<Client> {
        let options = ClientOptions {
            total_timeout: Duration::from_secs(30),
            ..ClientOptions::default()
        };
        Ok(Client::with_options(self.endpoints(), options)?)
    }

    /// Index of the node leading the benchmark database's shard.
    pub async fn leader(&self) -> anyhow::Result<usize> {
        let status = self.admin_client()?.database_status(DATABASE).await?;
        let leader = status
            .shards
            .first()
            .and_then(|s| s.leader())
            .map(|r| r.client_addr.clone())
            .context("the benchmark shard has no leader")?;
        self.nodes
            .iter()
            .position(|n| n.client == leader)
            .with_context(|| format!("leader {leader} is not one of the benchmark's nodes"))
    }

    /// Where to read the metrics of the benchmark shard's current leader.
    pub async fn leader_metrics_source(&self) -> Option<MetricsSource> {
        let i = self.leader().await.ok()?;
        Some(MetricsSource {
            http: self.nodes[i].http.clone(),
        })
    }

    /// Where to read each node's metrics.
    pub fn metrics_sources(&self) -> Vec<MetricsSource> {
        self.nodes
            .iter()
            .map(|n| MetricsSource {
                http: n.http.clone(),
            })
            .collect()
    }

    /// Kills node `i` with SIGKILL.
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill().await;
        }
    }

    /// Restarts a killed node on its data directory and waits until it is ready and the
    /// benchmark shard has a leader again.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawn(i, false)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        self.wait_ready(i, deadline).await?;
        let client = self.admin_client()?;
        loop {
            let status = client.database_status(DATABASE).await;
            if let Ok(s) = status
                && s.is_ready()
                && s.shards
                    .iter()
                    .all(|s| s.replicas.iter().all(|r| r.lag < 10))
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("the benchmark shard did not catch up after restarting node {i}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(())
    }

    /// Stops every node (SIGTERM, then SIGKILL after a grace period).
    pub async fn stop(&mut self) {
        for n in &mut self.nodes {
            if let Some(child) = n.child.take() {
                stop_child(child, Duration::from_secs(10)).await;
            }
        }
    }
}

/// One node's `/metrics`.
pub struct MetricsSource {
    http: String,
}

/// (sum, count) of a histogram.
pub type SumCount = (f64, f64);

impl MetricsSource {
    /// The storage commit and proposal histograms, as (sum, count) each.
    pub async fn fetch(&self) -> Option<(SumCount, SumCount)> {
        let text = self.text().await.ok()?;
        Some((
            histogram_sum_count(&text, "storage_commit_duration_seconds"),
            histogram_sum_count(&text, "raft_proposal_duration_seconds"),
        ))
    }

    /// How many replicas on this node hibernate (`flotilla_raft_hibernating` at 1).
    pub async fn hibernating(&self) -> Option<usize> {
        let text = self.text().await.ok()?;
        Some(
            text.lines()
                .filter(|l| l.starts_with("flotilla_raft_hibernating{") && l.ends_with(" 1"))
                .count(),
        )
    }

    async fn text(&self) -> anyhow::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = &self.http;
        let fetch = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            stream.write_all(req.as_bytes()).await?;
            let mut buf = Vec::new();
            stream.read_to_end(&mut buf).await?;
            anyhow::Ok(String::from_utf8_lossy(&buf).into_owned())
        };
        let text = tokio::time::timeout(Duration::from_secs(5), fetch)
            .await
            .context("metrics request timed out")??;
        Ok(text
            .split_once("\r\n\r\n")
            .map_or(text.as_str(), |(_, body)| body)
            .to_string())
    }
}
