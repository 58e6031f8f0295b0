//! The node's Raft groups: opening them over the shared storage and network, bootstrapping or
//! joining the cluster, and following the meta state so that this node hosts exactly the data
//! groups placed on it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::{ChangeMembers, ServerState};
use tokio::sync::{Mutex, watch};

use crate::command::{Command, MetaCommand, MetaOutcome, Response};
use crate::config::{InitialClusterState, NodeConfig};
use crate::consensus::{RaftMetrics, TypeConfig};
use crate::error::{NodeError, NodeResult};
use crate::hibernation::beats::Beats;
use crate::meta::MetaState;
use crate::metrics::{Metrics, group_labels};
use crate::network::{NetworkFactory, Peers};
use crate::store::{LogStore, StateMachine, Storage, StoreError};
use crate::types::{GroupId, META_GROUP, NodeAddr, NodeId};

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadConsistency {
    Linearizable,
    Lease,
    Stale,
}

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
    raft_config: Arc<openraft::Config>,
    groups: RwLock<HashMap<GroupId, GroupHandle>>,
    opening: Mutex<()>,
    /// Flips to true when the node starts stopping.
    stopping: watch::Sender<bool>,
    /// Connections to other nodes' client ports (forwarding, status, membership changes).
    pub fwd: crate::grpc::forward::Forwarder,
    /// Held by each observer tick and by replica changes made by hand, so that one never
    /// decides on a state the other is half way through changing.
    pub topology_lock: tokio::sync::Mutex<()>,
    /// Node heartbeats heard from peers, and the groups this node leads (see `hibernation`).
    beats: Arc<Beats>,
}

impl Host {
    /// Opens storage and the meta group, then bootstraps or joins as configured.
    pub async fn start(config: NodeConfig) -> Result<Arc<Host>, StartError> {
        config.validate().map_err(StartError::Config)?;
        let raft_config = Arc::new(config.raft_config().map_err(StartError::Config)?);
        let metrics = Arc::new(Metrics::new());
        let storage = Storage::open(&config.data_dir, metrics.commit_seconds.clone())?;
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
            peers: Arc::new(Peers::default()),
            raft_config,
            groups: RwLock::new(HashMap::new()),
            opening: Mutex::new(()),
            stopping,
            fwd: crate::grpc::forward::Forwarder::default(),
            topology_lock: tokio::sync::Mutex::new(()),
            beats: Arc::new(Beats::default()),
        });
        tracing::info!(node_id = host.id, name = %host.addr.name, fresh = storage.is_fresh(), "node starting");
        let meta = host.ensure_group(META_GROUP).await?;
        let retired = host.meta_state();
        for gid in storage.stored_groups()? {
            // A softly removed replica keeps its files but is not served.
            if gid != META_GROUP && !retired.is_retired(gid, host.id) {
                host.ensure_group(gid).await?;
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

    /// Opens group `gid` if it is not open yet.
    pub async fn ensure_group(self: &Arc<Self>, gid: GroupId) -> Result<GroupHandle, StoreError> {
        if let Some(h) = self.group(gid) {
            return Ok(h);
        }
        let _guard = self.opening.lock().await;
        if let Some(h) = self.group(gid) {
            return Ok(h);
        }
        let log = LogStore::open(self.storage.clone(), gid)?;
        let sm = StateMachine::open(self.storage.clone(), gid)?;
        let network = NetworkFactory::new(gid, self.id, self.peers.clone());
        let raft = Raft::new(self.id, self.raft_config.clone(), network, log, sm.clone())
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?;
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
        tracing::info!(group = gid, "raft group opened");
        Ok(handle)
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

    /// Registered nodes the meta leader heard from recently (all registered nodes when this node
    /// does not lead the meta group and so has no heartbeat view).
    /// A node heard from within this window counts as alive: a follower that heard nothing
    /// for the longest election timeout would stand for election.
    pub fn alive_within(&self) -> Duration {
        Duration::from_millis(2 * self.config.election_timeout)
    }

    pub fn live_nodes(&self) -> BTreeSet<NodeId> {
        let state = self.meta_state();
        let m = self.meta().metrics();
        let Some(heartbeat) = m.heartbeat.as_ref() else {
            return state.nodes.keys().copied().collect();
        };
        let fresh = self.alive_within();
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

    /// Proposes a meta command; fails with `NotLeader` when this node does not lead the meta group.
    pub async fn propose_meta(&self, cmd: MetaCommand) -> NodeResult<MetaOutcome> {
        let meta = self.meta();
        match self.write(&meta, META_GROUP, Command::Meta(cmd)).await? {
            (Response::Meta(Ok(outcome)), _) => Ok(outcome),
            (Response::Meta(Err(msg)), _) => Err(NodeError::FailedPrecondition(msg)),
            (other, _) => Err(NodeError::Internal(format!(
                "unexpected meta response {other:?}"
            ))),
        }
    }

    /// Proposes `cmd` to a group led here; returns the response and the entry's log index.
    pub async fn write(
        &self,
        group: &GroupHandle,
        gid: GroupId,
        cmd: Command,
    ) -> NodeResult<(Response, u64)> {
        // While this node hands its leaderships over, new writes are not proposed here: they
        // wait for the successor and go to it (they were never proposed, so that is safe).
        if self.is_stopping() && group.is_leader() {
            let mut rx = group.raft.metrics();
            let me = self.id;
            let moved = async {
                loop {
                    let leader = rx.borrow_watched().current_leader;
                    if leader.is_some() && leader != Some(me) {
                        return;
                    }
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            };
            let _ =
                tokio::time::timeout(2 * self.raft_config.election_timeout_max_duration(), moved)
                    .await;
            return Err(NodeError::NotLeader {
                leader: self.leader_of(group).filter(|(id, _)| *id != me),
            });
        }
        // Only a write that was never proposed may be sent elsewhere: decide before proposing.
        self.check_leading(group).await?;
        let started = std::time::Instant::now();
        let fut = group.raft.client_write(cmd);
        let result = tokio::time::timeout(self.config.request_timeout, fut)
            .await
            .map_err(|_| NodeError::DeadlineExceeded("write not committed in time".into()))?;
        match result {
            Ok(resp) => {
                self.metrics
                    .proposal_seconds
                    .get_or_create(&group_labels(gid))
                    .observe(started.elapsed().as_secs_f64());
                Ok((resp.data, resp.log_id.index))
            }
            // Proposed while leading, then the leadership moved: the entry may still commit.
            Err(e) => match self.map_write_error(e) {
                NodeError::NotLeader { .. } => Err(NodeError::OutcomeUnknown(
                    "leadership changed while the write was in flight".into(),
                )),
                other => Err(other),
            },
        }
    }

    /// `NotLeader` unless this node leads `group`; `Unavailable` unless it holds a leader lease
    /// (heard from a quorum lately), which openraft requires of every write. An isolated
    /// leader refuses at once instead of letting requests wait for a quorum that is not there.
    /// A leader whose group hibernates, or that has been quiet for a while, hears from nobody
    /// until asked: it sends a heartbeat round and waits up to one election timeout for it.
    pub async fn check_leading(&self, group: &GroupHandle) -> NodeResult<()> {
        let m = group.metrics();
        if m.state != ServerState::Leader {
            return Err(NodeError::NotLeader {
                leader: self.leader_of(group),
            });
        }
        if m.membership_config.membership().voter_ids().count() <= 1 {
            return Ok(());
        }
        let timeout = Duration::from_millis(self.config.election_timeout);
        // The lease lasts the longest election timeout (twice `timeout`); renew it at half.
        let acked_within = |m: &RaftMetrics, within: Duration| match m.last_quorum_acked.as_ref() {
            Some(t) => openraft::Instant::elapsed(&**t) < within,
            // Just elected: the votes granted are its acknowledgement.
            None => true,
        };
        if acked_within(&m, timeout) {
            return Ok(());
        }
        let unavailable = || {
            NodeError::Unavailable(
                "this node leads the group but has not heard from a quorum recently".into(),
            )
        };
        let gid = group.sm.state().gid;
        // Heartbeats kept going out and nobody answered for a whole lease: cut off.
        if !self.beats.is_asleep(gid) && !acked_within(&m, 2 * timeout) {
            return Err(unavailable());
        }
        self.beats.wake(gid);
        group.raft.runtime_config().tick(true);
        heartbeat_until(group, timeout, |m| acked_within(m, timeout).then_some(()))
            .await
            .ok_or_else(unavailable)
    }

    pub fn map_write_error(
        &self,
        e: openraft::error::RaftError<
            crate::consensus::TypeConfig,
            openraft::error::ClientWriteError<crate::consensus::TypeConfig>,
        >,
    ) -> NodeError {
        use openraft::error::{ClientWriteError, RaftError};
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => NodeError::NotLeader {
                leader: f
                    .leader_id
                    .and_then(|id| f.leader_node.map(|n| (id, n.client_addr))),
            },
            RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
                use openraft::error::ChangeMembershipError;
                match c {
                    // Another change is still committing: worth retrying shortly.
                    ChangeMembershipError::InProgress(p) => NodeError::Unavailable(p.to_string()),
                    other => NodeError::FailedPrecondition(other.to_string()),
                }
            }
            RaftError::APIError(other) => NodeError::Unavailable(other.to_string()),
            RaftError::Fatal(f) => NodeError::Unavailable(format!("raft group stopped: {f}")),
        }
    }

    /// Waits until a read on this replica of `group` may be served at `consistency`.
    pub async fn read_barrier(
        &self,
        group: &GroupHandle,
        consistency: ReadConsistency,
    ) -> NodeResult<()> {
        use openraft::ReadPolicy;
        use openraft::error::{LinearizableReadError, RaftError};
        let policy = match consistency {
            ReadConsistency::Stale => return Ok(()),
            ReadConsistency::Lease => ReadPolicy::LeaseRead,
            ReadConsistency::Linearizable => ReadPolicy::ReadIndex,
        };
        self.check_leading(group).await?;
        let fut = group.raft.ensure_linearizable(policy);
        match tokio::time::timeout(self.config.request_timeout, fut).await {
            Err(_) => Err(NodeError::DeadlineExceeded(
                "read index not confirmed in time".into(),
            )),
            Ok(Ok(read)) => {
                // Serve from storage only once it shows everything up to the read index.
                let state = group.sm.state();
                if state.applied_index() < read.index() {
                    let mut rx = state.subscribe();
                    let wait = rx.wait_for(|applied| *applied >= read.index());
                    tokio::time::timeout(self.config.request_timeout, wait)
                        .await
                        .map_err(|_| {
                            NodeError::DeadlineExceeded(
                                "state machine did not catch up in time".into(),
                            )
                        })?
                        .map_err(|_| NodeError::Unavailable("raft group stopped".into()))?;
                }
                Ok(())
            }
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f)))) => {
                Err(NodeError::NotLeader {
                    leader: f
                        .leader_id
                        .and_then(|id| f.leader_node.map(|n| (id, n.client_addr))),
                })
            }
            Ok(Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(q)))) => {
                Err(NodeError::Unavailable(format!("no quorum: {q}")))
            }
            Ok(Err(RaftError::Fatal(f))) => {
                Err(NodeError::Unavailable(format!("raft group stopped: {f}")))
            }
        }
    }

    /// Adds `id` to the meta group as a learner (if needed) and registers it.
    pub async fn admit_node(
        &self,
        id: NodeId,
        addr: NodeAddr,
        labels: crate::labels::Labels,
    ) -> NodeResult<String> {
        let state = self.meta_state();
        if state.removed.contains(&id) {
            return Err(NodeError::FailedPrecondition(format!(
                "node {id} was removed from this cluster; start it with an empty data directory to join as a new node"
            )));
        }
        let meta = self.meta();
        if !meta.is_leader() {
            return Err(NodeError::NotLeader {
                leader: self.meta_leader(),
            });
        }
        let m = meta.metrics();
        let known = m.membership_config.membership().get_node(&id).cloned();
        if known.as_ref() != Some(&addr) {
            let fut = meta.raft.add_learner(id, addr.clone(), false);
            tokio::time::timeout(self.config.request_timeout, fut)
                .await
                .map_err(|_| NodeError::DeadlineExceeded("adding learner".into()))?
                .map_err(|e| self.map_write_error(e))?;
        }
        self.propose_meta(MetaCommand::RegisterNode { id, addr, labels })
            .await?;
        Ok(self.meta_state().cluster_id.clone().unwrap_or_default())
    }

    /// Removes a node from the meta group and the registry (it must hold no data replicas).
    pub async fn remove_node(&self, id: NodeId) -> NodeResult<Vec<String>> {
        let meta = self.meta();
        if !meta.is_leader() {
            return Err(NodeError::NotLeader {
                leader: self.meta_leader(),
            });
        }
        let state = self.meta_state();
        let membership = meta.metrics().membership_config.membership().clone();
        let in_membership = membership.get_node(&id).is_some();
        if state.removed.contains(&id) && !in_membership {
            return Ok(vec![format!("node {id} has left the cluster")]);
        }
        if !state.nodes.contains_key(&id) && !in_membership {
            return Err(NodeError::NotFound(format!(
                "node {id} is not a member of this cluster"
            )));
        }
        let hosted = state.groups_on(id);
        if !hosted.is_empty() {
            // Two phases: first the replicas move (the observer re-creates each elsewhere, then
            // removes this one), then the node leaves. Refuse when nowhere else can hold them.
            for (gid, shard) in hosted.iter().filter(|_| !state.draining.contains(&id)) {
                let elsewhere = state.nodes.keys().any(|n| {
                    *n != id && !shard.replicas.contains(n) && !state.draining.contains(n)
                });
                if !elsewhere {
                    let name = state
                        .shard_by_group(*gid)
                        .map(|(d, i)| format!("{} shard {i}", d.name))
                        .unwrap_or_else(|| format!("group {gid}"));
                    return Err(NodeError::FailedPrecondition(format!(
                        "the remaining nodes cannot hold the replicas of {name} (on nodes {:?}; {} nodes in the cluster): add a node or lower its replication factor first",
                        shard.replicas,
                        state.nodes.len()
                    )));
                }
            }
            if !state.draining.contains(&id) {
                self.propose_meta(MetaCommand::DrainNode { id }).await?;
            }
            return Err(NodeError::Unavailable(format!(
                "draining node {id}: {} replica(s) still to move off it",
                hosted.len()
            )));
        }
        let mut steps = Vec::new();
        if id == self.id {
            // The leaving node leads the meta group: hand that over, then the new leader
            // carries out the removal when the request is retried.
            let fresh = self.alive_within();
            let successor = best_successor(&meta.metrics(), self.id, fresh).ok_or_else(|| {
                NodeError::FailedPrecondition("no other voter can take over the meta group".into())
            })?;
            self.transfer_leadership(&meta, successor).await?;
            return Err(NodeError::Unavailable(format!(
                "node {id} led the meta group and handed it to node {successor}; retry the removal"
            )));
        }
        if in_membership && state.nodes.contains_key(&id) && !state.draining.contains(&id) {
            // Marked as leaving first, so that it is not added back as a learner meanwhile.
            self.propose_meta(MetaCommand::DrainNode { id }).await?;
        }
        if in_membership {
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            let change = if voters.contains(&id) {
                if voters.len() <= 1 {
                    return Err(NodeError::FailedPrecondition(
                        "cannot remove the last voter".into(),
                    ));
                }
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([id]))
            };
            let fut = meta.raft.change_membership(change, false);
            tokio::time::timeout(self.config.request_timeout, fut)
                .await
                .map_err(|_| NodeError::DeadlineExceeded("membership change".into()))?
                .map_err(|e| self.map_write_error(e))?;
            if voters.contains(&id) {
                // Leave it out of the voters and then out of the group.
                let fut = meta
                    .raft
                    .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false);
                let _ = tokio::time::timeout(self.config.request_timeout, fut).await;
            }
            steps.push(format!("removed node {id} from the meta group"));
        }
        self.propose_meta(MetaCommand::RemoveNode { id }).await?;
        steps.push(format!(
            "node {id} removed from the registry; its id will not be reused"
        ));
        Ok(steps)
    }

    /// Transfers the leadership of a group led here to `to`, waiting until `to` leads.
    pub async fn transfer_leadership(&self, group: &GroupHandle, to: NodeId) -> NodeResult<NodeId> {
        let m = group.metrics();
        if m.current_leader == Some(to) {
            return Ok(to);
        }
        if m.state != ServerState::Leader {
            return Err(NodeError::NotLeader {
                leader: self.leader_of(group),
            });
        }
        if !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == to)
        {
            return Err(NodeError::FailedPrecondition(format!(
                "node {to} is not a voter of this group"
            )));
        }
        group
            .raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| NodeError::Unavailable(e.to_string()))?;
        let mut rx = group.raft.metrics();
        let wait = async {
            loop {
                if rx.borrow_watched().current_leader == Some(to) {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(
            Duration::from_secs(5) + self.raft_config.election_timeout_max_duration(),
            wait,
        )
        .await
        .map_err(|_| {
            NodeError::Unavailable(format!("node {to} did not take over leadership in time"))
        })?;
        Ok(to)
    }

    /// Ready: a member of the meta group, a leader known, and applied up to what is committed.
    pub fn is_ready(&self) -> bool {
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

    /// First half of a graceful stop: hand the leadership of every group led here to a
    /// caught-up voter. Bounded by the configured shutdown timeout.
    pub async fn hand_over_leadership(&self) {
        self.stopping.send_replace(true);
        let handoff = async {
            let mut tasks = Vec::new();
            for (gid, group) in self.groups() {
                let m = group.metrics();
                if m.state != ServerState::Leader {
                    continue;
                }
                tasks.push(async move {
                    let Some(target) = self.successor(&group).await else {
                        return;
                    };
                    match self.transfer_leadership(&group, target).await {
                        Ok(_) => tracing::info!(group = gid, to = target, "leadership handed over"),
                        Err(e) => tracing::warn!(group = gid, to = target, error = %e, "leadership handover failed"),
                    }
                });
            }
            futures::future::join_all(tasks).await;
        };
        if tokio::time::timeout(self.config.shutdown_timeout, handoff)
            .await
            .is_err()
        {
            tracing::warn!("leadership handover timed out");
        }
    }

    /// The caught-up voter to hand `group`'s leadership to. A hibernating group has heard
    /// from nobody lately: it sends a heartbeat round first and waits up to one election
    /// timeout for the answers.
    async fn successor(&self, group: &GroupHandle) -> Option<NodeId> {
        let fresh = Duration::from_millis(self.config.election_timeout);
        if let Some(target) = best_successor(&group.metrics(), self.id, fresh) {
            return Some(target);
        }
        heartbeat_until(group, fresh, |m| best_successor(m, self.id, fresh)).await
    }

    /// Second half of a graceful stop: stop every Raft group (after the servers stopped).
    pub async fn stop_groups(&self) {
        for (_, group) in self.groups() {
            let _ = group.raft.shutdown().await;
        }
        tracing::info!(node_id = self.id, "node stopped");
    }
}

trait ElectionTimeout {
    fn election_timeout_max_duration(&self) -> Duration;
}

impl ElectionTimeout for openraft::Config {
    fn election_timeout_max_duration(&self) -> Duration {
        Duration::from_millis(self.election_timeout_max)
    }
}

/// Sends a heartbeat round from `group`'s leader and waits up to `within` for its metrics to
/// satisfy `probe` (a leader of a hibernating group has heard from nobody until it asks).
async fn heartbeat_until<T>(
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

/// The live voter (not `me`) with the most replicated log, when this node leads. A voter
/// counts as live when it acknowledged the leader within `fresh`.
pub fn best_successor(m: &RaftMetrics, me: NodeId, fresh: Duration) -> Option<NodeId> {
    let replication = m.replication.as_ref()?;
    let heartbeat = m.heartbeat.as_ref()?;
    m.membership_config
        .membership()
        .voter_ids()
        .filter(|v| *v != me)
        .filter(|v| {
            heartbeat
                .get(v)
                .cloned()
                .flatten()
                .is_some_and(|t| openraft::Instant::elapsed(&*t) < fresh)
        })
        .max_by_key(|v| replication.get(v).cloned().flatten().map(|l| l.index))
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("raft: {0}")]
    Raft(String),
}
