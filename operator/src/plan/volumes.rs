//! The size of the nodes' volumes. A StatefulSet's claim template cannot change in place,
//! so the StatefulSet keeps the size it was created with; a `storage.size` that differs
//! from it is reported rather than applied (which the API server would refuse, stopping
//! every other change to the cluster).

use super::{Observed, Step, drift::quantity};
use crate::crd::{Cluster, Reason};

/// The size the StatefulSet's claim template keeps: the live one, or the spec's for a
/// StatefulSet still to be created (`None`).
pub fn claim_template_size(observed: &Observed) -> Option<String> {
    observed.statefulset.as_ref()?.volume_size.clone()
}

/// A refusal when `storage.size` differs from the size of the volumes; nothing otherwise.
pub fn steps(cluster: &Cluster, observed: &Observed) -> Vec<Step> {
    let Some(live) = claim_template_size(observed) else {
        return Vec::new();
    };
    let wanted = &cluster.spec.storage.size.0;
    let (Some(want), Some(have)) = (quantity(wanted), quantity(&live)) else {
        return Vec::new();
    };
    let message = if want > have {
        format!(
            "storage.size {wanted} is larger than the volumes' {live}: growing volumes is not \
             done by this operator version; the volumes stay at {live}"
        )
    } else if want < have {
        format!("storage.size {wanted} is smaller than the volumes' {live}: volumes never shrink")
    } else {
        return Vec::new();
    };
    vec![Step::Refuse {
        reason: Reason::VolumeSizeRefused,
        message,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fixtures::healthy;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn with_size(size: &str) -> Cluster {
        let mut cluster = Cluster::test().with_cluster_id("c");
        cluster.spec.storage.size = Quantity(size.to_owned());
        cluster
    }

    fn observed_at(cluster: &Cluster, live: &str) -> Observed {
        let mut observed = healthy(cluster, 3);
        if let Some(sts) = observed.statefulset.as_mut() {
            sts.volume_size = Some(live.to_owned());
        }
        observed
    }

    #[test]
    fn volumes_at_the_spec_size_need_nothing() {
        let cluster = with_size("10Gi");
        assert_eq!(
            steps(&cluster, &observed_at(&cluster, "10240Mi")),
            Vec::new()
        );
    }

    #[test]
    fn a_larger_size_is_reported_and_the_statefulset_keeps_its_volumes() {
        let cluster = with_size("20Gi");
        let observed = observed_at(&cluster, "10Gi");
        assert!(matches!(
            steps(&cluster, &observed).as_slice(),
            [Step::Refuse { reason: Reason::VolumeSizeRefused, message }] if message.contains("20Gi")
        ));
        assert_eq!(
            crate::plan::shape(&cluster, &observed)
                .volume_size
                .as_deref(),
            Some("10Gi")
        );
    }

    #[test]
    fn a_new_statefulset_gets_the_spec_size() {
        let cluster = with_size("20Gi");
        let observed = Observed::default();
        assert_eq!(steps(&cluster, &observed), Vec::new());
        assert_eq!(crate::plan::shape(&cluster, &observed).volume_size, None);
    }
}
