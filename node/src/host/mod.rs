//! The host: this node's identity and every Raft group it holds, over the shared storage and
//! network. This file owns the registry of groups and the node's lifecycle (start, readiness,
//! stop); the work done through the groups lives beside it: [`write`], [`read`],
//! [`membership`] (nodes joining and leaving the cluster), [`leadership`] (transfers and the
//! hand-over at shutdown), and [`follow`] / [`join`] (the background work that keeps this
//! node's groups equal to the meta state, and joins the cluster).

pub mod follow;
pub mod identity;
pub mod join;
pub mod leadership;
pub mod membership;
pub mod read;
pub mod space;
pub mod supervise;
pub mod write;

pub use leadership::best_successor;
pub use membership::Removal;
pub use read::ReadConsistency;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use tokio::sync::{Mutex, watch};

use crate::config::{InitialClusterState, NodeConfig};
use crate::consensus::{RaftMetrics, TypeConfig};
use crate::meta::MetaState;
use crate::metrics::Metrics;
use crate::network::{Beats, NetworkFactory, Peers};
use crate::store::{LogStore, StateMachine, Storage, StoreError};
use crate::types::{GroupId, META_GROUP, NodeAddr, NodeId};

/// How long a node may go unheard and still take a new database's replicas (see
/// [`Host::placeable_nodes`]).
pub const PLACEMENT_GRACE: Duration = Duration::from_secs(10);

/// One Raft group hosted here: its Raft handle and its state machine (for reads).
#[derive(Clone)]
pub struct GroupHandle {
    pub raft: Raft,
    pub sm: StateMachine,
}

impl GroupHandle {
    pub fn metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow_watched().clone()
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().state == ServerState::Leader
    }
}

type Raft = openraft::Raft<TypeConfig, crate::store::StateMachine>;

/// The node: identity, storage, network and every Raft group it hosts.
pub struct Host {
    pub id: NodeId,
    pub addr: NodeAddr,
    pub config: NodeConfig,
    pub storage: Arc<Storage>,
    pub metrics: Arc<Metrics>,
    peers: Arc<Peers>,
    /// TLS of the node's ports and of its own connections (plaintext without the flags).
    pub tls: crate::tls::NodeTls,
    raft_config: Arc<openraft::Config>,
    groups: RwLock<HashMap<GroupId, GroupHandle>>,
    opening: Mutex<()>,
    /// Flips to true when the node starts stopping.
    stopping: watch::Sender<bool>,
    /// Held by each observer tick and by replica changes made by hand, so that one never
    /// decides on a state the other is half way through changing.
    pub topology_lock: tokio::sync::Mutex<()>,
    /// Node heartbeats heard from peers, and the groups this node leads (see `hibernation`).
    beats: Arc<Beats>,
    /// Groups that stopped on their own (see `supervise`).
    failures: supervise::Failures,
    /// The data volume's free space, as last measured (see `space`).
    space: space::Space,
    /// Set once a member of the cluster refuses this node as removed from it (see
    /// [`Host::mark_removed`]).
    removed: std::sync::atomic::AtomicBool,
}

impl Host {
    /// Opens storage and the meta group, then bootstraps or joins as configured.
    pub async fn start(config: NodeConfig) -> Result<Arc<Host>, StartError> {
        config.validate().map_err(StartError::Config)?;
        let raft_config = Arc::new(config.raft_config().map_err(StartError::Config)?);
        let metrics = Arc::new(Metrics::new());
        let tls = crate::tls::NodeTls::from_flags(&config.tls)?;
        let storage = Storage::open_with(
            &config.data_dir,
            metrics.storage.store.clone(),
            crate::store::TestModes {
                power_loss: config.test_power_loss,
                storage_faults: config.test_storage_faults,
            },
            config.state_cache_bytes,
        )?;
        storage.set_change_retention(config.change_retention);
        let peers = Arc::new(Peers::new(storage.node_id(), tls.to_peers.clone()));
        let addr = NodeAddr {
            name: config.name.clone(),
            client_addr: config.advertised_client(),
            peer_addr: config.advertised_peer(),
        };
        let (stopping, _) = watch::channel(false);
        let host = Arc::new(Host {
            id: storage.node_id(),
            addr,
            config,
            storage: storage.clone(),
            metrics,
            peers,
            tls,
            raft_config,
            groups: RwLock::new(HashMap::new()),
            opening: Mutex::new(()),
            stopping,
            topology_lock: tokio::sync::Mutex::new(()),
            beats: Arc::new(Beats::default()),
            failures: supervise::Failures::default(),
            space: space::Space::default(),
            removed: std::sync::atomic::AtomicBool::new(false),
        });
        if host.config.test_storage_faults {
            storage.test_faults().enable(&host.config.data_dir);
        }
        tracing::info!(node_id = host.id, name = %host.addr.name, fresh = storage.is_fresh(), "node starting");
        let meta = host.ensure_group(META_GROUP).await?;
        let retired = host.meta_state();
        if let Some(cluster) = &retired.cluster_id {
            host.peers.set_cluster(cluster);
        }
        for gid in storage.stored_groups()? {
            // A softly removed replica keeps its files but is not served.
            if gid != META_GROUP && !retired.is_retired(gid, host.id) {
                match host.ensure_group(gid).await {
                    Ok(_) => {}
                    // Not served, and said so on `/healthz`; the node serves its other groups.
                    Err(StoreError::Corrupt(c)) => {
                        tracing::error!(group = gid, error = %c, "not serving a corrupt group");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if host.config.initial_cluster_state == InitialClusterState::New
            && storage.is_fresh()
            && !meta
                .raft
                .is_initialized()
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?
        {
            let members = BTreeMap::from([(host.id, host.addr.clone())]);
            meta.raft
                .initialize(members)
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?;
            tracing::info!(node_id = host.id, "initialised a new cluster");
        }
        Ok(host)
    }

    /// Outgoing Raft connections (and what they sent).
    pub fn peers(&self) -> &Arc<Peers> {
        &self.peers
    }

    /// Node heartbeats heard from peers, and the groups this node leads.
    pub fn beats(&self) -> &Arc<Beats> {
        &self.beats
    }

    pub fn group(&self, gid: GroupId) -> Option<GroupHandle> {
        self.groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&gid)
            .cloned()
    }

    pub fn groups(&self) -> Vec<(GroupId, GroupHandle)> {
        let groups = self.groups.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = groups.iter().map(|(g, h)| (*g, h.clone())).collect();
        out.sort_by_key(|(g, _)| *g);
        out
    }

    /// Calls `f` with every group open here, in no particular order, under the lock that
    /// guards the set of groups (so `f` must not open or close any).
    pub fn for_each_group(&self, mut f: impl FnMut(GroupId, &GroupHandle)) {
        let groups = self.groups.read().unwrap_or_else(|p| p.into_inner());
        for (gid, handle) in groups.iter() {
            f(*gid, handle);
        }
    }

    pub fn meta(&self) -> GroupHandle {
        // The meta group is opened in `start` and never removed.
        self.group(META_GROUP)
            .unwrap_or_else(|| unreachable!("meta group is opened at start"))
    }

    pub fn meta_state(&self) -> Arc<MetaState> {
        self.meta().sm.state().meta()
    }

    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Opens group `gid` if it is not open yet. A group found corrupt (now, or before) is not
    /// opened: [`StoreError::Corrupt`], recorded as stopped for good (see `supervise`).
    pub async fn ensure_group(self: &Arc<Self>, gid: GroupId) -> Result<GroupHandle, StoreError> {
        if let Some(h) = self.group(gid) {
            return Ok(h);
        }
        let _guard = self.opening.lock().await;
        if let Some(h) = self.group(gid) {
            return Ok(h);
        }
        if let Some(c) = self.storage.corruption(gid) {
            return Err(StoreError::Corrupt(c));
        }
        let (raft, sm) = match self.open_group(gid).await {
            Ok(opened) => opened,
            Err(e) => {
                return Err(match self.storage.corruption(gid) {
                    Some(c) => {
                        self.failures.corrupt(gid, &c);
                        StoreError::Corrupt(c)
                    }
                    None => e,
                });
            }
        };
        let handle = GroupHandle { raft, sm };
        self.groups
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(gid, handle.clone());
        tokio::spawn(crate::metrics::report_metrics(
            self.metrics.clone(),
            gid,
            handle.raft.metrics(),
        ));
        self.supervise(gid, &handle);
        tracing::info!(group = gid, "raft group opened");
        Ok(handle)
    }

    /// Opens the stores and the Raft of group `gid`.
    async fn open_group(&self, gid: GroupId) -> Result<(Raft, StateMachine), StoreError> {
        let log = LogStore::open(self.storage.clone(), gid)?;
        let sm = StateMachine::open(self.storage.clone(), gid)?;
        let network = NetworkFactory::new(gid, self.id, self.peers.clone());
        let raft = Raft::new(self.id, self.raft_config.clone(), network, log, sm.clone())
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?;
        Ok((raft, sm))
    }

    /// Stops a group that no longer lives here; deletes its files unless `keep_files`.
    pub(crate) async fn close_group(&self, gid: GroupId, keep_files: bool) {
        let handle = self
            .groups
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&gid);
        if let Some(h) = handle {
            let _ = h.raft.shutdown().await;
            if !keep_files {
                self.failures.forget(gid);
            }
            if !keep_files && let Err(e) = self.storage.delete_group(gid).await {
                tracing::error!(group = gid, error = %e, "deleting a removed group's data failed");
            }
            tracing::info!(group = gid, keep_files, "raft group removed from this node");
        }
    }

    /// Leader of the meta group as (id, client address), when known.
    pub fn meta_leader(&self) -> Option<(NodeId, String)> {
        self.leader_of(&self.meta())
    }

    pub fn leader_of(&self, group: &GroupHandle) -> Option<(NodeId, String)> {
        let m = group.metrics();
        let leader = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.client_addr.clone())
            .or_else(|| {
                self.meta_state()
                    .nodes
                    .get(&leader)
                    .map(|a| a.client_addr.clone())
            })?;
        Some((leader, addr))
    }

    /// A node heard from within this window counts as alive: a follower that heard nothing
    /// for the longest election timeout would stand for election.
    pub fn alive_within(&self) -> Duration {
        Duration::from_millis(2 * self.config.election_timeout)
    }

    /// Registered nodes the meta leader heard from within [`Self::alive_within`] (all
    /// registered nodes when this node does not lead the meta group and so has no heartbeat
    /// view).
    pub fn live_nodes(&self) -> BTreeSet<NodeId> {
        self.nodes_heard_within(self.alive_within())
    }

    /// Registered nodes that may take a new database's replicas: heard from within
    /// [`PLACEMENT_GRACE`] (or the alive window when longer). A node that missed a few
    /// heartbeats on a loaded machine has not gone away; one unheard for longer gets no new
    /// replicas.
    pub fn placeable_nodes(&self) -> BTreeSet<NodeId> {
        self.nodes_heard_within(self.alive_within().max(PLACEMENT_GRACE))
    }

    fn nodes_heard_within(&self, fresh: Duration) -> BTreeSet<NodeId> {
        let state = self.meta_state();
        let m = self.meta().metrics();
        let Some(heartbeat) = m.heartbeat.as_ref() else {
            return state.nodes.keys().copied().collect();
        };
        state
            .nodes
            .keys()
            .copied()
            .filter(|id| {
                *id == self.id
                    || heartbeat
                        .get(id)
                        .cloned()
                        .flatten()
                        .is_some_and(|t| openraft::Instant::elapsed(&*t) < fresh)
            })
            .collect()
    }

    /// Leader of the meta group as (id, peer address), when known: where requests for the
    /// meta leader are forwarded.
    pub fn meta_leader_peer(&self) -> Option<(NodeId, String)> {
        let (leader, _) = self.meta_leader()?;
        Some((leader, self.peer_addr_of(leader)?))
    }

    /// Peer address of a registered node (or of a member of the meta group not yet
    /// registered): where other nodes' calls to it go.
    pub fn peer_addr_of(&self, node: NodeId) -> Option<String> {
        if node == self.id {
            return Some(self.addr.peer_addr.clone());
        }
        self.meta_state()
            .nodes
            .get(&node)
            .map(|a| a.peer_addr.clone())
            .or_else(|| {
                self.meta()
                    .metrics()
                    .membership_config
                    .membership()
                    .get_node(&node)
                    .map(|n| n.peer_addr.clone())
            })
    }

    /// Client address of a registered node.
    pub fn client_addr_of(&self, node: NodeId) -> Option<String> {
        if node == self.id {
            return Some(self.addr.client_addr.clone());
        }
        self.meta_state()
            .nodes
            .get(&node)
            .map(|a| a.client_addr.clone())
    }

    /// Ready: a member of the meta group, a leader known, applied up to what is committed, and
    /// room on the data volume (see `space`).
    pub fn is_ready(&self) -> bool {
        if self.space.is_full() || self.is_removed() {
            return false;
        }
        let m = self.meta().metrics();
        let member = m
            .membership_config
            .membership()
            .get_node(&self.id)
            .is_some();
        let applied = m.last_applied.as_ref().map(|l| l.index).unwrap_or(0);
        let committed = m.local_committed.as_ref().map(|l| l.index).unwrap_or(0);
        member
            && m.current_leader.is_some()
            && applied >= committed
            && self.meta_state().nodes.contains_key(&self.id)
    }

    /// Records that this node was removed from the cluster, as `peer` (a member, which holds
    /// the record of the removal) says. The node is cut off: it hears nothing of the cluster
    /// any more, so it stops serving clients from what it last heard (they are refused as
    /// UNAVAILABLE, reason NODE_REMOVED, and go to another node) and is never ready again.
    pub fn mark_removed(&self, peer: NodeId, why: &str) {
        if !self.removed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            tracing::error!(
                node_id = self.id,
                told_by = peer,
                why,
                "this node was removed from the cluster: it refuses client calls from now on; \
                 stop it (a node that joins again does so with an empty data directory, as a new node)"
            );
        }
    }

    /// The groups stopped on this node, with why (what its node heartbeats tell its peers, and
    /// shard status shows).
    pub fn stopped_groups(&self) -> std::collections::HashMap<GroupId, String> {
        self.failures()
            .stopped_groups()
            .into_iter()
            .map(|(gid, f)| (gid, f.reason))
            .collect()
    }

    /// The groups stopped for good on this node (corrupt or diverged): their replicas here
    /// must be replaced.
    pub fn broken_groups(&self) -> Vec<GroupId> {
        self.failures()
            .stopped_groups()
            .into_iter()
            .filter(|(_, f)| f.corrupt)
            .map(|(gid, _)| gid)
            .collect()
    }

    /// Whether this node knows it was removed from the cluster (see [`Host::mark_removed`]).
    pub fn is_removed(&self) -> bool {
        self.removed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Second half of a graceful stop: stop every Raft group (after the servers stopped).
    pub async fn stop_groups(&self) {
        for (_, group) in self.groups() {
            let _ = group.raft.shutdown().await;
        }
        tracing::info!(node_id = self.id, "node stopped");
    }
}

pub(crate) trait ElectionTimeout {
    fn election_timeout_max_duration(&self) -> Duration;
}

impl ElectionTimeout for openraft::Config {
    fn election_timeout_max_duration(&self) -> Duration {
        Duration::from_millis(self.election_timeout_max)
    }
}

/// Sends a heartbeat round from `group`'s leader and waits up to `within` for its metrics to
/// satisfy `probe` (a leader of a hibernating group has heard from nobody until it asks).
pub(crate) async fn heartbeat_until<T>(
    group: &GroupHandle,
    within: Duration,
    probe: impl Fn(&RaftMetrics) -> Option<T>,
) -> Option<T> {
    let mut rx = group.raft.metrics();
    let answered = async {
        group.raft.trigger().heartbeat().await.ok()?;
        loop {
            if let Some(found) = probe(&rx.borrow_watched()) {
                return Some(found);
            }
            rx.changed().await.ok()?;
        }
    };
    tokio::time::timeout(within, answered).await.ok().flatten()
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}
