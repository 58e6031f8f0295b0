//! The size of the nodes' volumes, and growing them when `storage.size` grows.
//!
//! A StatefulSet's claim template cannot change in place, so growth goes in three steps,
//! each resumed from what is observed: every volume is expanded (its request raised; the
//! StorageClass must allow expansion, or the API server refuses and the status says so),
//! then the operator waits until each volume reports the new capacity, then the
//! StatefulSet is deleted with its pods orphaned and applied again with the new claim
//! template; it adopts the running pods, so none restarts. Volumes never shrink.

use super::{Observed, Step, drift::quantity};
use crate::crd::{Cluster, Reason};

/// The size the StatefulSet's claim template keeps: the live one, or the spec's for a
/// StatefulSet still to be created (`None`).
pub fn claim_template_size(observed: &Observed) -> Option<String> {
    observed.statefulset.as_ref()?.volume_size.clone()
}

/// The next step of growing the volumes, a refusal of a smaller size, or nothing when the
/// claim template has the spec's size.
pub fn steps(cluster: &Cluster, observed: &Observed) -> Vec<Step> {
    let Some(live) = claim_template_size(observed) else {
        return Vec::new();
    };
    let wanted = cluster.spec.storage.size.0.as_str();
    let (Some(want), Some(have)) = (quantity(wanted), quantity(&live)) else {
        return Vec::new();
    };
    if want < have {
        return vec![Step::Refuse {
            reason: Reason::VolumeSizeRefused,
            message: format!(
                "storage.size {wanted} is smaller than the volumes' {live}: volumes never shrink"
            ),
        }];
    }
    if want == have {
        return Vec::new();
    }
    if observed.statefulset.as_ref().is_some_and(|s| s.terminating) {
        return vec![Step::wait(
            Reason::VolumeGrowth,
            "waiting for the StatefulSet to be deleted before it is created with larger volumes",
        )];
    }
    let mut volumes: Vec<&String> = observed.pvcs.iter().collect();
    volumes.sort_by_key(|pvc| {
        pvc.rsplit('-')
            .next()
            .and_then(|n| n.parse::<i32>().ok())
            .unwrap_or(i32::MAX)
    });
    if let Some(pvc) = volumes
        .iter()
        .find(|pvc| below(observed.volume_requests.get(**pvc), want))
    {
        return vec![Step::ExpandVolume {
            pvc: (*pvc).clone(),
            size: wanted.to_owned(),
        }];
    }
    let growing: Vec<String> = volumes
        .iter()
        .filter(|pvc| below(observed.volume_capacities.get(**pvc), want))
        .map(|pvc| {
            let capacity = observed
                .volume_capacities
                .get(*pvc)
                .map_or("unknown", String::as_str);
            format!("{pvc} ({capacity})")
        })
        .collect();
    if !growing.is_empty() {
        return vec![Step::wait(
            Reason::VolumeGrowth,
            format!(
                "waiting for volumes to grow to {wanted}: {}",
                growing.join(", ")
            ),
        )];
    }
    vec![Step::RecreateStatefulSet {
        volume_size: wanted.to_owned(),
    }]
}

/// The size is missing, not a quantity, or below `want`.
fn below(size: Option<&String>, want: f64) -> bool {
    size.and_then(|s| quantity(s)).is_none_or(|s| s < want)
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

    /// Volumes `0..3` requested and grown to `request` / `capacity`.
    fn volumes(mut observed: Observed, request: &str, capacity: &str) -> Observed {
        for pvc in observed.pvcs.clone() {
            observed
                .volume_requests
                .insert(pvc.clone(), request.to_owned());
            observed.volume_capacities.insert(pvc, capacity.to_owned());
        }
        observed
    }

    #[test]
    fn a_larger_size_expands_each_volume_in_turn_while_the_statefulset_keeps_its_template() {
        let cluster = with_size("20Gi");
        let observed = volumes(observed_at(&cluster, "10Gi"), "10Gi", "10Gi");
        assert_eq!(
            steps(&cluster, &observed),
            [Step::ExpandVolume {
                pvc: "data-flotilla-0".to_owned(),
                size: "20Gi".to_owned()
            }]
        );
        assert_eq!(
            crate::plan::shape(&cluster, &observed)
                .volume_size
                .as_deref(),
            Some("10Gi")
        );
        let mut observed = observed;
        observed
            .volume_requests
            .insert("data-flotilla-0".to_owned(), "20Gi".to_owned());
        assert!(matches!(
            steps(&cluster, &observed).as_slice(),
            [Step::ExpandVolume { pvc, .. }] if pvc == "data-flotilla-1"
        ));
    }

    #[test]
    fn the_statefulset_is_recreated_only_once_every_volume_has_grown() {
        let cluster = with_size("20Gi");
        let observed = volumes(observed_at(&cluster, "10Gi"), "20Gi", "10Gi");
        assert!(matches!(
            steps(&cluster, &observed).as_slice(),
            [Step::Wait { reason: Reason::VolumeGrowth, message }] if message.contains("data-flotilla-2 (10Gi)")
        ));
        let grown = volumes(observed_at(&cluster, "10Gi"), "20Gi", "20Gi");
        assert_eq!(
            steps(&cluster, &grown),
            [Step::RecreateStatefulSet {
                volume_size: "20Gi".to_owned()
            }]
        );
        // Deleted, its pods orphaned, but not gone yet: it is not deleted again.
        let mut deleting = grown.clone();
        if let Some(sts) = deleting.statefulset.as_mut() {
            sts.terminating = true;
        }
        assert!(matches!(
            steps(&cluster, &deleting).as_slice(),
            [Step::Wait {
                reason: Reason::VolumeGrowth,
                ..
            }]
        ));
        // Re-created: the new template has the spec's size; nothing is left to do.
        let recreated = observed_at(&cluster, "20Gi");
        assert_eq!(steps(&cluster, &recreated), Vec::new());
    }

    #[test]
    fn a_smaller_size_is_refused() {
        let cluster = with_size("5Gi");
        assert!(matches!(
            steps(&cluster, &observed_at(&cluster, "10Gi")).as_slice(),
            [Step::Refuse { reason: Reason::VolumeSizeRefused, message }] if message.contains("never shrink")
        ));
    }

    #[test]
    fn a_new_statefulset_gets_the_spec_size() {
        let cluster = with_size("20Gi");
        let observed = Observed::default();
        assert_eq!(steps(&cluster, &observed), Vec::new());
        assert_eq!(crate::plan::shape(&cluster, &observed).volume_size, None);
    }
}
