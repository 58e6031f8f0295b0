//! The Cluster controller's part for `spec.bootstrap.recovery`: reads the restore Jobs and
//! what databases the cluster holds, asks [`crate::plan::recovery`] what to do, creates the
//! restore Jobs it says to start (built by [`crate::desired::restore_job`]), and puts the
//! outcome in `status.recovery`, the `Recovered` condition and Events.

use super::{Context, FIELD_MANAGER};
use crate::crd::conditions::{find_condition, set_condition};
use crate::crd::recovery::RecoveryPhase;
use crate::crd::{Cluster, ClusterStatus, ConditionStatus, ConditionType};
use crate::desired::restore_job::{restore_job, restore_job_name};
use crate::error::Result;
use crate::plan::Observed;
use crate::plan::recovery::{JobOutcome, RecoveryObservation, plan_recovery};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource};
use std::collections::BTreeMap;

/// Moves the recovery of `cluster` on by one pass and records it in `status` (the status
/// this pass writes). Returns whether the recovery is still under way.
pub async fn reconcile(
    cluster: &Cluster,
    observed: &Observed,
    ctx: &Context,
    namespace: &str,
    status: &mut ClusterStatus,
    now: &Time,
) -> Result<bool> {
    let Some(spec) = cluster.recovery_spec() else {
        return Ok(false);
    };
    let name = cluster.name()?;
    let jobs_api = Api::<Job>::namespaced(ctx.client.clone(), namespace);
    let previous = status.recovery.clone();
    let mut jobs = BTreeMap::new();
    if previous.as_ref().map(|p| p.phase) != Some(RecoveryPhase::Completed) {
        for backup in &spec.backups {
            let job = restore_job_name(name, &backup.database);
            if let Some(job) = jobs_api.get_opt(&job).await? {
                jobs.insert(backup.database.clone(), outcome(&job));
            }
        }
    }
    let ready = status
        .cluster_id
        .as_deref()
        .is_some_and(|id| !id.is_empty())
        && find_condition(&status.conditions, ConditionType::Ready)
            .is_some_and(|c| c.status == ConditionStatus::True.as_str());
    let observation = RecoveryObservation {
        cluster_ready: ready,
        databases: observed.membership.as_ref().map(|m| m.databases.clone()),
        jobs,
    };
    let plan = plan_recovery(name, spec, previous.as_ref(), &observation, now);
    for database in &plan.start {
        let Some(backup) = spec.backups.iter().find(|b| &b.database == database) else {
            continue;
        };
        let job = restore_job(cluster, spec, backup)?;
        let job_name = restore_job_name(name, database);
        // A Job's spec is immutable: it is created once and then only read.
        jobs_api
            .patch(
                &job_name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&job),
            )
            .await?;
        tracing::info!(cluster = name, database, job = job_name, "restore started");
    }
    for event in &plan.events {
        let type_ = if event.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        let secondary = event.job.as_ref().map(|job| ObjectReference {
            api_version: Some("batch/v1".to_owned()),
            kind: Some("Job".to_owned()),
            name: Some(job.clone()),
            namespace: Some(namespace.to_owned()),
            ..ObjectReference::default()
        });
        let action = if secondary.is_some() {
            "Restore"
        } else {
            "Recover"
        };
        let event = Event {
            type_,
            reason: event.reason.as_str().to_owned(),
            note: Some(event.note.clone()),
            action: action.to_owned(),
            secondary,
        };
        if let Err(error) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
            tracing::warn!(%error, "recording an event");
        }
    }
    let busy = matches!(
        plan.status.phase,
        RecoveryPhase::Pending | RecoveryPhase::Restoring
    );
    status.recovery = Some(plan.status);
    set_condition(
        &mut status.conditions,
        plan.condition,
        cluster.metadata.generation,
        now,
    );
    Ok(busy)
}

/// What a restore Job shows.
fn outcome(job: &Job) -> JobOutcome {
    let status = job.status.clone().unwrap_or_default();
    if status.succeeded.unwrap_or(0) > 0 {
        return JobOutcome::Succeeded;
    }
    let failed = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Failed" && c.status == "True");
    match failed {
        Some(failed) => JobOutcome::Failed(
            failed
                .message
                .clone()
                .or_else(|| failed.reason.clone())
                .unwrap_or_else(|| "the restore Job failed".to_owned()),
        ),
        None => JobOutcome::Running,
    }
}
