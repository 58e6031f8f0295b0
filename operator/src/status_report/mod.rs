//! `kubectl flotilla status`: a report of one cluster, built by pure functions from the
//! `Cluster`, its `DatabaseGroup`s and its pods, printed as text, JSON or YAML.

mod build;
mod text;

pub use build::report;
pub use text::render_text;

use serde::Serialize;

/// Everything `kubectl flotilla status` shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub cluster: String,
    pub namespace: String,
    /// `Healthy`, `Bootstrapping`, `Progressing`, `Degraded` or `Paused`, with the reason.
    pub phase: String,
    pub ready_nodes: i32,
    pub desired_nodes: i32,
    pub meta_leader: Option<String>,
    pub image: String,
    pub cluster_id: Option<String>,
    pub nodes: Vec<NodeRow>,
    pub database_groups: Vec<GroupReport>,
    /// Everything that looks wrong, most important first.
    pub problems: Vec<String>,
}

/// One row of the nodes table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    pub pod: String,
    pub node_id: Option<String>,
    pub role: Option<String>,
    pub state: String,
    pub ready: bool,
    /// The Kubernetes node the pod runs on.
    pub k8s_node: Option<String>,
    /// Placement labels the node carries.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// One DatabaseGroup of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupReport {
    pub name: String,
    pub database: String,
    pub replication_factor: i32,
    pub replication_factor_met: bool,
    pub shards: Vec<ShardRow>,
}

/// One shard of a DatabaseGroup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardRow {
    pub shard: i32,
    pub leader: Option<String>,
    pub members: Vec<String>,
    pub promotables: Vec<String>,
    pub rehab: Vec<String>,
}
