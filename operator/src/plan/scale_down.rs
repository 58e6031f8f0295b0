//! Quorum-safe, two-phase, resumable scale-down.
//!
//! 1. The intent (which pods leave) is written to status before anything else, so an
//!    operator that restarts half-way picks up where it was.
//! 2. Draining: each leaving node, highest ordinal first, has its data replicas moved
//!    off and is then removed from Raft membership. The StatefulSet keeps its size.
//! 3. Shrinking: the StatefulSet shrinks, and once the pods are gone their volumes are
//!    deleted, so a removed node's identity is never started again.
//!
//! A scale-down below what a DatabaseGroup's replication factor needs is refused.

use super::{Observed, Step, checks};
use crate::crd::{Cluster, Reason, ScaleDownIntent, ScaleDownPhase};

/// Steps of a scale-down recorded or asked for; empty when there is none.
pub fn steps(cluster: &Cluster, observed: &Observed) -> Vec<Step> {
    match cluster.scale_down() {
        Some(intent) if intent.phase == ScaleDownPhase::Draining => draining(intent, observed),
        Some(intent) => shrinking(cluster, intent, observed),
        None => start(cluster, observed).into_iter().collect(),
    }
}

/// A scale-down the spec asks for and the intent that records it, or why it is refused.
fn start(cluster: &Cluster, observed: &Observed) -> Option<Step> {
    let current = observed.statefulset.as_ref()?.replicas;
    let wanted = cluster.spec.replicas;
    if wanted >= current {
        return None;
    }
    if let Some(refusal) = check_replication_factors(wanted, observed) {
        return Some(refusal);
    }
    let pods = (wanted..current)
        .rev()
        .map(|ordinal| cluster.pod_name(ordinal))
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    Some(Step::RecordScaleDown(ScaleDownIntent {
        from: current,
        to: wanted,
        pods,
        phase: ScaleDownPhase::Draining,
    }))
}

/// Refuses a target size below the largest replication factor of the cluster's databases.
fn check_replication_factors(wanted: i32, observed: &Observed) -> Option<Step> {
    let largest = observed
        .replication_needs
        .iter()
        .max_by_key(|n| n.replication_factor)?;
    (largest.replication_factor > wanted).then(|| Step::Refuse {
        reason: Reason::ScaleDownRefused,
        message: format!(
            "cannot scale down to {wanted} nodes: DatabaseGroup {} needs {} replicas",
            largest.database_group, largest.replication_factor
        ),
    })
}

/// Drain, then remove, each leaving node in turn; then start shrinking.
fn draining(intent: &ScaleDownIntent, observed: &Observed) -> Vec<Step> {
    if observed.membership.is_none() {
        return vec![Step::wait(
            Reason::ClusterUnreachable,
            "cannot drain nodes: no node answers on its admin API",
        )];
    }
    for pod in &intent.pods {
        let Some(node) = observed.member_in_pod(pod) else {
            continue; // already removed
        };
        if node.data_replicas > 0 {
            return vec![Step::DrainNode {
                pod: pod.clone(),
                node_id: node.node_id.clone(),
            }];
        }
        if let Err(why) = checks::groups_keep_a_caught_up_majority_without(observed, &node.node_id)
        {
            return vec![Step::wait(
                Reason::WaitingForQuorum,
                format!("not removing {pod} yet: {why}"),
            )];
        }
        return vec![Step::RemoveNode {
            pod: pod.clone(),
            node_id: node.node_id.clone(),
        }];
    }
    vec![Step::StartShrinking]
}

/// Wait for the StatefulSet and its pods to shrink, delete the volumes, then finish.
fn shrinking(cluster: &Cluster, intent: &ScaleDownIntent, observed: &Observed) -> Vec<Step> {
    if let Some(sts) = &observed.statefulset
        && sts.replicas > intent.to
    {
        return vec![Step::wait(
            Reason::ScalingDown,
            format!("waiting for the StatefulSet to shrink to {}", intent.to),
        )];
    }
    let remaining: Vec<&str> = intent
        .pods
        .iter()
        .filter(|p| observed.pod(p).is_some())
        .map(String::as_str)
        .collect();
    if !remaining.is_empty() {
        return vec![Step::wait(
            Reason::ScalingDown,
            format!("waiting for pods {} to terminate", remaining.join(", ")),
        )];
    }
    let volumes: Vec<Step> = intent
        .pods
        .iter()
        .filter_map(|pod| cluster.ordinal_of(pod))
        .filter_map(|ordinal| cluster.pvc_name(ordinal).ok())
        .filter(|pvc| observed.pvcs.contains(pvc))
        .map(|name| Step::DeletePvc { name })
        .collect();
    if volumes.is_empty() {
        vec![Step::FinishScaleDown]
    } else {
        volumes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fixtures::{healthy, node_id};
    use crate::plan::plan;

    fn cluster(replicas: i32) -> Cluster {
        Cluster::test().with_cluster_id("c").with_replicas(replicas)
    }

    fn intent(phase: ScaleDownPhase) -> ScaleDownIntent {
        ScaleDownIntent {
            from: 5,
            to: 3,
            pods: vec!["flotilla-4".to_owned(), "flotilla-3".to_owned()],
            phase,
        }
    }

    #[test]
    fn scale_down_records_its_intent_before_anything_else() {
        let steps = plan(&cluster(3), &healthy(&cluster(3), 5));
        assert_eq!(
            steps,
            vec![Step::RecordScaleDown(intent(ScaleDownPhase::Draining))]
        );
    }

    #[test]
    fn scale_down_below_a_replication_factor_is_refused() {
        let observed = healthy(&cluster(2), 3)
            .needing_replication_factor(1)
            .needing_replication_factor(3);
        let steps = plan(&cluster(2), &observed);
        match steps.as_slice() {
            [Step::Refuse { reason, message }] => {
                assert_eq!(*reason, Reason::ScaleDownRefused);
                assert!(message.contains("needs 3 replicas"), "{message}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn scale_down_to_exactly_the_replication_factor_is_allowed() {
        let observed = healthy(&cluster(3), 5).needing_replication_factor(3);
        assert!(matches!(
            plan(&cluster(3), &observed).as_slice(),
            [Step::RecordScaleDown(_)]
        ));
    }

    #[test]
    fn scale_down_drains_the_highest_ordinal_first() {
        let cluster = cluster(3).with_scale_down(intent(ScaleDownPhase::Draining));
        let steps = plan(&cluster, &healthy(&cluster, 5));
        assert_eq!(
            steps,
            vec![Step::DrainNode {
                pod: "flotilla-4".to_owned(),
                node_id: node_id(4)
            }]
        );
    }

    #[test]
    fn a_drained_node_is_removed_from_raft_membership() {
        let cluster = cluster(3).with_scale_down(intent(ScaleDownPhase::Draining));
        let observed = healthy(&cluster, 5).with_data_replicas(&node_id(4), 0);
        assert_eq!(
            plan(&cluster, &observed),
            vec![Step::RemoveNode {
                pod: "flotilla-4".to_owned(),
                node_id: node_id(4)
            }]
        );
    }

    #[test]
    fn the_next_node_is_drained_once_the_first_is_removed() {
        let cluster = cluster(3).with_scale_down(intent(ScaleDownPhase::Draining));
        let observed = healthy(&cluster, 5).without_member(&node_id(4));
        assert_eq!(
            plan(&cluster, &observed),
            vec![Step::DrainNode {
                pod: "flotilla-3".to_owned(),
                node_id: node_id(3)
            }]
        );
    }

    #[test]
    fn scale_down_drains_before_shrinking_the_statefulset() {
        let cluster = cluster(3).with_scale_down(intent(ScaleDownPhase::Draining));
        let observed = healthy(&cluster, 5).with_data_replicas(&node_id(4), 2);
        assert_eq!(crate::plan::statefulset_replicas(&cluster, &observed), 5);
        assert!(matches!(
            plan(&cluster, &observed).as_slice(),
            [Step::DrainNode { .. }]
        ));
    }

    #[test]
    fn a_node_is_not_removed_while_its_groups_would_lose_their_majority() {
        let cluster = cluster(3).with_scale_down(intent(ScaleDownPhase::Draining));
        // Node 4 is a voter of a group where node 3 lags behind.
        let mut observed = healthy(&cluster, 5).with_data_replicas(&node_id(4), 0);
        if let Some(m) = observed.membership.as_mut() {
            m.groups.push(crate::plan::RaftGroup {
                id: "orders/1".to_owned(),
                leader: Some(node_id(2)),
                voters: vec![node_id(2), node_id(3), node_id(4)],
                caught_up: vec![node_id(2), node_id(4)],
            });
        }
        assert!(matches!(
            plan(&cluster, &observed).as_slice(),
            [Step::Wait {
                reason: Reason::WaitingForQuorum,
                ..
            }]
        ));
    }

    #[test]
    fn shrinking_starts_once_every_leaving_node_is_removed() {
        let cluster = cluster(3).with_scale_down(intent(ScaleDownPhase::Draining));
        let observed = healthy(&cluster, 5)
            .without_member(&node_id(4))
            .without_member(&node_id(3));
        assert_eq!(plan(&cluster, &observed), vec![Step::StartShrinking]);
    }

    #[test]
    fn draining_waits_while_the_cluster_is_unreachable() {
        let cluster = cluster(3).with_scale_down(intent(ScaleDownPhase::Draining));
        let observed = healthy(&cluster, 5).unreachable();
        assert!(matches!(
            plan(&cluster, &observed).as_slice(),
            [Step::Wait {
                reason: Reason::ClusterUnreachable,
                ..
            }]
        ));
    }

    #[test]
    fn volumes_are_deleted_only_after_the_pods_are_gone() {
        let cluster = cluster(3).with_scale_down(intent(ScaleDownPhase::Shrinking));
        let observed = healthy(&cluster, 5)
            .without_member(&node_id(4))
            .without_member(&node_id(3))
            .with_statefulset_replicas(3);
        assert!(matches!(
            plan(&cluster, &observed).as_slice(),
            [Step::Wait {
                reason: Reason::ScalingDown,
                ..
            }]
        ));
        let gone = observed.without_pod("flotilla-4").without_pod("flotilla-3");
        assert_eq!(
            plan(&cluster, &gone),
            vec![
                Step::DeletePvc {
                    name: "data-flotilla-4".to_owned()
                },
                Step::DeletePvc {
                    name: "data-flotilla-3".to_owned()
                },
            ]
        );
    }

    #[test]
    fn scale_down_finishes_once_the_volumes_are_gone() {
        let cluster = cluster(3).with_scale_down(intent(ScaleDownPhase::Shrinking));
        let mut observed = healthy(&cluster, 3);
        observed
            .pvcs
            .retain(|p| p != "data-flotilla-4" && p != "data-flotilla-3");
        assert_eq!(plan(&cluster, &observed), vec![Step::FinishScaleDown]);
    }

    #[test]
    fn a_restarted_operator_resumes_a_recorded_scale_down() {
        // The spec went back up after the intent was recorded: the intent still wins,
        // since a removed node must never come back under its old identity.
        let cluster = cluster(5).with_scale_down(intent(ScaleDownPhase::Draining));
        let observed = healthy(&cluster, 5).without_member(&node_id(4));
        assert_eq!(
            plan(&cluster, &observed),
            vec![Step::DrainNode {
                pod: "flotilla-3".to_owned(),
                node_id: node_id(3)
            }]
        );
    }

    #[test]
    fn status_steps_move_the_intent_through_its_phases() {
        let mut cluster = cluster(3);
        Step::RecordScaleDown(intent(ScaleDownPhase::Draining)).apply_to_status(&mut cluster);
        assert_eq!(
            cluster.scale_down(),
            Some(&intent(ScaleDownPhase::Draining))
        );
        Step::StartShrinking.apply_to_status(&mut cluster);
        assert_eq!(
            cluster.scale_down(),
            Some(&intent(ScaleDownPhase::Shrinking))
        );
        Step::FinishScaleDown.apply_to_status(&mut cluster);
        assert_eq!(cluster.scale_down(), None);
    }
}
