//! A node replacement whose pod is stuck Terminating on a lost Kubernetes Node goes on
//! once `forceDeleteAfter` has passed, and says so in an Event.

use super::*;
use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

impl Harness {
    /// Pod 2's node was removed and its volume deleted (held by the pod); the pod was
    /// deleted `minutes_ago` on Kubernetes Node `m2`, which is NotReady.
    fn pod_stuck_on_a_lost_node(&self, minutes_ago: i64) {
        self.api.put(&Node {
            metadata: ObjectMeta {
                name: Some("m2".to_owned()),
                ..ObjectMeta::default()
            },
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".to_owned(),
                    status: "Unknown".to_owned(),
                    ..NodeCondition::default()
                }]),
                ..NodeStatus::default()
            }),
            ..Node::default()
        });
        let mut pod: Pod = self.api.get(NS, "flotilla-2").unwrap_or_default();
        pod.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("flotilla.dev/unrecoverable".to_owned(), "true".to_owned());
        let since = Timestamp::now()
            .checked_sub(SignedDuration::from_mins(minutes_ago))
            .unwrap_or(Timestamp::UNIX_EPOCH);
        pod.metadata.deletion_timestamp = Some(Time(since));
        pod.spec.get_or_insert_with(Default::default).node_name = Some("m2".to_owned());
        self.api.put(&pod);
        let mut pvc: PersistentVolumeClaim =
            self.api.get(NS, "data-flotilla-2").unwrap_or_default();
        pvc.metadata.deletion_timestamp = Some(Time(since));
        pvc.metadata.finalizers = Some(vec!["kubernetes.io/pvc-protection".to_owned()]);
        self.api.put(&pvc);
        self.admin
            .edit_membership(|m| m.nodes.retain(|n| n.node_id != "n2"));
    }

    async fn warnings(&self) -> Vec<String> {
        self.events()
            .await
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .filter_map(|e| e.note)
            .collect()
    }
}

async fn running_cluster() -> Harness {
    let h = Harness::new();
    h.api.put(&Cluster::test().with_cluster_id("c-1"));
    h.admin.set_membership(Some(membership(3)));
    ok(h.reconcile_cluster().await);
    h.run_pods(3, "r1");
    ok(h.reconcile_cluster().await);
    h
}

#[tokio::test]
async fn a_pod_stuck_terminating_on_a_lost_node_is_deleted_by_force_after_the_timeout() {
    let h = running_cluster().await;
    h.pod_stuck_on_a_lost_node(6);
    h.api.clear_requests();

    ok(h.reconcile_cluster().await);
    assert_eq!(
        h.deletes(),
        ["DELETE /api/v1/namespaces/db/pods/flotilla-2"]
    );
    assert!(h.api.get::<Pod>(NS, "flotilla-2").is_none());
    let warnings = h.warnings().await;
    assert!(
        warnings
            .iter()
            .any(|n| n.contains("flotilla-2 was stuck terminating on Kubernetes node m2")),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn a_pod_terminating_for_less_than_the_timeout_is_awaited() {
    let h = running_cluster().await;
    h.pod_stuck_on_a_lost_node(1);
    h.api.clear_requests();

    ok(h.reconcile_cluster().await);
    assert_eq!(h.deletes(), Vec::<String>::new());
    assert!(h.api.get::<Pod>(NS, "flotilla-2").is_some());
}
