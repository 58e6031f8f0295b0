//! The PodDisruptionBudget: voluntary disruptions (node drains) take one pod at a time,
//! so that every Raft group keeps its majority. A one-node cluster gets none, since a
//! budget there could only block drains forever.

use super::child_metadata;
use crate::crd::Cluster;
use crate::error::Result;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The budget of `cluster` when its StatefulSet has `statefulset_replicas` pods; none
/// for a single pod.
pub fn pod_disruption_budget(
    cluster: &Cluster,
    statefulset_replicas: i32,
) -> Result<Option<PodDisruptionBudget>> {
    if statefulset_replicas < 2 {
        return Ok(None);
    }
    Ok(Some(PodDisruptionBudget {
        metadata: child_metadata(cluster, cluster.pdb_name()?)?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(cluster.selector_labels()?),
                ..LabelSelector::default()
            }),
            // A pod that is not ready anyway may be evicted; otherwise one broken pod
            // would block every drain.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_owned()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::built;

    #[test]
    fn a_multi_node_cluster_allows_one_disruption_at_a_time() {
        let pdb = built(pod_disruption_budget(&Cluster::test(), 3))
            .and_then(|p| p.spec)
            .unwrap_or_default();
        assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(pdb.min_available, None);
        assert_eq!(
            pdb.selector.and_then(|s| s.match_labels),
            Cluster::test().selector_labels().ok()
        );
    }

    #[test]
    fn a_one_node_cluster_has_no_budget() {
        let cluster = Cluster::test().with_replicas(1);
        assert_eq!(pod_disruption_budget(&cluster, 1).ok(), Some(None));
    }
}
