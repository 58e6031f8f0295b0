//! Clusters of real `flotilla-node` processes, driven the way an operator or a user would drive
//! them: on 127.0.0.1, or each node in a network namespace of its own on a [`Fabric`] so that
//! links can be cut ([`faults`]). The node tests, the fault tests and the benchmark all start
//! their nodes here.
//!
//! [`Cluster::start`] picks free ports (fixed ports in namespaces), bootstraps node 0 with
//! `--initial-cluster-state new`, lets the other nodes join through node 0's client address, and
//! waits until every node's `/readyz` answers 200 and the meta group has its voters. Each node
//! lives in its own directory of a temporary directory (its data directory, `node-N`, beside
//! `node-N.log` with the process's stdout and stderr). Nodes can be
//! killed (`SIGKILL`), stopped gracefully (`SIGTERM`), frozen (`SIGSTOP` / `SIGCONT`), restarted
//! on the same ports and data, or wiped (a lost disk). Dropping the cluster kills every process
//! it started; when the test is failing it also prints the tail of every node's log.
//!
//! Set `FLOTILLA_KEEP_TEST_DIRS=1` to keep the temporary directory for inspection.
//!
//! The harness's operations panic, with every node's state and log tail, when the cluster does
//! not do what they wait for: they run inside tests, where a panic is the failure report, and a
//! `Result` would only be unwrapped at each of the hundreds of call sites. Faults that the
//! machine may not allow (partitions) return a [`Result`](crate::Result) instead.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use flotilla_client::{Client, ClientOptions, ClusterEvent, ReplicaState};
use tokio::time::Instant;

use crate::netns::Fabric;
use crate::progress;
use crate::wait::wait_until;

pub mod faults;
mod node;
mod options;
mod replicas;

pub use node::{LOG_TAIL_LINES, Node, PORT_ATTEMPTS, Probe, free_addrs};
pub use options::{ClusterOptions, Entry, Network, node_binary};

/// The file in a node's data directory that slows its syncs (the node's `store::slow_disk`,
/// with `--test-storage-faults`): its content is the delay per sync in milliseconds.
pub const SLOW_SYNC: &str = "slow-sync";

/// Fixed ports of a node in its own namespace.
const NAMESPACE_PORTS: [u16; 3] = [7100, 7101, 7102];

/// Real node processes forming one cluster, on 127.0.0.1 or on network namespaces.
pub struct Cluster {
    /// Removed (with every node's data) when the cluster is dropped, unless kept; `None` when
    /// the nodes live in [`ClusterOptions::dir`].
    root: Option<tempfile::TempDir>,
    root_path: PathBuf,
    pub nodes: Vec<Node>,
    options: ClusterOptions,
    /// Declared after the nodes: the processes die before their namespaces go.
    fabric: Option<Fabric>,
}

impl Cluster {
    /// Starts `n` nodes: node 0 bootstraps, the others join through it. Returns once every
    /// node is ready; panics with each node's log otherwise.
    pub async fn start(n: usize, options: ClusterOptions) -> Cluster {
        assert!(n >= 1, "a cluster needs at least one node");
        let (root, root_path) = match &options.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
                (None, dir.clone())
            }
            None => {
                let root = tempfile::Builder::new()
                    .prefix("flotilla-test-")
                    .tempdir()
                    .unwrap_or_else(|e| panic!("creating a temporary directory: {e}"));
                let path = root.path().to_path_buf();
                (Some(root), path)
            }
        };
        let fabric = match options.network {
            Network::Namespaces => {
                Some(Fabric::create(n).unwrap_or_else(|e| panic!("creating the namespaces: {e}")))
            }
            Network::Loopback => None,
        };
        let mut cluster = Cluster {
            root,
            root_path,
            nodes: Vec::new(),
            options,
            fabric,
        };
        let mut addrs = cluster.addresses(n).into_iter();
        let first = Node::new(
            0,
            &cluster.root_path,
            addrs.next().unwrap_or_default(),
            Entry::Bootstrap,
            cluster.options.clone(),
            cluster.namespace(0),
        );
        cluster.nodes.push(first);
        cluster.start_nodes(&[0]).await;
        let seed = vec![cluster.nodes[0].endpoint()];
        for (i, addrs) in (1..n).zip(addrs) {
            let node = Node::new(
                i,
                &cluster.root_path,
                addrs,
                Entry::Join(seed.clone()),
                cluster.options.clone(),
                cluster.namespace(i),
            );
            cluster.nodes.push(node);
        }
        let rest: Vec<usize> = (1..n).collect();
        cluster.start_nodes(&rest).await;
        cluster.wait_for_meta_voters().await;
        cluster
    }

    /// The client, peer and HTTP addresses of `n` nodes: fixed ports on each namespace's
    /// address, or free ports on 127.0.0.1.
    fn addresses(&self, n: usize) -> Vec<[String; 3]> {
        match &self.fabric {
            Some(fabric) => (0..n)
                .map(|i| {
                    let a = fabric.addr(i);
                    NAMESPACE_PORTS.map(|p| format!("{a}:{p}"))
                })
                .collect(),
            None => free_addrs(n),
        }
    }

    /// The namespace of node `i`, when the nodes run in namespaces.
    fn namespace(&self, i: usize) -> Option<String> {
        self.fabric.as_ref().map(|f| f.namespace(i))
    }

    /// Where the nodes run.
    pub fn network(&self) -> Network {
        self.options.network
    }

    /// Waits until the meta group has its voters (up to `--meta-voters`, odd): before that a
    /// single failure could stop the cluster, which no test means to exercise by accident.
    pub async fn wait_for_meta_voters(&self) {
        let target = self.options.meta_voters.unwrap_or(3).min(self.nodes.len());
        let want = if target.is_multiple_of(2) {
            target - 1
        } else {
            target
        }
        .max(1);
        let client = self.client();
        let what = format!("the meta group has {want} voters");
        wait_until(self.options.ready_timeout, &what, async || {
            client.cluster_status().await.is_ok_and(|s| {
                s.nodes
                    .iter()
                    .filter(|n| {
                        matches!(
                            n.meta_role,
                            flotilla_client::MetaRole::Leader | flotilla_client::MetaRole::Follower
                        )
                    })
                    .count()
                    >= want
            })
        })
        .await;
    }

    /// Spawns the given nodes and waits until all are ready, moving a node to fresh ports when
    /// its ports were taken between choosing and binding them.
    async fn start_nodes(&mut self, indices: &[usize]) {
        let mut attempts = vec![0usize; self.nodes.len()];
        for &i in indices {
            self.nodes[i].spawn();
        }
        let deadline = Instant::now() + self.options.ready_timeout;
        let mut pending: Vec<usize> = indices.to_vec();
        let mut last: Vec<String> = vec![String::new(); self.nodes.len()];
        while !pending.is_empty() {
            let mut still = Vec::new();
            for &i in &pending {
                match self.nodes[i].poll_ready().await {
                    Probe::Ready => {}
                    Probe::Exited(status) => {
                        attempts[i] += 1;
                        if self.nodes[i].failed_to_bind() && attempts[i] < PORT_ATTEMPTS {
                            self.nodes[i].child = None;
                            self.nodes[i].move_ports();
                            self.nodes[i].spawn();
                            still.push(i);
                        } else {
                            panic!(
                                "{} exited while starting ({status})\n{}",
                                self.nodes[i].name,
                                self.describe()
                            );
                        }
                    }
                    Probe::NotYet(why) => {
                        last[i] = why;
                        still.push(i);
                    }
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let waiting: Vec<String> = pending
                    .iter()
                    .map(|&i| format!("{} (last /readyz: {})", self.nodes[i].name, last[i]))
                    .collect();
                panic!(
                    "not ready after {:?}: {}\n{}",
                    self.options.ready_timeout,
                    waiting.join(", "),
                    self.describe()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts one more node that joins through the running nodes; returns its index once it
    /// is ready.
    pub async fn add_node(&mut self) -> usize {
        let options = self.options.clone();
        self.add_node_with(options).await
    }

    /// Like [`Cluster::add_node`], with options of its own (e.g. `--labels`).
    pub async fn add_node_with(&mut self, options: ClusterOptions) -> usize {
        assert!(
            self.fabric.is_none(),
            "nodes are added on 127.0.0.1 only (a fabric has its namespaces from the start)"
        );
        let index = self.nodes.len();
        let join = self.running_endpoints();
        let node = Node::new(
            index,
            &self.root_path,
            free_addrs(1).remove(0),
            Entry::Join(join),
            options,
            None,
        );
        self.nodes.push(node);
        self.start_nodes(&[index]).await;
        index
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i]
    }

    /// The client endpoint of node `i`.
    pub fn endpoint(&self, i: usize) -> String {
        self.nodes[i].endpoint()
    }

    /// Every node's client endpoint.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(Node::endpoint).collect()
    }

    /// The client endpoints of the nodes whose processes run.
    pub fn running_endpoints(&mut self) -> Vec<String> {
        self.nodes
            .iter_mut()
            .filter_map(|n| n.is_running().then(|| n.endpoint()))
            .collect()
    }

    /// A client over every node's endpoint.
    pub fn client(&self) -> Client {
        self.client_with(self.options.client_options.clone())
    }

    /// A client over every node's endpoint with the given options.
    pub fn client_with(&self, options: ClientOptions) -> Client {
        Client::with_options(self.endpoints(), options)
            .unwrap_or_else(|e| panic!("a client over the cluster: {e}"))
    }

    /// A client that talks to node `i` only, with `options`.
    pub fn node_client(&self, i: usize, options: ClientOptions) -> Client {
        Client::with_options(vec![self.endpoint(i)], options)
            .unwrap_or_else(|e| panic!("a client for node {i}: {e}"))
    }

    /// `kill -9` node `i` (a no-op when it is not running).
    pub fn kill9(&mut self, i: usize) {
        if self.nodes[i].child.is_some() {
            progress(format!("node {i} killed with SIGKILL"));
        }
        self.nodes[i].kill9();
    }

    /// Graceful stop of node `i`; waits for the process to exit.
    pub async fn sigterm(&mut self, i: usize) -> ExitStatus {
        self.nodes[i].sigterm().await
    }

    /// Freezes node `i` (`SIGSTOP`): it keeps its sockets and answers nothing.
    pub fn sigstop(&mut self, i: usize) {
        self.nodes[i].sigstop();
        progress(format!("node {i} frozen with SIGSTOP"));
    }

    /// Lets a frozen node run again.
    pub fn sigcont(&mut self, i: usize) {
        self.nodes[i].sigcont();
        progress(format!("node {i} resumed with SIGCONT"));
    }

    /// Starts node `i` again (same ports, data and flags) without waiting for it.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].restart();
        progress(format!("node {i} started"));
    }

    /// Deletes node `i`'s data (it must be down); when restarted it joins as a new node.
    pub fn wipe(&mut self, i: usize) {
        let join: Vec<String> = (0..self.nodes.len())
            .filter(|&j| j != i)
            .map(|j| self.endpoint(j))
            .collect();
        self.nodes[i].wipe(join);
    }

    /// Waits until node `i` is ready.
    pub async fn wait_ready(&mut self, i: usize) {
        self.nodes[i].wait_ready().await;
    }

    /// Waits until every running node is ready.
    pub async fn wait_all_ready(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_running() {
                self.nodes[i].wait_ready().await;
            }
        }
    }

    /// The node id of node `i`, as the cluster reports it.
    pub async fn node_id(&self, i: usize) -> u64 {
        let addr = self.endpoint(i);
        let status = self
            .client()
            .cluster_status()
            .await
            .unwrap_or_else(|e| panic!("cluster status: {e}\n{}", self.describe()));
        status
            .node_by_client_addr(&addr)
            .unwrap_or_else(|| panic!("no node with client address {addr} in {status:#?}"))
            .id
    }

    /// The index of the node with id `id`, if it is one of this cluster's nodes.
    pub async fn index_of(&self, id: u64) -> Option<usize> {
        let status = self.client().cluster_status().await.ok()?;
        let node = status.nodes.iter().find(|n| n.id == id)?;
        self.nodes
            .iter()
            .position(|n| n.client_addr == node.client_addr)
    }

    /// The index of the meta group's leader, if there is one right now.
    pub async fn meta_leader(&self) -> Option<usize> {
        let status = self.client().cluster_status().await.ok()?;
        let leader = status.meta_leader()?;
        self.nodes
            .iter()
            .position(|n| n.client_addr == leader.client_addr)
    }

    /// The index of the leader of `shard` of `database`, if it has one right now.
    pub async fn shard_leader(&self, database: &str, shard: u32) -> Option<usize> {
        let status = self.client().database_status(database).await.ok()?;
        let shard = status.shards.iter().find(|s| s.shard == shard)?;
        let leader = shard.leader()?;
        self.nodes
            .iter()
            .position(|n| n.client_addr == leader.client_addr)
    }

    /// Creates a database and waits until every shard has a leader.
    pub async fn create_database(
        &self,
        name: &str,
        replication_factor: Option<u32>,
        shards: Option<u32>,
    ) {
        let client = self.client();
        client
            .create_database(name, replication_factor, shards)
            .await
            .unwrap_or_else(|e| panic!("creating database {name}: {e}\n{}", self.describe()));
        client
            .wait_for_database(name, self.options.ready_timeout, |_| {})
            .await
            .unwrap_or_else(|e| panic!("database {name} not ready: {e}\n{}", self.describe()));
    }

    /// Stops every running node gracefully (`SIGTERM`, so that leaders hand over), and with
    /// `SIGKILL` the ones still running after `grace`.
    pub async fn stop_all(&mut self, grace: Duration) {
        for node in &mut self.nodes {
            node.stop_within(grace).await;
        }
    }

    /// Waits (at most `timeout`) until the replica of `database`'s shard `shard` on node
    /// `node_id` is a Member that runs (not stopped, not broken), as its shard leader says.
    pub async fn wait_running_member(
        &self,
        database: &str,
        shard: u32,
        node_id: u64,
        timeout: Duration,
    ) {
        let client = self.client();
        let what = format!("the replica of {database}/{shard} on node {node_id} runs as a Member");
        wait_until(timeout, &what, async || {
            client.database_status(database).await.is_ok_and(|s| {
                s.shards.iter().filter(|s| s.shard == shard).any(|s| {
                    s.replicas.iter().any(|r| {
                        r.node_id == node_id
                            && r.state == ReplicaState::Member
                            && r.stopped.is_none()
                            && !r.broken
                    })
                })
            })
        })
        .await;
    }

    /// Waits (at most `timeout`) for a recorded topology transition that `matches` (see
    /// `flotilla cluster events`), and returns it.
    pub async fn wait_for_event(
        &self,
        timeout: Duration,
        what: &str,
        matches: impl Fn(&ClusterEvent) -> bool,
    ) -> ClusterEvent {
        let client = self.client();
        crate::wait::wait_for(timeout, what, async || {
            use futures::StreamExt;
            let events = client.cluster_events(false, 0).await.ok()?;
            let events: Vec<ClusterEvent> = events.filter_map(|e| async { e.ok() }).collect().await;
            events.into_iter().find(|e| matches(e))
        })
        .await
    }

    /// The value of one series on node `i` (`name` or `name{labels}`, exactly as exposed), if
    /// the node answers and has it.
    pub async fn metric(&self, i: usize, series: &str) -> Option<f64> {
        let (_, text) = crate::http::get(&self.node(i).http_addr, "/metrics")
            .await
            .ok()?;
        text.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    /// The sum over the running nodes of every sample of metric `name` whose line contains
    /// `label` (e.g. `path="two_phase"`; empty: every sample).
    pub async fn metric_sum(&mut self, name: &str, label: &str) -> f64 {
        let mut sum = 0.0;
        for i in 0..self.len() {
            if !self.node_mut(i).is_running() {
                continue;
            }
            let Ok((200, text)) = self.node(i).http_get("/metrics").await else {
                continue;
            };
            for line in text.lines() {
                if line.starts_with(name)
                    && line.contains(label)
                    && let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok())
                {
                    sum += v;
                }
            }
        }
        sum
    }

    /// The temporary directory holding every node's directory.
    pub fn root(&self) -> &Path {
        &self.root_path
    }

    /// Every node's addresses, state and log tail.
    pub fn describe(&self) -> String {
        self.nodes.iter().map(Node::describe).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill9();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- test cluster in {} at the failure:\n{}",
                self.root_path.display(),
                self.describe()
            );
        }
        if std::env::var_os("FLOTILLA_KEEP_TEST_DIRS").is_some()
            && let Some(root) = self.root.take()
        {
            let kept = root.keep();
            eprintln!("---- kept the test cluster's files in {}", kept.display());
        }
    }
}
