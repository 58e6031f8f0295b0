//! The values the client hands to callers, and their conversions from the protobuf messages.
//!
//! They carry plain Rust types (an absent leader is `None`, not `0`; enums are closed) and
//! serialize with serde, so that callers such as the `flotilla` command line can print them.

use std::fmt;
use std::str::FromStr;

use flotilla_proto::v1 as pb;
use serde::Serialize;

use crate::error::{Error, Result};

mod cluster;

pub use cluster::{
    ClusterEvent, ClusterStatus, DatabaseInfo, DatabaseStatus, Group, Health, MetaRole, NodeStatus,
    RemoveNodeProgress, ReplicaDigest,
};
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
