//! Placement labels from Kubernetes Nodes: which labels each Flotilla node should carry,
//! copied from the Node its pod runs on (`spec.placementLabels` names the keys), and
//! which nodes must be told because what the cluster reports differs.
//!
//! The keys in `spec.placementLabels` are the operator's: their values follow the Node
//! (a key the Node no longer carries is taken off). Every other label a node carries is
//! left as it is. A settled cluster needs no assignment.

use super::Observed;
use super::observed::{KubeNodes, Labels, MemberNode};
use crate::crd::{Cluster, NodeState};

/// Longest label key or value a Flotilla node accepts.
const MAX_LABEL_LEN: usize = 63;

/// Labels to give one node through the admin API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelAssignment {
    pub pod: String,
    pub node_id: String,
    /// The Kubernetes Node the pod runs on.
    pub kube_node: String,
    /// The labels to assign: the node's labels now, with the placement keys set as the
    /// Node has them (assigning replaces what was assigned before).
    pub labels: Labels,
    /// The placement labels alone, for display.
    pub placement: Labels,
}

/// Whether a Flotilla node accepts the label: key and value of 1 to 63 letters, digits,
/// `-`, `_` or `.` (and `/` in the key). Kubernetes allows more (empty values, long
/// prefixes); such labels are not copied.
pub fn is_copyable(key: &str, value: &str) -> bool {
    let valid = |text: &str, slash: bool| {
        (1..=MAX_LABEL_LEN).contains(&text.len())
            && text.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') || (slash && c == '/')
            })
    };
    valid(key, true) && valid(value, false)
}

/// The placement labels a node should carry: the values the Kubernetes Node has under
/// `keys`, except those a Flotilla node would refuse.
pub fn wanted_labels(keys: &[String], kube_node: &Labels) -> Labels {
    keys.iter()
        .filter_map(|key| {
            let value = kube_node.get(key)?;
            is_copyable(key, value).then(|| (key.clone(), value.clone()))
        })
        .collect()
}

/// What to assign to `member` so that its placement keys match `wanted`; `None` when they
/// already do.
pub fn assignment_for(keys: &[String], member: &MemberNode, wanted: &Labels) -> Option<Labels> {
    let current: Labels = member
        .labels
        .iter()
        .filter(|(k, _)| keys.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if current == *wanted {
        return None;
    }
    let mut labels: Labels = member
        .labels
        .iter()
        .filter(|(k, _)| !keys.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.extend(wanted.iter().map(|(k, v)| (k.clone(), v.clone())));
    Some(labels)
}

/// The label assignments `cluster` needs now: one per running pod whose node is a member,
/// whose Kubernetes Node was read, and whose placement labels differ from the Node's.
/// None for a paused cluster, while the membership is unknown, or when Nodes could not be
/// read.
pub fn assignments(cluster: &Cluster, observed: &Observed) -> Vec<LabelAssignment> {
    let keys = &cluster.spec.placement_labels;
    if cluster.spec.paused || keys.is_empty() {
        return Vec::new();
    }
    let KubeNodes::Read(kube_nodes) = &observed.kube_nodes else {
        return Vec::new();
    };
    observed
        .pods
        .iter()
        .filter(|pod| !pod.terminating)
        .filter_map(|pod| {
            let kube_node = pod.kube_node.as_ref()?;
            let node_labels = kube_nodes.get(kube_node)?;
            let member = member_of_a_formed_cluster(observed, &pod.name)?;
            let placement = wanted_labels(keys, node_labels);
            let labels = assignment_for(keys, member, &placement)?;
            Some(LabelAssignment {
                pod: pod.name.clone(),
                node_id: member.node_id.clone(),
                kube_node: kube_node.clone(),
                labels,
                placement,
            })
        })
        .collect()
}

/// The node in `pod`, once it is a member of a formed cluster. Before the first node has
/// initialised the cluster (it reports no cluster id yet) no node is a member of anything,
/// and the cluster would refuse its labels.
fn member_of_a_formed_cluster<'a>(observed: &'a Observed, pod: &str) -> Option<&'a MemberNode> {
    let membership = observed.membership.as_ref()?;
    if membership.cluster_id.is_empty() {
        return None;
    }
    observed
        .member_in_pod(pod)
        .filter(|member| member.state != NodeState::Unknown)
}

/// Names of the Kubernetes Nodes worth reading: those running a pod whose node is a
/// member, when placement labels are asked for.
pub fn kube_nodes_to_read(cluster: &Cluster, observed: &Observed) -> Vec<String> {
    if cluster.spec.paused || cluster.spec.placement_labels.is_empty() {
        return Vec::new();
    }
    let mut names: Vec<String> = observed
        .pods
        .iter()
        .filter(|pod| !pod.terminating && member_of_a_formed_cluster(observed, &pod.name).is_some())
        .filter_map(|pod| pod.kube_node.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fixtures::{healthy, node_id};
    use std::collections::BTreeMap;

    const ZONE: &str = "topology.kubernetes.io/zone";
    const REGION: &str = "topology.kubernetes.io/region";

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Three machines: `m0` and `m2` in zone a, `m1` in zone b, all in region eu.
    fn machines() -> KubeNodes {
        KubeNodes::Read(BTreeMap::from([
            (
                "m0".to_owned(),
                labels(&[
                    (ZONE, "eu-1a"),
                    (REGION, "eu-1"),
                    ("kubernetes.io/os", "linux"),
                ]),
            ),
            (
                "m1".to_owned(),
                labels(&[(ZONE, "eu-1b"), (REGION, "eu-1")]),
            ),
            (
                "m2".to_owned(),
                labels(&[(ZONE, "eu-1a"), (REGION, "eu-1")]),
            ),
        ]))
    }

    /// A healthy 3-node cluster whose pod `i` runs on machine `m{i}`.
    fn scheduled(cluster: &Cluster) -> Observed {
        let mut observed = healthy(cluster, 3);
        for pod in &mut observed.pods {
            pod.kube_node = Some(format!("m{}", pod.ordinal));
        }
        observed.kube_nodes = machines();
        observed
    }

    fn carrying(mut observed: Observed, node: &str, carried: Labels) -> Observed {
        if let Some(m) = observed.membership.as_mut() {
            for n in m.nodes.iter_mut().filter(|n| n.node_id == node) {
                n.labels = carried.clone();
            }
        }
        observed
    }

    fn settled(cluster: &Cluster) -> Observed {
        let mut observed = scheduled(cluster);
        for (ordinal, zone) in [(0, "eu-1a"), (1, "eu-1b"), (2, "eu-1a")] {
            observed = carrying(
                observed,
                &node_id(ordinal),
                labels(&[(ZONE, zone), (REGION, "eu-1")]),
            );
        }
        observed
    }

    #[test]
    fn every_node_gets_the_zone_and_region_of_its_machine() {
        let cluster = Cluster::test().with_cluster_id("c");
        let steps = assignments(&cluster, &scheduled(&cluster));
        let got: Vec<_> = steps
            .iter()
            .map(|a| (a.pod.as_str(), a.node_id.as_str(), a.labels.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "flotilla-0",
                    "n0",
                    labels(&[(ZONE, "eu-1a"), (REGION, "eu-1")])
                ),
                (
                    "flotilla-1",
                    "n1",
                    labels(&[(ZONE, "eu-1b"), (REGION, "eu-1")])
                ),
                (
                    "flotilla-2",
                    "n2",
                    labels(&[(ZONE, "eu-1a"), (REGION, "eu-1")])
                ),
            ],
            "other labels of the machine are not copied"
        );
    }

    #[test]
    fn a_node_gets_no_labels_before_the_cluster_is_formed() {
        let cluster = Cluster::test();
        let mut observed = scheduled(&cluster);
        if let Some(m) = observed.membership.as_mut() {
            m.cluster_id = String::new();
        }
        assert_eq!(assignments(&cluster, &observed), Vec::new());
        assert_eq!(
            kube_nodes_to_read(&cluster, &observed),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_settled_cluster_needs_no_assignment() {
        let cluster = Cluster::test().with_cluster_id("c");
        assert_eq!(assignments(&cluster, &settled(&cluster)), Vec::new());
    }

    #[test]
    fn only_the_node_whose_labels_differ_is_told() {
        let cluster = Cluster::test().with_cluster_id("c");
        let observed = carrying(
            settled(&cluster),
            &node_id(1),
            labels(&[(ZONE, "eu-1a"), (REGION, "eu-1")]),
        );
        let steps = assignments(&cluster, &observed);
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].pod, "flotilla-1");
        assert_eq!(steps[0].kube_node, "m1");
        assert_eq!(
            steps[0].placement.get(ZONE).map(String::as_str),
            Some("eu-1b")
        );
    }

    #[test]
    fn labels_outside_the_placement_keys_are_kept() {
        let cluster = Cluster::test().with_cluster_id("c");
        let observed = carrying(
            settled(&cluster),
            &node_id(0),
            labels(&[(ZONE, "old"), (REGION, "eu-1"), ("disk", "ssd")]),
        );
        let steps = assignments(&cluster, &observed);
        assert_eq!(
            steps.first().map(|a| a.labels.clone()),
            Some(labels(&[
                (ZONE, "eu-1a"),
                (REGION, "eu-1"),
                ("disk", "ssd")
            ]))
        );
        assert_eq!(
            steps.first().map(|a| a.placement.clone()),
            Some(labels(&[(ZONE, "eu-1a"), (REGION, "eu-1")]))
        );
    }

    #[test]
    fn a_key_the_machine_lost_is_taken_off_the_node() {
        let cluster = Cluster::test().with_cluster_id("c");
        let mut observed = settled(&cluster);
        observed.kube_nodes = KubeNodes::Read(BTreeMap::from([
            ("m0".to_owned(), labels(&[(ZONE, "eu-1a")])),
            (
                "m1".to_owned(),
                labels(&[(ZONE, "eu-1b"), (REGION, "eu-1")]),
            ),
            (
                "m2".to_owned(),
                labels(&[(ZONE, "eu-1a"), (REGION, "eu-1")]),
            ),
        ]));
        let steps = assignments(&cluster, &observed);
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].labels, labels(&[(ZONE, "eu-1a")]));
    }

    #[test]
    fn only_the_listed_keys_are_copied() {
        let mut cluster = Cluster::test().with_cluster_id("c");
        cluster.spec.placement_labels = vec!["kubernetes.io/os".to_owned()];
        let steps = assignments(&cluster, &scheduled(&cluster));
        assert_eq!(
            steps.first().map(|a| a.labels.clone()),
            Some(labels(&[("kubernetes.io/os", "linux")]))
        );
        assert_eq!(steps.len(), 1, "the other machines have no such label");
    }

    #[test]
    fn labels_a_node_would_refuse_are_not_copied() {
        assert!(is_copyable(ZONE, "eu-1a"));
        assert!(!is_copyable("node-role.kubernetes.io/control-plane", ""));
        assert!(!is_copyable(
            &format!("example.com/{}", "k".repeat(60)),
            "v"
        ));
        assert!(!is_copyable("zone", "a b"));
        assert!(!is_copyable("zone", "a/b"));
        let node = labels(&[(ZONE, ""), (REGION, "eu-1")]);
        let keys = [ZONE.to_owned(), REGION.to_owned()];
        assert_eq!(wanted_labels(&keys, &node), labels(&[(REGION, "eu-1")]));
    }

    #[test]
    fn nothing_is_assigned_without_keys_membership_nodes_or_while_paused() {
        let cluster = Cluster::test().with_cluster_id("c");
        let mut none = cluster.clone();
        none.spec.placement_labels.clear();
        assert_eq!(assignments(&none, &scheduled(&none)), Vec::new());
        assert_eq!(
            kube_nodes_to_read(&none, &scheduled(&none)),
            Vec::<String>::new()
        );
        let paused = cluster.clone().paused();
        assert_eq!(assignments(&paused, &scheduled(&paused)), Vec::new());
        let unreachable = scheduled(&cluster).unreachable();
        assert_eq!(assignments(&cluster, &unreachable), Vec::new());
        assert_eq!(
            kube_nodes_to_read(&cluster, &unreachable),
            Vec::<String>::new()
        );
        let mut forbidden = scheduled(&cluster);
        forbidden.kube_nodes = KubeNodes::Forbidden;
        assert_eq!(assignments(&cluster, &forbidden), Vec::new());
    }

    #[test]
    fn pods_not_yet_members_terminating_or_unscheduled_get_nothing() {
        let cluster = Cluster::test().with_cluster_id("c");
        let mut observed = scheduled(&cluster).without_member(&node_id(2));
        observed.pods[0].terminating = true;
        observed.pods[1].kube_node = None;
        assert_eq!(assignments(&cluster, &observed), Vec::new());
        assert_eq!(
            kube_nodes_to_read(&cluster, &observed),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_missing_machine_is_skipped_and_each_machine_is_read_once() {
        let cluster = Cluster::test().with_cluster_id("c");
        let mut observed = scheduled(&cluster);
        observed.pods[2].kube_node = Some("m0".to_owned());
        assert_eq!(kube_nodes_to_read(&cluster, &observed), ["m0", "m1"]);
        observed.pods[1].kube_node = Some("gone".to_owned());
        let pods: Vec<_> = assignments(&cluster, &observed)
            .into_iter()
            .map(|a| a.pod)
            .collect();
        assert_eq!(pods, ["flotilla-0", "flotilla-2"]);
    }
}
