//! The `Cluster` controller: observe, plan, apply the desired objects, execute the
//! first planned step, write status.

pub use super::observe::observe;
use super::{Context, FIELD_MANAGER, apply};
use crate::crd::cluster_funcs::{CLUSTER_ID_ANNOTATION, HAND_OVER_ANNOTATION};
use crate::crd::conditions::{ConditionType, NewCondition, find_condition, set_condition};
use crate::crd::{Cluster, ClusterStatus, ConditionStatus, Reason};
use crate::desired::{Shape, desired_objects};
use crate::error::{Error, Result};
use crate::plan::{
    self, LabelAssignment, Replacement, Step, bootstrap, drift, placement, status::cluster_status,
};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// Name of this controller in metrics and logs.
pub const CONTROLLER: &str = "cluster";
/// Requeue while something is in progress.
const BUSY_REQUEUE: Duration = Duration::from_secs(5);
/// Requeue of a settled cluster, to notice changes only the admin API shows.
const IDLE_REQUEUE: Duration = Duration::from_secs(60);
/// Drifted fields named in one Event, at most.
const DRIFTS_SHOWN: usize = 8;

/// Reconciles one `Cluster`.
pub async fn reconcile(cluster: Arc<Cluster>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER, cluster.as_ref());
    if cluster.meta().deletion_timestamp.is_some() {
        ctx.metrics.forget_cluster(
            &cluster.namespace().unwrap_or_default(),
            &cluster.name_any(),
        );
        // Children go with their owner; nothing outside Kubernetes to clean up.
        return Ok(Action::await_change());
    }
    let namespace = cluster
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    // The certificates come first: the admin calls of the observation use them.
    let observed = match async {
        super::tls::reconcile(&cluster, &ctx, &namespace).await?;
        observe(&cluster, &ctx, &namespace).await
    }
    .await
    {
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
    let mut recovering = false;
    if failure.is_none() && !cluster.spec.paused {
        match super::recovery::reconcile(&cluster, &observed, &ctx, &namespace, &mut status, &now)
            .await
        {
            Ok(busy) => recovering = busy,
            Err(error) => failure = Some(error),
        }
    }
    if let Some(error) = &failure {
        report_failure(&mut status, &cluster, error, &now);
    }
    let ready = find_condition(&status.conditions, ConditionType::Ready)
        .is_some_and(|c| c.status == ConditionStatus::True.as_str());
    let written = write_status(&cluster, &ctx, &namespace, status).await;
    finish(&cluster, &ctx, failure, written).await?;
    Ok(if steps.is_empty() && ready && !recovering {
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
    let objects = desired_objects(cluster, shape, &ctx.operator_pods)?;
    let wants = |kind: &str| objects.iter().any(|o| o.kind() == kind);
    let wants_budget = wants("PodDisruptionBudget");
    let wants_policy = wants("NetworkPolicy");
    let wants_certificates = wants("Certificate");
    for object in objects {
        let (kind, api_version, name) = (object.kind(), object.api_version(), object.name());
        let name = name.to_owned();
        if let apply::Applied::Reverted(drifted) =
            apply::apply(&ctx.client, namespace, object).await?
        {
            let note = format!(
                "reverted hand edits of {kind} {name}: {}",
                drift::describe(&drifted, DRIFTS_SHOWN)
            );
            tracing::warn!(kind, name, reverted = %note, "drift reverted");
            let event = Event {
                type_: EventType::Warning,
                reason: Reason::DriftReverted.as_str().to_owned(),
                note: Some(note),
                action: "RevertDrift".to_owned(),
                secondary: Some(ObjectReference {
                    api_version: Some(api_version.to_owned()),
                    kind: Some(kind.to_owned()),
                    name: Some(name.clone()),
                    namespace: Some(namespace.to_owned()),
                    ..ObjectReference::default()
                }),
            };
            if let Err(error) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
                tracing::warn!(%error, "recording an event");
            }
        }
    }
    if !wants_budget {
        let budgets = Api::<PodDisruptionBudget>::namespaced(ctx.client.clone(), namespace);
        let name = cluster.pdb_name()?;
        if budgets.get_opt(&name).await?.is_some() {
            budgets.delete(&name, &DeleteParams::default()).await?;
        }
    }
    if !wants_policy {
        let policies = Api::<NetworkPolicy>::namespaced(ctx.client.clone(), namespace);
        let name = cluster.network_policy_name()?;
        if policies.get_opt(&name).await?.is_some() {
            policies.delete(&name, &DeleteParams::default()).await?;
        }
    }
    // Certificates of an issuer the spec no longer names: cert-manager would keep writing
    // into Secrets the operator now fills (or that TLS no longer uses).
    if cluster.spec.tls.is_some() && !wants_certificates {
        remove_certificates(cluster, ctx, namespace).await?;
    }
    Ok(())
}

/// Deletes the cert-manager Certificates of `cluster`, if any (and if cert-manager is
/// installed at all).
async fn remove_certificates(cluster: &Cluster, ctx: &Context, namespace: &str) -> Result<()> {
    let resource = crate::desired::certificate_resource();
    let certificates =
        Api::<DynamicObject>::namespaced_with(ctx.client.clone(), namespace, &resource);
    for name in [
        cluster.tls_secret_name()?,
        cluster.operator_tls_secret_name()?,
    ] {
        match certificates.delete(&name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(certificate = name, "deleted a Certificate no longer wanted"),
            // Gone already, or cert-manager's CRDs are not installed.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
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
        Step::ExpandVolume { pvc, size } => {
            let patch = serde_json::json!({
                "spec": { "resources": { "requests": { "storage": size } } }
            });
            Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
                .patch(pvc, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            (
                Reason::VolumeGrowth,
                format!("growing volume {pvc} to {size}"),
            )
        }
        Step::RecreateStatefulSet { volume_size } => {
            // Orphaned pods keep running; the StatefulSet applied next adopts them.
            let params = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Orphan),
                ..DeleteParams::default()
            };
            Api::<StatefulSet>::namespaced(client.clone(), namespace)
                .delete(&cluster.statefulset_name()?, &params)
                .await?;
            (
                Reason::VolumeGrowth,
                format!(
                    "every volume has {volume_size}: re-creating the StatefulSet with a claim \
                     template of that size, its pods kept"
                ),
            )
        }
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
        Step::HandOverLeadership { pod, node_id } => {
            ctx.admin.transfer_leadership(cluster, node_id).await?;
            (
                Reason::LeadershipTransfer,
                format!("moving leadership off {pod}, as asked"),
            )
        }
        Step::FinishHandOver { pod } => {
            let clear =
                serde_json::json!({"metadata": {"annotations": {HAND_OVER_ANNOTATION: null}}});
            Api::<Pod>::namespaced(client.clone(), namespace)
                .patch(pod, &PatchParams::default(), &Patch::Merge(&clear))
                .await?;
            (
                Reason::LeadershipTransfer,
                format!("{pod} leads nothing any more: hand-over done"),
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
                Replacement::ForceDeletePod { kube_node } => {
                    let params = DeleteParams {
                        grace_period_seconds: Some(0),
                        ..DeleteParams::default()
                    };
                    Api::<Pod>::namespaced(client.clone(), namespace)
                        .delete(pod, &params)
                        .await?;
                    let note = format!(
                        "{pod} was stuck terminating on Kubernetes node {kube_node}, NotReady, \
                         for longer than {}s: deleted it with no grace period so that the \
                         replacement proceeds",
                        cluster.force_delete_after().as_secs()
                    );
                    publish(
                        ctx,
                        cluster,
                        EventType::Warning,
                        Reason::ReplacingNode,
                        step,
                        note,
                    )
                    .await;
                    return Ok(());
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
    ctx.metrics
        .cluster_health(namespace, cluster.name()?, cluster.spec.replicas, &status);
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
