//! Small named checks shared by the planners. Each returns `Err(reason)` when it blocks.

use super::{Observed, ObservedPod};
use std::time::Duration;

/// Every Raft group `node_id` votes in keeps a caught-up majority of its voters
/// without that node.
pub fn groups_keep_a_caught_up_majority_without(
    observed: &Observed,
    node_id: &str,
) -> Result<(), String> {
    let Some(membership) = observed.membership.as_ref() else {
        return Err("no node answers on its admin API".to_owned());
    };
    for group in &membership.groups {
        if !group.voters.iter().any(|v| v == node_id) {
            continue;
        }
        let others_caught_up = group
            .caught_up
            .iter()
            .filter(|n| *n != node_id && group.voters.contains(n))
            .count();
        if others_caught_up * 2 <= group.voters.len() {
            return Err(format!(
                "group {} would keep {others_caught_up} caught-up voters of {} without node {node_id}",
                group.id,
                group.voters.len()
            ));
        }
    }
    Ok(())
}

/// No pod of the cluster is being deleted.
pub fn no_pod_terminating(observed: &Observed) -> Result<(), String> {
    match observed.pods.iter().find(|p| p.terminating) {
        Some(pod) => Err(format!("pod {} is terminating", pod.name)),
        None => Ok(()),
    }
}

/// The Kubernetes Node `pod` is stuck terminating on: the Node is NotReady and the pod
/// has been terminating for longer than `timeout`.
pub fn stuck_on_a_lost_node(pod: &ObservedPod, timeout: Duration) -> Option<&str> {
    let stuck = pod.terminating
        && pod.kube_node_ready == Some(false)
        && pod.terminating_for.is_some_and(|t| t > timeout);
    stuck.then_some(pod.kube_node.as_deref()).flatten()
}

/// Every pod except `except` is ready.
pub fn all_other_pods_ready(observed: &Observed, except: &str) -> Result<(), String> {
    let not_ready: Vec<&str> = observed
        .pods
        .iter()
        .filter(|p| !p.ready && p.name != except)
        .map(|p| p.name.as_str())
        .collect();
    if not_ready.is_empty() {
        Ok(())
    } else {
        Err(format!("pods not ready: {}", not_ready.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Cluster;
    use crate::plan::fixtures::{healthy, node_id};

    fn observed() -> Observed {
        healthy(&Cluster::test(), 3)
    }

    #[test]
    fn a_healthy_three_voter_group_can_spare_one_voter() {
        assert_eq!(
            groups_keep_a_caught_up_majority_without(&observed(), &node_id(0)),
            Ok(())
        );
    }

    #[test]
    fn a_group_with_a_lagging_voter_cannot_spare_another() {
        let observed = observed().lagging("orders/0", &node_id(2));
        let blocked = groups_keep_a_caught_up_majority_without(&observed, &node_id(0));
        assert!(blocked.is_err_and(|reason| reason.contains("orders/0")));
        // The lagging node itself may go: the others are a caught-up majority.
        assert_eq!(
            groups_keep_a_caught_up_majority_without(&observed, &node_id(2)),
            Ok(())
        );
    }

    #[test]
    fn a_node_that_votes_nowhere_can_always_go() {
        let observed = healthy(&Cluster::test(), 5).lagging("meta", &node_id(1));
        assert_eq!(
            groups_keep_a_caught_up_majority_without(&observed, &node_id(4)),
            Ok(())
        );
    }

    #[test]
    fn a_pod_is_stuck_only_on_a_not_ready_node_after_the_timeout() {
        let minute = Duration::from_secs(60);
        let pod = |ready, seconds| ObservedPod {
            name: "flotilla-2".to_owned(),
            terminating: true,
            kube_node: Some("m2".to_owned()),
            kube_node_ready: ready,
            terminating_for: Some(Duration::from_secs(seconds)),
            ..ObservedPod::default()
        };
        assert_eq!(
            stuck_on_a_lost_node(&pod(Some(false), 61), minute),
            Some("m2")
        );
        assert_eq!(stuck_on_a_lost_node(&pod(Some(false), 59), minute), None);
        assert_eq!(stuck_on_a_lost_node(&pod(Some(true), 600), minute), None);
        assert_eq!(stuck_on_a_lost_node(&pod(None, 600), minute), None);
    }

    #[test]
    fn nothing_can_go_while_membership_is_unknown() {
        let observed = observed().unreachable();
        assert!(groups_keep_a_caught_up_majority_without(&observed, &node_id(4)).is_err());
    }
}
