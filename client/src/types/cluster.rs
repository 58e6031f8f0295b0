//! The cluster's state as the client hands it to callers: nodes, databases, shards and their
//! replicas, topology events, node removals (see [`super`]).

use std::collections::BTreeMap;
use std::fmt;

use flotilla_proto::v1 as pb;
use serde::Serialize;

use super::{ChangeKind, ShardStatus};
use crate::error::{Error, Result};

/// A node's role in the meta (cluster) group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetaRole {
    Leader,
    Follower,
    Learner,
    /// Registered but not in the meta group's membership.
    None,
    Unknown,
}

impl From<i32> for MetaRole {
    fn from(v: i32) -> Self {
        match pb::MetaRole::try_from(v) {
            Ok(pb::MetaRole::Leader) => MetaRole::Leader,
            Ok(pb::MetaRole::Follower) => MetaRole::Follower,
            Ok(pb::MetaRole::Learner) => MetaRole::Learner,
            Ok(pb::MetaRole::None) => MetaRole::None,
            _ => MetaRole::Unknown,
        }
    }
}

/// Whether the meta leader can reach a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Unreachable,
    Unknown,
}

impl From<i32> for Health {
    fn from(v: i32) -> Self {
        match pb::Health::try_from(v) {
            Ok(pb::Health::Healthy) => Health::Healthy,
            Ok(pb::Health::Unreachable) => Health::Unreachable,
            _ => Health::Unknown,
        }
    }
}

macro_rules! display_as_serde_name {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let name = serde_json::to_value(self)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                f.write_str(&name)
            }
        }
    )*};
}
display_as_serde_name!(ChangeKind, MetaRole, Health);

/// One node of the cluster as the meta leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    pub id: u64,
    pub name: String,
    pub client_addr: String,
    pub peer_addr: String,
    pub meta_role: MetaRole,
    pub health: Health,
    /// Meta log entries behind the leader.
    pub lag: u64,
    /// Placement labels the node carries.
    pub labels: BTreeMap<String, String>,
    /// Being emptied before it leaves the cluster.
    pub draining: bool,
    /// Data replicas placed on the node.
    pub replicas: u32,
}

/// The cluster's membership and meta group state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    pub cluster_id: String,
    /// `None` when the meta group has no leader.
    pub meta_leader_id: Option<u64>,
    pub meta_term: u64,
    pub nodes: Vec<NodeStatus>,
    /// The node that answered.
    pub answered_by: u64,
    /// A requested rebalance is still moving replicas.
    pub rebalancing: bool,
    /// False while auth is off: whoever reaches a node may read, write and administer
    /// everything.
    pub auth_enabled: bool,
}

impl ClusterStatus {
    /// The node that leads the meta group, if it is known.
    pub fn meta_leader(&self) -> Option<&NodeStatus> {
        let id = self.meta_leader_id?;
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The node whose client address is `addr`.
    pub fn node_by_client_addr(&self, addr: &str) -> Option<&NodeStatus> {
        self.nodes.iter().find(|n| n.client_addr == addr)
    }
}

impl From<pb::ClusterStatusResponse> for ClusterStatus {
    fn from(r: pb::ClusterStatusResponse) -> Self {
        ClusterStatus {
            cluster_id: r.cluster_id,
            meta_leader_id: nonzero(r.meta_leader_id),
            meta_term: r.meta_term,
            nodes: r
                .nodes
                .into_iter()
                .map(|n| {
                    let info = n.node.unwrap_or_default();
                    NodeStatus {
                        id: info.id,
                        name: info.name,
                        client_addr: info.client_addr,
                        peer_addr: info.peer_addr,
                        meta_role: n.meta_role.into(),
                        health: n.health.into(),
                        lag: n.lag,
                        labels: n.labels.into_iter().collect(),
                        draining: n.draining,
                        replicas: n.replicas,
                    }
                })
                .collect(),
            answered_by: r.answered_by,
            rebalancing: r.rebalancing,
            auth_enabled: r.auth_enabled,
        }
    }
}

/// A database's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatabaseInfo {
    pub name: String,
    pub shards: u32,
    pub replication_factor: u32,
    /// How long a replica may stay in Rehab before it is replaced (`off`: never).
    pub replace_after: String,
    /// Labels a node must carry to hold the database's replicas (empty: any node).
    pub placement: BTreeMap<String, String>,
    /// Replicas move on their own to even out per-node replica counts.
    pub auto_rebalance: bool,
}

impl From<pb::DatabaseInfo> for DatabaseInfo {
    fn from(d: pb::DatabaseInfo) -> Self {
        DatabaseInfo {
            name: d.name,
            shards: d.shards,
            replication_factor: d.replication_factor,
            replace_after: d.replace_after,
            placement: d.placement.into_iter().collect(),
            auto_rebalance: d.auto_rebalance,
        }
    }
}

/// One recorded topology transition of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterEvent {
    pub sequence: u64,
    pub at_unix_ms: u64,
    pub database: String,
    pub shard: u32,
    pub node_id: u64,
    pub from_state: String,
    pub to_state: String,
    pub reason: String,
    /// Made because the replica was stopped for good on its node (a corrupt record, or
    /// content that differs from the other replicas'): it is rebuilt from the others.
    pub replica_broken: bool,
}

impl From<pb::ClusterEvent> for ClusterEvent {
    fn from(e: pb::ClusterEvent) -> Self {
        ClusterEvent {
            sequence: e.sequence,
            at_unix_ms: e.at_unix_ms,
            database: e.database,
            shard: e.shard,
            node_id: e.node_id,
            from_state: e.from_state,
            to_state: e.to_state,
            replica_broken: e.cause == pb::ClusterEventCause::ReplicaBroken as i32,
            reason: e.reason,
        }
    }
}

/// One replica's applied index and content digest (`Client::replica_digest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaDigest {
    /// The node that answered.
    pub node_id: u64,
    pub applied_index: u64,
    /// SHA-256 of the replica's content.
    pub digest: Vec<u8>,
    pub documents: u64,
    /// Indexes still being built on that replica (its digest is not comparable until none).
    pub indexes_building: u32,
}

impl ReplicaDigest {
    /// The digest in hexadecimal.
    pub fn hex(&self) -> String {
        self.digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A database and the state of each of its shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatabaseStatus {
    pub database: DatabaseInfo,
    pub shards: Vec<ShardStatus>,
}

impl DatabaseStatus {
    /// How many shards have a leader.
    pub fn shards_with_leader(&self) -> usize {
        self.shards.iter().filter(|s| s.leader_id.is_some()).count()
    }

    /// True when every shard has a leader (the database serves reads and writes).
    pub fn is_ready(&self) -> bool {
        !self.shards.is_empty()
            && self.shards.len() as u64 >= u64::from(self.database.shards)
            && self.shards_with_leader() == self.shards.len()
    }
}

impl TryFrom<pb::DatabaseStatusResponse> for DatabaseStatus {
    type Error = Error;

    fn try_from(r: pb::DatabaseStatusResponse) -> Result<Self> {
        let database = r
            .database
            .ok_or_else(|| Error::Protocol("database status without database info".into()))?;
        Ok(DatabaseStatus {
            database: database.into(),
            shards: r
                .shards
                .into_iter()
                .map(ShardStatus::try_from)
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| Error::Protocol(e.to_string()))?,
        })
    }
}

/// A Raft group whose leadership can be transferred.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Group {
    /// The meta (cluster) group.
    Meta,
    /// One shard of a database.
    Shard { database: String, shard: u32 },
}

impl Group {
    pub(crate) fn to_proto(&self) -> pb::transfer_leadership_request::Group {
        match self {
            Group::Meta => pb::transfer_leadership_request::Group::Meta(true),
            Group::Shard { database, shard } => {
                pb::transfer_leadership_request::Group::Shard(pb::ShardRef {
                    database: database.clone(),
                    shard: *shard,
                })
            }
        }
    }
}

fn nonzero(v: u64) -> Option<u64> {
    (v != 0).then_some(v)
}

/// Where the removal of a node stands, after one [`crate::Client::remove_node`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveNodeProgress {
    /// The node's replicas are being moved to other nodes; `replicas_remaining` still hold
    /// one. Call again.
    Draining { replicas_remaining: u32 },
    /// The node led the meta group and handed it to `successor`; call again to carry out the
    /// removal there.
    HandedOver { successor: u64 },
    /// The node is out of the cluster (the steps the last call took); its id is never used
    /// again.
    Removed { steps: Vec<String> },
}

impl std::fmt::Display for RemoveNodeProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoveNodeProgress::Draining { replicas_remaining } => write!(
                f,
                "draining: {replicas_remaining} replica(s) still to move off the node"
            ),
            RemoveNodeProgress::HandedOver { successor } => write!(
                f,
                "the node led the meta group and handed it to node {successor}"
            ),
            RemoveNodeProgress::Removed { .. } => write!(f, "removed from the cluster"),
        }
    }
}

impl TryFrom<pb::RemoveNodeResponse> for RemoveNodeProgress {
    type Error = Error;

    fn try_from(r: pb::RemoveNodeResponse) -> Result<Self, Error> {
        match pb::RemoveNodeProgress::try_from(r.progress) {
            Ok(pb::RemoveNodeProgress::Draining) => Ok(RemoveNodeProgress::Draining {
                replicas_remaining: r.replicas_remaining,
            }),
            Ok(pb::RemoveNodeProgress::HandedOver) => Ok(RemoveNodeProgress::HandedOver {
                successor: r.successor_id,
            }),
            Ok(pb::RemoveNodeProgress::Removed) => {
                Ok(RemoveNodeProgress::Removed { steps: r.steps })
            }
            Ok(pb::RemoveNodeProgress::Unspecified) | Err(_) => Err(Error::Protocol(format!(
                "a RemoveNode answer without a known progress ({})",
                r.progress
            ))),
        }
    }
}
