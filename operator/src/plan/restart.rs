//! Rolling restart onto a new pod template, decided by the operator since the
//! StatefulSet uses `updateStrategy: OnDelete`.
//!
//! One pod at a time; followers first (highest ordinal first), then the leaders, each
//! after its leaderships were transferred away. A pod is only restarted while every
//! Raft group it votes in keeps a caught-up majority without it.

use super::{Observed, ObservedPod, Step, checks};
use crate::crd::{Cluster, Reason};

/// Steps of a rolling restart; empty when every pod runs the current template.
pub fn steps(cluster: &Cluster, observed: &Observed) -> Vec<Step> {
    let outdated = outdated_pods(observed);
    if outdated.is_empty() {
        return Vec::new();
    }
    if let Err(why) = checks::no_pod_terminating(observed) {
        return vec![Step::wait(Reason::RollingRestart, why)];
    }
    // A pod that is down anyway goes first, highest ordinal first: it may be down because
    // of the very template the restart replaces, and restarting it costs no availability.
    if let Some(pod) = outdated
        .iter()
        .filter(|p| !p.ready)
        .max_by_key(|p| p.ordinal)
    {
        return vec![Step::RestartPod {
            pod: pod.name.clone(),
        }];
    }
    let Some(pod) = next_pod(observed, &outdated) else {
        return Vec::new();
    };
    if let Err(why) = checks::all_other_pods_ready(observed, "") {
        return vec![Step::wait(Reason::NodesNotReady, why)];
    }
    if cluster.spec.replicas <= 1 && observed.pods.len() <= 1 {
        // A single node cannot keep a majority without itself; its restart is the
        // downtime a one-node cluster accepts.
        return vec![Step::RestartPod {
            pod: pod.name.clone(),
        }];
    }
    let Some(node) = observed.member_in_pod(&pod.name) else {
        if observed.membership.is_none() {
            return vec![Step::wait(
                Reason::ClusterUnreachable,
                "not restarting any pod: no node answers on its admin API",
            )];
        }
        // Not a member (yet): nothing depends on it.
        return vec![Step::RestartPod {
            pod: pod.name.clone(),
        }];
    };
    if observed.leaderships(&node.node_id) > 0 {
        return vec![Step::TransferLeadership {
            pod: pod.name.clone(),
            node_id: node.node_id.clone(),
        }];
    }
    if let Err(why) = checks::groups_keep_a_caught_up_majority_without(observed, &node.node_id) {
        return vec![Step::wait(
            Reason::WaitingForQuorum,
            format!("not restarting {} yet: {why}", pod.name),
        )];
    }
    vec![Step::RestartPod {
        pod: pod.name.clone(),
    }]
}

/// Pods whose revision differs from the StatefulSet's update revision.
pub fn outdated_pods(observed: &Observed) -> Vec<&ObservedPod> {
    let Some(revision) = observed
        .statefulset
        .as_ref()
        .and_then(|s| s.update_revision.as_deref())
    else {
        return Vec::new();
    };
    observed
        .pods
        .iter()
        .filter(|p| p.revision.as_deref() != Some(revision))
        .collect()
}

/// The outdated pod to restart next: fewest leaderships first, then the highest ordinal.
fn next_pod<'a>(observed: &Observed, outdated: &[&'a ObservedPod]) -> Option<&'a ObservedPod> {
    outdated.iter().copied().min_by_key(|pod| {
        let leaderships = observed
            .member_in_pod(&pod.name)
            .map_or(0, |n| observed.leaderships(&n.node_id));
        (leaderships, std::cmp::Reverse(pod.ordinal))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fixtures::{healthy, node_id};
    use crate::plan::plan;

    fn cluster() -> Cluster {
        Cluster::test().with_cluster_id("c")
    }

    fn restart(pod: &str) -> Vec<Step> {
        vec![Step::RestartPod {
            pod: pod.to_owned(),
        }]
    }

    #[test]
    fn no_restart_when_every_pod_runs_the_current_template() {
        assert_eq!(plan(&cluster(), &healthy(&cluster(), 3)), Vec::new());
    }

    #[test]
    fn a_rolling_restart_begins_with_the_highest_follower() {
        // meta is led by node 0, orders/0 by node 1: node 2 is the only follower.
        let observed = healthy(&cluster(), 3).with_new_revision();
        assert_eq!(plan(&cluster(), &observed), restart("flotilla-2"));
    }

    #[test]
    fn rolling_restart_goes_followers_first_then_leaders_after_a_transfer() {
        let cluster = cluster();
        let mut observed = healthy(&cluster, 3).with_new_revision();
        let mut order = Vec::new();
        for _ in 0..10 {
            match plan(&cluster, &observed).into_iter().next() {
                Some(Step::RestartPod { pod }) => {
                    order.push(format!("restart {pod}"));
                    observed = observed.updated(&pod);
                }
                Some(Step::TransferLeadership { pod, node_id }) => {
                    order.push(format!("transfer {pod}"));
                    // Leadership moves to an updated follower.
                    let target = observed
                        .pods
                        .iter()
                        .find(|p| p.revision.as_deref() == Some("r2"))
                        .and_then(|p| observed.member_in_pod(&p.name))
                        .map(|n| n.node_id.clone())
                        .unwrap_or_default();
                    let groups: Vec<String> = observed
                        .membership
                        .iter()
                        .flat_map(|m| &m.groups)
                        .filter(|g| g.leader.as_deref() == Some(node_id.as_str()))
                        .map(|g| g.id.clone())
                        .collect();
                    for group in groups {
                        observed = observed.led_by(&group, &target);
                    }
                }
                Some(other) => panic!("unexpected step {other:?}"),
                None => break,
            }
        }
        assert_eq!(
            order,
            [
                "restart flotilla-2",
                "transfer flotilla-1",
                "restart flotilla-1",
                "transfer flotilla-0",
                "restart flotilla-0",
            ]
        );
    }

    #[test]
    fn only_one_pod_restarts_at_a_time() {
        let mut observed = healthy(&cluster(), 3).with_new_revision();
        observed.pods[2].terminating = true;
        assert!(matches!(
            plan(&cluster(), &observed).as_slice(),
            [Step::Wait {
                reason: Reason::RollingRestart,
                ..
            }]
        ));
        let observed = healthy(&cluster(), 3)
            .with_new_revision()
            .updated("flotilla-2")
            .not_ready("flotilla-2");
        assert!(matches!(
            plan(&cluster(), &observed).as_slice(),
            [Step::Wait {
                reason: Reason::NodesNotReady,
                ..
            }]
        ));
    }

    #[test]
    fn a_restart_waits_while_a_group_would_lose_its_caught_up_majority() {
        let observed = healthy(&cluster(), 3)
            .with_new_revision()
            .lagging("orders/0", &node_id(0));
        match plan(&cluster(), &observed).as_slice() {
            [Step::Wait { reason, message }] => {
                assert_eq!(*reason, Reason::WaitingForQuorum);
                assert!(message.contains("flotilla-2"), "{message}");
            }
            other => panic!("expected a wait, got {other:?}"),
        }
    }

    #[test]
    fn outdated_pods_that_are_down_are_restarted_even_without_a_majority() {
        // A bad image took two of three nodes down; the fixed template must reach them.
        let observed = healthy(&cluster(), 3)
            .with_new_revision()
            .not_ready("flotilla-0")
            .not_ready("flotilla-1");
        assert_eq!(plan(&cluster(), &observed), restart("flotilla-1"));
        let observed = observed.updated("flotilla-1");
        assert_eq!(plan(&cluster(), &observed), restart("flotilla-0"));
    }

    #[test]
    fn an_outdated_pod_that_is_down_is_restarted_first() {
        let observed = healthy(&cluster(), 3)
            .with_new_revision()
            .not_ready("flotilla-0");
        assert_eq!(plan(&cluster(), &observed), restart("flotilla-0"));
    }

    #[test]
    fn no_pod_restarts_while_the_cluster_is_unreachable() {
        let observed = healthy(&cluster(), 3).with_new_revision().unreachable();
        assert!(matches!(
            plan(&cluster(), &observed).as_slice(),
            [Step::Wait {
                reason: Reason::ClusterUnreachable,
                ..
            }]
        ));
    }

    #[test]
    fn a_one_node_cluster_restarts_its_only_pod() {
        let cluster = cluster().with_replicas(1);
        let observed = healthy(&cluster, 1).with_new_revision();
        assert_eq!(plan(&cluster, &observed), restart("flotilla-0"));
    }

    #[test]
    fn a_paused_cluster_does_not_restart() {
        let cluster = cluster().paused();
        let observed = healthy(&cluster, 3).with_new_revision();
        assert!(matches!(
            plan(&cluster, &observed).as_slice(),
            [Step::Wait {
                reason: Reason::Paused,
                ..
            }]
        ));
    }
}
