//! Declarative replacement of a node whose data is lost for good: its pod is annotated
//! `flotilla.dev/unrecoverable: "true"`, or its volume is gone while the pod exists.
//!
//! The lost node is removed from the cluster (its replicas are re-created elsewhere), its
//! volume deleted, and its pod deleted; the StatefulSet then starts a fresh node with a
//! new identity in the same pod name, which joins as Promotable. A node that lost its
//! data never comes back under its old identity. The steps are recomputed from what is
//! observed, so a restarted operator resumes a replacement where it was.

use super::{Observed, ObservedPod, Replacement, Step, checks};
use crate::crd::{Cluster, Reason};

/// Steps of the next node replacement; empty when no node needs one.
pub fn steps(cluster: &Cluster, observed: &Observed) -> Vec<Step> {
    let Some(pod) = observed
        .pods
        .iter()
        .filter(|p| needs_replacement(cluster, observed, p))
        .max_by_key(|p| p.ordinal)
    else {
        return Vec::new();
    };
    let step = |action| {
        vec![Step::ReplaceNode {
            pod: pod.name.clone(),
            action,
        }]
    };
    if observed.membership.is_none() {
        return vec![Step::wait(
            Reason::ClusterUnreachable,
            format!(
                "cannot replace the node of {}: no node answers on its admin API",
                pod.name
            ),
        )];
    }
    if let Some(node) = observed.member_in_pod(&pod.name) {
        if let Err(why) = checks::groups_keep_a_caught_up_majority_without(observed, &node.node_id)
        {
            return vec![Step::wait(
                Reason::WaitingForQuorum,
                format!("not removing the lost node of {} yet: {why}", pod.name),
            )];
        }
        return step(Replacement::RemoveFromCluster {
            node_id: node.node_id.clone(),
        });
    }
    if let Some(pvc) = cluster
        .pvc_name(pod.ordinal)
        .ok()
        .filter(|pvc| observed.pvcs.contains(pvc))
    {
        return step(Replacement::DeleteVolume { pvc });
    }
    if let Some(kube_node) = checks::stuck_on_a_lost_node(pod, cluster.force_delete_after()) {
        return step(Replacement::ForceDeletePod {
            kube_node: kube_node.to_owned(),
        });
    }
    if pod.terminating {
        return vec![Step::wait(
            Reason::ReplacingNode,
            format!("waiting for pod {} to terminate", pod.name),
        )];
    }
    step(Replacement::RecreatePod)
}

/// The pod is marked unrecoverable, or its volume is gone (or going) from under it.
fn needs_replacement(cluster: &Cluster, observed: &Observed, pod: &ObservedPod) -> bool {
    let Ok(pvc) = cluster.pvc_name(pod.ordinal) else {
        return false;
    };
    pod.unrecoverable || !observed.pvcs.contains(&pvc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fixtures::{healthy, node_id};
    use crate::plan::plan;

    fn cluster() -> Cluster {
        Cluster::test().with_cluster_id("c")
    }

    fn replace(action: Replacement) -> Vec<Step> {
        vec![Step::ReplaceNode {
            pod: "flotilla-2".to_owned(),
            action,
        }]
    }

    #[test]
    fn an_unrecoverable_node_is_first_removed_from_the_cluster() {
        let observed = healthy(&cluster(), 3)
            .unrecoverable("flotilla-2")
            .not_ready("flotilla-2")
            .lagging("meta", &node_id(2))
            .lagging("orders/0", &node_id(2));
        assert_eq!(
            plan(&cluster(), &observed),
            replace(Replacement::RemoveFromCluster {
                node_id: node_id(2)
            })
        );
    }

    #[test]
    fn then_its_volume_is_deleted_and_then_its_pod() {
        let removed = healthy(&cluster(), 3)
            .unrecoverable("flotilla-2")
            .without_member(&node_id(2));
        assert_eq!(
            plan(&cluster(), &removed),
            replace(Replacement::DeleteVolume {
                pvc: "data-flotilla-2".to_owned()
            })
        );
        // The volume stays until its pod is gone.
        let held = removed.pvc_terminating("data-flotilla-2");
        assert_eq!(plan(&cluster(), &held), replace(Replacement::RecreatePod));
    }

    #[test]
    fn a_pod_whose_volume_is_gone_gets_a_fresh_node() {
        let observed = healthy(&cluster(), 3).without_pvc("data-flotilla-1");
        assert_eq!(
            plan(&cluster(), &observed),
            vec![Step::ReplaceNode {
                pod: "flotilla-1".to_owned(),
                action: Replacement::RemoveFromCluster {
                    node_id: node_id(1)
                }
            }]
        );
    }

    #[test]
    fn a_lost_node_is_not_removed_while_that_would_break_a_majority() {
        let observed = healthy(&cluster(), 3)
            .unrecoverable("flotilla-2")
            .lagging("orders/0", &node_id(1))
            .lagging("orders/0", &node_id(2));
        assert!(matches!(
            plan(&cluster(), &observed).as_slice(),
            [Step::Wait {
                reason: Reason::WaitingForQuorum,
                ..
            }]
        ));
    }

    #[test]
    fn replacement_waits_while_the_cluster_is_unreachable() {
        let observed = healthy(&cluster(), 3)
            .unrecoverable("flotilla-2")
            .unreachable();
        assert!(matches!(
            plan(&cluster(), &observed).as_slice(),
            [Step::Wait {
                reason: Reason::ClusterUnreachable,
                ..
            }]
        ));
    }

    #[test]
    fn a_replaced_pod_stuck_terminating_on_a_lost_node_is_force_deleted_after_the_timeout() {
        let mut observed = healthy(&cluster(), 3)
            .unrecoverable("flotilla-2")
            .without_member(&node_id(2))
            .pvc_terminating("data-flotilla-2");
        let pod = &mut observed.pods[2];
        pod.terminating = true;
        pod.kube_node = Some("m2".to_owned());
        pod.kube_node_ready = Some(false);
        pod.terminating_for = Some(std::time::Duration::from_secs(60));
        assert!(matches!(
            plan(&cluster(), &observed).as_slice(),
            [Step::Wait {
                reason: Reason::ReplacingNode,
                ..
            }]
        ));
        observed.pods[2].terminating_for = Some(std::time::Duration::from_secs(301));
        assert_eq!(
            plan(&cluster(), &observed),
            replace(Replacement::ForceDeletePod {
                kube_node: "m2".to_owned()
            })
        );
        // A Ready node's kubelet will finish the deletion itself.
        observed.pods[2].kube_node_ready = Some(true);
        assert!(matches!(
            plan(&cluster(), &observed).as_slice(),
            [Step::Wait {
                reason: Reason::ReplacingNode,
                ..
            }]
        ));
    }

    #[test]
    fn a_replaced_pod_that_is_terminating_is_awaited() {
        let mut observed = healthy(&cluster(), 3)
            .unrecoverable("flotilla-2")
            .without_member(&node_id(2))
            .pvc_terminating("data-flotilla-2");
        observed.pods[2].terminating = true;
        assert!(matches!(
            plan(&cluster(), &observed).as_slice(),
            [Step::Wait {
                reason: Reason::ReplacingNode,
                ..
            }]
        ));
    }
}
