//! The `DatabaseGroup` custom resource: a database replicated on a set of nodes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::core::Duration;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Desired state of a database of a Flotilla cluster.
// Several printer columns share a `type_`, which clippy mistakes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "flotilla.dev",
    version = "v1alpha1",
    kind = "DatabaseGroup",
    namespaced,
    cel,
    status = "DatabaseGroupStatus",
    derive = "PartialEq",
    shortname = "dbg",
    shortname = "dbgroup",
    category = "flotilla",
    doc = "A database of a Flotilla cluster, with its replication factor, shards and placement.",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.clusterRef.name",
        description = "The Cluster holding the database"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether every shard has the replicas its replication factor asks for"
    ),
    printcolumn(
        name = "RF",
        type_ = "integer",
        json_path = ".spec.replicationFactor",
        description = "Replication factor"
    ),
    printcolumn(
        name = "Shards",
        type_ = "integer",
        json_path = ".spec.shards",
        description = "Number of shards"
    ),
    printcolumn(
        name = "Members",
        type_ = "string",
        json_path = ".status.memberSummary",
        description = "Member replicas / replicas the spec asks for"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(
    "has(self.databaseName) == has(oldSelf.databaseName)"
).message("databaseName is immutable"))]
#[serde(rename_all = "camelCase")]
pub struct DatabaseGroupSpec {
    /// The Cluster (in the same namespace) that holds the database.
    #[x_kube(validation = Rule::new("self == oldSelf").message("clusterRef is immutable"))]
    pub cluster_ref: ClusterRef,

    /// Name of the database in the cluster; the object's name when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("databaseName is immutable"))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9_]{0,61}[a-z0-9])?$')").message(
        "databaseName must be 1-63 lowercase letters, digits, '-' or '_', starting and ending with a letter or digit"
    ))]
    pub database_name: Option<String>,

    /// Replicas of every shard.
    #[serde(default = "default_replication_factor")]
    #[x_kube(validation = Rule::new("self >= 1").message("replicationFactor must be at least 1"))]
    pub replication_factor: i32,

    /// Number of shards; fixed when the database is created.
    #[serde(default = "default_shards")]
    #[x_kube(validation = Rule::new("self >= 1").message("shards must be at least 1"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("shards is immutable"))]
    pub shards: i32,

    /// Which nodes may hold replicas; every node when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,

    /// How long a replica may stay in Rehab before a replacement is started elsewhere
    /// (a duration such as `15m`); the cluster's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s')").message("replaceAfter must be a positive duration"))]
    pub replace_after: Option<Duration>,

    /// What happens to the database when this object is deleted.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self in ['Retain', 'Delete']").message("deletionPolicy must be Retain or Delete"))]
    pub deletion_policy: DeletionPolicy,

    /// Take over a database of the same name that exists already (created by hand or by an
    /// earlier object). Without it such a database is left alone and the group reports
    /// `DatabaseExists`. An adopted database is never dropped by this group, whatever
    /// `deletionPolicy` says: only a database the operator created is.
    #[serde(default)]
    pub adopt: bool,

    /// Collections the database declares, with their shard keys and secondary indexes.
    /// Those the database lacks are created; an index the operator created and that is
    /// removed from here is dropped (never one made by hand).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    #[schemars(length(max = 256))]
    pub collections: Vec<CollectionSpec>,
}

/// A collection of the database.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[x_kube(validation = Rule::new(
    "!has(oldSelf.shardKey) || (has(self.shardKey) && self.shardKey == oldSelf.shardKey)"
).message("shardKey is immutable once set"))]
#[serde(rename_all = "camelCase")]
pub struct CollectionSpec {
    /// Name of the collection.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// JSON pointer (`/customerId`) whose value places each document on a shard; documents
    /// are placed by their id when unset. Fixed once the collection exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 1024))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("shardKey must be a JSON pointer such as /customerId"))]
    pub shard_key: Option<String>,

    /// Secondary indexes of the collection, each named from its paths as
    /// `flotilla index create` names them (`/customerId,/createdAt` -> `customerId_createdAt`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub indexes: Vec<IndexSpec>,
}

/// A secondary index.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IndexSpec {
    /// JSON pointers of the key: one (`["/status"]`) or several for a compound index
    /// (`["/customerId", "/createdAt"]`).
    #[schemars(length(min = 1, max = 8))]
    #[x_kube(validation = Rule::new("self.all(p, p.startsWith('/') && size(p) > 1)").message("index paths must be JSON pointers such as /status"))]
    pub paths: Vec<String>,
}

fn default_replication_factor() -> i32 {
    3
}

fn default_shards() -> i32 {
    1
}

/// Reference to a Cluster in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRef {
    /// Name of the Cluster.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Which nodes may hold the database's replicas.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Only nodes whose labels match all of these (labels of the nodes' Kubernetes nodes,
    /// such as `topology.kubernetes.io/zone`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_labels: BTreeMap<String, String>,
    /// Only the nodes run by these pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<String>,
}

/// What happens to the database when its `DatabaseGroup` is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the database and its data in the cluster.
    #[default]
    Retain,
    /// Delete the database and its data from the cluster.
    Delete,
}

/// Observed state of a database.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseGroupStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `Progressing` and `Degraded`, with reason and message.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Whether every shard has as many Members as the replication factor.
    #[serde(default)]
    pub replication_factor_met: bool,

    /// `members/wanted` replicas over all shards, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_summary: Option<String>,

    /// Whether the operator created the database (`true`) or adopted one that existed
    /// (`false`); unset until either happened. `deletionPolicy: Delete` drops only a
    /// database the operator created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by_operator: Option<bool>,

    /// Live topology of every shard.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["shard".into()]))]
    pub shards: Vec<ShardStatus>,

    /// The collections of `spec.collections` as the database has them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub collections: Vec<CollectionStatus>,

    /// Indexes the operator created (and so may drop when they leave the spec); indexes
    /// made by hand are never listed here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_indexes: Vec<ManagedIndex>,

    /// Sequence number of the last of the cluster's recorded topology events the operator
    /// has handled for this group (reporting, as a Warning Event, each replica of the
    /// database stopped for good). Unset until the first read: that read reports what the
    /// cluster still keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_sequence: Option<u64>,

    /// The cluster whose numbering `lastEventSequence` counts in: a cluster made anew under
    /// the same name numbers its events from 1 again, and is read from its first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_cluster_id: Option<String>,
}

/// A collection as the database has it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectionStatus {
    pub name: String,
    /// Whether the database declares the collection.
    #[serde(default)]
    pub exists: bool,
    /// The shard key the database has for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_key: Option<String>,
    /// The indexes of the spec that the database has, and how far each is built.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<IndexStatus>,
}

/// An index as the database has it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IndexStatus {
    pub name: String,
    pub paths: Vec<String>,
    /// `Building` until every shard has indexed its documents, then `Ready`.
    pub state: IndexState,
    /// Documents indexed so far, over all shards.
    #[serde(default)]
    pub documents: u64,
    /// `ready/all` shards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards_ready: Option<String>,
}

/// Whether an index answers queries yet.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum IndexState {
    /// Some shard is still indexing its documents.
    #[default]
    Building,
    /// Built on every shard.
    Ready,
}

/// An index the operator created.
#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct ManagedIndex {
    pub collection: String,
    pub name: String,
}

/// Live topology of one shard, named by the pods of its replicas.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardStatus {
    /// Shard number, from 0.
    pub shard: i32,
    /// Pod whose node leads the shard's Raft group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Healthy voters.
    #[serde(default)]
    pub members: Vec<String>,
    /// Learners catching up before they are promoted.
    #[serde(default)]
    pub promotables: Vec<String>,
    /// Voters that are down or far behind.
    #[serde(default)]
    pub rehab: Vec<String>,
}
