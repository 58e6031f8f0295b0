//! What the topology core reads: the meta state view (nodes, databases, shards, replicas and
//! their states), node health, replication progress and policy. Plain data with no clocks: every
//! instant is a `Duration` since one fixed epoch (UNIX time), so values recorded by one meta
//! leader stay comparable for the next.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::types::{GroupId, NodeId};

pub use flotilla_model::{ReplicaMove, ReplicaState};

/// One replica of a shard: where it lives, its state, and since when it has been in that state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub node: NodeId,
    pub state: ReplicaState,
    /// When the replica entered `state` (for Rehab: when it was marked Rehab).
    pub since: Duration,
}

/// One shard (one data group) of a database.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ShardView {
    pub group: GroupId,
    pub replicas: Vec<Replica>,
    pub replacement: Option<ReplicaMove>,
}

impl ShardView {
    pub fn replica(&self, node: NodeId) -> Option<&Replica> {
        self.replicas.iter().find(|r| r.node == node)
    }

    pub fn has_replica_on(&self, node: NodeId) -> bool {
        self.replica(node).is_some()
    }

    /// Voting replicas (Member and Rehab).
    pub fn voters(&self) -> impl Iterator<Item = &Replica> {
        self.replicas.iter().filter(|r| r.state.is_voter())
    }

    /// The in-flight replacement, if both of its replicas are still in the shard.
    pub fn live_replacement(&self) -> Option<ReplicaMove> {
        self.replacement
            .filter(|r| self.has_replica_on(r.old) && self.has_replica_on(r.new))
    }
}

/// A database: its shards in shard-index order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DatabaseView {
    pub shards: Vec<ShardView>,
}

/// A registered node as the meta state knows it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeView {
    /// Placement labels (e.g. `zone=a`, `disk=ssd`).
    pub labels: BTreeMap<String, String>,
    /// Marked for removal: its replicas are re-created elsewhere, then it leaves.
    pub draining: bool,
}

/// Membership of the meta group.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MetaGroupView {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
}

/// The part of the meta state the topology core decides on.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Topology {
    /// Registered nodes. A replica on a node missing here (removed) is re-created elsewhere.
    pub nodes: BTreeMap<NodeId, NodeView>,
    pub databases: BTreeMap<String, DatabaseView>,
    pub meta: MetaGroupView,
}

impl Topology {
    /// Replicas per registered node, across every database.
    pub fn replica_load(&self) -> BTreeMap<NodeId, usize> {
        let mut load: BTreeMap<NodeId, usize> = self.nodes.keys().map(|n| (*n, 0)).collect();
        for db in self.databases.values() {
            for shard in &db.shards {
                for r in &shard.replicas {
                    *load.entry(r.node).or_default() += 1;
                }
            }
        }
        load
    }
}

/// When each node was last heard from (a heartbeat or a Raft response), as seen by the meta
/// leader. A new leader should seed every registered node with its own start time so that
/// missing history is not read as a long absence.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Health {
    pub last_seen: BTreeMap<NodeId, Duration>,
}

impl Health {
    /// Records that `node` was heard from at `at`.
    pub fn saw(&mut self, node: NodeId, at: Duration) {
        let t = self.last_seen.entry(node).or_default();
        *t = (*t).max(at);
    }

    /// For a meta leader that just took over: every node without an entry counts as seen just
    /// outside the alive window, so it is not alive until heard from, while Rehab and
    /// replacement timers count from now rather than from an unknown past.
    pub fn seed_missing(
        &mut self,
        nodes: impl IntoIterator<Item = NodeId>,
        now: Duration,
        alive_within: Duration,
    ) {
        let seeded = now.saturating_sub(alive_within + Duration::from_millis(1));
        for n in nodes {
            self.last_seen.entry(n).or_insert(seeded);
        }
    }
}

/// Replication progress of one group as reported by its leader.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupProgress {
    pub leader: Option<NodeId>,
    /// The leader's last log index.
    pub last_index: u64,
    /// Per replica (voters and learners): the highest index known to be replicated to it.
    pub matched: BTreeMap<NodeId, u64>,
}

impl GroupProgress {
    /// Entries `node` is behind the leader; `None` when unknown.
    pub fn lag(&self, node: NodeId) -> Option<u64> {
        if self.leader == Some(node) {
            return Some(0);
        }
        self.matched
            .get(&node)
            .map(|m| self.last_index.saturating_sub(*m))
    }
}

/// Replication progress of every group the meta leader knows about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Progress {
    pub groups: BTreeMap<GroupId, GroupProgress>,
    /// Replicas stopped for good on their node (a corrupt record, or content that differs from
    /// the other replicas'), with why, as those nodes say, until their records are deleted
    /// there: each is replaced, and no new replica of the group goes to that node before.
    pub broken: BTreeMap<(GroupId, NodeId), String>,
}

/// How one database's topology is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabasePolicy {
    pub replication_factor: usize,
    /// How long a replica may stay in Rehab before it gets a replacement; `None` switches
    /// dynamic distribution off.
    pub replace_after: Option<Duration>,
    /// A Promotable is promoted (and a Rehab voter returns to Member) when fewer than this many
    /// entries behind the leader.
    pub promotion_lag: u64,
    /// A Member more than this many entries behind is marked Rehab. Kept at least
    /// `promotion_lag` so a replica cannot flap between the two.
    pub rehab_lag: u64,
    /// A Member not heard from for this long is marked Rehab.
    pub rehab_after: Duration,
    /// Move replicas automatically so nodes hold replica counts within one of each other.
    pub rebalance: bool,
    /// Labels a node must carry (all of them, same values) to hold this database's replicas.
    pub required_labels: BTreeMap<String, String>,
}

impl Default for DatabasePolicy {
    fn default() -> Self {
        DatabasePolicy {
            replication_factor: 3,
            replace_after: Some(Duration::from_secs(15 * 60)),
            promotion_lag: 100,
            rehab_lag: 10_000,
            rehab_after: Duration::from_secs(60),
            rebalance: false,
            required_labels: BTreeMap::new(),
        }
    }
}

/// Cluster-wide settings and the per-database policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// A node heard from within this window counts as alive.
    pub alive_within: Duration,
    /// Target voter count of the meta group (3 or 5).
    pub meta_voters: usize,
    /// A meta voter not heard from for this long is replaced by a caught-up learner.
    pub meta_replace_after: Duration,
    /// A rebalance was asked for (`cluster rebalance`): every database is rebalanced.
    pub rebalance_requested: bool,
    /// Rebalance moves in flight at once, cluster-wide (replacements of failed or draining
    /// replicas are not limited).
    pub max_rebalance_moves: usize,
    pub databases: BTreeMap<String, DatabasePolicy>,
    /// Used for a database without an entry in `databases`.
    pub default_database: DatabasePolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            alive_within: Duration::from_secs(5),
            meta_voters: 3,
            meta_replace_after: Duration::from_secs(60),
            rebalance_requested: false,
            max_rebalance_moves: 4,
            databases: BTreeMap::new(),
            default_database: DatabasePolicy::default(),
        }
    }
}

impl Policy {
    pub fn database(&self, name: &str) -> &DatabasePolicy {
        self.databases.get(name).unwrap_or(&self.default_database)
    }
}
