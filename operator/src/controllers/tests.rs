//! Reconcile tests against the in-process fake Kubernetes API of `flotilla_kubefake` and a stand-in for
//! the cluster's admin API.

use super::{Context, cluster, database_group};
use crate::admin::DatabaseRequest;
use crate::crd::{
    Cluster, DatabaseGroup, DeletionPolicy, NodeRole, NodeState, ScaleDownIntent, ScaleDownPhase,
};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::plan::observed::META_GROUP;
use crate::plan::{MemberNode, Membership, RaftGroup};
use flotilla_kubefake::FakeApi;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    ConfigMap, Node, PersistentVolumeClaim, Pod, PodCondition, PodStatus, Service,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::sync::Arc;

const NS: &str = "db";

mod admin;
use admin::FakeAdmin;

struct Harness {
    api: FakeApi,
    admin: FakeAdmin,
    ctx: Arc<Context>,
}

impl Harness {
    fn new() -> Self {
        let api = crate::crd::fixtures::fake_api();
        let admin = FakeAdmin::default();
        let ctx = Arc::new(Context::new(
            api.client(),
            Arc::new(admin.clone()),
            Metrics::default(),
        ));
        Self { api, admin, ctx }
    }

    /// A new operator process on the same API and cluster.
    fn restart_operator(&mut self) {
        self.ctx = Arc::new(Context::new(
            self.api.client(),
            Arc::new(self.admin.clone()),
            Metrics::default(),
        ));
    }

    fn cluster(&self) -> Cluster {
        self.api
            .get::<Cluster>(NS, "flotilla")
            .unwrap_or_else(Cluster::test)
    }

    async fn reconcile_cluster(&self) -> Result<()> {
        cluster::reconcile(Arc::new(self.cluster()), self.ctx.clone())
            .await
            .map(drop)
    }

    /// The stored `orders` group; its absence fails the test.
    fn group(&self) -> DatabaseGroup {
        match self.api.get::<DatabaseGroup>(NS, "orders") {
            Some(group) => group,
            None => panic!("DatabaseGroup orders is gone"),
        }
    }

    async fn reconcile_group(&self) -> Result<()> {
        let group = self
            .api
            .get::<DatabaseGroup>(NS, "orders")
            .unwrap_or_else(DatabaseGroup::test);
        database_group::reconcile(Arc::new(group), self.ctx.clone())
            .await
            .map(drop)
    }

    /// The Events recorded in the namespace.
    async fn events(&self) -> Vec<k8s_openapi::api::events::v1::Event> {
        let events = kube::Api::namespaced(self.ctx.client.clone(), NS);
        match events.list(&Default::default()).await {
            Ok(list) => list.items,
            Err(error) => panic!("listing events: {error}"),
        }
    }

    /// Every DELETE request, as `DELETE path`, oldest first.
    fn deletes(&self) -> Vec<String> {
        self.api
            .writes()
            .into_iter()
            .filter(|w| w.starts_with("DELETE"))
            .collect()
    }

    fn statefulset(&self) -> StatefulSet {
        self.api.get(NS, "flotilla").unwrap_or_default()
    }

    fn statefulset_replicas(&self) -> Option<i32> {
        self.statefulset().spec.and_then(|s| s.replicas)
    }

    /// The `flotilla.dev/cluster-id` annotation of the object.
    fn cluster_id_annotation<K>(&self, name: &str) -> Option<String>
    where
        K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned,
    {
        let object: K = self.api.get(NS, name)?;
        object
            .meta()
            .annotations
            .as_ref()?
            .get(crate::crd::cluster_funcs::CLUSTER_ID_ANNOTATION)
            .cloned()
    }

    fn configmap_value(&self, key: &str) -> Option<String> {
        self.api
            .get::<ConfigMap>(NS, "flotilla-config")
            .and_then(|c| c.data)
            .and_then(|d| d.get(key).cloned())
    }

    /// Stands in for the StatefulSet controller: pods `0..replicas` at `revision`,
    /// ready, with their volumes, and the update revision.
    fn run_pods(&self, replicas: i32, revision: &str) {
        let cluster = self.cluster();
        let mut sts = self.statefulset();
        sts.status = Some(StatefulSetStatus {
            update_revision: Some(revision.to_owned()),
            ..StatefulSetStatus::default()
        });
        self.api.put(&sts);
        for ordinal in 0..replicas {
            self.put_pod(&cluster, ordinal, revision);
            let mut labels = cluster.selector_labels().unwrap_or_default();
            labels.remove("x");
            self.api.put(&PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: cluster.pvc_name(ordinal).ok(),
                    namespace: Some(NS.to_owned()),
                    labels: Some(labels),
                    ..ObjectMeta::default()
                },
                ..PersistentVolumeClaim::default()
            });
        }
    }

    fn put_pod(&self, cluster: &Cluster, ordinal: i32, revision: &str) {
        let mut labels = cluster.labels().unwrap_or_default();
        labels.insert("controller-revision-hash".to_owned(), revision.to_owned());
        self.api.put(&Pod {
            metadata: ObjectMeta {
                name: cluster.pod_name(ordinal).ok(),
                namespace: Some(NS.to_owned()),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".to_owned(),
                    status: "True".to_owned(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        });
    }
}

/// Membership of `nodes` healthy nodes: the first three vote, node 0 leads the meta
/// group and node 1 shard `orders/0`.
fn membership(nodes: i32) -> Membership {
    let voters: Vec<String> = (0..nodes.min(3)).map(|i| format!("n{i}")).collect();
    Membership {
        cluster_id: "c-1".to_owned(),
        nodes: (0..nodes)
            .map(|i| MemberNode {
                node_id: format!("n{i}"),
                pod: format!("flotilla-{i}"),
                role: if i < 3 {
                    NodeRole::Voter
                } else {
                    NodeRole::Learner
                },
                state: NodeState::Member,
                data_replicas: 1,
                labels: BTreeMap::new(),
            })
            .collect(),
        groups: vec![
            RaftGroup {
                id: META_GROUP.to_owned(),
                leader: Some("n0".to_owned()),
                voters: voters.clone(),
                caught_up: voters.clone(),
            },
            RaftGroup {
                id: "orders/0".to_owned(),
                leader: Some(format!("n{}", 1.min(nodes - 1))),
                voters: voters.clone(),
                caught_up: voters,
            },
        ],
        databases: BTreeMap::from([("orders".to_owned(), 1)]),
    }
}

fn ok(result: Result<()>) {
    if let Err(e) = result {
        panic!("reconcile failed: {e}");
    }
}

#[tokio::test]
async fn a_new_cluster_gets_its_children_and_bootstraps_on_one_pod() {
    let h = Harness::new();
    h.api.put(&Cluster::test());
    ok(h.reconcile_cluster().await);

    assert_eq!(h.statefulset_replicas(), Some(1));
    assert_eq!(
        h.configmap_value("initial-cluster-state").as_deref(),
        Some("new")
    );
    assert!(h.api.get::<Service>(NS, "flotilla").is_some());
    assert!(h.api.get::<Service>(NS, "flotilla-peers").is_some());
    assert!(h.api.get::<PodDisruptionBudget>(NS, "flotilla").is_none());
    let status = h.cluster().status.unwrap_or_default();
    assert_eq!(status.observed_generation, Some(1));
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    assert_eq!(ready.map(|c| c.reason.as_str()), Some("Bootstrapping"));
}

#[tokio::test]
async fn a_second_reconcile_of_an_unchanged_cluster_writes_nothing() {
    let h = Harness::new();
    h.api.put(&Cluster::test().with_cluster_id("c-1"));
    h.admin.set_membership(Some(membership(3)));
    ok(h.reconcile_cluster().await);
    h.run_pods(3, "r1");
    ok(h.reconcile_cluster().await);
    assert!(!h.api.writes().is_empty());

    h.api.clear_requests();
    ok(h.reconcile_cluster().await);
    assert_eq!(h.api.writes(), Vec::<String>::new());
    assert_eq!(h.admin.calls(), Vec::<String>::new());
}

#[tokio::test]
async fn the_first_node_reporting_the_cluster_id_ends_the_bootstrap() {
    let h = Harness::new();
    h.api.put(&Cluster::test().with_replicas(3));
    ok(h.reconcile_cluster().await);
    h.run_pods(1, "r1");
    // The first volume exists, but the first node has not initialised the cluster yet.
    ok(h.reconcile_cluster().await);
    assert_eq!(h.statefulset_replicas(), Some(1));
    assert_eq!(
        h.configmap_value("initial-cluster-state").as_deref(),
        Some("new")
    );

    h.admin.set_membership(Some(membership(1)));
    ok(h.reconcile_cluster().await);
    let status = h.cluster().status.unwrap_or_default();
    assert_eq!(status.cluster_id.as_deref(), Some("c-1"));
    assert_eq!(h.statefulset_replicas(), Some(3));
    assert_eq!(
        h.configmap_value("initial-cluster-state").as_deref(),
        Some("existing")
    );
    assert!(h.api.get::<PodDisruptionBudget>(NS, "flotilla").is_some());
    assert_eq!(
        h.cluster_id_annotation::<StatefulSet>("flotilla"),
        Some("c-1".to_owned())
    );
    assert_eq!(
        h.cluster_id_annotation::<PersistentVolumeClaim>("data-flotilla-0"),
        Some("c-1".to_owned())
    );
}

mod recovery;
mod restore;

#[tokio::test]
async fn a_spec_change_restarts_followers_first_and_leaders_after_a_transfer() {
    let h = Harness::new();
    h.api.put(&Cluster::test().with_cluster_id("c-1"));
    h.admin.set_membership(Some(membership(3)));
    ok(h.reconcile_cluster().await);
    h.run_pods(3, "r1");

    // A new image: the StatefulSet controller reports a new revision, pods stay put.
    let mut cluster = h.cluster();
    cluster.spec.image = "flotilla/flotilla-node:0.2.0".to_owned();
    cluster.metadata.generation = Some(2);
    h.api.put(&cluster);
    ok(h.reconcile_cluster().await);
    let mut sts = h.statefulset();
    if let Some(status) = sts.status.as_mut() {
        status.update_revision = Some("r2".to_owned());
    }
    h.api.put(&sts);

    let mut actions = Vec::new();
    for _ in 0..8 {
        h.api.clear_requests();
        let calls_before = h.admin.calls().len();
        ok(h.reconcile_cluster().await);
        let deleted: Vec<String> = h
            .api
            .writes()
            .into_iter()
            .filter(|w| w.starts_with("DELETE ") && w.contains("/pods/"))
            .collect();
        for write in &deleted {
            let pod = write.rsplit('/').next().unwrap_or_default().to_owned();
            actions.push(format!("restart {pod}"));
            // The StatefulSet controller recreates the pod from the new template.
            let ordinal = h.cluster().ordinal_of(&pod).unwrap_or_default();
            h.put_pod(&h.cluster(), ordinal, "r2");
        }
        for call in h.admin.calls().into_iter().skip(calls_before) {
            actions.push(call.clone());
            // The transfer succeeds: the leaderships move to an updated node.
            if let Some(node) = call.strip_prefix("transfer ") {
                let node = node.to_owned();
                h.admin.edit_membership(|m| {
                    for group in &mut m.groups {
                        if group.leader.as_deref() == Some(node.as_str()) {
                            group.leader = Some("n2".to_owned());
                        }
                    }
                });
            }
        }
    }
    assert_eq!(
        actions,
        [
            "restart flotilla-2",
            "transfer n1",
            "restart flotilla-1",
            "transfer n0",
            "restart flotilla-0",
        ]
    );
}

#[tokio::test]
async fn a_paused_cluster_only_gets_its_status_written() {
    let h = Harness::new();
    h.api.put(&Cluster::test().with_cluster_id("c-1"));
    h.admin.set_membership(Some(membership(3)));
    ok(h.reconcile_cluster().await);
    h.run_pods(3, "r1");
    let mut sts = h.statefulset();
    if let Some(status) = sts.status.as_mut() {
        status.update_revision = Some("r2".to_owned());
    }
    h.api.put(&sts);
    let paused = h.cluster().paused().with_replicas(5);
    h.api.put(&paused);

    h.api.clear_requests();
    ok(h.reconcile_cluster().await);
    let writes = h.api.writes();
    assert_eq!(
        writes,
        vec!["PATCH /apis/flotilla.dev/v1alpha1/namespaces/db/clusters/flotilla/status"]
    );
    assert_eq!(h.statefulset_replicas(), Some(3));
    assert_eq!(h.admin.calls(), Vec::<String>::new());
    let status = h.cluster().status.unwrap_or_default();
    let progressing = status.conditions.iter().find(|c| c.type_ == "Progressing");
    assert_eq!(progressing.map(|c| c.reason.as_str()), Some("Paused"));
}

#[tokio::test]
async fn an_operator_restarted_in_the_middle_of_a_scale_down_resumes_it() {
    let mut h = Harness::new();
    h.api
        .put(&Cluster::test().with_cluster_id("c-1").with_replicas(5));
    h.admin.set_membership(Some(membership(5)));
    ok(h.reconcile_cluster().await);
    h.run_pods(5, "r1");

    // The scale-down to 3 was recorded and node 4 removed before the operator died.
    let intent = ScaleDownIntent {
        from: 5,
        to: 3,
        pods: vec!["flotilla-4".to_owned(), "flotilla-3".to_owned()],
        phase: ScaleDownPhase::Draining,
    };
    h.api
        .put(&h.cluster().with_replicas(3).with_scale_down(intent));
    h.admin
        .edit_membership(|m| m.nodes.retain(|n| n.node_id != "n4"));
    h.restart_operator();

    ok(h.reconcile_cluster().await);
    assert_eq!(h.admin.calls(), ["drain n3"]);
    assert_eq!(h.statefulset_replicas(), Some(5), "shrunk before draining");

    h.admin.edit_membership(|m| {
        for n in &mut m.nodes {
            if n.node_id == "n3" {
                n.data_replicas = 0;
            }
        }
    });
    ok(h.reconcile_cluster().await);
    assert_eq!(h.admin.calls(), ["drain n3", "remove n3"]);
    h.admin
        .edit_membership(|m| m.nodes.retain(|n| n.node_id != "n3"));

    ok(h.reconcile_cluster().await); // Draining -> Shrinking
    ok(h.reconcile_cluster().await); // applies the smaller StatefulSet
    assert_eq!(h.statefulset_replicas(), Some(3));
    assert!(
        h.api
            .get::<PersistentVolumeClaim>(NS, "data-flotilla-4")
            .is_some()
    );

    h.api.remove::<Pod>(NS, "flotilla-4");
    h.api.remove::<Pod>(NS, "flotilla-3");
    ok(h.reconcile_cluster().await);
    assert!(
        h.api
            .get::<PersistentVolumeClaim>(NS, "data-flotilla-4")
            .is_none()
    );
    ok(h.reconcile_cluster().await);
    assert!(
        h.api
            .get::<PersistentVolumeClaim>(NS, "data-flotilla-3")
            .is_none()
    );
    assert!(
        h.api
            .get::<PersistentVolumeClaim>(NS, "data-flotilla-2")
            .is_some()
    );
    ok(h.reconcile_cluster().await);
    assert_eq!(h.cluster().scale_down(), None);
}

#[tokio::test]
async fn a_failed_step_is_explained_in_status_and_retried() {
    let h = Harness::new();
    h.api
        .put(&Cluster::test().with_cluster_id("c-1").with_replicas(4));
    h.admin.set_membership(Some(membership(4)));
    ok(h.reconcile_cluster().await);
    h.run_pods(4, "r1");
    h.api.put(&h.cluster().with_replicas(3));
    ok(h.reconcile_cluster().await); // records the intent
    h.admin.lock().drain_fails = true;

    let result = h.reconcile_cluster().await;
    assert!(matches!(result, Err(Error::AdminRefused(_))), "{result:?}");
    let status = h.cluster().status.unwrap_or_default();
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded");
    assert_eq!(degraded.map(|c| c.reason.as_str()), Some("ReconcileError"));
    assert!(degraded.is_some_and(|c| c.message.contains("cannot move replicas")));
    assert!(
        status.scale_down.is_some(),
        "the intent survives the failure"
    );

    h.admin.lock().drain_fails = false;
    ok(h.reconcile_cluster().await);
    let status = h.cluster().status.unwrap_or_default();
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded");
    assert_eq!(degraded.map(|c| c.status.as_str()), Some("False"));
}

#[tokio::test]
async fn a_refused_child_is_reported_even_when_the_status_write_fails_too() {
    let h = Harness::new();
    h.api.put(&Cluster::test());
    h.api.refuse_writes(
        "/statefulsets/flotilla",
        "spec.template.spec.containers[0].readinessProbe.httpGet.port: Invalid value",
    );
    h.api
        .refuse_writes("/clusters/flotilla/status", "status write refused");

    let result = h.reconcile_cluster().await;
    let chain = result.err().map(|e| e.chain()).unwrap_or_default();
    assert!(chain.contains("applying StatefulSet flotilla"), "{chain}");
    assert!(chain.contains("readinessProbe"), "{chain}");
    assert!(chain.contains("status write refused"), "{chain}");

    // Once the status may be written, its condition says what was refused, and why.
    h.api.accept_writes("/clusters/flotilla/status");
    let result = h.reconcile_cluster().await;
    assert!(matches!(result, Err(Error::Child { .. })), "{result:?}");
    let status = h.cluster().status.unwrap_or_default();
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded");
    assert_eq!(degraded.map(|c| c.reason.as_str()), Some("ReconcileError"));
    let message = degraded.map(|c| c.message.clone()).unwrap_or_default();
    assert!(
        message.contains("applying StatefulSet flotilla"),
        "{message}"
    );
    assert!(message.contains("readinessProbe"), "{message}");
}

#[tokio::test]
async fn a_failed_observation_is_reported_in_status() {
    let h = Harness::new();
    h.api.put(&Cluster::test().with_cluster_id("c-1"));
    h.api.forbid::<PersistentVolumeClaim>();
    let result = h.reconcile_cluster().await;
    assert!(matches!(result, Err(Error::Kube(_))), "{result:?}");
    let status = h.cluster().status.unwrap_or_default();
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded");
    assert_eq!(degraded.map(|c| c.reason.as_str()), Some("ReconcileError"));
}

#[tokio::test]
async fn a_pod_marked_unrecoverable_gets_a_fresh_node() {
    let h = Harness::new();
    h.api.put(&Cluster::test().with_cluster_id("c-1"));
    h.admin.set_membership(Some(membership(3)));
    ok(h.reconcile_cluster().await);
    h.run_pods(3, "r1");
    let mut pod: Pod = h.api.get(NS, "flotilla-2").unwrap_or_default();
    pod.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("flotilla.dev/unrecoverable".to_owned(), "true".to_owned());
    h.api.put(&pod);

    ok(h.reconcile_cluster().await);
    assert_eq!(h.admin.calls(), ["remove n2"]);
    h.admin
        .edit_membership(|m| m.nodes.retain(|n| n.node_id != "n2"));

    h.api.clear_requests();
    ok(h.reconcile_cluster().await);
    assert!(
        h.api
            .get::<PersistentVolumeClaim>(NS, "data-flotilla-2")
            .is_none()
    );
    ok(h.reconcile_cluster().await);
    // Deleted gracefully: Terminating until its kubelet stops it.
    let pod = h.api.get::<Pod>(NS, "flotilla-2");
    assert!(
        pod.is_some_and(|p| p.metadata.deletion_timestamp.is_some()),
        "the pod is marked for deletion"
    );
    let deletes = h.deletes();
    assert_eq!(
        deletes,
        [
            "DELETE /api/v1/namespaces/db/persistentvolumeclaims/data-flotilla-2",
            "DELETE /api/v1/namespaces/db/pods/flotilla-2",
        ]
    );
    let status = h.cluster().status.unwrap_or_default();
    let progressing = status.conditions.iter().find(|c| c.type_ == "Progressing");
    assert_eq!(
        progressing.map(|c| c.reason.as_str()),
        Some("ReplacingNode")
    );
}

mod backups;
mod collections;
mod database_groups;
mod drift;
mod placement;
mod scheduled_backups;
mod stuck_pods;
mod tls;
mod volumes;

#[tokio::test]
async fn a_hand_over_request_moves_the_leaderships_then_clears_itself() {
    use crate::crd::cluster_funcs::HAND_OVER_ANNOTATION;
    let h = Harness::new();
    h.api.put(&Cluster::test().with_cluster_id("c-1"));
    h.admin.set_membership(Some(membership(3)));
    ok(h.reconcile_cluster().await);
    h.run_pods(3, "r1");
    let mut pod: Pod = h.api.get(NS, "flotilla-1").unwrap_or_default();
    pod.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(
            HAND_OVER_ANNOTATION.to_owned(),
            "2026-12-06T10:00:00Z".to_owned(),
        );
    h.api.put(&pod);

    ok(h.reconcile_cluster().await);
    assert_eq!(h.admin.calls(), ["transfer n1"], "n1 leads orders/0");
    let still_asked: Option<Pod> = h.api.get(NS, "flotilla-1");
    assert!(
        still_asked.is_some_and(|p| p.annotations().contains_key(HAND_OVER_ANNOTATION)),
        "the request stays until the node leads nothing"
    );

    h.admin.edit_membership(|m| {
        for g in m.groups.iter_mut().filter(|g| g.id == "orders/0") {
            g.leader = Some("n2".to_owned());
        }
    });
    ok(h.reconcile_cluster().await);
    let done: Option<Pod> = h.api.get(NS, "flotilla-1");
    assert!(
        done.is_some_and(|p| !p.annotations().contains_key(HAND_OVER_ANNOTATION)),
        "the request is cleared once n1 leads nothing"
    );
    assert_eq!(h.admin.calls(), ["transfer n1"], "no second transfer");
}
