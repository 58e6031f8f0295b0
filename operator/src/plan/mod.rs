//! Decisions, made by pure functions: from a `Cluster` and what was [`Observed`], the
//! steps to take now, most urgent first. The controller executes the first one.
//!
//! Each concern has a module of small named checks that return a reason when they
//! block: [`bootstrap`] (whether the Raft cluster exists, from every trace it leaves),
//! [`scale_down`] (quorum-safe, two-phase, resumable), [`restart`] (one pod
//! at a time, followers first, leaders after a leadership transfer), and [`status`]
//! (what the `Cluster` reports). [`placement`] decides, beside the steps, which nodes
//! get the placement labels of the Kubernetes Nodes they run on, and [`topology_events`]
//! which of the cluster's recorded topology events a `DatabaseGroup` reports.

pub mod backup;
pub mod bootstrap;
pub mod certificates;
mod checks;
pub mod collections;
pub mod database_group;
pub mod drift;
pub mod handover;
pub mod observed;
pub mod placement;
pub mod recovery;
pub mod replace;
pub mod restart;
pub mod scale_down;
pub mod scheduled_backup;
pub mod status;
pub mod topology_events;
pub mod volumes;

pub use observed::{
    KubeNodes, Labels, MemberNode, Membership, Observed, ObservedPod, ObservedStatefulSet,
    RaftGroup, ReplicationNeed,
};
pub use placement::LabelAssignment;

use crate::crd::{Cluster, Reason, ScaleDownIntent, ScaleDownPhase};
use crate::desired::Shape;

/// One thing the controller can do, or the reason it does nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Write the scale-down intent to status before anything is drained.
    RecordScaleDown(ScaleDownIntent),
    /// Ask the cluster to move every data replica off the node.
    DrainNode { pod: String, node_id: String },
    /// Remove the (drained) node from Raft membership.
    RemoveNode { pod: String, node_id: String },
    /// Every leaving node is out of the cluster: shrink the StatefulSet.
    StartShrinking,
    /// Delete the volume of a removed node.
    DeletePvc { name: String },
    /// The scale-down is done: clear the intent.
    FinishScaleDown,
    /// Move every leadership off the node before its pod restarts.
    TransferLeadership { pod: String, node_id: String },
    /// Move every leadership off the node, as asked by the pod's hand-over annotation.
    HandOverLeadership { pod: String, node_id: String },
    /// The node leads nothing any more: clear the pod's hand-over annotation.
    FinishHandOver { pod: String },
    /// Delete the pod so that the StatefulSet recreates it from the current template.
    RestartPod { pod: String },
    /// One step of replacing the node of a pod whose data is lost for good.
    ReplaceNode { pod: String, action: Replacement },
    /// Raise the storage request of a volume (growing it).
    ExpandVolume { pvc: String, size: String },
    /// Every volume has grown: delete the StatefulSet, its pods orphaned, so that the next
    /// pass creates it again with a claim template of the new size.
    RecreateStatefulSet { volume_size: String },
    /// Nothing may be done now; the reason says what is awaited.
    Wait { reason: Reason, message: String },
    /// A change the spec asks for is refused; it stays refused until the spec changes.
    Refuse { reason: Reason, message: String },
}

impl Step {
    pub(crate) fn wait(reason: Reason, message: impl Into<String>) -> Self {
        Self::Wait {
            reason,
            message: message.into(),
        }
    }

    /// What the step does, as the `action` of its Event. Events of one object are
    /// aggregated by reason, action and related object, so every kind of step has its own.
    pub fn action(&self) -> &'static str {
        match self {
            Self::RecordScaleDown(_) => "RecordScaleDown",
            Self::DrainNode { .. } => "DrainNode",
            Self::RemoveNode { .. } => "RemoveNode",
            Self::StartShrinking => "ShrinkStatefulSet",
            Self::DeletePvc { .. } => "DeleteVolume",
            Self::FinishScaleDown => "FinishScaleDown",
            Self::TransferLeadership { .. } => "TransferLeadership",
            Self::HandOverLeadership { .. } => "HandOverLeadership",
            Self::FinishHandOver { .. } => "FinishHandOver",
            Self::RestartPod { .. } => "RestartPod",
            Self::ReplaceNode { action, .. } => match action {
                Replacement::RemoveFromCluster { .. } => "RemoveLostNode",
                Replacement::DeleteVolume { .. } => "DeleteLostVolume",
                Replacement::RecreatePod => "RecreatePod",
                Replacement::ForceDeletePod { .. } => "ForceDeletePod",
            },
            Self::ExpandVolume { .. } => "ExpandVolume",
            Self::RecreateStatefulSet { .. } => "RecreateStatefulSet",
            Self::Wait { .. } => "Wait",
            Self::Refuse { .. } => "Refuse",
        }
    }

    /// The pod (or volume) the step acts on, if any: `(kind, name)`.
    pub fn related(&self) -> Option<(&'static str, &str)> {
        match self {
            Self::DrainNode { pod, .. }
            | Self::RemoveNode { pod, .. }
            | Self::TransferLeadership { pod, .. }
            | Self::HandOverLeadership { pod, .. }
            | Self::FinishHandOver { pod }
            | Self::RestartPod { pod } => Some(("Pod", pod)),
            Self::ReplaceNode {
                action: Replacement::DeleteVolume { pvc },
                ..
            } => Some(("PersistentVolumeClaim", pvc)),
            Self::ReplaceNode { pod, .. } => Some(("Pod", pod)),
            Self::DeletePvc { name } | Self::ExpandVolume { pvc: name, .. } => {
                Some(("PersistentVolumeClaim", name))
            }
            _ => None,
        }
    }

    /// Whether the step only changes the `Cluster`'s status.
    pub fn is_status_change(&self) -> bool {
        matches!(
            self,
            Self::RecordScaleDown(_) | Self::StartShrinking | Self::FinishScaleDown
        )
    }

    /// Applies a status-only step to the cluster's status; other steps leave it alone.
    pub fn apply_to_status(&self, cluster: &mut Cluster) {
        let status = cluster.status.get_or_insert_with(Default::default);
        match self {
            Self::RecordScaleDown(intent) => status.scale_down = Some(intent.clone()),
            Self::StartShrinking => {
                if let Some(intent) = status.scale_down.as_mut() {
                    intent.phase = ScaleDownPhase::Shrinking;
                }
            }
            Self::FinishScaleDown => status.scale_down = None,
            _ => {}
        }
    }
}

/// Steps of a node replacement, in the order they happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replacement {
    /// Remove the lost node from the cluster; its replicas are re-created elsewhere.
    RemoveFromCluster { node_id: String },
    /// Delete the lost node's volume.
    DeleteVolume { pvc: String },
    /// Delete the pod; the StatefulSet recreates it with an empty volume, and the fresh
    /// node joins as a new member.
    RecreatePod,
    /// The pod has been stuck terminating on a NotReady Kubernetes Node for longer than
    /// `spec.forceDeleteAfter`: delete it with no grace period (the kubelet that would
    /// confirm its end is gone), as the StatefulSet documentation prescribes for a lost
    /// node.
    ForceDeletePod { kube_node: String },
}

/// The steps to take for `cluster` now, most urgent first; empty when it is as its
/// spec asks. A paused cluster gets a single `Wait`.
pub fn plan(cluster: &Cluster, observed: &Observed) -> Vec<Step> {
    if cluster.spec.paused {
        return vec![Step::wait(
            Reason::Paused,
            "spec.paused is set; no change is made",
        )];
    }
    if !bootstrap::is_bootstrapped(cluster, observed) {
        return Vec::new();
    }
    if let Some(refusal) = bootstrap::conflicting_cluster_id(cluster, observed) {
        return vec![refusal];
    }
    let mut steps = steps_of_the_spec(cluster, observed);
    let volumes = volumes::steps(cluster, observed);
    if steps.is_empty() {
        return volumes;
    }
    // Volumes grow once nothing more urgent is left; a refused size blocks nothing and
    // is reported after the rest.
    steps.extend(
        volumes
            .into_iter()
            .filter(|s| matches!(s, Step::Refuse { .. })),
    );
    steps
}

/// Scale-down, node replacement, leadership hand-overs asked for and rolling restart, in
/// that order of urgency.
fn steps_of_the_spec(cluster: &Cluster, observed: &Observed) -> Vec<Step> {
    let scale_down = scale_down::steps(cluster, observed);
    match scale_down.as_slice() {
        [] => {
            let replace = replace::steps(cluster, observed);
            if !replace.is_empty() {
                return replace;
            }
            let hand_over = handover::steps(observed);
            if hand_over.is_empty() {
                restart::steps(cluster, observed)
            } else {
                hand_over
            }
        }
        // A refused scale-down blocks nothing else: the refusal is reported after
        // whatever else there is to do.
        [Step::Refuse { .. }] => {
            let mut steps = restart::steps(cluster, observed);
            steps.extend(scale_down);
            steps
        }
        _ => scale_down,
    }
}

/// What the children of `cluster` should look like now: the StatefulSet's size, what a
/// starting node is told, and the cluster id to keep on the StatefulSet.
pub fn shape(cluster: &Cluster, observed: &Observed) -> Shape {
    Shape {
        replicas: statefulset_replicas(cluster, observed),
        cluster_state: bootstrap::cluster_state(cluster, observed),
        cluster_id: bootstrap::known_cluster_id(cluster, observed),
        volume_size: volumes::claim_template_size(observed),
    }
}

/// Size the StatefulSet should have now: one pod until the Raft cluster exists. It grows
/// as soon as the spec asks, but only shrinks in the `Shrinking` phase of a recorded
/// scale-down.
pub fn statefulset_replicas(cluster: &Cluster, observed: &Observed) -> i32 {
    if !bootstrap::is_bootstrapped(cluster, observed) {
        return 1;
    }
    match cluster.scale_down() {
        Some(intent) if intent.phase == ScaleDownPhase::Draining => intent.from,
        Some(intent) => intent.to,
        None => match &observed.statefulset {
            Some(current) if current.replicas > cluster.spec.replicas => current.replicas,
            _ => cluster.spec.replicas,
        },
    }
}

#[cfg(test)]
pub(crate) mod fixtures;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fixtures::healthy;

    #[test]
    fn an_unbootstrapped_cluster_runs_a_single_pod() {
        let cluster = Cluster::test().with_replicas(5);
        assert_eq!(statefulset_replicas(&cluster, &Observed::default()), 1);
    }

    #[test]
    fn a_running_cluster_that_lost_its_status_keeps_its_size_and_joins_its_cluster() {
        let cluster = Cluster::test().with_replicas(5);
        let shape = shape(&cluster, &healthy(&cluster, 5).unreachable());
        assert_eq!(shape.replicas, 5);
        assert_eq!(shape.cluster_state, crate::desired::ClusterState::Existing);
    }

    #[test]
    fn a_running_cluster_that_lost_its_status_and_its_scale_down_intent_does_not_shrink() {
        // The spec asks for 3; the intent to leave 5 was recorded in the lost status.
        let cluster = Cluster::test().with_replicas(3);
        let observed = healthy(&cluster, 5);
        assert_eq!(statefulset_replicas(&cluster, &observed), 5);
        assert!(matches!(
            plan(&cluster, &observed).as_slice(),
            [Step::RecordScaleDown(ScaleDownIntent {
                from: 5,
                to: 3,
                ..
            })]
        ));
    }

    #[test]
    fn a_bootstrapped_cluster_grows_to_its_spec() {
        let cluster = Cluster::test().with_cluster_id("c").with_replicas(5);
        assert_eq!(statefulset_replicas(&cluster, &healthy(&cluster, 3)), 5);
    }

    #[test]
    fn the_statefulset_never_shrinks_before_the_intent_is_recorded() {
        let cluster = Cluster::test().with_cluster_id("c").with_replicas(3);
        assert_eq!(statefulset_replicas(&cluster, &healthy(&cluster, 5)), 5);
    }

    #[test]
    fn the_statefulset_shrinks_only_in_the_shrinking_phase() {
        let intent = |phase| ScaleDownIntent {
            from: 5,
            to: 3,
            pods: vec!["flotilla-4".to_owned(), "flotilla-3".to_owned()],
            phase,
        };
        let draining = Cluster::test()
            .with_cluster_id("c")
            .with_replicas(3)
            .with_scale_down(intent(ScaleDownPhase::Draining));
        assert_eq!(statefulset_replicas(&draining, &healthy(&draining, 5)), 5);
        let shrinking = draining.with_scale_down(intent(ScaleDownPhase::Shrinking));
        assert_eq!(statefulset_replicas(&shrinking, &healthy(&shrinking, 5)), 3);
    }

    #[test]
    fn a_paused_cluster_gets_no_step_but_a_wait() {
        let cluster = Cluster::test()
            .with_cluster_id("c")
            .with_replicas(1)
            .paused();
        let steps = plan(&cluster, &healthy(&cluster, 3));
        assert!(matches!(
            steps.as_slice(),
            [Step::Wait {
                reason: Reason::Paused,
                ..
            }]
        ));
    }

    #[test]
    fn a_refused_scale_down_does_not_block_a_rolling_restart() {
        let cluster = Cluster::test().with_cluster_id("c").with_replicas(2);
        let observed = healthy(&cluster, 3)
            .needing_replication_factor(3)
            .with_new_revision();
        let steps = plan(&cluster, &observed);
        assert!(matches!(
            steps.as_slice(),
            [Step::RestartPod { .. }, Step::Refuse { .. }]
        ));
    }

    #[test]
    fn each_step_of_a_scale_down_is_its_own_event() {
        let steps = [
            Step::DrainNode {
                pod: "flotilla-4".to_owned(),
                node_id: "4".to_owned(),
            },
            Step::DrainNode {
                pod: "flotilla-3".to_owned(),
                node_id: "3".to_owned(),
            },
            Step::RemoveNode {
                pod: "flotilla-4".to_owned(),
                node_id: "4".to_owned(),
            },
            Step::StartShrinking,
            Step::DeletePvc {
                name: "data-flotilla-4".to_owned(),
            },
            Step::FinishScaleDown,
        ];
        let keys: std::collections::BTreeSet<_> =
            steps.iter().map(|s| (s.action(), s.related())).collect();
        assert_eq!(keys.len(), steps.len(), "no two steps share an event key");
    }

    #[test]
    fn a_healthy_cluster_at_its_spec_needs_nothing() {
        let cluster = Cluster::test().with_cluster_id("c");
        assert_eq!(plan(&cluster, &healthy(&cluster, 3)), Vec::new());
    }
}
