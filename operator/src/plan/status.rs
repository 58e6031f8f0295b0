//! What a `Cluster` reports in its status: conditions, ready nodes, the meta leader and
//! the node list, computed from the previous status, the observation and the step taken.

use super::{KubeNodes, Observed, Replacement, Step, bootstrap, restart};
use crate::crd::conditions::{NewCondition, set_condition};
use crate::crd::{
    Cluster, ClusterStatus, ConditionStatus, ConditionType, NodeState, NodeStatus, Reason,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The status `cluster` should report after the first of `steps` (the planned steps)
/// was taken on what was `observed`, at `now`.
pub fn cluster_status(
    cluster: &Cluster,
    observed: &Observed,
    steps: &[Step],
    now: &Time,
) -> ClusterStatus {
    let step = steps.first();
    let mut status = cluster.status.clone().unwrap_or_default();
    let generation = cluster.metadata.generation;
    status.observed_generation = generation;
    // A node that has not applied the cluster's bootstrap yet reports an empty id: that is
    // not an id to record. An empty or lost id is recovered from the objects that keep it,
    // or from the nodes.
    if status.cluster_id.as_deref().is_none_or(str::is_empty)
        && let Some(id) = bootstrap::known_cluster_id(cluster, observed)
    {
        status.cluster_id = Some(id);
    }
    let bootstrapped = bootstrap::is_bootstrapped(cluster, observed);
    status.ready_nodes =
        i32::try_from(observed.pods.iter().filter(|p| p.ready).count()).unwrap_or(i32::MAX);
    status.node_summary = Some(format!("{}/{}", status.ready_nodes, cluster.spec.replicas));
    if observed.membership.is_some() {
        status.leader = observed.meta_leader_pod().map(str::to_owned);
        status.nodes = nodes(cluster, observed);
    }
    for condition in [
        ready(cluster, observed, &status, bootstrapped),
        progressing(cluster, observed, step, bootstrapped),
        degraded(observed, steps),
    ] {
        set_condition(&mut status.conditions, condition, generation, now);
    }
    status
}

/// Every pod and every member, by ordinal: members report their role and state,
/// leaving nodes report `Draining`, pods unknown to the cluster `Unknown`.
fn nodes(cluster: &Cluster, observed: &Observed) -> Vec<NodeStatus> {
    let leaving: Vec<&str> = cluster
        .scale_down()
        .map(|i| i.pods.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let mut pods: Vec<&str> = observed.pods.iter().map(|p| p.name.as_str()).collect();
    if let Some(membership) = &observed.membership {
        pods.extend(membership.nodes.iter().map(|n| n.pod.as_str()));
    }
    pods.sort_by_key(|p| (cluster.ordinal_of(p).unwrap_or(i32::MAX), p.to_string()));
    pods.dedup();
    pods.into_iter()
        .map(|pod| {
            let member = observed.member_in_pod(pod);
            let state = match member {
                Some(_) if leaving.contains(&pod) => NodeState::Draining,
                Some(node) => node.state,
                None => NodeState::Unknown,
            };
            NodeStatus {
                pod: pod.to_owned(),
                node_id: member.map(|n| n.node_id.clone()),
                role: member.map(|n| n.role),
                state,
                labels: member.map(|n| n.labels.clone()).unwrap_or_default(),
            }
        })
        .collect()
}

fn ready(
    cluster: &Cluster,
    observed: &Observed,
    status: &ClusterStatus,
    bootstrapped: bool,
) -> NewCondition {
    let condition = |ok, reason, message: String| {
        NewCondition::new(
            ConditionType::Ready,
            ConditionStatus::from_bool(ok),
            reason,
            message,
        )
    };
    if !bootstrapped {
        return condition(
            false,
            Reason::Bootstrapping,
            "the first node is initialising the cluster".to_owned(),
        );
    }
    if observed.membership.is_none() {
        return condition(
            false,
            Reason::ClusterUnreachable,
            "no node answers on its admin API".to_owned(),
        );
    }
    let wanted = cluster.spec.replicas;
    let members = status
        .nodes
        .iter()
        .filter(|n| n.state == NodeState::Member)
        .count();
    if status.ready_nodes >= wanted && usize::try_from(wanted).is_ok_and(|w| members >= w) {
        condition(
            true,
            Reason::AllMembersReady,
            format!("{wanted} of {wanted} nodes are ready members"),
        )
    } else {
        condition(
            false,
            Reason::NodesNotReady,
            format!(
                "{} of {wanted} nodes ready, {members} caught-up members",
                status.ready_nodes
            ),
        )
    }
}

fn progressing(
    cluster: &Cluster,
    observed: &Observed,
    step: Option<&Step>,
    bootstrapped: bool,
) -> NewCondition {
    let condition = |ok, reason, message: String| {
        NewCondition::new(
            ConditionType::Progressing,
            ConditionStatus::from_bool(ok),
            reason,
            message,
        )
    };
    if cluster.spec.paused {
        return condition(false, Reason::Paused, "spec.paused is set".to_owned());
    }
    if !bootstrapped {
        return condition(
            true,
            Reason::Bootstrapping,
            "waiting for the first node to initialise the cluster".to_owned(),
        );
    }
    match step {
        Some(Step::RecordScaleDown(intent)) => condition(
            true,
            Reason::ScalingDown,
            format!("scaling down from {} to {} nodes", intent.from, intent.to),
        ),
        Some(Step::DrainNode { pod, .. }) => {
            condition(true, Reason::ScalingDown, format!("draining {pod}"))
        }
        Some(Step::RemoveNode { pod, .. }) => condition(
            true,
            Reason::ScalingDown,
            format!("removing {pod} from the cluster"),
        ),
        Some(Step::StartShrinking) => condition(
            true,
            Reason::ScalingDown,
            "shrinking the StatefulSet".to_owned(),
        ),
        Some(Step::DeletePvc { name }) => {
            condition(true, Reason::ScalingDown, format!("deleting volume {name}"))
        }
        Some(Step::FinishScaleDown) => {
            condition(true, Reason::ScalingDown, "scale-down complete".to_owned())
        }
        Some(Step::TransferLeadership { pod, .. }) => condition(
            true,
            Reason::LeadershipTransfer,
            format!("moving leadership off {pod} before it restarts"),
        ),
        Some(Step::HandOverLeadership { pod, .. }) => condition(
            true,
            Reason::LeadershipTransfer,
            format!("moving leadership off {pod}, as asked"),
        ),
        Some(Step::FinishHandOver { pod }) => condition(
            true,
            Reason::LeadershipTransfer,
            format!("{pod} leads nothing any more"),
        ),
        Some(Step::RestartPod { pod }) => {
            condition(true, Reason::RollingRestart, format!("restarting {pod}"))
        }
        Some(Step::ReplaceNode { pod, action }) => {
            let what = match action {
                Replacement::RemoveFromCluster { .. } => "removing the lost node from the cluster",
                Replacement::DeleteVolume { .. } => "deleting the lost node's volume",
                Replacement::RecreatePod => "recreating the pod with a fresh node",
                Replacement::ForceDeletePod { .. } => {
                    "deleting the pod stuck terminating on a lost Kubernetes node"
                }
            };
            condition(true, Reason::ReplacingNode, format!("{pod}: {what}"))
        }
        Some(Step::ExpandVolume { pvc, size }) => condition(
            true,
            Reason::VolumeGrowth,
            format!("growing volume {pvc} to {size}"),
        ),
        Some(Step::RecreateStatefulSet { volume_size }) => condition(
            true,
            Reason::VolumeGrowth,
            format!(
                "every volume has {volume_size}: re-creating the StatefulSet with its pods kept"
            ),
        ),
        Some(Step::Wait { reason, message }) => condition(true, *reason, message.clone()),
        Some(Step::Refuse { reason, message }) => condition(false, *reason, message.clone()),
        None => {
            let pods = i32::try_from(observed.pods.len()).unwrap_or(i32::MAX);
            let outdated = restart::outdated_pods(observed).len();
            if pods < cluster.spec.replicas {
                condition(
                    true,
                    Reason::ScalingUp,
                    format!("{pods} of {} pods exist", cluster.spec.replicas),
                )
            } else if outdated > 0 {
                condition(
                    true,
                    Reason::RollingRestart,
                    format!("{outdated} pods to restart"),
                )
            } else {
                condition(
                    false,
                    Reason::Idle,
                    "the cluster is as its spec asks".to_owned(),
                )
            }
        }
    }
}

fn degraded(observed: &Observed, steps: &[Step]) -> NewCondition {
    let condition = |bad, reason, message: String| {
        NewCondition::new(
            ConditionType::Degraded,
            ConditionStatus::from_bool(bad),
            reason,
            message,
        )
    };
    if let Some(Step::Refuse { reason, message }) =
        steps.iter().find(|s| matches!(s, Step::Refuse { .. }))
    {
        return condition(true, *reason, message.clone());
    }
    let rehab: Vec<&str> = observed
        .membership
        .iter()
        .flat_map(|m| &m.nodes)
        .filter(|n| n.state == NodeState::Rehab)
        .map(|n| n.pod.as_str())
        .collect();
    if !rehab.is_empty() {
        return condition(
            true,
            Reason::NodesNotReady,
            format!("nodes in rehab: {}", rehab.join(", ")),
        );
    }
    if observed.kube_nodes == KubeNodes::Forbidden {
        return condition(
            true,
            Reason::NodeLabelsForbidden,
            "the operator may not get Kubernetes Nodes, so spec.placementLabels are not \
             copied to the nodes: grant it `get` on `nodes`, or set `placementLabels: []`"
                .to_owned(),
        );
    }
    condition(false, Reason::Healthy, "nothing is wrong".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::conditions::find_condition;
    use crate::crd::{NodeRole, ScaleDownIntent, ScaleDownPhase};
    use crate::plan::fixtures::{healthy, node_id};
    use k8s_openapi::jiff::Timestamp;

    fn now() -> Time {
        Time(Timestamp::UNIX_EPOCH)
    }

    fn condition(status: &ClusterStatus, type_: ConditionType) -> (String, String) {
        find_condition(&status.conditions, type_)
            .map(|c| (c.status.clone(), c.reason.clone()))
            .unwrap_or_default()
    }

    fn pair(status: &str, reason: Reason) -> (String, String) {
        (status.to_owned(), reason.as_str().to_owned())
    }

    #[test]
    fn a_healthy_cluster_is_ready_idle_and_not_degraded() {
        let cluster = Cluster::test().with_cluster_id("c").with_generation(7);
        let status = cluster_status(&cluster, &healthy(&cluster, 3), &[], &now());
        assert_eq!(
            condition(&status, ConditionType::Ready),
            pair("True", Reason::AllMembersReady)
        );
        assert_eq!(
            condition(&status, ConditionType::Progressing),
            pair("False", Reason::Idle)
        );
        assert_eq!(
            condition(&status, ConditionType::Degraded),
            pair("False", Reason::Healthy)
        );
        assert_eq!(status.observed_generation, Some(7));
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(7))
        );
        assert_eq!(status.ready_nodes, 3);
        assert_eq!(status.node_summary.as_deref(), Some("3/3"));
        assert_eq!(status.leader.as_deref(), Some("flotilla-0"));
    }

    #[test]
    fn the_cluster_id_is_recorded_once_the_first_node_reports_it() {
        let cluster = Cluster::test();
        let status = cluster_status(&cluster, &healthy(&cluster, 1), &[], &now());
        assert_eq!(status.cluster_id.as_deref(), Some("c"));
    }

    #[test]
    fn an_empty_cluster_id_is_not_recorded() {
        let cluster = Cluster::test();
        let mut observed = healthy(&cluster, 1);
        if let Some(membership) = observed.membership.as_mut() {
            membership.cluster_id = String::new();
        }
        let status = cluster_status(&cluster, &observed, &[], &now());
        assert_eq!(
            status.cluster_id, None,
            "the first node has not bootstrapped yet"
        );
        let recorded_empty = Cluster::test().with_cluster_id("");
        let status = cluster_status(&recorded_empty, &healthy(&cluster, 1), &[], &now());
        assert_eq!(
            status.cluster_id.as_deref(),
            Some("c"),
            "the real id replaces it"
        );
    }

    #[test]
    fn a_lost_cluster_id_is_recovered_from_the_statefulset_even_when_no_node_answers() {
        let cluster = Cluster::test();
        let mut observed = healthy(&cluster, 3).unreachable();
        if let Some(sts) = observed.statefulset.as_mut() {
            sts.cluster_id = Some("kept".to_owned());
        }
        let status = cluster_status(&cluster, &observed, &[], &now());
        assert_eq!(status.cluster_id.as_deref(), Some("kept"));
        assert_eq!(
            condition(&status, ConditionType::Ready),
            pair("False", Reason::ClusterUnreachable)
        );
    }

    #[test]
    fn a_recorded_cluster_id_never_changes() {
        let cluster = Cluster::test().with_cluster_id("first");
        let status = cluster_status(&cluster, &healthy(&cluster, 3), &[], &now());
        assert_eq!(status.cluster_id.as_deref(), Some("first"));
    }

    #[test]
    fn a_fresh_cluster_reports_bootstrapping() {
        let cluster = Cluster::test();
        let observed = Observed::default();
        let status = cluster_status(&cluster, &observed, &[], &now());
        assert_eq!(
            condition(&status, ConditionType::Ready),
            pair("False", Reason::Bootstrapping)
        );
        assert_eq!(
            condition(&status, ConditionType::Progressing),
            pair("True", Reason::Bootstrapping)
        );
    }

    #[test]
    fn nodes_list_members_with_role_and_state_and_joining_pods_as_unknown() {
        let cluster = Cluster::test().with_cluster_id("c").with_replicas(4);
        let mut observed = healthy(&cluster, 4).without_member(&node_id(3));
        observed = observed.with_state(&node_id(2), NodeState::Promotable);
        let status = cluster_status(&cluster, &observed, &[], &now());
        let nodes: Vec<_> = status
            .nodes
            .iter()
            .map(|n| (n.pod.as_str(), n.role, n.state))
            .collect();
        assert_eq!(
            nodes,
            vec![
                ("flotilla-0", Some(NodeRole::Voter), NodeState::Member),
                ("flotilla-1", Some(NodeRole::Voter), NodeState::Member),
                ("flotilla-2", Some(NodeRole::Voter), NodeState::Promotable),
                ("flotilla-3", None, NodeState::Unknown),
            ]
        );
        assert_eq!(
            condition(&status, ConditionType::Ready),
            pair("False", Reason::NodesNotReady)
        );
    }

    #[test]
    fn leaving_nodes_are_reported_as_draining() {
        let intent = ScaleDownIntent {
            from: 4,
            to: 3,
            pods: vec!["flotilla-3".to_owned()],
            phase: ScaleDownPhase::Draining,
        };
        let cluster = Cluster::test()
            .with_cluster_id("c")
            .with_scale_down(intent.clone());
        let observed = healthy(&cluster, 4);
        let step = Step::DrainNode {
            pod: "flotilla-3".to_owned(),
            node_id: node_id(3),
        };
        let status = cluster_status(&cluster, &observed, std::slice::from_ref(&step), &now());
        assert_eq!(
            status.nodes.last().map(|n| n.state),
            Some(NodeState::Draining)
        );
        assert_eq!(status.scale_down, Some(intent));
        assert_eq!(
            condition(&status, ConditionType::Progressing),
            pair("True", Reason::ScalingDown)
        );
    }

    #[test]
    fn a_refused_scale_down_degrades_the_cluster() {
        let cluster = Cluster::test().with_cluster_id("c").with_replicas(2);
        let step = Step::Refuse {
            reason: Reason::ScaleDownRefused,
            message: "needs 3".to_owned(),
        };
        let status = cluster_status(
            &cluster,
            &healthy(&cluster, 3),
            std::slice::from_ref(&step),
            &now(),
        );
        assert_eq!(
            condition(&status, ConditionType::Degraded),
            pair("True", Reason::ScaleDownRefused)
        );
        assert_eq!(
            condition(&status, ConditionType::Progressing),
            pair("False", Reason::ScaleDownRefused)
        );
    }

    #[test]
    fn a_node_in_rehab_degrades_the_cluster() {
        let cluster = Cluster::test().with_cluster_id("c");
        let observed = healthy(&cluster, 3)
            .with_state(&node_id(1), NodeState::Rehab)
            .not_ready("flotilla-1");
        let status = cluster_status(&cluster, &observed, &[], &now());
        assert_eq!(
            condition(&status, ConditionType::Degraded),
            pair("True", Reason::NodesNotReady)
        );
        assert_eq!(
            condition(&status, ConditionType::Ready),
            pair("False", Reason::NodesNotReady)
        );
        assert_eq!(status.node_summary.as_deref(), Some("2/3"));
    }

    #[test]
    fn nodes_report_the_labels_the_cluster_gives_them() {
        let cluster = Cluster::test().with_cluster_id("c");
        let mut observed = healthy(&cluster, 3);
        if let Some(m) = observed.membership.as_mut() {
            m.nodes[1].labels = [("zone".to_owned(), "a".to_owned())].into();
        }
        let status = cluster_status(&cluster, &observed, &[], &now());
        let labels: Vec<_> = status.nodes.iter().map(|n| n.labels.len()).collect();
        assert_eq!(labels, [0, 1, 0]);
    }

    #[test]
    fn nodes_the_operator_may_not_read_degrade_the_cluster_but_leave_it_ready() {
        let cluster = Cluster::test().with_cluster_id("c");
        let mut observed = healthy(&cluster, 3);
        observed.kube_nodes = KubeNodes::Forbidden;
        let status = cluster_status(&cluster, &observed, &[], &now());
        assert_eq!(
            condition(&status, ConditionType::Degraded),
            pair("True", Reason::NodeLabelsForbidden)
        );
        assert_eq!(
            condition(&status, ConditionType::Ready),
            pair("True", Reason::AllMembersReady)
        );
    }

    #[test]
    fn an_unreachable_cluster_keeps_its_last_known_nodes() {
        let cluster = Cluster::test().with_cluster_id("c");
        let first = cluster_status(&cluster, &healthy(&cluster, 3), &[], &now());
        let mut known = cluster.clone();
        known.status = Some(first.clone());
        let status = cluster_status(&known, &healthy(&cluster, 3).unreachable(), &[], &now());
        assert_eq!(status.nodes, first.nodes);
        assert_eq!(
            condition(&status, ConditionType::Ready),
            pair("False", Reason::ClusterUnreachable)
        );
    }

    #[test]
    fn a_second_pass_on_the_same_observation_changes_nothing() {
        let cluster = Cluster::test().with_cluster_id("c");
        let observed = healthy(&cluster, 3);
        let first = cluster_status(&cluster, &observed, &[], &now());
        let mut again = cluster.clone();
        again.status = Some(first.clone());
        let later = Time(Timestamp::from_second(1000).unwrap_or(Timestamp::UNIX_EPOCH));
        assert_eq!(cluster_status(&again, &observed, &[], &later), first);
    }

    #[test]
    fn a_growing_cluster_is_progressing_while_scaling_up() {
        let cluster = Cluster::test().with_cluster_id("c").with_replicas(5);
        let status = cluster_status(&cluster, &healthy(&cluster, 3), &[], &now());
        assert_eq!(
            condition(&status, ConditionType::Progressing),
            pair("True", Reason::ScalingUp)
        );
    }
}
