//! The JSON shapes of the HTTP API (their schemas go into the OpenAPI document) and their
//! conversions from and to the gRPC messages. A document body travels as JSON itself, not as
//! the string gRPC carries.

use std::collections::BTreeMap;

use flotilla_proto::v1;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;

/// How a read is served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Sees every write acknowledged before the read started (ReadIndex through the leader).
    #[default]
    Linearizable,
    /// Served by the shard leader while it holds a valid lease.
    Lease,
    /// Served by whichever replica receives it; may be behind.
    Stale,
}

impl From<Consistency> for v1::Consistency {
    fn from(c: Consistency) -> Self {
        match c {
            Consistency::Linearizable => v1::Consistency::Linearizable,
            Consistency::Lease => v1::Consistency::Lease,
            Consistency::Stale => v1::Consistency::Stale,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DropQuery {
    /// The database's name again: a drop must name its database twice.
    pub confirm: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    /// How the read is served (default `linearizable`).
    pub consistency: Option<Consistency>,
    /// In a collection with a shard key: the document's value of it, as JSON (`"c42"`, `42`;
    /// text that is not JSON is taken as a string), so that one shard is asked (else every
    /// shard is, one point lookup each).
    pub shard_key: Option<String>,
    /// A session's floor, `shard:revision,…`: read from a replica that applied at least that.
    pub at_least: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// In a collection with a shard key (required there): the document's value of it, as
    /// JSON (`"c42"`, `42`; text that is not JSON is taken as a string).
    pub shard_key: Option<String>,
}

/// A shard key value of a query parameter as the JSON text gRPC carries: JSON as it is,
/// anything else as a JSON string.
pub fn shard_key_json(value: Option<String>) -> String {
    match value {
        None => String::new(),
        Some(text) => match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(json) => json.to_string(),
            Err(_) => serde_json::Value::String(text).to_string(),
        },
    }
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only documents whose id starts with this.
    pub prefix: Option<String>,
    /// Most documents in the page (default 100, at most 10000).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<u32>,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
    /// How the read is served (default `linearizable`).
    pub consistency: Option<Consistency>,
    /// A session's floor, `shard:revision,…`: read from replicas that applied at least that.
    pub at_least: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WatchQuery {
    /// Only changes of this collection (all when absent).
    pub collection: Option<String>,
    /// Changes at or after this revision of each shard (only new changes when absent). A
    /// `Last-Event-ID` header takes precedence.
    pub from_revision: Option<u64>,
}

/// A stored document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Document {
    pub collection: String,
    pub id: String,
    /// The document's JSON body (`null` in the event of a delete).
    pub body: serde_json::Value,
    /// 1 on creation, +1 on each write; the document's `ETag` is `"<version>"`.
    pub version: u64,
    /// Revision (shard log position) of the write that produced this version.
    pub revision: u64,
    /// Shard the document lives on.
    pub shard: u32,
}

impl Document {
    pub fn from_proto(d: v1::Document) -> Result<Document, ApiError> {
        let body = if d.json.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&d.json).map_err(|e| {
                ApiError::new(
                    tonic::Code::DataLoss,
                    v1::ErrorReason::Unspecified,
                    format!("document {} holds no valid JSON: {e}", d.id),
                )
            })?
        };
        Ok(Document {
            collection: d.collection,
            id: d.id,
            body,
            version: d.version,
            revision: d.revision,
            shard: d.shard,
        })
    }
}

/// The outcome of a write of one document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PutResult {
    /// The document's new version (its `ETag`).
    pub version: u64,
    pub revision: u64,
    pub shard: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeleteResult {
    /// False when the document did not exist.
    pub deleted: bool,
    pub revision: u64,
}

/// One page of a listing, in id order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DocumentPage {
    pub documents: Vec<Document>,
    /// Pass as `page_token` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// One operation of an atomic batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum BatchOp {
    Put {
        collection: String,
        id: String,
        /// The document's JSON body.
        body: serde_json::Value,
        /// Write only over this version (0: only if the document does not exist).
        #[serde(default)]
        if_version: Option<u64>,
    },
    Delete {
        collection: String,
        id: String,
        #[serde(default)]
        if_version: Option<u64>,
        /// In a collection with a shard key (required there): the document's value of it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shard_key: Option<serde_json::Value>,
    },
}

/// An atomic batch: every operation applies or none does. All its documents live on one
/// shard (in a database of several shards, batches across shards are refused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub ops: Vec<BatchOp>,
}

impl BatchRequest {
    pub fn into_proto(self, database: String) -> v1::BatchRequest {
        let ops = self
            .ops
            .into_iter()
            .map(|op| v1::BatchOp {
                op: Some(match op {
                    BatchOp::Put {
                        collection,
                        id,
                        body,
                        if_version,
                    } => v1::batch_op::Op::Put(v1::PutOp {
                        collection,
                        id,
                        json: body.to_string(),
                        if_version,
                    }),
                    BatchOp::Delete {
                        collection,
                        id,
                        if_version,
                        shard_key,
                    } => v1::batch_op::Op::Delete(v1::DeleteOp {
                        collection,
                        id,
                        if_version,
                        shard_key: shard_key.map(|k| k.to_string()).unwrap_or_default(),
                    }),
                }),
            })
            .collect();
        v1::BatchRequest {
            database,
            ops,
            request_id: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BatchResult {
    /// New version for a put, 0 for a delete.
    pub version: u64,
    /// For a delete: whether the document existed.
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BatchResponse {
    /// One per operation, in order.
    pub results: Vec<BatchResult>,
    pub revision: u64,
    pub shard: u32,
}

impl From<v1::BatchResponse> for BatchResponse {
    fn from(r: v1::BatchResponse) -> Self {
        BatchResponse {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Put,
    Delete,
}

/// One change of a watch: the `data` of a server-sent event named after its type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WatchEvent {
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The document after the change (for a delete: its collection, id and revision).
    pub document: Document,
}

/// A database and its settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Database {
    pub name: String,
    pub shards: u32,
    pub replication_factor: u32,
    /// How long a replica may stay in Rehab before it is replaced (`off`: never).
    pub replace_after: String,
    /// Labels a node must carry to hold the database's replicas (empty: any node).
    pub placement: BTreeMap<String, String>,
    /// Replicas move on their own to keep per-node replica counts even.
    pub auto_rebalance: bool,
}

impl From<v1::DatabaseInfo> for Database {
    fn from(d: v1::DatabaseInfo) -> Self {
        Database {
            name: d.name,
            shards: d.shards,
            replication_factor: d.replication_factor,
            replace_after: d.replace_after,
            placement: d.placement.into_iter().collect(),
            auto_rebalance: d.auto_rebalance,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DatabaseList {
    pub databases: Vec<Database>,
}

/// A database to create; every setting but the name has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDatabase {
    /// 1-63 lowercase letters, digits, `-` or `_`, starting with a letter or digit.
    pub name: String,
    /// Default: min(3, eligible nodes).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 7)]
    pub replication_factor: Option<u32>,
    /// Default: 1.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 256)]
    pub shards: Option<u32>,
    /// A duration such as `30s` or `15m`, or `off` (default `15m`).
    #[serde(default)]
    pub replace_after: Option<String>,
    #[serde(default)]
    pub placement: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub auto_rebalance: Option<bool>,
}

impl CreateDatabase {
    pub fn into_proto(self) -> v1::CreateDatabaseRequest {
        v1::CreateDatabaseRequest {
            name: self.name,
            replication_factor: self.replication_factor.unwrap_or(0),
            shards: self.shards.unwrap_or(0),
            replace_after: self.replace_after.unwrap_or_default(),
            placement: self.placement.unwrap_or_default().into_iter().collect(),
            auto_rebalance: self.auto_rebalance.unwrap_or(false),
        }
    }
}

/// Settings to change; those absent stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateDatabase {
    #[serde(default)]
    #[schema(minimum = 1, maximum = 7)]
    pub replication_factor: Option<u32>,
    /// A duration such as `30s` or `15m`, or `off`.
    #[serde(default)]
    pub replace_after: Option<String>,
    /// Replaces the placement labels (an empty object: any node).
    #[serde(default)]
    pub placement: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub auto_rebalance: Option<bool>,
}

impl UpdateDatabase {
    pub fn into_proto(self, name: String) -> v1::UpdateDatabaseRequest {
        v1::UpdateDatabaseRequest {
            name,
            replication_factor: self.replication_factor,
            replace_after: self.replace_after,
            placement: self.placement.map(|labels| v1::Placement {
                labels: labels.into_iter().collect(),
            }),
            auto_rebalance: self.auto_rebalance,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaState {
    /// A healthy voter.
    Member,
    /// A learner catching up from its mentor.
    Promotable,
    /// A voter that is down or far behind.
    Rehab,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Replica {
    pub node_id: u64,
    pub client_addr: String,
    pub state: ReplicaState,
    /// Log entries behind the shard leader.
    pub lag: u64,
    pub matched_index: u64,
    pub snapshot_bytes_sent: u64,
    /// Why this replica's group is stopped on its node (a corrupt record, a storage failure);
    /// absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Stopped for good (a corrupt record, or content that differs from the other replicas'):
    /// the replica is replaced.
    #[serde(default)]
    pub broken: bool,
}

/// A replacement in flight: the replica on `new_node_id` takes the place of `old_node_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaMove {
    pub old_node_id: u64,
    pub new_node_id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Shard {
    pub shard: u32,
    pub group_id: u64,
    /// Absent while the shard has no leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_id: Option<u64>,
    pub term: u64,
    pub commit_index: u64,
    pub replicas: Vec<Replica>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<ReplicaMove>,
}

/// A database with the live state of each of its shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DatabaseStatus {
    pub database: Database,
    pub shards: Vec<Shard>,
}

impl DatabaseStatus {
    pub fn from_proto(r: v1::DatabaseStatusResponse) -> Result<DatabaseStatus, ApiError> {
        let database = r
            .database
            .ok_or_else(|| missing("DatabaseStatusResponse.database"))?
            .into();
        let shards = r
            .shards
            .into_iter()
            .map(|s| Shard {
                shard: s.shard,
                group_id: s.group_id,
                leader_id: (s.leader_id != 0).then_some(s.leader_id),
                term: s.term,
                commit_index: s.commit_index,
                replicas: s
                    .replicas
                    .into_iter()
                    .map(|r| Replica {
                        node_id: r.node_id,
                        client_addr: r.client_addr,
                        state: match v1::ReplicaState::try_from(r.state) {
                            Ok(v1::ReplicaState::Member) => ReplicaState::Member,
                            Ok(v1::ReplicaState::Promotable) => ReplicaState::Promotable,
                            Ok(v1::ReplicaState::Rehab) => ReplicaState::Rehab,
                            _ => ReplicaState::Unknown,
                        },
                        lag: r.lag,
                        matched_index: r.matched_index,
                        snapshot_bytes_sent: r.snapshot_bytes_sent,
                        stopped: (!r.stopped.is_empty()).then_some(r.stopped),
                        broken: r.broken,
                    })
                    .collect(),
                replacement: s.replacement.map(|m| ReplicaMove {
                    old_node_id: m.old_node_id,
                    new_node_id: m.new_node_id,
                }),
            })
            .collect();
        Ok(DatabaseStatus { database, shards })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MetaRole {
    Leader,
    Follower,
    Learner,
    /// Registered but not (or no longer) in the meta group's membership.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Healthy,
    Unreachable,
    Unknown,
}

/// A node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub client_addr: String,
    pub peer_addr: String,
    pub meta_role: MetaRole,
    pub health: Health,
    /// Meta log entries behind the leader.
    pub lag: u64,
    pub labels: BTreeMap<String, String>,
    /// Being emptied before it leaves the cluster.
    pub draining: bool,
    /// Data replicas placed on the node.
    pub replicas: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClusterStatus {
    pub cluster_id: String,
    /// Absent while the meta group has no leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_leader_id: Option<u64>,
    pub meta_term: u64,
    /// The node that answered.
    pub answered_by: u64,
    /// A rebalance is moving replicas.
    pub rebalancing: bool,
    /// False while auth is off: whoever reaches a node may read, write and administer
    /// everything.
    pub auth_enabled: bool,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberList {
    pub members: Vec<Member>,
}

impl From<v1::ClusterStatusResponse> for ClusterStatus {
    fn from(r: v1::ClusterStatusResponse) -> Self {
        ClusterStatus {
            cluster_id: r.cluster_id,
            meta_leader_id: (r.meta_leader_id != 0).then_some(r.meta_leader_id),
            meta_term: r.meta_term,
            answered_by: r.answered_by,
            rebalancing: r.rebalancing,
            auth_enabled: r.auth_enabled,
            members: r.nodes.into_iter().map(member).collect(),
        }
    }
}

fn member(n: v1::NodeStatus) -> Member {
    let node = n.node.unwrap_or_default();
    Member {
        id: node.id,
        name: node.name,
        client_addr: node.client_addr,
        peer_addr: node.peer_addr,
        meta_role: match v1::MetaRole::try_from(n.meta_role) {
            Ok(v1::MetaRole::Leader) => MetaRole::Leader,
            Ok(v1::MetaRole::Follower) => MetaRole::Follower,
            Ok(v1::MetaRole::Learner) => MetaRole::Learner,
            _ => MetaRole::None,
        },
        health: match v1::Health::try_from(n.health) {
            Ok(v1::Health::Healthy) => Health::Healthy,
            Ok(v1::Health::Unreachable) => Health::Unreachable,
            _ => Health::Unknown,
        },
        lag: n.lag,
        labels: n.labels.into_iter().collect(),
        draining: n.draining,
        replicas: n.replicas,
    }
}

/// A field every answer of the node carries was absent.
fn missing(field: &str) -> ApiError {
    ApiError::new(
        tonic::Code::Internal,
        v1::ErrorReason::Unspecified,
        format!("the node's answer lacks {field}"),
    )
}
