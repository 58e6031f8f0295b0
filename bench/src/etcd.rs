//! A 3-member etcd cluster of real `etcd` processes (the binary of the `etcd-bin-vendored`
//! package) on 127.0.0.1, each with its own data directory, and a small v3 client over the
//! API subset in `proto/etcd.proto`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};
use tonic::transport::{Channel, Endpoint};

use crate::process::{free_port, spawn_logged, stop_child};

/// etcd's v3 API (the subset the benchmark uses).
pub mod pb {
    #![allow(clippy::derive_partial_eq_without_eq)]
    tonic::include_proto!("etcdserverpb");
}

use pb::kv_client::KvClient;
use pb::maintenance_client::MaintenanceClient;

struct Member {
    name: String,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
}

/// The etcd cluster. Dropping it kills every member.
pub struct EtcdCluster {
    bin: PathBuf,
    members: Vec<Member>,
    initial_cluster: String,
}

impl EtcdCluster {
    /// Starts `n` members with data under `root` and waits until the cluster has a leader and
    /// takes writes.
    pub async fn start(root: &Path, n: usize) -> anyhow::Result<EtcdCluster> {
        let bin = etcd_bin_vendored::etcd_bin_path()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .to_path_buf();
        let mut members = Vec::new();
        for i in 0..n {
            let dir = root.join(format!("etcd-{i}"));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            members.push(Member {
                name: format!("etcd-{i}"),
                dir,
                client_port: free_port()?,
                peer_port: free_port()?,
                child: None,
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            bin,
            members,
            initial_cluster,
        };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        cluster
            .wait_writable(Duration::from_secs(60))
            .await
            .context("etcd cluster did not come up")?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let initial_cluster = self.initial_cluster.clone();
        let bin = self.bin.clone();
        let m = &mut self.members[i];
        let mut cmd = Command::new(&bin);
        // Defaults kept on purpose: fsync of the WAL before acknowledging (no
        // --unsafe-no-fsync), heartbeat 100 ms and election timeout 1000 ms (Flotilla's
        // defaults too), snapshot every 10,000 entries (Flotilla's snapshot threshold too).
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(m.dir.join("data"))
            .args(["--listen-client-urls", &m.client_url()])
            .args(["--advertise-client-urls", &m.client_url()])
            .args(["--listen-peer-urls", &m.peer_url()])
            .args(["--initial-advertise-peer-urls", &m.peer_url()])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-token", "flotilla-bench"])
            .args(["--initial-cluster-state", "new"])
            .args(["--log-level", "warn"]);
        m.child = Some(spawn_logged(cmd, &m.dir.join("etcd.log"))?);
        Ok(())
    }

    /// Client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].client_url()
    }

    /// Process ids of the running members.
    pub fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.child.as_ref().and_then(Child::id))
            .collect()
    }

    /// Index of the member that leads, asking each member for its status.
    pub async fn leader(&self) -> anyhow::Result<usize> {
        for (i, m) in self.members.iter().enumerate() {
            if m.child.is_none() {
                continue;
            }
            let Ok(channel) = channel(&m.client_url(), Duration::from_secs(2)) else {
                continue;
            };
            let Ok(status) = MaintenanceClient::new(channel)
                .status(pb::StatusRequest {})
                .await
            else {
                continue;
            };
            let status = status.into_inner();
            let me = status.header.map(|h| h.member_id).unwrap_or(0);
            if me != 0 && status.leader == me {
                return Ok(i);
            }
        }
        bail!("no etcd member reports itself as leader")
    }

    /// Kills member `i` with SIGKILL.
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill().await;
        }
    }

    /// Restarts a killed member on its data directory and waits until the cluster takes writes.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawn(i)?;
        self.wait_writable(Duration::from_secs(60)).await?;
        // Let the returning member catch up before the next measurement.
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(())
    }

    async fn wait_writable(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let client = EtcdClient::connect(&self.endpoints(), Duration::from_secs(1))?;
        loop {
            let result = client
                .put(b"flotilla-bench/ready".to_vec(), b"1".to_vec())
                .await;
            match result {
                Ok(()) if self.leader().await.is_ok() => return Ok(()),
                Ok(()) => {}
                Err(e) if Instant::now() > deadline => bail!("etcd not writable: {e}"),
                Err(_) => {}
            }
            if Instant::now() > deadline {
                bail!("etcd has no leader");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops every member (SIGTERM, then SIGKILL after a grace period).
    pub async fn stop(&mut self) {
        for m in &mut self.members {
            if let Some(child) = m.child.take() {
                stop_child(child, Duration::from_secs(10)).await;
            }
        }
    }
}

fn channel(url: &str, timeout: Duration) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_millis(500))
        .timeout(timeout)
        .tcp_nodelay(true)
        .connect_lazy())
}

/// An etcd v3 client over one channel balanced across `endpoints` (as etcd's own clients
/// spread requests over the members they are given).
#[derive(Clone)]
pub struct EtcdClient {
    kv: KvClient<Channel>,
}

impl EtcdClient {
    pub fn connect(endpoints: &[String], request_timeout: Duration) -> anyhow::Result<EtcdClient> {
        let mut eps = Vec::new();
        for url in endpoints {
            eps.push(
                Endpoint::from_shared(url.clone())?
                    .connect_timeout(Duration::from_millis(500))
                    .timeout(request_timeout)
                    .tcp_nodelay(true),
            );
        }
        let channel = match eps.len() {
            0 => bail!("no etcd endpoints"),
            1 => eps.remove(0).connect_lazy(),
            _ => Channel::balance_list(eps.into_iter()),
        };
        Ok(EtcdClient {
            kv: KvClient::new(channel),
        })
    }

    pub async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), tonic::Status> {
        let req = pb::PutRequest {
            key,
            value,
            ..Default::default()
        };
        self.kv.clone().put(req).await.map(|_| ())
    }

    /// A linearizable read of one key; the value's length (0 when missing).
    pub async fn get(&self, key: Vec<u8>) -> Result<usize, tonic::Status> {
        let req = pb::RangeRequest {
            key,
            serializable: false,
            ..Default::default()
        };
        let r = self.kv.clone().range(req).await?.into_inner();
        Ok(r.kvs.first().map_or(0, |kv| kv.value.len()))
    }
}
