//! The values the client hands to callers, and their conversions from the protobuf messages.
//!
//! They carry plain Rust types (an absent leader is `None`, not `0`; enums are closed) and
//! serialize with serde, so that callers such as the `flotilla` command line can print them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use flotilla_proto::v1 as pb;
use serde::Serialize;

use crate::error::{Error, Result};
pub use flotilla_model::{IndexCheck, ReplicaMove, ReplicaState, ReplicaStatus, ShardStatus};

/// How a read is served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Sees every write acknowledged before the read started (ReadIndex through the leader).
    #[default]
    Linearizable,
    /// Served by the shard leader under its leader lease.
    Lease,
    /// Served by whichever replica receives it; may be behind.
    Stale,
}

impl Consistency {
    pub(crate) fn to_proto(self) -> pb::Consistency {
        match self {
            Consistency::Linearizable => pb::Consistency::Linearizable,
            Consistency::Lease => pb::Consistency::Lease,
            Consistency::Stale => pb::Consistency::Stale,
        }
    }
}

impl FromStr for Consistency {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "linearizable" => Ok(Consistency::Linearizable),
            "lease" => Ok(Consistency::Lease),
            "stale" => Ok(Consistency::Stale),
            other => Err(Error::InvalidArgument(format!(
                "unknown consistency {other:?} (expected linearizable, lease or stale)"
            ))),
        }
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Lease => "lease",
            Consistency::Stale => "stale",
        })
    }
}

/// A stored document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Document {
    pub collection: String,
    pub id: String,
    /// The body, JSON text.
    pub json: String,
    /// 1 on creation, +1 on each write.
    pub version: u64,
    /// Revision (shard log position) of the write that produced this version.
    pub revision: u64,
    /// The shard the document lives on.
    pub shard: u32,
}

impl Document {
    /// The body parsed as a JSON value.
    pub fn value(&self) -> std::result::Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.json)
    }
}

impl From<pb::Document> for Document {
    fn from(d: pb::Document) -> Self {
        Document {
            collection: d.collection,
            id: d.id,
            json: d.json,
            version: d.version,
            revision: d.revision,
            shard: d.shard,
        }
    }
}

/// The outcome of a put.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PutResult {
    /// The document's new version.
    pub version: u64,
    /// Revision of the write on its shard.
    pub revision: u64,
    pub shard: u32,
}

/// The outcome of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DeleteResult {
    /// False when the document did not exist.
    pub deleted: bool,
    pub revision: u64,
    /// The shard the document is on.
    pub shard: u32,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListPage {
    pub documents: Vec<Document>,
    /// Pass to the next `list` call to continue; `None` when there is nothing more.
    pub next_page_token: Option<String>,
}

/// One operation of an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    Put {
        collection: String,
        id: String,
        json: String,
        if_version: Option<u64>,
    },
    Delete {
        collection: String,
        id: String,
        if_version: Option<u64>,
    },
}

impl BatchOp {
    /// An unconditional put.
    pub fn put(
        collection: impl Into<String>,
        id: impl Into<String>,
        json: impl Into<String>,
    ) -> Self {
        BatchOp::Put {
            collection: collection.into(),
            id: id.into(),
            json: json.into(),
            if_version: None,
        }
    }

    /// An unconditional delete.
    pub fn delete(collection: impl Into<String>, id: impl Into<String>) -> Self {
        BatchOp::Delete {
            collection: collection.into(),
            id: id.into(),
            if_version: None,
        }
    }

    /// The same operation, applied only if the document's version is `version`
    /// (0 = must not exist).
    pub fn if_version(mut self, version: u64) -> Self {
        match &mut self {
            BatchOp::Put { if_version, .. } | BatchOp::Delete { if_version, .. } => {
                *if_version = Some(version)
            }
        }
        self
    }

    pub(crate) fn to_proto(&self) -> pb::BatchOp {
        let op = match self {
            BatchOp::Put {
                collection,
                id,
                json,
                if_version,
            } => pb::batch_op::Op::Put(pb::PutOp {
                collection: collection.clone(),
                id: id.clone(),
                json: json.clone(),
                if_version: *if_version,
            }),
            BatchOp::Delete {
                collection,
                id,
                if_version,
            } => pb::batch_op::Op::Delete(pb::DeleteOp {
                collection: collection.clone(),
                id: id.clone(),
                if_version: *if_version,
                shard_key: String::new(),
            }),
        };
        pb::BatchOp { op: Some(op) }
    }
}

/// The result of one operation of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BatchResult {
    /// New version for a put, 0 for a delete.
    pub version: u64,
    /// For a delete: whether the document existed.
    pub deleted: bool,
}

/// The outcome of an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchOutcome {
    /// One result per operation, in order.
    pub results: Vec<BatchResult>,
    pub revision: u64,
    pub shard: u32,
}

impl From<pb::BatchResponse> for BatchOutcome {
    fn from(r: pb::BatchResponse) -> Self {
        BatchOutcome {
            results: r
                .results
                .into_iter()
                .map(|r| BatchResult {
                    version: r.version,
                    deleted: r.deleted,
                })
                .collect(),
            revision: r.revision,
            shard: r.shard,
        }
    }
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Put,
    Delete,
}

/// One change from a watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchEvent {
    pub kind: ChangeKind,
    /// The document after the change; for a delete only collection, id, revision and shard.
    pub document: Document,
}

impl TryFrom<pb::WatchEvent> for WatchEvent {
    type Error = Error;

    fn try_from(e: pb::WatchEvent) -> Result<Self> {
        let kind = match pb::EventType::try_from(e.r#type) {
            Ok(pb::EventType::Put) => ChangeKind::Put,
            Ok(pb::EventType::Delete) => ChangeKind::Delete,
            _ => {
                return Err(Error::Protocol(format!(
                    "watch event of unknown type {}",
                    e.r#type
                )));
            }
        };
        let document = e
            .document
            .ok_or_else(|| Error::Protocol("watch event without a document".into()))?;
        Ok(WatchEvent {
            kind,
            document: document.into(),
        })
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistency_parses_case_insensitively_and_rejects_others() {
        assert_eq!("Stale".parse::<Consistency>().unwrap(), Consistency::Stale);
        assert_eq!(
            "linearizable".parse::<Consistency>().unwrap(),
            Consistency::Linearizable
        );
        assert!(matches!(
            "strong".parse::<Consistency>(),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(Consistency::Lease.to_string(), "lease");
    }

    #[test]
    fn zero_leader_ids_become_none() {
        let status = ClusterStatus::from(pb::ClusterStatusResponse {
            cluster_id: "c".into(),
            meta_leader_id: 0,
            meta_term: 3,
            nodes: vec![pb::NodeStatus {
                node: Some(pb::NodeInfo {
                    id: 7,
                    name: "n".into(),
                    client_addr: "a:1".into(),
                    peer_addr: "a:2".into(),
                }),
                meta_role: pb::MetaRole::Learner as i32,
                health: pb::Health::Unreachable as i32,
                lag: 4,
                labels: [("zone".to_string(), "a".to_string())].into(),
                draining: true,
                replicas: 2,
            }],
            answered_by: 7,
            rebalancing: true,
            auth_enabled: true,
        });
        assert_eq!(status.nodes[0].labels["zone"], "a");
        assert!(status.nodes[0].draining && status.rebalancing);
        assert_eq!(status.nodes[0].replicas, 2);
        assert_eq!(status.meta_leader_id, None);
        assert!(status.meta_leader().is_none());
        assert_eq!(status.nodes[0].meta_role, MetaRole::Learner);
        assert_eq!(status.nodes[0].health, Health::Unreachable);
        assert_eq!(status.nodes[0].meta_role.to_string(), "learner");
    }

    #[test]
    fn a_database_is_ready_when_every_shard_has_a_leader() {
        let shard = |n: u32, leader: u64| pb::ShardStatus {
            shard: n,
            leader_id: leader,
            ..Default::default()
        };
        let status = |shards| {
            DatabaseStatus::try_from(pb::DatabaseStatusResponse {
                database: Some(pb::DatabaseInfo {
                    name: "t".into(),
                    shards: 2,
                    replication_factor: 3,
                    replace_after: "15m".into(),
                    ..Default::default()
                }),
                shards,
            })
            .unwrap()
        };
        assert!(!status(vec![]).is_ready());
        assert!(!status(vec![shard(0, 1)]).is_ready());
        assert!(!status(vec![shard(0, 1), shard(1, 0)]).is_ready());
        assert!(status(vec![shard(0, 1), shard(1, 2)]).is_ready());
    }

    #[test]
    fn batch_ops_carry_their_condition() {
        let op = BatchOp::put("c", "1", "{}").if_version(0).to_proto();
        match op.op {
            Some(pb::batch_op::Op::Put(p)) => assert_eq!(p.if_version, Some(0)),
            other => panic!("unexpected {other:?}"),
        }
    }
}
