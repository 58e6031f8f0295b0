//! The `Cluster` custom resource: a set of Flotilla storage nodes.

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::core::Duration;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use super::recovery::{BootstrapSpec, ClusterBackupSpec, RecoveryStatus};

/// Client and admin gRPC port of a node.
pub const CLIENT_PORT: i32 = 7100;
/// Peer (Raft) gRPC port of a node.
pub const PEER_PORT: i32 = 7101;
/// HTTP port of a node (`/metrics`, `/healthz`, `/readyz`).
pub const HTTP_PORT: i32 = 7102;

/// Desired state of a Flotilla cluster.
// Several printer columns share a `type_`, which clippy mistakes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "flotilla.dev",
    version = "v1alpha1",
    kind = "Cluster",
    namespaced,
    cel,
    status = "ClusterStatus",
    derive = "PartialEq",
    shortname = "flc",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.readyNodes"
    ),
    category = "flotilla",
    doc = "A Flotilla cluster: the storage nodes of a Raft-replicated document database.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether every node is a caught-up member"
    ),
    printcolumn(
        name = "Nodes",
        type_ = "string",
        json_path = ".status.nodeSummary",
        description = "Ready nodes / desired nodes"
    ),
    printcolumn(
        name = "Leader",
        type_ = "string",
        json_path = ".status.leader",
        description = "Pod that leads the meta group"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Progressing\")].reason",
        description = "What the operator is doing (reason of the Progressing condition)"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why the cluster is or is not ready (reason of the Ready condition)",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(
    "!has(self.heartbeatInterval) || !has(self.electionTimeout) || duration(self.electionTimeout) > duration(self.heartbeatInterval)"
).message("electionTimeout must be longer than heartbeatInterval"))]
#[x_kube(validation = Rule::new("has(self.bootstrap) == has(oldSelf.bootstrap)").message(
    "bootstrap is immutable: it can be neither added nor removed after the Cluster is created"
))]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Number of storage nodes (pods). Lowering it starts a quorum-safe scale-down.
    #[x_kube(validation = Rule::new("self >= 1").message("replicas must be at least 1"))]
    pub replicas: i32,

    /// Container image of the storage node (`flotilla-node`).
    #[x_kube(validation = Rule::new("size(self) > 0").message("image must not be empty"))]
    pub image: String,

    /// Image pull policy of the node container.
    #[serde(default)]
    pub image_pull_policy: ImagePullPolicy,

    /// Persistent volume of every node. Its size may grow, never shrink; its storage class
    /// is fixed.
    #[serde(default)]
    #[x_kube(validation = Rule::new(
        "quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0"
    ).message("storage.size may grow, never shrink"))]
    #[x_kube(validation = Rule::new(
        "has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)"
    ).message("storage.storageClassName is immutable"))]
    pub storage: StorageSpec,

    /// Compute resources of the node container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Voters of the meta group (3 or 5); the other nodes follow it as learners.
    #[serde(default = "default_meta_voters")]
    #[x_kube(validation = Rule::new("self == 3 || self == 5").message("metaVoters must be 3 or 5"))]
    pub meta_voters: i32,

    /// Raft heartbeat interval (a duration such as `100ms`); the node's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s')").message("must be a positive duration"))]
    pub heartbeat_interval: Option<Duration>,

    /// Raft election timeout (a duration such as `1s`); the node's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s')").message("must be a positive duration"))]
    pub election_timeout: Option<Duration>,

    /// Log entries after which a Raft group snapshots; the node's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("snapshotThreshold must be at least 1"))]
    pub snapshot_threshold: Option<i64>,

    /// Bytes of documents written since a group's last snapshot that also make it snapshot
    /// (whichever of this and `snapshotThreshold` comes first); the node's default (64 MiB)
    /// when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 4096").message("snapshotLogBytes must be at least 4096"))]
    pub snapshot_log_bytes: Option<i64>,

    /// How long a voter may go unseen before its replicas are marked Rehab (a duration such
    /// as `60s`); the node's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s')").message("must be a positive duration"))]
    pub rehab_after: Option<Duration>,

    /// A Promotable replica is promoted to voter once it is fewer than this many log entries
    /// behind its leader; the node's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("promotionLag must be at least 1"))]
    pub promotion_lag: Option<i64>,

    /// A Member more than this many log entries behind its leader is marked Rehab; the
    /// node's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("rehabLag must be at least 1"))]
    pub rehab_lag: Option<i64>,

    /// How long a pod being replaced may stay Terminating on a NotReady Kubernetes Node
    /// before the operator deletes it with no grace period (a duration such as `5m`; 5m when
    /// unset). Its kubelet is gone and will never confirm the end of the pod; until the pod
    /// is gone, the StatefulSet cannot start a fresh one in its place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('30s')").message("forceDeleteAfter must be at least 30s"))]
    pub force_delete_after: Option<Duration>,

    /// Scheduling and metadata overrides of the node pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodOverrides>,

    /// The client Service.
    #[serde(default)]
    pub service: ServiceSpec,

    /// Stop every change the operator would make to this cluster.
    #[serde(default)]
    pub paused: bool,

    /// Label keys of the Kubernetes Nodes whose values each Flotilla node gets as its
    /// placement labels (those a DatabaseGroup's `placement.nodeLabels` select on): for every
    /// pod, the operator reads the Node it runs on and assigns it the values it carries
    /// under these keys. Values under these keys are the operator's to set; other labels a
    /// node carries stay as they are. Empty: the operator reads no Node and assigns nothing.
    #[serde(default = "default_placement_labels")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 63)))]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[A-Za-z0-9._/-]+$'))").message(
        "placementLabels must be label keys of letters, digits, '.', '_', '-' or '/'"
    ))]
    pub placement_labels: Vec<String>,

    /// Transport security of the nodes: TLS on the client and HTTP ports, mutual TLS on the
    /// peer port, all from one cluster CA. Off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// The NetworkPolicy the operator keeps for the nodes. None when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,

    /// Default destination and retention of the cluster's Backups and ScheduledBackups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<ClusterBackupSpec>,

    /// How the cluster starts (from backups, with `recovery`). Immutable: set only when the
    /// Cluster is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("bootstrap is immutable"))]
    pub bootstrap: Option<BootstrapSpec>,
}

/// Transport security of a cluster's nodes.
///
/// The operator makes a cluster CA (kept in the Secret `<cluster>-ca`), one node certificate
/// valid for every pod's stable DNS name and the client Service (`<cluster>-tls`, mounted
/// into every pod) and its own client certificate (`<cluster>-operator-tls`, common name
/// `root`), and renews each at two thirds of its lifetime. The nodes read their files again
/// when they change, so a renewal restarts nothing. With `issuerRef`, cert-manager issues
/// both certificates into the same Secrets instead.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Serve every port over TLS. Turning it on or off restarts the nodes (their flags
    /// change); the client and HTTP ports then speak only TLS.
    #[serde(default)]
    pub enabled: bool,

    /// A cert-manager issuer that issues the certificates instead of the operator's own CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,

    /// Lifetime of the node and operator certificates the operator issues (a duration such
    /// as `2160h`, at most a year); 90 days when unset. They are renewed at two thirds of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1h') && duration(self) <= duration('8760h')").message("certificateLifetime must be between 1h and 8760h (a year)"))]
    pub certificate_lifetime: Option<Duration>,
}

/// A cert-manager issuer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// Name of the issuer.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// `Issuer` (in the cluster's namespace) or `ClusterIssuer`; `Issuer` when unset.
    #[serde(default = "default_issuer_kind")]
    pub kind: String,
    /// API group of the issuer; `cert-manager.io` when unset.
    #[serde(default = "default_issuer_group")]
    pub group: String,
}

fn default_issuer_kind() -> String {
    "Issuer".to_owned()
}

fn default_issuer_group() -> String {
    "cert-manager.io".to_owned()
}

/// The NetworkPolicy of a cluster's nodes.
///
/// When enabled, the peer port admits only the cluster's own pods, and the client and HTTP
/// ports admit the cluster's pods, the operator's pods and the clients listed here.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Keep a NetworkPolicy for the nodes (it takes effect only where the network plugin
    /// enforces NetworkPolicies).
    #[serde(default)]
    pub enabled: bool,

    /// Who else may reach the client and HTTP ports: pods and namespaces, as a
    /// NetworkPolicy's `from` names them. Every pod of the cluster's namespace when unset;
    /// an empty list admits no one else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<Vec<NetworkPolicyPeer>>,
}

fn default_meta_voters() -> i32 {
    3
}

/// The zone and region of the machine a node runs on.
pub fn default_placement_labels() -> Vec<String> {
    vec![
        "topology.kubernetes.io/zone".to_owned(),
        "topology.kubernetes.io/region".to_owned(),
    ]
}

/// Image pull policy of the node container.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ImagePullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

/// Persistent volume of every node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each node's volume (a quantity such as `10Gi`). It may grow, never shrink.
    #[serde(default = "default_storage_size")]
    #[schemars(schema_with = "storage_size_schema")]
    pub size: Quantity,
    /// Storage class of the volumes; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// `storage.size`: a string that is a positive quantity, never null (a templated `size:`
/// that renders empty is refused by the API server instead of reaching the operator).
fn storage_size_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "default": "10Gi",
        "maxLength": 64,
        "description": "Size of each node's volume (a quantity such as `10Gi`). It may grow, never shrink.",
        "x-kubernetes-validations": [{
            "rule": "isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))",
            "message": "storage.size must be a positive quantity such as 10Gi"
        }]
    })
}

fn default_storage_size() -> Quantity {
    Quantity("10Gi".to_owned())
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

/// Scheduling and metadata overrides of the node pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// Extra labels of the node pods (the operator's own labels win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations of the node pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The client Service of a cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Service type.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Ports the Service exposes.
    #[serde(default)]
    pub ports: ServicePorts,
    /// Extra annotations of the client Service (for example for load balancers).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Service type of the client Service.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

/// Ports of the client Service.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicePorts {
    /// Client and admin gRPC port.
    #[serde(default = "default_client_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub client: i32,
    /// HTTP port (metrics, health).
    #[serde(default = "default_http_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub http: i32,
}

fn default_client_port() -> i32 {
    CLIENT_PORT
}

fn default_http_port() -> i32 {
    HTTP_PORT
}

impl Default for ServicePorts {
    fn default() -> Self {
        Self {
            client: default_client_port(),
            http: default_http_port(),
        }
    }
}

/// Observed state of a Flotilla cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `Progressing` and `Degraded`, with reason and message.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Identity of the Raft cluster, recorded once it is bootstrapped. Nodes that start
    /// while it is set always join; none may initialise a new cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,

    /// Nodes that are ready members.
    #[serde(default)]
    pub ready_nodes: i32,

    /// `ready/desired` nodes, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_summary: Option<String>,

    /// Pod that leads the meta group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,

    /// Every node of the cluster.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["pod".into()]))]
    pub nodes: Vec<NodeStatus>,

    /// A scale-down in progress. Written before any node is drained, so that the
    /// operator resumes it after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScaleDownIntent>,

    /// How far `spec.bootstrap.recovery` has come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryStatus>,
}

/// One node of a cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Pod that runs the node.
    pub pod: String,
    /// Node id, generated by the node on its first start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Role of the node in the meta group; unset while the node is not a member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<NodeRole>,
    /// Health of the node as a replica.
    pub state: NodeState,
    /// Placement labels the node carries, as the cluster reports them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Role of a node in the meta group.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum NodeRole {
    /// Votes in the meta group.
    Voter,
    /// Follows the meta group without a vote.
    Learner,
}

/// Health of a node as a replica.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum NodeState {
    /// Healthy and caught up.
    Member,
    /// Catching up before it may vote.
    Promotable,
    /// Down or far behind; keeps its vote until it returns or is replaced.
    Rehab,
    /// Having its replicas moved off before it is removed.
    Draining,
    /// Not reachable and not known to the cluster yet.
    Unknown,
}

/// A scale-down in progress.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleDownIntent {
    /// StatefulSet size when the scale-down started.
    pub from: i32,
    /// StatefulSet size once it is done.
    pub to: i32,
    /// Pods (the highest ordinals) being drained and removed.
    pub pods: Vec<String>,
    /// How far the scale-down has come.
    pub phase: ScaleDownPhase,
}

/// Phases of a scale-down.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ScaleDownPhase {
    /// Moving replicas off the leaving nodes and removing them from Raft membership.
    Draining,
    /// Shrinking the StatefulSet and deleting the leaving nodes' volumes.
    Shrinking,
}
