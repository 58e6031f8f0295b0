//! Builds a [`Report`] from the objects of one cluster.

use super::{GroupReport, NodeRow, Report, ShardRow};
use crate::crd::conditions::{ConditionType, find_condition};
use crate::crd::{Cluster, DatabaseGroup, NodeRole, NodeState};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

/// The report of `cluster`, its DatabaseGroups (those of other clusters are ignored)
/// and its pods.
pub fn report(cluster: &Cluster, groups: &[DatabaseGroup], pods: &[Pod]) -> Report {
    let status = cluster.status.clone().unwrap_or_default();
    let name = cluster.name_any();
    let mut problems = Vec::new();

    let nodes: Vec<NodeRow> = status
        .nodes
        .iter()
        .map(|node| {
            let pod = pods.iter().find(|p| p.name_any() == node.pod);
            let ready = pod.is_some_and(pod_ready);
            if pod.is_none() {
                problems.push(format!("pod {} does not exist", node.pod));
            } else if !ready {
                problems.push(format!("pod {} is not ready", node.pod));
            }
            if node.state == NodeState::Rehab {
                problems.push(format!("node in {} is in rehab", node.pod));
            }
            NodeRow {
                pod: node.pod.clone(),
                node_id: node.node_id.clone(),
                role: node.role.map(|r| match r {
                    NodeRole::Voter => "Voter".to_owned(),
                    NodeRole::Learner => "Learner".to_owned(),
                }),
                state: format!("{:?}", node.state),
                ready,
                k8s_node: pod.and_then(|p| p.spec.as_ref()?.node_name.clone()),
                labels: node.labels.clone(),
            }
        })
        .collect();

    let database_groups = groups
        .iter()
        .filter(|g| g.cluster_name() == name)
        .map(|group| {
            let status = group.status.clone().unwrap_or_default();
            if !status.replication_factor_met {
                problems.push(format!(
                    "DatabaseGroup {}: replication factor {} not met",
                    group.name_any(),
                    group.spec.replication_factor
                ));
            }
            GroupReport {
                name: group.name_any(),
                database: group.database_name().unwrap_or_default().to_owned(),
                replication_factor: group.spec.replication_factor,
                replication_factor_met: status.replication_factor_met,
                shards: status
                    .shards
                    .iter()
                    .map(|s| ShardRow {
                        shard: s.shard,
                        leader: s.leader.clone(),
                        members: s.members.clone(),
                        promotables: s.promotables.clone(),
                        rehab: s.rehab.clone(),
                    })
                    .collect(),
            }
        })
        .collect();

    for type_ in [ConditionType::Degraded, ConditionType::Ready] {
        if let Some(c) = find_condition(&status.conditions, type_) {
            let bad = match type_ {
                ConditionType::Degraded => c.status == "True",
                _ => c.status != "True",
            };
            if bad {
                problems.insert(0, format!("{}: {} ({})", type_, c.message, c.reason));
            }
        }
    }
    if let Some(intent) = &status.scale_down {
        problems.push(format!(
            "scale-down from {} to {} in progress ({:?}): {}",
            intent.from,
            intent.to,
            intent.phase,
            intent.pods.join(", ")
        ));
    }
    if status.observed_generation < cluster.metadata.generation {
        problems.push("the operator has not yet seen the latest spec".to_owned());
    }

    Report {
        cluster: name,
        namespace: cluster.namespace().unwrap_or_default(),
        phase: phase(cluster),
        ready_nodes: status.ready_nodes,
        desired_nodes: cluster.spec.replicas,
        meta_leader: status.leader.clone(),
        image: cluster.spec.image.clone(),
        cluster_id: status.cluster_id.clone(),
        nodes,
        database_groups,
        problems,
    }
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// One word for the cluster's state, with the reason of the condition behind it.
fn phase(cluster: &Cluster) -> String {
    let conditions = cluster
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let condition = |t| find_condition(conditions, t);
    if cluster.spec.paused {
        return "Paused".to_owned();
    }
    if cluster.recorded_cluster_id().is_none() {
        return "Bootstrapping".to_owned();
    }
    if let Some(c) = condition(ConditionType::Degraded).filter(|c| c.status == "True") {
        return format!("Degraded ({})", c.reason);
    }
    if let Some(c) = condition(ConditionType::Progressing).filter(|c| c.status == "True") {
        return format!("Progressing ({})", c.reason);
    }
    match condition(ConditionType::Ready) {
        Some(c) if c.status == "True" => "Healthy".to_owned(),
        Some(c) => format!("Not ready ({})", c.reason),
        None => "Unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::conditions::{NewCondition, set_condition};
    use crate::crd::{ConditionStatus, Reason};
    use crate::crd::{NodeStatus, ShardStatus};
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn pod(name: &str, ready: bool, node: &str) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.to_owned());
        pod.spec = Some(PodSpec {
            node_name: Some(node.to_owned()),
            ..PodSpec::default()
        });
        pod.status = Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Ready".to_owned(),
                status: if ready { "True" } else { "False" }.to_owned(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        });
        pod
    }

    fn cluster() -> Cluster {
        let mut cluster = Cluster::test().with_cluster_id("c-1");
        let now = Time(Timestamp::UNIX_EPOCH);
        let status = cluster.status_mut();
        status.observed_generation = Some(1);
        status.ready_nodes = 2;
        status.leader = Some("flotilla-0".to_owned());
        status.nodes = (0..3)
            .map(|i| NodeStatus {
                pod: format!("flotilla-{i}"),
                node_id: Some(format!("n{i}")),
                role: Some(NodeRole::Voter),
                state: if i == 2 {
                    NodeState::Rehab
                } else {
                    NodeState::Member
                },
                labels: Default::default(),
            })
            .collect();
        for (type_, value, reason) in [
            (
                ConditionType::Ready,
                ConditionStatus::False,
                Reason::NodesNotReady,
            ),
            (
                ConditionType::Degraded,
                ConditionStatus::True,
                Reason::NodesNotReady,
            ),
        ] {
            set_condition(
                &mut status.conditions,
                NewCondition::new(type_, value, reason, "2 of 3 nodes ready"),
                Some(1),
                &now,
            );
        }
        cluster
    }

    fn group(cluster: &str) -> DatabaseGroup {
        let mut group = DatabaseGroup::test().on_cluster(cluster);
        group.status = Some(crate::crd::DatabaseGroupStatus {
            replication_factor_met: false,
            shards: vec![ShardStatus {
                shard: 0,
                leader: Some("flotilla-0".to_owned()),
                members: vec!["flotilla-0".to_owned(), "flotilla-1".to_owned()],
                promotables: Vec::new(),
                rehab: vec!["flotilla-2".to_owned()],
            }],
            ..Default::default()
        });
        group
    }

    #[test]
    fn the_report_collects_nodes_groups_and_problems() {
        let pods = [
            pod("flotilla-0", true, "k1"),
            pod("flotilla-1", true, "k2"),
            pod("flotilla-2", false, "k3"),
        ];
        let report = report(&cluster(), &[group("flotilla"), group("other")], &pods);
        assert_eq!(report.phase, "Degraded (NodesNotReady)");
        assert_eq!((report.ready_nodes, report.desired_nodes), (2, 3));
        assert_eq!(report.meta_leader.as_deref(), Some("flotilla-0"));
        assert_eq!(report.nodes.len(), 3);
        assert_eq!(report.nodes[2].k8s_node.as_deref(), Some("k3"));
        assert!(!report.nodes[2].ready);
        assert_eq!(
            report.database_groups.len(),
            1,
            "groups of other clusters are left out"
        );
        assert_eq!(report.database_groups[0].shards[0].rehab, ["flotilla-2"]);
        assert_eq!(
            report.problems,
            [
                "Ready: 2 of 3 nodes ready (NodesNotReady)",
                "Degraded: 2 of 3 nodes ready (NodesNotReady)",
                "pod flotilla-2 is not ready",
                "node in flotilla-2 is in rehab",
                "DatabaseGroup orders: replication factor 3 not met",
            ]
        );
    }

    #[test]
    fn a_fresh_cluster_is_bootstrapping() {
        let report = report(&Cluster::test(), &[], &[]);
        assert_eq!(report.phase, "Bootstrapping");
        assert!(report.nodes.is_empty());
    }
}
