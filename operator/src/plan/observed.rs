//! What the controller observed about a cluster: its Kubernetes objects and, through
//! the node admin API, its Raft membership. Plain data, filled in by the controller.

use crate::crd::{NodeRole, NodeState};
use std::collections::BTreeMap;

/// Labels by key.
pub type Labels = BTreeMap<String, String>;

/// Everything the planner looks at besides the `Cluster` itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// The cluster's StatefulSet, if it exists.
    pub statefulset: Option<ObservedStatefulSet>,
    /// The cluster's pods.
    pub pods: Vec<ObservedPod>,
    /// Names of the cluster's PVCs, except those being deleted.
    pub pvcs: Vec<String>,
    /// Names of the cluster's PVCs that are being deleted (held while a pod uses them).
    pub pvcs_terminating: Vec<String>,
    /// The cluster id each PVC carries (annotation `flotilla.dev/cluster-id`), by name.
    pub pvc_cluster_ids: BTreeMap<String, String>,
    /// The storage each PVC requests (`spec.resources.requests.storage`), by name.
    pub volume_requests: BTreeMap<String, String>,
    /// The storage each PVC has (`status.capacity.storage`), by name.
    pub volume_capacities: BTreeMap<String, String>,
    /// `initial-cluster-state` in the live ConfigMap (`new` or `existing`), if it exists.
    pub initial_cluster_state: Option<String>,
    /// Raft membership as reported by the cluster; `None` when no node could be asked.
    pub membership: Option<Membership>,
    /// Replication factors of the DatabaseGroups placed on this cluster.
    pub replication_needs: Vec<ReplicationNeed>,
    /// Labels of the Kubernetes Nodes the pods run on.
    pub kube_nodes: KubeNodes,
}

/// What the controller learnt of the Kubernetes Nodes the cluster's pods run on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum KubeNodes {
    /// Not read: no placement label is asked for, or there was nothing to assign them to.
    #[default]
    Unread,
    /// The operator may not read Nodes (RBAC).
    Forbidden,
    /// Labels of each Node read, by Node name; a Node that does not exist is absent.
    Read(BTreeMap<String, Labels>),
}

/// The parts of the StatefulSet the planner needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedStatefulSet {
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.updateRevision`: the revision every pod should run.
    pub update_revision: Option<String>,
    /// The cluster id it carries (annotation `flotilla.dev/cluster-id`).
    pub cluster_id: Option<String>,
    /// The storage request of its claim template.
    pub volume_size: Option<String>,
    /// It is being deleted (its pods orphaned, when its volumes grew).
    pub terminating: bool,
}

/// The parts of a pod the planner needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedPod {
    pub name: String,
    pub ordinal: i32,
    /// The `controller-revision-hash` label: the template revision the pod runs.
    pub revision: Option<String>,
    /// The pod's Ready condition.
    pub ready: bool,
    /// The pod has a deletion timestamp.
    pub terminating: bool,
    /// An administrator marked the pod's node as lost for good
    /// (annotation `flotilla.dev/unrecoverable: "true"`).
    pub unrecoverable: bool,
    /// An administrator asked for the node's leaderships to move elsewhere
    /// (annotation `flotilla.dev/handOverLeadership`, set by `kubectl flotilla
    /// transfer-leadership`).
    pub hand_over: bool,
    /// The Kubernetes Node the pod is scheduled on (`spec.nodeName`).
    pub kube_node: Option<String>,
    /// How long the pod has been terminating, when it is.
    pub terminating_for: Option<std::time::Duration>,
    /// Whether the Kubernetes Node of a terminating pod is Ready; `None` when unknown (not
    /// terminating, not read, or not readable).
    pub kube_node_ready: Option<bool>,
}

/// Raft membership of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// Identity of the Raft cluster.
    pub cluster_id: String,
    /// Every node the cluster knows.
    pub nodes: Vec<MemberNode>,
    /// Every Raft group: the meta group and one per shard.
    pub groups: Vec<RaftGroup>,
    /// Every database the cluster holds, with its shard count.
    pub databases: BTreeMap<String, u32>,
}

/// A node known to the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberNode {
    pub node_id: String,
    /// The pod the node runs in (from its advertised address).
    pub pod: String,
    /// Role in the meta group.
    pub role: NodeRole,
    /// Health as a replica.
    pub state: NodeState,
    /// Data replicas (shard replicas) the node holds.
    pub data_replicas: u32,
    /// Placement labels the node carries: those it was started with, overridden by those
    /// assigned through the admin API.
    pub labels: Labels,
}

/// One Raft group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftGroup {
    /// `meta`, or `<database>/<shard>`.
    pub id: String,
    /// Node id of the leader, if there is one.
    pub leader: Option<String>,
    /// Node ids of the voters.
    pub voters: Vec<String>,
    /// Node ids of the voters whose log is caught up with the leader's.
    pub caught_up: Vec<String>,
}

/// Replication factor a DatabaseGroup needs from the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationNeed {
    pub database_group: String,
    pub replication_factor: i32,
}

impl Observed {
    /// The pod named `name`.
    pub fn pod(&self, name: &str) -> Option<&ObservedPod> {
        self.pods.iter().find(|p| p.name == name)
    }

    /// The member node running in `pod`.
    pub fn member_in_pod(&self, pod: &str) -> Option<&MemberNode> {
        self.membership
            .as_ref()
            .and_then(|m| m.nodes.iter().find(|n| n.pod == pod))
    }

    /// Number of Raft groups `node_id` leads.
    pub fn leaderships(&self, node_id: &str) -> usize {
        self.membership.as_ref().map_or(0, |m| {
            m.groups
                .iter()
                .filter(|g| g.leader.as_deref() == Some(node_id))
                .count()
        })
    }

    /// The pod of the meta group's leader.
    pub fn meta_leader_pod(&self) -> Option<&str> {
        let membership = self.membership.as_ref()?;
        let leader = membership
            .groups
            .iter()
            .find(|g| g.id == META_GROUP)?
            .leader
            .as_deref()?;
        membership
            .nodes
            .iter()
            .find(|n| n.node_id == leader)
            .map(|n| n.pod.as_str())
    }
}

/// Id of the meta group in [`RaftGroup::id`].
pub const META_GROUP: &str = "meta";
