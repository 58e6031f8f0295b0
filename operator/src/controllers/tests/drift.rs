//! Hand edits of a cluster's children are undone on the next pass, with an Event.

use super::*;

impl Harness {
    /// A settled three-node cluster.
    async fn settled_cluster(&self) {
        self.api.put(&Cluster::test().with_cluster_id("c-1"));
        self.admin.set_membership(Some(membership(3)));
        ok(self.reconcile_cluster().await);
        self.run_pods(3, "r1");
        ok(self.reconcile_cluster().await);
        ok(self.reconcile_cluster().await);
    }

    /// Notes of the Events with `reason`.
    async fn event_notes(&self, reason: &str) -> Vec<String> {
        self.events()
            .await
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .filter_map(|e| e.note)
            .collect()
    }
}

#[tokio::test]
async fn a_hand_scaled_statefulset_is_scaled_back_with_an_event() {
    let h = Harness::new();
    h.settled_cluster().await;
    // kubectl scale sts flotilla --replicas=1
    let mut sts = h.statefulset();
    if let Some(spec) = sts.spec.as_mut() {
        spec.replicas = Some(1);
    }
    h.api.put(&sts);

    ok(h.reconcile_cluster().await);
    assert_eq!(h.statefulset_replicas(), Some(3));
    let notes = h.event_notes("DriftReverted").await;
    assert_eq!(
        notes,
        ["reverted hand edits of StatefulSet flotilla: spec.replicas 1 -> 3"]
    );

    // Put right: the next pass writes nothing.
    h.api.clear_requests();
    ok(h.reconcile_cluster().await);
    assert_eq!(h.api.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn a_hand_edited_image_and_configmap_are_reverted() {
    let h = Harness::new();
    h.settled_cluster().await;
    // kubectl edit: another image, and a ConfigMap telling nodes to start a new cluster.
    let mut sts = h.statefulset();
    if let Some(container) = sts
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .and_then(|p| p.containers.first_mut())
    {
        container.image = Some("evil/node:latest".to_owned());
    }
    h.api.put(&sts);
    let mut configmap: ConfigMap = h.api.get(NS, "flotilla-config").unwrap_or_default();
    if let Some(data) = configmap.data.as_mut() {
        data.insert("initial-cluster-state".to_owned(), "new".to_owned());
    }
    h.api.put(&configmap);

    ok(h.reconcile_cluster().await);
    let image = h
        .statefulset()
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers.first().and_then(|c| c.image.clone()));
    assert_eq!(image.as_deref(), Some("flotilla/flotilla-node:0.1.0"));
    assert_eq!(
        h.configmap_value("initial-cluster-state").as_deref(),
        Some("existing")
    );
    let notes = h.event_notes("DriftReverted").await;
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes.iter().any(|n| n.contains(
            "StatefulSet flotilla: spec.template.spec.containers[0].image \"evil/node:latest\""
        )),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.contains("ConfigMap flotilla-config: data.initial-cluster-state")),
        "{notes:?}"
    );
}
