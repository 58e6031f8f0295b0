//! The `Cluster` controller: observe, plan, apply the desired objects, execute the
//! first planned step, write status.

use super::{Context, FIELD_MANAGER, apply};
use crate::crd::cluster_funcs::{CLUSTER_ID_ANNOTATION, UNRECOVERABLE_ANNOTATION};
use crate::crd::conditions::{ConditionType, NewCondition, find_condition, set_condition};
use crate::crd::{Cluster, ClusterStatus, ConditionStatus, DatabaseGroup, Reason};
use crate::desired::{INITIAL_CLUSTER_STATE_KEY, Shape, desired_objects};
use crate::error::{Error, Result};
use crate::plan::{
    self, KubeNodes, LabelAssignment, Observed, ObservedPod, ObservedStatefulSet, Replacement,
    ReplicationNeed, Step, bootstrap, placement, status::cluster_status,
};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, ObjectReference, PersistentVolumeClaim, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Name of this controller in metrics and logs.
pub const CONTROLLER: &str = "cluster";
/// Requeue while something is in progress.
const BUSY_REQUEUE: Duration = Duration::from_secs(5);
/// Requeue of a settled cluster, to notice changes only the admin API shows.
const IDLE_REQUEUE: Duration = Duration::from_secs(60);
/// Label the StatefulSet controller puts on pods: the template revision they run.
const REVISION_LABEL: &str = "controller-revision-hash";

/// Reconciles one `Cluster`.
pub async fn reconcile(cluster: Arc<Cluster>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    if cluster.meta().deletion_timestamp.is_some() {
        // Children go with their owner; nothing outside Kubernetes to clean up.
        return Ok(Action::await_change());
    }
    let namespace = cluster
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let observed = match observe(&cluster, &ctx, &namespace).await {
        Ok(observed) => observed,
        Err(error) => {
            // Nothing is planned without an observation, but the status still says why.
            let mut status = cluster.status.clone().unwrap_or_default();
            report_failure(&mut status, &cluster, &error, &Time(Timestamp::now()));
            let written = write_status(&cluster, &ctx, &namespace, status).await;
            return finish(&cluster, &ctx, Some(error), written)
                .await
                .map(|()| Action::requeue(BUSY_REQUEUE));
        }
    };
    let steps = plan::plan(&cluster, &observed);
    let first = steps.first();
    let assignments = placement::assignments(&cluster, &observed);

    let mut next = (*cluster).clone();
    let mut failure = None;
    if !cluster.spec.paused {
        // The shape comes from every trace of the Raft cluster, not from the status alone,
        // so that a lost status never makes nodes start a new cluster or the StatefulSet
        // shrink.
        let shape = plan::shape(&cluster, &observed);
        let acted = async {
            apply_children(&cluster, &ctx, &namespace, &shape).await?;
            if let Some(id) = &shape.cluster_id {
                mark_volumes(&bootstrap::volumes_to_mark(&observed), id, &ctx, &namespace).await?;
            }
            if let Some(step) = first {
                execute(step, &cluster, &ctx, &namespace).await?;
            }
            // Placement labels are independent of the steps: every node that needs them
            // gets them in this pass.
            for assignment in &assignments {
                assign_labels(assignment, &cluster, &ctx).await?;
            }
            Ok::<_, Error>(())
        }
        .await;
        match acted {
            Ok(()) => {
                if let Some(step) = first {
                    step.apply_to_status(&mut next);
                }
            }
            Err(error) => failure = Some(error),
        }
    }
    let now = Time(Timestamp::now());
    if failure.is_none()
        && let Some(refusal) = steps
            .iter()
            .skip(1)
            .find(|s| matches!(s, Step::Refuse { .. }))
        && let Err(error) = execute(refusal, &cluster, &ctx, &namespace).await
    {
        failure = Some(error);
    }
    let mut status = cluster_status(&next, &observed, &steps, &now);
    if let Some(error) = &failure {
        report_failure(&mut status, &cluster, error, &now);
    }
    let ready = find_condition(&status.conditions, ConditionType::Ready)
        .is_some_and(|c| c.status == ConditionStatus::True.as_str());
    let written = write_status(&cluster, &ctx, &namespace, status).await;
    finish(&cluster, &ctx, failure, written).await?;
    Ok(if steps.is_empty() && ready {
        Action::requeue(IDLE_REQUEUE)
    } else {
        Action::requeue(BUSY_REQUEUE)
    })
}

/// Puts the error, with its causes, in the Degraded condition: the status says why; the
/// error makes the controller retry with backoff.
fn report_failure(status: &mut ClusterStatus, cluster: &Cluster, error: &Error, now: &Time) {
    set_condition(
        &mut status.conditions,
        NewCondition::new(
            ConditionType::Degraded,
            ConditionStatus::True,
            Reason::ReconcileError,
            error.chain(),
        ),
        cluster.metadata.generation,
        now,
    );
}

/// Ends a pass: the pass's own error first, with a failed status write added to it. When
/// the status could not say why the pass failed, a Warning Event does.
async fn finish(
    cluster: &Cluster,
    ctx: &Context,
    failure: Option<Error>,
    written: Result<()>,
) -> Result<()> {
    let result = crate::error::outcome(failure, written);
    if let Err(error @ Error::StatusNotWritten { .. }) = &result {
        let event = Event {
            type_: EventType::Warning,
            reason: Reason::ReconcileError.as_str().to_owned(),
            note: Some(error.chain()),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(error) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
            tracing::warn!(%error, "recording an event");
        }
    }
    result
}

/// Reads the StatefulSet, pods, PVCs, DatabaseGroups and the Raft membership.
pub async fn observe(cluster: &Cluster, ctx: &Context, namespace: &str) -> Result<Observed> {
    let client = &ctx.client;
    let selector = cluster
        .selector_labels()?
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let by_labels = ListParams::default().labels(&selector);
    let statefulset = Api::<StatefulSet>::namespaced(client.clone(), namespace)
        .get_opt(&cluster.statefulset_name()?)
        .await?
        .map(|sts| ObservedStatefulSet {
            replicas: sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
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
        initial_cluster_state,
        membership,
        replication_needs,
        kube_nodes: KubeNodes::Unread,
    };
    observed.kube_nodes =
        read_kube_nodes(ctx, placement::kube_nodes_to_read(cluster, &observed)).await?;
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

/// Gives a node the placement labels of the Kubernetes Node its pod runs on.
async fn assign_labels(
    assignment: &LabelAssignment,
    cluster: &Cluster,
    ctx: &Context,
) -> Result<()> {
    let LabelAssignment {
        pod,
        node_id,
        kube_node,
        labels,
        placement,
    } = assignment;
    ctx.admin.assign_labels(cluster, node_id, labels).await?;
    let shown = if placement.is_empty() {
        "none".to_owned()
    } else {
        placement
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    tracing::info!(
        pod,
        node = node_id,
        kube_node,
        labels = shown,
        "placement labels assigned"
    );
    let event = Event {
        type_: EventType::Normal,
        reason: Reason::PlacementLabels.as_str().to_owned(),
        note: Some(format!(
            "{pod} (node {node_id}) on Kubernetes node {kube_node}: placement labels {shown}"
        )),
        action: "AssignLabels".to_owned(),
        secondary: Some(pod_reference(cluster, pod)),
    };
    if let Err(error) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
        tracing::warn!(%error, "recording an event");
    }
    Ok(())
}

fn pod_reference(cluster: &Cluster, pod: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Pod".to_owned()),
        name: Some(pod.to_owned()),
        namespace: cluster.metadata.namespace.clone(),
        ..ObjectReference::default()
    }
}

fn observe_pod(cluster: &Cluster, pod: Pod) -> Option<ObservedPod> {
    let name = pod.metadata.name.clone()?;
    let ordinal = cluster.ordinal_of(&name)?;
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
    Some(ObservedPod {
        ordinal,
        revision: pod.labels().get(REVISION_LABEL).cloned(),
        ready,
        terminating: pod.metadata.deletion_timestamp.is_some(),
        unrecoverable: pod
            .annotations()
            .get(UNRECOVERABLE_ANNOTATION)
            .is_some_and(|v| v == "true"),
        kube_node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        name,
    })
}

/// Keeps the cluster id on each volume named, so that it survives a lost status (the
/// volumes outlive the `Cluster` object and its other children).
async fn mark_volumes(pvcs: &[String], id: &str, ctx: &Context, namespace: &str) -> Result<()> {
    let api = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({
        "metadata": { "annotations": { CLUSTER_ID_ANNOTATION: id } }
    });
    for pvc in pvcs {
        api.patch(pvc, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        tracing::info!(pvc, cluster_id = id, "cluster id kept on the volume");
    }
    Ok(())
}

/// Applies every desired object; deletes the budget when it is no longer wanted.
async fn apply_children(
    cluster: &Cluster,
    ctx: &Context,
    namespace: &str,
    shape: &Shape,
) -> Result<()> {
    let objects = desired_objects(cluster, shape)?;
    let wants_budget = objects
        .iter()
        .any(|o| matches!(o, crate::desired::DesiredObject::PodDisruptionBudget(_)));
    for object in objects {
        apply::apply(&ctx.client, namespace, object).await?;
    }
    if !wants_budget {
        let budgets = Api::<PodDisruptionBudget>::namespaced(ctx.client.clone(), namespace);
        let name = cluster.pdb_name()?;
        if budgets.get_opt(&name).await?.is_some() {
            budgets.delete(&name, &DeleteParams::default()).await?;
        }
    }
    Ok(())
}

/// Executes one step and records an Event for it.
async fn execute(step: &Step, cluster: &Cluster, ctx: &Context, namespace: &str) -> Result<()> {
    let client = &ctx.client;
    let (reason, note) = match step {
        Step::RecordScaleDown(intent) => (
            Reason::ScalingDown,
            format!(
                "scaling down from {} to {} nodes; leaving: {}",
                intent.from,
                intent.to,
                intent.pods.join(", ")
            ),
        ),
        Step::DrainNode { pod, node_id } => {
            ctx.admin.drain_node(cluster, node_id).await?;
            (
                Reason::ScalingDown,
                format!("draining {pod} (node {node_id})"),
            )
        }
        Step::RemoveNode { pod, node_id } => {
            ctx.admin.remove_node(cluster, node_id).await?;
            (
                Reason::ScalingDown,
                format!("removed {pod} (node {node_id}) from the cluster"),
            )
        }
        Step::StartShrinking => (
            Reason::ScalingDown,
            "every leaving node is removed; shrinking the StatefulSet".to_owned(),
        ),
        Step::DeletePvc { name } => {
            Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
                .delete(name, &DeleteParams::default())
                .await?;
            (Reason::ScalingDown, format!("deleted volume {name}"))
        }
        Step::FinishScaleDown => (Reason::ScalingDown, "scale-down complete".to_owned()),
        Step::TransferLeadership { pod, node_id } => {
            ctx.admin.transfer_leadership(cluster, node_id).await?;
            (
                Reason::LeadershipTransfer,
                format!("moving leadership off {pod} before it restarts"),
            )
        }
        Step::RestartPod { pod } => {
            Api::<Pod>::namespaced(client.clone(), namespace)
                .delete(pod, &DeleteParams::default())
                .await?;
            (Reason::RollingRestart, format!("restarted {pod}"))
        }
        Step::ReplaceNode { pod, action } => {
            let note = match action {
                Replacement::RemoveFromCluster { node_id } => {
                    ctx.admin.remove_node(cluster, node_id).await?;
                    format!("removed the lost node {node_id} of {pod} from the cluster")
                }
                Replacement::DeleteVolume { pvc } => {
                    Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
                        .delete(pvc, &DeleteParams::default())
                        .await?;
                    format!("deleted volume {pvc} of the lost node of {pod}")
                }
                Replacement::RecreatePod => {
                    Api::<Pod>::namespaced(client.clone(), namespace)
                        .delete(pod, &DeleteParams::default())
                        .await?;
                    format!("deleted {pod}; a fresh node starts in its place")
                }
            };
            (Reason::ReplacingNode, note)
        }
        Step::Refuse { reason, message } => {
            let previous = cluster
                .status
                .as_ref()
                .and_then(|s| find_condition(&s.conditions, ConditionType::Degraded))
                .map(|c| c.reason.as_str());
            if previous == Some(reason.as_str()) {
                return Ok(()); // already reported
            }
            publish(
                ctx,
                cluster,
                EventType::Warning,
                *reason,
                step,
                message.clone(),
            )
            .await;
            return Ok(());
        }
        Step::Wait { .. } => return Ok(()),
    };
    publish(ctx, cluster, EventType::Normal, reason, step, note).await;
    Ok(())
}

/// Events are best effort: a failure to record one never fails the reconcile.
///
/// The step gives the event's action and related object: events with the same reason,
/// action and related object are aggregated into one (a series keeping the first note).
async fn publish(
    ctx: &Context,
    cluster: &Cluster,
    type_: EventType,
    reason: Reason,
    step: &Step,
    note: String,
) {
    let secondary = step.related().map(|(kind, name)| ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some(kind.to_owned()),
        name: Some(name.to_owned()),
        namespace: cluster.metadata.namespace.clone(),
        ..ObjectReference::default()
    });
    let event = Event {
        type_,
        reason: reason.as_str().to_owned(),
        note: Some(note),
        action: step.action().to_owned(),
        secondary,
    };
    if let Err(error) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
        tracing::warn!(%error, "recording an event");
    }
}

/// Writes `status` through the status subresource, unless it is unchanged.
async fn write_status(
    cluster: &Cluster,
    ctx: &Context,
    namespace: &str,
    status: ClusterStatus,
) -> Result<()> {
    if cluster.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let patch = serde_json::json!({
        "apiVersion": Cluster::api_version(&()),
        "kind": Cluster::kind(&()),
        "status": status,
    });
    Api::<Cluster>::namespaced(ctx.client.clone(), namespace)
        .patch_status(
            cluster.name()?,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(())
}
