//! What the `Cluster` controller observes: the StatefulSet, ConfigMap, pods and volumes
//! of a cluster, the DatabaseGroups placed on it, its Raft membership through the admin
//! API, and the Kubernetes Nodes its pods run on.

use super::Context;
use crate::crd::cluster_funcs::{
    CLUSTER_ID_ANNOTATION, DATA_VOLUME, HAND_OVER_ANNOTATION, UNRECOVERABLE_ANNOTATION,
};
use crate::crd::{Cluster, DatabaseGroup};
use crate::desired::INITIAL_CLUSTER_STATE_KEY;
use crate::error::Result;
use crate::plan::{
    KubeNodes, Observed, ObservedPod, ObservedStatefulSet, ReplicationNeed, placement,
};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

/// Label the StatefulSet controller puts on pods: the template revision they run.
const REVISION_LABEL: &str = "controller-revision-hash";

/// Reads the StatefulSet, pods, PVCs, DatabaseGroups and the Raft membership.
pub async fn observe(cluster: &Cluster, ctx: &Context, namespace: &str) -> Result<Observed> {
    let client = &ctx.client;
    let selector = cluster.label_selector()?;
    let by_labels = ListParams::default().labels(&selector);
    let statefulset = Api::<StatefulSet>::namespaced(client.clone(), namespace)
        .get_opt(&cluster.statefulset_name()?)
        .await?
        .map(|sts| ObservedStatefulSet {
            terminating: sts.metadata.deletion_timestamp.is_some(),
            replicas: sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            volume_size: sts
                .spec
                .as_ref()
                .and_then(|s| s.volume_claim_templates.as_ref())
                .and_then(|t| {
                    t.iter()
                        .find(|t| t.metadata.name.as_deref() == Some(DATA_VOLUME))
                })
                .and_then(|t| t.spec.as_ref()?.resources.as_ref()?.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .map(|q| q.0.clone()),
            cluster_id: sts.annotations().get(CLUSTER_ID_ANNOTATION).cloned(),
            update_revision: sts.status.and_then(|s| s.update_revision),
        });
    let initial_cluster_state = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(&cluster.configmap_name()?)
        .await?
        .and_then(|c| c.data)
        .and_then(|mut d| d.remove(INITIAL_CLUSTER_STATE_KEY));
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&by_labels)
        .await?
        .items
        .into_iter()
        .filter_map(|pod| observe_pod(cluster, pod))
        .collect();
    let all_pvcs = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
        .list(&by_labels)
        .await?
        .items;
    let pvc_cluster_ids = all_pvcs
        .iter()
        .filter_map(|pvc| {
            let id = pvc.annotations().get(CLUSTER_ID_ANNOTATION)?;
            Some((pvc.metadata.name.clone()?, id.clone()))
        })
        .collect();
    let storage = |resources: Option<&BTreeMap<String, Quantity>>, pvc: &PersistentVolumeClaim| {
        let size = resources?.get("storage")?;
        Some((pvc.metadata.name.clone()?, size.0.clone()))
    };
    let volume_requests = all_pvcs
        .iter()
        .filter_map(|pvc| {
            let spec = pvc.spec.as_ref()?;
            storage(spec.resources.as_ref()?.requests.as_ref(), pvc)
        })
        .collect();
    let volume_capacities = all_pvcs
        .iter()
        .filter_map(|pvc| storage(pvc.status.as_ref()?.capacity.as_ref(), pvc))
        .collect();
    let (terminating, live): (Vec<_>, Vec<_>) = all_pvcs
        .into_iter()
        .partition(|pvc| pvc.metadata.deletion_timestamp.is_some());
    let names = |pvcs: Vec<PersistentVolumeClaim>| -> Vec<String> {
        pvcs.into_iter()
            .filter_map(|pvc| pvc.metadata.name)
            .collect()
    };
    let (pvcs, pvcs_terminating) = (names(live), names(terminating));
    let name = cluster.name()?;
    let replication_needs = Api::<DatabaseGroup>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|group| group.cluster_name() == name)
        .map(|group| ReplicationNeed {
            database_group: group.name_any(),
            replication_factor: group.spec.replication_factor,
        })
        .collect();
    let membership = match ctx.admin.membership(cluster).await {
        Ok(membership) => Some(membership),
        Err(error) => {
            tracing::debug!(cluster = name, %error, "membership unknown");
            None
        }
    };
    let mut observed = Observed {
        statefulset,
        pods,
        pvcs,
        pvcs_terminating,
        pvc_cluster_ids,
        volume_requests,
        volume_capacities,
        initial_cluster_state,
        membership,
        replication_needs,
        kube_nodes: KubeNodes::Unread,
    };
    observed.kube_nodes =
        read_kube_nodes(ctx, placement::kube_nodes_to_read(cluster, &observed)).await?;
    read_readiness_of_nodes_under_terminating_pods(ctx, &mut observed.pods).await?;
    Ok(observed)
}

/// Labels of the Kubernetes Nodes named. Reading them being forbidden is no error: it is
/// logged once and reported in status, and the rest of the reconcile goes on.
async fn read_kube_nodes(ctx: &Context, names: Vec<String>) -> Result<KubeNodes> {
    if names.is_empty() {
        return Ok(KubeNodes::Unread);
    }
    let api = Api::<Node>::all(ctx.client.clone());
    let mut nodes = BTreeMap::new();
    for name in names {
        match api.get_opt(&name).await {
            Ok(Some(node)) => {
                nodes.insert(name, node.metadata.labels.unwrap_or_default());
            }
            Ok(None) => {}
            Err(kube::Error::Api(status)) if status.code == 403 => {
                if !ctx.nodes_forbidden.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        message = %status.message,
                        "the operator may not read Kubernetes Nodes: placement labels are not \
                         copied to the nodes until it may (RBAC: get nodes)"
                    );
                }
                return Ok(KubeNodes::Forbidden);
            }
            Err(error) => return Err(error.into()),
        }
    }
    if ctx.nodes_forbidden.swap(false, Ordering::Relaxed) {
        tracing::info!("the operator may read Kubernetes Nodes again");
    }
    Ok(KubeNodes::Read(nodes))
}

/// Whether the Kubernetes Node of each terminating pod is Ready: a pod stuck terminating
/// on a lost Node is only deleted by force once the Node is seen NotReady. A Node that
/// cannot be read leaves it unknown.
async fn read_readiness_of_nodes_under_terminating_pods(
    ctx: &Context,
    pods: &mut [ObservedPod],
) -> Result<()> {
    let api = Api::<Node>::all(ctx.client.clone());
    for pod in pods.iter_mut().filter(|p| p.terminating) {
        let Some(name) = &pod.kube_node else {
            continue;
        };
        pod.kube_node_ready = match api.get_opt(name).await {
            Ok(Some(node)) => Some(node_is_ready(&node)),
            // A Node deleted from the cluster is as lost as one that is NotReady.
            Ok(None) => Some(false),
            Err(kube::Error::Api(status)) if status.code == 403 => None,
            Err(error) => return Err(error.into()),
        };
    }
    Ok(())
}

fn node_is_ready(node: &Node) -> bool {
    let conditions = node.status.as_ref().and_then(|s| s.conditions.as_ref());
    ready(
        conditions
            .into_iter()
            .flatten()
            .map(|c| (&c.type_, &c.status)),
    )
}

/// Whether the `(type, status)` conditions hold a Ready condition that is True.
fn ready<'a>(mut conditions: impl Iterator<Item = (&'a String, &'a String)>) -> bool {
    conditions.any(|(type_, status)| type_ == "Ready" && status == "True")
}

fn observe_pod(cluster: &Cluster, pod: Pod) -> Option<ObservedPod> {
    let name = pod.metadata.name.clone()?;
    let ordinal = cluster.ordinal_of(&name)?;
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    let ready = ready(
        conditions
            .into_iter()
            .flatten()
            .map(|c| (&c.type_, &c.status)),
    );
    Some(ObservedPod {
        ordinal,
        revision: pod.labels().get(REVISION_LABEL).cloned(),
        ready,
        terminating: pod.metadata.deletion_timestamp.is_some(),
        unrecoverable: pod
            .annotations()
            .get(UNRECOVERABLE_ANNOTATION)
            .is_some_and(|v| v == "true"),
        hand_over: pod.annotations().contains_key(HAND_OVER_ANNOTATION),
        kube_node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        terminating_for: pod.metadata.deletion_timestamp.as_ref().and_then(|since| {
            let elapsed = Timestamp::now().duration_since(since.0);
            std::time::Duration::try_from(elapsed).ok()
        }),
        kube_node_ready: None,
        name,
    })
}
