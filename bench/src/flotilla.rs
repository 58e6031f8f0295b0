//! A 3-node Flotilla cluster of real node processes on 127.0.0.1, started by the test kit's
//! [`Cluster`]: this binary re-executed with its hidden `node` subcommand (so `cargo run -p
//! flotilla-bench` needs no other binary), each node with its own directory under the
//! benchmark's data directory.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flotilla_client::{Client, ClientOptions};
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::http;

use crate::stats::histogram_sum_count;

/// The database the workloads use: one shard (one Raft group, like etcd's one log), on all
/// three nodes.
pub const DATABASE: &str = "bench";

/// The directory, under the benchmark's data directory, of the nodes' directories.
pub const DIR: &str = "flotilla";

/// The Flotilla cluster. Dropping it kills every node.
pub struct FlotillaCluster {
    cluster: Cluster,
}

impl FlotillaCluster {
    /// Starts `n` nodes with data under `root` (node 0 bootstraps, the others join it),
    /// creates the benchmark database and waits until its shard has a leader.
    pub async fn start(root: &Path, n: usize) -> anyhow::Result<FlotillaCluster> {
        let exe = std::env::current_exe().context("locating the flotilla-bench binary")?;
        let options = ClusterOptions {
            binary: exe,
            subcommand: "node".into(),
            dir: Some(root.join(DIR)),
            ready_timeout: Duration::from_secs(90),
            ..ClusterOptions::default()
        };
        let cluster = Cluster::start(n, options).await;
        let client = cluster.client();
        client
            .create_database(DATABASE, Some(n as u32), Some(1))
            .await
            .context("creating the benchmark database")?;
        client
            .wait_for_database(DATABASE, Duration::from_secs(60), |_| {})
            .await
            .context("waiting for the benchmark database")?;
        Ok(FlotillaCluster { cluster })
    }

    /// Client addresses of every node.
    pub fn endpoints(&self) -> Vec<String> {
        self.cluster.endpoints()
    }

    pub fn endpoint(&self, i: usize) -> String {
        self.cluster.endpoint(i)
    }

    /// Process ids of the running nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.cluster.nodes.iter().filter_map(|n| n.pid()).collect()
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
        self.cluster
            .nodes
            .iter()
            .position(|n| n.client_addr == leader)
            .with_context(|| format!("leader {leader} is not one of the benchmark's nodes"))
    }

    /// Where to read the metrics of the benchmark shard's current leader.
    pub async fn leader_metrics_source(&self) -> Option<MetricsSource> {
        let i = self.leader().await.ok()?;
        Some(MetricsSource {
            http: self.cluster.node(i).http_addr.clone(),
        })
    }

    /// Where to read each node's metrics.
    pub fn metrics_sources(&self) -> Vec<MetricsSource> {
        self.cluster
            .nodes
            .iter()
            .map(|n| MetricsSource {
                http: n.http_addr.clone(),
            })
            .collect()
    }

    /// Kills node `i` with SIGKILL.
    pub async fn kill(&mut self, i: usize) {
        self.cluster.kill9(i);
    }

    /// Restarts a killed node on its data directory and waits until it is ready and the
    /// benchmark shard has a leader again.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.cluster.restart(i);
        let deadline = Instant::now() + Duration::from_secs(60);
        let node = self.cluster.node(i);
        http::wait_ready(&node.http_addr, deadline.into())
            .await
            .with_context(|| {
                format!(
                    "{} did not become ready (log: {})",
                    node.name,
                    node.log_path().display()
                )
            })?;
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
        self.cluster.stop_all(Duration::from_secs(10)).await;
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

    /// How much background storage work this node has finished: snapshot builds and
    /// installs, and compactions (the counts of their histograms).
    pub async fn background_work(&self) -> Option<f64> {
        let text = self.text().await.ok()?;
        Some(
            [
                "snapshot_build_duration_seconds",
                "snapshot_install_duration_seconds",
                "storage_compaction_duration_seconds",
            ]
            .iter()
            .map(|name| histogram_sum_count(&text, name).1)
            .sum(),
        )
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
        let (_, body) = http::get_within(&self.http, "/metrics", Duration::from_secs(5))
            .await
            .context("reading /metrics")?;
        Ok(body)
    }
}
