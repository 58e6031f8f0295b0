//! Growing `storage.size` grows every volume, then re-creates the StatefulSet around its
//! running pods so that its claim template matches.

use super::*;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaimSpec, PersistentVolumeClaimStatus, VolumeResourceRequirements,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

impl Harness {
    /// Sets the request and capacity of every volume of the cluster, whose StorageClass
    /// `standard` allows expansion (`expandable`) or not.
    fn size_volumes(&self, request: &str, capacity: &str, expandable: bool) {
        self.api.put(&StorageClass {
            metadata: ObjectMeta {
                name: Some("standard".to_owned()),
                ..ObjectMeta::default()
            },
            provisioner: "example.com/csi".to_owned(),
            allow_volume_expansion: Some(expandable),
            ..StorageClass::default()
        });
        for ordinal in 0..3 {
            let name = format!("data-flotilla-{ordinal}");
            let mut pvc: PersistentVolumeClaim = self.api.get(NS, &name).unwrap_or_default();
            let storage = |size: &str| {
                Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(size.to_owned()),
                )]))
            };
            pvc.spec = Some(PersistentVolumeClaimSpec {
                storage_class_name: Some("standard".to_owned()),
                resources: Some(VolumeResourceRequirements {
                    requests: storage(request),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            });
            pvc.status = Some(PersistentVolumeClaimStatus {
                capacity: storage(capacity),
                ..PersistentVolumeClaimStatus::default()
            });
            self.api.put(&pvc);
        }
    }

    fn requested(&self, pvc: &str) -> Option<String> {
        let pvc: PersistentVolumeClaim = self.api.get(NS, pvc)?;
        pvc.spec?
            .resources?
            .requests?
            .remove("storage")
            .map(|q| q.0)
    }

    fn claim_template_size(&self) -> Option<String> {
        let template = self
            .statefulset()
            .spec?
            .volume_claim_templates?
            .into_iter()
            .next()?;
        template
            .spec?
            .resources?
            .requests?
            .remove("storage")
            .map(|q| q.0)
    }

    fn progressing(&self) -> (String, String) {
        let status = self.cluster().status.unwrap_or_default();
        status
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Progressing")
            .map(|c| (c.reason, c.message))
            .unwrap_or_default()
    }
}

#[tokio::test]
async fn a_larger_storage_size_grows_every_volume_then_recreates_the_statefulset_around_its_pods() {
    let h = Harness::new();
    h.api.put(&Cluster::test().with_cluster_id("c-1"));
    h.admin.set_membership(Some(membership(3)));
    ok(h.reconcile_cluster().await);
    h.run_pods(3, "r1");
    h.size_volumes("10Gi", "10Gi", true);
    ok(h.reconcile_cluster().await);
    assert_eq!(h.claim_template_size().as_deref(), Some("10Gi"));

    let mut cluster = h.cluster();
    cluster.spec.storage.size = Quantity("20Gi".to_owned());
    cluster.metadata.generation = Some(2);
    h.api.put(&cluster);
    h.api.clear_requests();

    for _ in 0..3 {
        ok(h.reconcile_cluster().await);
    }
    for ordinal in 0..3 {
        assert_eq!(
            h.requested(&format!("data-flotilla-{ordinal}")).as_deref(),
            Some("20Gi")
        );
    }
    assert_eq!(
        h.claim_template_size().as_deref(),
        Some("10Gi"),
        "a claim template cannot change in place"
    );

    // The volumes have not grown yet: the operator waits and says so.
    ok(h.reconcile_cluster().await);
    let (reason, message) = h.progressing();
    assert_eq!(reason, "VolumeGrowth");
    assert!(message.contains("data-flotilla-0 (10Gi)"), "{message}");

    h.size_volumes("20Gi", "20Gi", true);
    ok(h.reconcile_cluster().await); // deletes the StatefulSet, pods orphaned
    assert!(h.api.get::<StatefulSet>(NS, "flotilla").is_none());
    ok(h.reconcile_cluster().await); // creates it again
    assert_eq!(h.claim_template_size().as_deref(), Some("20Gi"));
    assert_eq!(h.statefulset_replicas(), Some(3));

    let deletes = h.deletes();
    assert_eq!(
        deletes,
        ["DELETE /apis/apps/v1/namespaces/db/statefulsets/flotilla"]
    );
    for ordinal in 0..3 {
        assert!(
            h.api
                .get::<Pod>(NS, &format!("flotilla-{ordinal}"))
                .is_some()
        );
    }
    ok(h.reconcile_cluster().await);
    assert_ne!(h.progressing().0, "VolumeGrowth");
}

#[tokio::test]
async fn a_storage_class_that_cannot_expand_is_reported_and_nothing_is_recreated() {
    let h = Harness::new();
    h.api.put(&Cluster::test().with_cluster_id("c-1"));
    h.admin.set_membership(Some(membership(3)));
    ok(h.reconcile_cluster().await);
    h.run_pods(3, "r1");
    h.size_volumes("10Gi", "10Gi", false);
    ok(h.reconcile_cluster().await);

    let mut cluster = h.cluster();
    cluster.spec.storage.size = Quantity("20Gi".to_owned());
    cluster.metadata.generation = Some(2);
    h.api.put(&cluster);
    h.api.clear_requests();

    assert!(
        h.reconcile_cluster().await.is_err(),
        "the API server refused"
    );
    assert_eq!(h.requested("data-flotilla-0").as_deref(), Some("10Gi"));
    assert!(h.api.get::<StatefulSet>(NS, "flotilla").is_some());
    assert_eq!(h.deletes(), Vec::<String>::new());
    let status = h.cluster().status.unwrap_or_default();
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .map(|c| (c.status.clone(), c.message.clone()));
    assert!(
        degraded
            .as_ref()
            .is_some_and(|(s, m)| s == "True" && m.contains("storageclass")),
        "{degraded:?}"
    );
}
