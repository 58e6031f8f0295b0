//! The `ScheduledBackup` controller: creates a `Backup` when the schedule says so (the
//! Backup controller then runs its Job), and deletes expired Backups with their data
//! ([`crate::plan::scheduled_backup`] decides both).
//!
//! Expired data is deleted by a Job running `flotilla backup delete` (owned by the Backup),
//! and the Backup object only once that Job succeeded. A finalizer on every Backup would do
//! the same for Backups deleted by hand, but it would change what deleting a Backup means
//! (today: its files stay), hold Backups (and their namespace) while no operator runs or
//! the store is unreachable, and hide a failed deletion behind an object stuck in
//! Terminating; a Job started by retention keeps the decision where the rule is, and a
//! failure shows in the schedule's status and Events while the Backup stays listed.

use super::Context;
use crate::crd::backup::Backup;
use crate::crd::conditions::find_condition;
use crate::crd::{Cluster, ConditionType, ScheduledBackup, ScheduledBackupStatus};
use crate::desired::backup_job::backup_delete_job;
use crate::desired::scheduled_backup::scheduled_backup;
use crate::error::{Error, Result};
use crate::plan::scheduled_backup::{Expiry, SCHEDULE_LABEL, observe_backup, plan_schedule};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use std::sync::Arc;

/// Name of this controller in metrics and logs.
pub const CONTROLLER: &str = "scheduled_backup";

/// Reconciles one `ScheduledBackup`.
pub async fn reconcile(schedule: Arc<ScheduledBackup>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER, schedule.as_ref());
    reconcile_at(&schedule, &ctx, Timestamp::now()).await
}

/// One pass at `now`.
pub async fn reconcile_at(
    schedule: &ScheduledBackup,
    ctx: &Context,
    now: Timestamp,
) -> Result<Action> {
    let namespace = schedule
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    if schedule.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let backups_api = Api::<Backup>::namespaced(ctx.client.clone(), &namespace);
    let jobs_api = Api::<Job>::namespaced(ctx.client.clone(), &namespace);
    let selector =
        ListParams::default().labels(&format!("{SCHEDULE_LABEL}={}", schedule.name_any()));
    let backups = backups_api.list(&selector).await?.items;
    let jobs = jobs_api.list(&selector).await?.items;
    let observed: Vec<_> = backups
        .iter()
        .map(|b| observe_backup(b, &jobs, now))
        .collect();
    // The Cluster's retention applies where the schedule sets none.
    let cluster = Api::<Cluster>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&schedule.spec.cluster_ref.name)
        .await?;
    let cluster_retention = cluster
        .as_ref()
        .and_then(|c| c.spec.backup.as_ref())
        .and_then(|b| b.retention.as_ref());
    let plan = plan_schedule(schedule, cluster_retention, &observed, now);

    if let Some((name, at)) = &plan.create {
        let backup = scheduled_backup(schedule, name, *at)?;
        match backups_api.create(&PostParams::default(), &backup).await {
            Ok(_) => {
                publish(
                    ctx,
                    schedule,
                    EventType::Normal,
                    "BackupScheduled",
                    format!("created Backup {name} for {at}"),
                )
                .await;
            }
            // Created by an earlier pass whose status write was lost.
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
    }

    for expiry in &plan.expire {
        match expiry {
            Expiry::DeleteData(name) => {
                let Some(backup) = backups.iter().find(|b| b.name_any() == *name) else {
                    continue;
                };
                // The Job runs the cluster's image; without the Cluster the deletion waits.
                let Some(cluster) = &cluster else {
                    continue;
                };
                let Some(job) = backup_delete_job(backup, cluster)? else {
                    continue;
                };
                match jobs_api.create(&PostParams::default(), &job).await {
                    Ok(_) => {}
                    // Started by an earlier pass.
                    Err(kube::Error::Api(status)) if status.code == 409 => {}
                    Err(error) => return Err(error.into()),
                }
            }
            Expiry::DeleteObject(name) => {
                match backups_api.delete(name, &DeleteParams::background()).await {
                    Ok(_) => {
                        publish(
                            ctx,
                            schedule,
                            EventType::Normal,
                            "BackupExpired",
                            format!("deleted expired Backup {name} and its data"),
                        )
                        .await;
                    }
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(error) => return Err(error.into()),
                }
            }
            Expiry::Failed { .. } => {}
        }
    }

    let old = schedule.status.as_ref();
    let degraded = |s: Option<&ScheduledBackupStatus>| {
        s.and_then(|s| find_condition(&s.conditions, ConditionType::Degraded))
            .map(|c| (c.status.clone(), c.message.clone()))
    };
    let now_degraded = degraded(Some(&plan.status));
    if now_degraded != degraded(old)
        && let Some((status, message)) = now_degraded
        && status == "True"
    {
        publish(
            ctx,
            schedule,
            EventType::Warning,
            "RetentionFailed",
            message,
        )
        .await;
    }
    if old != Some(&plan.status) {
        write_status(schedule, ctx, &namespace, &plan.status).await?;
    }
    Ok(Action::requeue(plan.requeue_after))
}

async fn publish(
    ctx: &Context,
    schedule: &ScheduledBackup,
    type_: EventType,
    reason: &str,
    note: String,
) {
    super::publish(ctx, schedule, type_, reason, note, "Schedule").await;
}

async fn write_status(
    schedule: &ScheduledBackup,
    ctx: &Context,
    namespace: &str,
    status: &ScheduledBackupStatus,
) -> Result<()> {
    let patch = serde_json::json!({
        "apiVersion": ScheduledBackup::api_version(&()),
        "kind": ScheduledBackup::kind(&()),
        "status": status,
    });
    Api::<ScheduledBackup>::namespaced(ctx.client.clone(), namespace)
        .patch_status(
            &schedule.name_any(),
            &PatchParams::apply(super::FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(())
}
