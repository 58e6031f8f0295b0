//! A running cluster whose `Cluster` object lost its status (a backup restore, the object
//! re-created, a status reset) is neither shrunk, restarted, nor bootstrapped again.

use super::*;

impl Harness {
    /// A three-node cluster that bootstrapped, grew and settled: status recorded, every
    /// volume marked with the cluster id.
    async fn running_cluster(&self) {
        self.api.put(&Cluster::test().with_replicas(3));
        ok(self.reconcile_cluster().await);
        self.run_pods(1, "r1");
        self.admin.set_membership(Some(membership(1)));
        ok(self.reconcile_cluster().await);
        self.run_pods(3, "r1");
        self.admin.set_membership(Some(membership(3)));
        ok(self.reconcile_cluster().await);
        ok(self.reconcile_cluster().await);
        assert_eq!(self.statefulset_replicas(), Some(3));
        for ordinal in 0..3 {
            assert_eq!(
                self.cluster_id_annotation::<PersistentVolumeClaim>(&format!(
                    "data-flotilla-{ordinal}"
                )),
                Some("c-1".to_owned()),
                "volume {ordinal} keeps the cluster id"
            );
        }
    }

    /// The `Cluster` comes back as a new object (new uid) without its status.
    fn restore_cluster_without_status(&self) {
        let mut cluster = self.cluster();
        cluster.status = None;
        cluster.metadata.uid = Some("restored-uid".to_owned());
        cluster.metadata.generation = Some(1);
        self.api.put(&cluster);
        assert_eq!(self.cluster().status, None);
    }

    fn pod_template(&self) -> Option<k8s_openapi::api::core::v1::PodTemplateSpec> {
        self.statefulset().spec.map(|s| s.template)
    }

    /// Deletes of pods or volumes, and every call to the cluster's admin API.
    fn disruptions(&self) -> (Vec<String>, Vec<String>) {
        (self.deletes(), self.admin.calls())
    }
}

#[tokio::test]
async fn a_restored_cluster_without_status_keeps_its_size_and_joins_its_cluster() {
    let h = Harness::new();
    h.running_cluster().await;
    let template = h.pod_template();
    h.restore_cluster_without_status();
    // Right after a restore no node answers yet.
    h.admin.set_membership(None);
    h.api.clear_requests();
    let calls_before = h.admin.calls().len();

    ok(h.reconcile_cluster().await);
    assert_eq!(h.statefulset_replicas(), Some(3), "the StatefulSet shrank");
    assert_eq!(
        h.configmap_value("initial-cluster-state").as_deref(),
        Some("existing")
    );
    assert_eq!(h.pod_template(), template, "the pods would restart");
    let (deletes, calls) = h.disruptions();
    assert_eq!(deletes, Vec::<String>::new());
    assert_eq!(calls.len(), calls_before);
    let status = h.cluster().status.unwrap_or_default();
    assert_eq!(
        status.cluster_id.as_deref(),
        Some("c-1"),
        "id not recovered"
    );
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    assert_eq!(
        ready.map(|c| c.reason.as_str()),
        Some("ClusterUnreachable"),
        "a restored cluster is not bootstrapping"
    );

    // The nodes answer again: nothing is left to do.
    h.admin.set_membership(Some(membership(3)));
    ok(h.reconcile_cluster().await);
    ok(h.reconcile_cluster().await);
    assert_eq!(h.statefulset_replicas(), Some(3));
    let (deletes, calls) = h.disruptions();
    assert_eq!(deletes, Vec::<String>::new());
    assert_eq!(calls.len(), calls_before);
}

#[tokio::test]
async fn a_cluster_created_again_over_its_old_volumes_joins_the_cluster_they_hold() {
    let h = Harness::new();
    h.running_cluster().await;
    // The Cluster was deleted: its children went with it, the volumes and pods' data
    // stayed. It is created again, with no status, and no node runs yet.
    h.api.remove::<StatefulSet>(NS, "flotilla");
    h.api.remove::<ConfigMap>(NS, "flotilla-config");
    h.api.remove::<PodDisruptionBudget>(NS, "flotilla");
    for ordinal in 0..3 {
        h.api.remove::<Pod>(NS, &format!("flotilla-{ordinal}"));
    }
    h.restore_cluster_without_status();
    h.admin.set_membership(None);

    ok(h.reconcile_cluster().await);
    assert_eq!(h.statefulset_replicas(), Some(3));
    assert_eq!(
        h.configmap_value("initial-cluster-state").as_deref(),
        Some("existing")
    );
    let status = h.cluster().status.unwrap_or_default();
    assert_eq!(
        status.cluster_id.as_deref(),
        Some("c-1"),
        "the id kept on the volumes"
    );
    assert_eq!(
        h.cluster_id_annotation::<StatefulSet>("flotilla"),
        Some("c-1".to_owned())
    );
}

#[tokio::test]
async fn a_lost_status_with_pod_zero_on_a_fresh_volume_never_starts_a_second_cluster() {
    let h = Harness::new();
    h.running_cluster().await;
    h.restore_cluster_without_status();
    h.admin.set_membership(None);
    // Pod 0's volume is lost: a fresh volume will come with the next pod 0.
    h.api.remove::<PersistentVolumeClaim>(NS, "data-flotilla-0");
    h.api.remove::<ConfigMap>(NS, "flotilla-config");

    ok(h.reconcile_cluster().await);
    assert_eq!(
        h.configmap_value("initial-cluster-state").as_deref(),
        Some("existing"),
        "a fresh pod 0 would initialise a second cluster"
    );
    assert_eq!(h.statefulset_replicas(), Some(3));
}
