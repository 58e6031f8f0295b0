//! The `Backup` controller: applies the Job that takes the backup (built by
//! [`crate::desired::backup_job`]) once the Backup's Cluster exists and is not paused, and
//! mirrors the Job's progress into status ([`crate::plan::backup`]). A Completed or Failed
//! Backup is left alone; deleting it deletes its Job (owner reference), never the backup's
//! files.

use super::{Context, FIELD_MANAGER};
use crate::crd::backup::{Backup, BackupStatus};
use crate::crd::{Cluster, database_group::ClusterRef};
use crate::desired::backup_job::{backup_destination, backup_job, backup_url};
use crate::error::{Error, Result};
use crate::plan::backup::{BackupObservation, backup_status};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// Name of this controller in metrics and logs.
pub const CONTROLLER: &str = "backup";

/// How often a Backup waiting for its Cluster looks again.
const WAIT_FOR_CLUSTER: Duration = Duration::from_secs(30);

/// Reconciles one `Backup`.
pub async fn reconcile(backup: Arc<Backup>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER, backup.as_ref());
    let namespace = backup
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    if backup.meta().deletion_timestamp.is_some()
        || backup
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|p| p.is_final())
    {
        return Ok(Action::await_change());
    }
    let name = backup.name_any();
    let ClusterRef { name: cluster_name } = &backup.spec.cluster_ref;
    let cluster = Api::<Cluster>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(cluster_name)
        .await?
        .filter(|c| c.meta().deletion_timestamp.is_none());
    let mut url = None;
    let observation = match cluster {
        None => BackupObservation::ClusterNotFound,
        Some(cluster) if cluster.spec.paused => BackupObservation::ClusterPaused,
        Some(cluster) => match backup_destination(&backup, &cluster) {
            None => BackupObservation::NoDestination,
            Some(destination) => {
                url = Some(backup_url(&backup, &destination)?);
                let desired = backup_job(&backup, &cluster, &destination)?;
                let jobs = Api::<Job>::namespaced(ctx.client.clone(), &namespace);
                // A Job's spec is immutable: it is created once and then only read.
                let job = match jobs.get_opt(&name).await? {
                    Some(job) => job,
                    None => {
                        let created = jobs
                            .patch(
                                &name,
                                &PatchParams::apply(FIELD_MANAGER).force(),
                                &Patch::Apply(&desired),
                            )
                            .await?;
                        publish(
                            &ctx,
                            &backup,
                            EventType::Normal,
                            "BackupStarted",
                            format!(
                                "Job {name} backs up database {} of cluster {cluster_name}",
                                backup.spec.database
                            ),
                        )
                        .await;
                        created
                    }
                };
                BackupObservation::Job(Box::new(job))
            }
        },
    };
    let status = backup_status(
        backup.status.as_ref(),
        &observation,
        &name,
        url.as_deref(),
        &Time(Timestamp::now()),
    );
    let finished = status.phase.filter(|p| p.is_final());
    let changed = backup.status.as_ref() != Some(&status);
    if changed && let Some(phase) = finished {
        let (type_, reason) = match phase {
            crate::crd::BackupPhase::Completed => (EventType::Normal, "BackupCompleted"),
            _ => (EventType::Warning, "BackupFailed"),
        };
        let note = status
            .message
            .clone()
            .or_else(|| status.url.clone())
            .unwrap_or_default();
        publish(&ctx, &backup, type_, reason, note).await;
    }
    let action = match observation {
        BackupObservation::Job(_) => Action::await_change(),
        _ => Action::requeue(WAIT_FOR_CLUSTER),
    };
    if changed {
        write_status(&backup, &ctx, &namespace, status).await?;
    }
    Ok(action)
}

async fn publish(ctx: &Context, backup: &Backup, type_: EventType, reason: &str, note: String) {
    super::publish(ctx, backup, type_, reason, note, "Backup").await;
}

async fn write_status(
    backup: &Backup,
    ctx: &Context,
    namespace: &str,
    status: BackupStatus,
) -> Result<()> {
    let patch = serde_json::json!({
        "apiVersion": Backup::api_version(&()),
        "kind": Backup::kind(&()),
        "status": status,
    });
    Api::<Backup>::namespaced(ctx.client.clone(), namespace)
        .patch_status(
            &backup.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(())
}
