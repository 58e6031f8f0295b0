//! The `DatabaseGroup` controller: creates or updates the database through the cluster's
//! admin API, deletes it on deletion when `deletionPolicy: Delete` (behind a finalizer,
//! which only that policy gets),
//! mirrors the live topology into status and records an Event per replica transition, and a
//! Warning per replica the cluster stopped for good, read from the cluster's recorded topology
//! events (see [`crate::plan::topology_events`]).
//! Its collections and indexes are applied by [`super::collections`].

use super::{Context, FIELD_MANAGER};
use crate::admin::DatabaseRequest;
use crate::crd::conditions::find_condition;
use crate::crd::{Cluster, DatabaseGroup, DatabaseGroupStatus};
use crate::crd::{ConditionStatus, ConditionType};
use crate::error::{Error, Result};
use crate::metrics::GroupRef;
use crate::plan::database_group::{
    DatabaseObservation, database_group_status, drops_database_on_delete, may_use_existing,
    recheck_after, record_origin, replica_transitions,
};
use crate::plan::recovery::{RecoveryGate, recovery_gate};
use crate::plan::topology_events::{EventCursor, EventsPlan, plan_topology_events, read_after};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{self, finalizer};
use kube::{Api, Resource, ResourceExt};
use std::sync::Arc;

/// Name of this controller in metrics and logs.
pub const CONTROLLER: &str = "database_group";
/// Finalizer that holds a DatabaseGroup until its database is dealt with.
pub const FINALIZER: &str = "flotilla.dev/database";

/// Reconciles one `DatabaseGroup`.
pub async fn reconcile(group: Arc<DatabaseGroup>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER, group.as_ref());
    let namespace = group
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let api = Api::<DatabaseGroup>::namespaced(ctx.client.clone(), &namespace);
    if !group.needs_finalizer() {
        // Retain: nothing to clean up. A finalizer left from `Delete` is taken off.
        if group.finalizers().iter().any(|f| f == FINALIZER) {
            release(&api, &group).await?;
            return Ok(Action::await_change());
        }
        if group.meta().deletion_timestamp.is_some() {
            forget(&group, &ctx, &namespace);
            return Ok(Action::await_change());
        }
        return apply(&group, &ctx, &namespace).await;
    }
    finalizer(&api, FINALIZER, group, |event| async {
        match event {
            finalizer::Event::Apply(group) => apply(&group, &ctx, &namespace).await,
            finalizer::Event::Cleanup(group) => cleanup(&group, &ctx, &namespace).await,
        }
    })
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

/// Takes the finalizer off. The patch carries the resourceVersion the group was read at,
/// so that it fails rather than overwrite finalizers another writer changed since.
async fn release(api: &Api<DatabaseGroup>, group: &DatabaseGroup) -> Result<()> {
    let remaining: Vec<&String> = group
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .collect();
    let patch = serde_json::json!({
        "metadata": {
            "finalizers": remaining,
            "resourceVersion": group.resource_version(),
        }
    });
    api.patch(
        group.name()?,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// The Cluster holding the group's database, unless it is gone or going.
async fn live_cluster(
    group: &DatabaseGroup,
    ctx: &Context,
    namespace: &str,
) -> Result<Option<Cluster>> {
    let cluster = Api::<Cluster>::namespaced(ctx.client.clone(), namespace)
        .get_opt(group.cluster_name())
        .await?;
    Ok(cluster.filter(|c| c.meta().deletion_timestamp.is_none()))
}

async fn apply(group: &DatabaseGroup, ctx: &Context, namespace: &str) -> Result<Action> {
    let cluster = live_cluster(group, ctx, namespace).await?;
    let cluster_ready = cluster.as_ref().is_some_and(|c| {
        c.status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, ConditionType::Ready))
            .is_some_and(|c| c.status == ConditionStatus::True.as_str())
    });
    let mut created = None;
    let mut serving = None;
    let observation = match cluster {
        None => DatabaseObservation::ClusterNotFound,
        Some(cluster) if cluster.spec.paused => DatabaseObservation::ClusterPaused,
        Some(cluster) => match recovery_gate(&cluster, group.database_name()?) {
            // Never create the database (empty) before the recovery restored it.
            RecoveryGate::Wait(why) => DatabaseObservation::WaitingForRecovery(why),
            RecoveryGate::Proceed { recovered } => {
                super::tls::prepare_admin(&cluster, ctx, namespace).await?;
                let request = database_request(group, recovered)?;
                match ctx.admin.ensure_database(&cluster, &request).await {
                    Ok(ensured) => {
                        // A restored database is the operator's own, made by its restore Job.
                        created = Some(ensured.created || recovered);
                        serving = Some(cluster);
                        DatabaseObservation::Topology(ensured.shards)
                    }
                    Err(Error::DatabaseExists(name)) => DatabaseObservation::Exists(name),
                    Err(error) if error.is_unreachable() => {
                        DatabaseObservation::Unreachable(error.chain())
                    }
                    Err(error) => DatabaseObservation::Refused(error.chain()),
                }
            }
        },
    };
    let now = Time(Timestamp::now());
    let mut status = database_group_status(group, &observation, &now);
    if let Some(created) = created {
        record_origin(&mut status, created);
    }
    let mut indexes_building = false;
    if let Some(cluster) = &serving {
        indexes_building =
            super::collections::reconcile_collections(group, cluster, ctx, &mut status, &now)
                .await?;
        if let Err(error) =
            report_broken_replicas(group, cluster, ctx, namespace, &mut status).await
        {
            // The cluster keeps the events: the next reconcile reads them again.
            tracing::warn!(
                error = error.chain(),
                "reporting the replicas the cluster stopped for good"
            );
        }
    }
    let old_shards = group
        .status
        .as_ref()
        .map(|s| s.shards.as_slice())
        .unwrap_or_default();
    for transition in replica_transitions(old_shards, &status.shards) {
        let event = Event {
            type_: if transition.to == "Rehab" {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: format!("Replica{}", transition.to),
            note: Some(format!(
                "shard {}: replica on {} is now {}",
                transition.shard, transition.pod, transition.to
            )),
            action: "ObserveTopology".to_owned(),
            // Transitions of different pods must not be aggregated into one event.
            secondary: Some(ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Pod".to_owned()),
                name: Some(transition.pod.clone()),
                namespace: Some(namespace.to_owned()),
                ..ObjectReference::default()
            }),
        };
        if let Err(error) = ctx.recorder.publish(&event, &group.object_ref(&())).await {
            tracing::warn!(%error, "recording an event");
        }
    }
    let recheck = recheck_after(&status, cluster_ready && !indexes_building);
    write_status(group, ctx, namespace, status).await?;
    Ok(Action::requeue(recheck))
}

/// Publishes a Warning for each transition the cluster made since the last event handled
/// because a replica of the group's database was stopped for good, and records in `status`
/// where the next read starts.
async fn report_broken_replicas(
    group: &DatabaseGroup,
    cluster: &Cluster,
    ctx: &Context,
    namespace: &str,
    status: &mut DatabaseGroupStatus,
) -> Result<()> {
    let database = group.database_name()?;
    let cursor = EventCursor::of(status);
    let read = ctx
        .admin
        .topology_events(cluster, read_after(cursor.as_ref()))
        .await?;
    let plan = match plan_topology_events(database, cursor.as_ref(), &read) {
        EventsPlan::ReadFromStart => {
            let read = ctx.admin.topology_events(cluster, 0).await?;
            plan_topology_events(database, None, &read)
        }
        plan => plan,
    };
    // Without a cursor the plan is always a report.
    let EventsPlan::Report { events, cursor } = plan else {
        return Ok(());
    };
    for event in events {
        let published = Event {
            type_: if event.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: event.reason.as_str().to_owned(),
            note: Some(event.note),
            action: "ObserveTopology".to_owned(),
            secondary: event.pod.map(|pod| ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Pod".to_owned()),
                name: Some(pod),
                namespace: Some(namespace.to_owned()),
                ..ObjectReference::default()
            }),
        };
        // Each stands alone: the rehab mark and the removal of one replica, or the replicas
        // of several shards on one pod, come within seconds and each note matters.
        let recorder = ctx.lone_recorder();
        if let Err(error) = recorder.publish(&published, &group.object_ref(&())).await {
            // Not lost: the next reconcile reads again from this event.
            let resume = EventCursor {
                sequence: event.sequence.saturating_sub(1),
                ..cursor
            };
            resume.record(status);
            return Err(error.into());
        }
    }
    cursor.record(status);
    Ok(())
}

/// What `group` asks of the cluster; a database its Cluster's recovery restored is taken as
/// it is (and then updated to the group's replication factor and placement).
fn database_request(group: &DatabaseGroup, recovered: bool) -> Result<DatabaseRequest> {
    let placement = group.spec.placement.as_ref();
    Ok(DatabaseRequest {
        name: group.database_name()?.to_owned(),
        replication_factor: u32::try_from(group.spec.replication_factor).unwrap_or(1),
        shards: u32::try_from(group.spec.shards).unwrap_or(1),
        pods: placement.map(|p| p.pods.clone()).unwrap_or_default(),
        node_labels: placement.map(|p| p.node_labels.clone()).unwrap_or_default(),
        replace_after: group.spec.replace_after.map(std::time::Duration::from),
        may_exist: recovered || may_use_existing(group),
    })
}

/// Deletes the database when the policy says so, the operator created it and its cluster
/// still exists; a cluster that is gone (or going) releases the finalizer at once.
async fn cleanup(group: &DatabaseGroup, ctx: &Context, namespace: &str) -> Result<Action> {
    forget(group, ctx, namespace);
    if drops_database_on_delete(group)
        && let Some(cluster) = live_cluster(group, ctx, namespace).await?
    {
        super::tls::prepare_admin(&cluster, ctx, namespace).await?;
        ctx.admin
            .delete_database(&cluster, group.database_name()?)
            .await?;
    }
    Ok(Action::await_change())
}

/// Drops a deleted group's health metrics.
fn forget(group: &DatabaseGroup, ctx: &Context, namespace: &str) {
    ctx.metrics.forget_database_group(&GroupRef {
        namespace,
        cluster: group.cluster_name(),
        name: &group.name_any(),
    });
}

async fn write_status(
    group: &DatabaseGroup,
    ctx: &Context,
    namespace: &str,
    status: DatabaseGroupStatus,
) -> Result<()> {
    ctx.metrics.database_group_health(
        &GroupRef {
            namespace,
            cluster: group.cluster_name(),
            name: group.name()?,
        },
        group.spec.replication_factor,
        &status,
    );
    if group.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let patch = serde_json::json!({
        "apiVersion": DatabaseGroup::api_version(&()),
        "kind": DatabaseGroup::kind(&()),
        "status": status,
    });
    Api::<DatabaseGroup>::namespaced(ctx.client.clone(), namespace)
        .patch_status(
            group.name()?,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(())
}
