//! Whether the Raft cluster of a `Cluster` exists already, decided from every trace it
//! leaves, never from the status alone: a status is lost in a backup restore, when the
//! `Cluster` object is re-created, or when someone resets it. Telling the nodes of a
//! running cluster to start a new one would shrink the StatefulSet to one pod (N-1 nodes
//! die, quorum is lost) and, on a fresh volume, start a second cluster.
//!
//! Each trace is a small named check that returns the [`Evidence`] it found. The cluster
//! id is also kept on the StatefulSet and on every volume (annotation
//! `flotilla.dev/cluster-id`), so that a lost status gets it back.

use super::{Observed, Step};
use crate::crd::{Cluster, Reason};
use crate::desired::ClusterState;
use std::fmt;

/// A trace showing that the Raft cluster was initialised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// `status.clusterId` is recorded.
    Status,
    /// The cluster id is kept on one of the cluster's objects (`kind/name`).
    RecordedOn(String),
    /// A node reports the id of the cluster it belongs to.
    NodeReportsClusterId,
    /// Volumes of nodes exist (other than the one the first node initialises on).
    Volumes(Vec<String>),
    /// The live StatefulSet runs more than one pod.
    StatefulSetSize(i32),
    /// The live ConfigMap tells starting nodes to join an existing cluster.
    NodesJoinExisting,
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status => f.write_str("status.clusterId is recorded"),
            Self::RecordedOn(object) => write!(f, "the cluster id is kept on {object}"),
            Self::NodeReportsClusterId => f.write_str("a node reports a cluster id"),
            Self::Volumes(pvcs) => write!(f, "volumes {} exist", pvcs.join(", ")),
            Self::StatefulSetSize(n) => write!(f, "the StatefulSet runs {n} pods"),
            Self::NodesJoinExisting => {
                f.write_str("the ConfigMap tells nodes to join an existing cluster")
            }
        }
    }
}

/// Every trace of an initialised Raft cluster; empty when there is none, and only then may
/// the first node be told to initialise one.
pub fn evidence(cluster: &Cluster, observed: &Observed) -> Vec<Evidence> {
    let checks: [fn(&Cluster, &Observed) -> Option<Evidence>; 6] = [
        recorded_in_status,
        recorded_on_objects,
        reported_by_a_node,
        volumes_exist,
        statefulset_has_grown,
        nodes_join_an_existing_cluster,
    ];
    checks
        .iter()
        .filter_map(|check| check(cluster, observed))
        .collect()
}

/// Whether the Raft cluster was initialised: any trace of it counts.
pub fn is_bootstrapped(cluster: &Cluster, observed: &Observed) -> bool {
    !evidence(cluster, observed).is_empty()
}

/// What a starting node is told.
pub fn cluster_state(cluster: &Cluster, observed: &Observed) -> ClusterState {
    if is_bootstrapped(cluster, observed) {
        ClusterState::Existing
    } else {
        ClusterState::New
    }
}

/// The id of the Raft cluster, from the first place that has one: the status, the
/// StatefulSet's annotation, the volumes' annotations (lowest ordinal first), then what
/// the nodes report.
pub fn known_cluster_id(cluster: &Cluster, observed: &Observed) -> Option<String> {
    let non_empty = |id: &str| (!id.is_empty()).then(|| id.to_owned());
    cluster
        .recorded_cluster_id()
        .and_then(non_empty)
        .or_else(|| {
            observed
                .statefulset
                .as_ref()
                .and_then(|s| s.cluster_id.as_deref())
                .and_then(non_empty)
        })
        .or_else(|| {
            let mut volumes: Vec<(&String, &String)> = observed.pvc_cluster_ids.iter().collect();
            volumes.sort_by_key(|(pvc, _)| volume_ordinal(cluster, pvc));
            volumes.into_iter().find_map(|(_, id)| non_empty(id))
        })
        .or_else(|| {
            observed
                .membership
                .as_ref()
                .and_then(|m| non_empty(&m.cluster_id))
        })
}

/// A refusal to act when a node reports a cluster id other than the one recorded (in
/// status, on the StatefulSet or on a volume): a second Raft cluster may have started (a
/// node initialised on a fresh volume), and acting on it could drain or remove the nodes
/// of the real one.
pub fn conflicting_cluster_id(cluster: &Cluster, observed: &Observed) -> Option<Step> {
    let reported = observed
        .membership
        .as_ref()
        .map(|m| m.cluster_id.as_str())
        .filter(|id| !id.is_empty())?;
    let recorded = known_cluster_id(
        cluster,
        &Observed {
            membership: None,
            ..observed.clone()
        },
    )?;
    (recorded != reported).then(|| Step::Refuse {
        reason: Reason::ClusterIdMismatch,
        message: format!(
            "the nodes report cluster id {reported}, but this Cluster recorded {recorded}: a \
             second Raft cluster may have started; no change is made until that is resolved"
        ),
    })
}

/// Volumes that carry no cluster id yet. A volume carrying another id is left as it is:
/// it is a trace of something else, not the operator's to overwrite.
pub fn volumes_to_mark(observed: &Observed) -> Vec<String> {
    observed
        .pvcs
        .iter()
        .filter(|pvc| {
            observed
                .pvc_cluster_ids
                .get(*pvc)
                .is_none_or(String::is_empty)
        })
        .cloned()
        .collect()
}

fn recorded_in_status(cluster: &Cluster, _: &Observed) -> Option<Evidence> {
    cluster.recorded_cluster_id().map(|_| Evidence::Status)
}

fn recorded_on_objects(cluster: &Cluster, observed: &Observed) -> Option<Evidence> {
    if let Some(sts) = &observed.statefulset
        && sts.cluster_id.as_deref().is_some_and(|id| !id.is_empty())
    {
        let name = cluster.statefulset_name().unwrap_or_default();
        return Some(Evidence::RecordedOn(format!("StatefulSet/{name}")));
    }
    observed
        .pvc_cluster_ids
        .iter()
        .find(|(_, id)| !id.is_empty())
        .map(|(pvc, _)| Evidence::RecordedOn(format!("PersistentVolumeClaim/{pvc}")))
}

fn reported_by_a_node(_: &Cluster, observed: &Observed) -> Option<Evidence> {
    observed
        .membership
        .as_ref()
        .filter(|m| !m.cluster_id.is_empty())
        .map(|_| Evidence::NodeReportsClusterId)
}

/// Any volume of a node counts, except the first pod's while the live ConfigMap still
/// tells nodes `new`: the first node is initialising the cluster on it.
fn volumes_exist(cluster: &Cluster, observed: &Observed) -> Option<Evidence> {
    let bootstrapping =
        observed.initial_cluster_state.as_deref() == Some(ClusterState::New.as_str());
    let first = cluster.pvc_name(0).ok();
    let volumes: Vec<String> = observed
        .pvcs
        .iter()
        .chain(&observed.pvcs_terminating)
        .filter(|pvc| !(bootstrapping && Some(*pvc) == first.as_ref()))
        .cloned()
        .collect();
    (!volumes.is_empty()).then_some(Evidence::Volumes(volumes))
}

fn statefulset_has_grown(_: &Cluster, observed: &Observed) -> Option<Evidence> {
    observed
        .statefulset
        .as_ref()
        .filter(|s| s.replicas > 1)
        .map(|s| Evidence::StatefulSetSize(s.replicas))
}

fn nodes_join_an_existing_cluster(_: &Cluster, observed: &Observed) -> Option<Evidence> {
    (observed.initial_cluster_state.as_deref() == Some(ClusterState::Existing.as_str()))
        .then_some(Evidence::NodesJoinExisting)
}

fn volume_ordinal(cluster: &Cluster, pvc: &str) -> i32 {
    pvc.strip_prefix(&format!("{}-", crate::crd::cluster_funcs::DATA_VOLUME))
        .and_then(|pod| cluster.ordinal_of(pod))
        .unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fixtures::healthy;
    use crate::plan::{ObservedStatefulSet, statefulset_replicas};

    /// A running three-node cluster whose `Cluster` object lost its status.
    fn restored() -> (Cluster, Observed) {
        let cluster = Cluster::test().with_replicas(3);
        let observed = healthy(&cluster, 3);
        (cluster, observed)
    }

    /// What the operator sees while the first node initialises the cluster: the
    /// StatefulSet at one pod, the ConfigMap saying `new`, the first volume.
    fn bootstrapping() -> (Cluster, Observed) {
        let cluster = Cluster::test().with_replicas(3);
        let observed = Observed {
            statefulset: Some(ObservedStatefulSet {
                replicas: 1,
                ..ObservedStatefulSet::default()
            }),
            pvcs: vec!["data-flotilla-0".to_owned()],
            initial_cluster_state: Some("new".to_owned()),
            ..Observed::default()
        };
        (cluster, observed)
    }

    #[test]
    fn a_fresh_cluster_has_no_evidence_and_starts_a_new_cluster() {
        let cluster = Cluster::test();
        assert_eq!(evidence(&cluster, &Observed::default()), Vec::new());
        assert_eq!(
            cluster_state(&cluster, &Observed::default()),
            ClusterState::New
        );
    }

    #[test]
    fn the_first_volume_does_not_count_while_the_first_node_initialises_on_it() {
        let (cluster, observed) = bootstrapping();
        assert_eq!(evidence(&cluster, &observed), Vec::new());
        assert_eq!(statefulset_replicas(&cluster, &observed), 1);
    }

    #[test]
    fn a_running_cluster_without_status_is_still_bootstrapped() {
        let (cluster, observed) = restored();
        assert_eq!(cluster.status, None);
        let found = evidence(&cluster, &observed);
        assert!(found.contains(&Evidence::NodeReportsClusterId), "{found:?}");
        assert!(found.contains(&Evidence::StatefulSetSize(3)), "{found:?}");
        assert_eq!(cluster_state(&cluster, &observed), ClusterState::Existing);
        assert_eq!(statefulset_replicas(&cluster, &observed), 3);
    }

    #[test]
    fn existing_volumes_alone_mean_bootstrapped() {
        // The Cluster was deleted and created again: its children are gone, the
        // volumes stayed, and no node runs to report anything.
        let cluster = Cluster::test().with_replicas(3);
        let observed = Observed {
            pvcs: vec!["data-flotilla-0".to_owned(), "data-flotilla-1".to_owned()],
            ..Observed::default()
        };
        assert_eq!(
            evidence(&cluster, &observed),
            vec![Evidence::Volumes(vec![
                "data-flotilla-0".to_owned(),
                "data-flotilla-1".to_owned()
            ])]
        );
        assert_eq!(statefulset_replicas(&cluster, &observed), 3);
    }

    #[test]
    fn other_volumes_count_even_while_the_configmap_says_new() {
        // A restore of a running cluster, pod 0's volume lost: a fresh pod 0 must join.
        let (cluster, mut observed) = bootstrapping();
        observed.pvcs = vec!["data-flotilla-1".to_owned(), "data-flotilla-2".to_owned()];
        assert_eq!(cluster_state(&cluster, &observed), ClusterState::Existing);
    }

    #[test]
    fn a_statefulset_of_more_than_one_pod_means_bootstrapped() {
        let (cluster, mut observed) = bootstrapping();
        observed.pvcs.clear();
        observed.statefulset = Some(ObservedStatefulSet {
            replicas: 5,
            ..ObservedStatefulSet::default()
        });
        assert_eq!(
            evidence(&cluster, &observed),
            vec![Evidence::StatefulSetSize(5)]
        );
        assert_eq!(statefulset_replicas(&cluster, &observed), 5);
    }

    #[test]
    fn a_configmap_saying_existing_means_bootstrapped() {
        // A one-node cluster: one pod, one volume, nothing else to go by.
        let cluster = Cluster::test().with_replicas(1);
        let observed = Observed {
            initial_cluster_state: Some("existing".to_owned()),
            ..Observed::default()
        };
        assert_eq!(
            evidence(&cluster, &observed),
            vec![Evidence::NodesJoinExisting]
        );
    }

    #[test]
    fn a_node_reporting_a_cluster_id_means_bootstrapped_but_an_empty_id_does_not() {
        let (cluster, mut observed) = bootstrapping();
        observed.membership = healthy(&cluster, 1).membership;
        assert_eq!(
            evidence(&cluster, &observed),
            vec![Evidence::NodeReportsClusterId]
        );
        if let Some(m) = observed.membership.as_mut() {
            m.cluster_id = String::new();
        }
        assert_eq!(evidence(&cluster, &observed), Vec::new());
    }

    #[test]
    fn the_cluster_id_is_recovered_from_the_statefulset_then_the_volumes() {
        let (cluster, mut observed) = restored();
        observed.membership = None;
        observed.pvc_cluster_ids = [
            ("data-flotilla-2".to_owned(), "from-pvc-2".to_owned()),
            ("data-flotilla-1".to_owned(), "from-pvc-1".to_owned()),
        ]
        .into();
        assert_eq!(
            known_cluster_id(&cluster, &observed).as_deref(),
            Some("from-pvc-1")
        );
        if let Some(sts) = observed.statefulset.as_mut() {
            sts.cluster_id = Some("from-sts".to_owned());
        }
        assert_eq!(
            known_cluster_id(&cluster, &observed).as_deref(),
            Some("from-sts")
        );
        let recorded = cluster.with_cluster_id("from-status");
        assert_eq!(
            known_cluster_id(&recorded, &observed).as_deref(),
            Some("from-status")
        );
    }

    #[test]
    fn the_cluster_id_comes_from_the_nodes_when_nothing_recorded_it() {
        let (cluster, observed) = restored();
        assert_eq!(known_cluster_id(&cluster, &observed).as_deref(), Some("c"));
    }

    #[test]
    fn nodes_reporting_another_cluster_id_stop_every_change() {
        let (cluster, observed) = restored();
        let recorded = cluster.with_cluster_id("first");
        assert!(matches!(
            crate::plan::plan(&recorded, &observed).as_slice(),
            [Step::Refuse { reason: Reason::ClusterIdMismatch, message }]
                if message.contains("report cluster id c") && message.contains("recorded first")
        ));
        let same = Cluster::test().with_replicas(3).with_cluster_id("c");
        assert_eq!(conflicting_cluster_id(&same, &observed), None);
        // Nothing recorded yet: the nodes' id is the one to record.
        assert_eq!(conflicting_cluster_id(&Cluster::test(), &observed), None);
    }

    #[test]
    fn only_volumes_without_a_cluster_id_are_marked() {
        let (_, mut observed) = restored();
        observed.pvc_cluster_ids = [
            ("data-flotilla-0".to_owned(), "c".to_owned()),
            ("data-flotilla-1".to_owned(), "other".to_owned()),
        ]
        .into();
        assert_eq!(volumes_to_mark(&observed), ["data-flotilla-2"]);
    }
}
