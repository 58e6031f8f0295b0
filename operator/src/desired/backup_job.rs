//! The Job that takes a [`Backup`]: one pod running `flotilla backup create` against the
//! cluster's client Service, with the backup's id fixed so that its URL is known before it
//! runs, and no retry (a failed attempt leaves a partial directory that a retry under the same
//! id would refuse; a failed Backup is replaced by a new one).

use crate::crd::Cluster;
use crate::crd::backup::{Backup, ResolvedDestination, SecretRef};
use crate::crd::cluster_funcs::{TLS_DIR, TLS_VOLUME};
use crate::desired::{NODE_UID, restricted_container};
use crate::error::{Error, Result};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, PersistentVolumeClaimVolumeSource, PodSecurityContext,
    PodSpec, PodTemplateSpec, SeccompProfile, SecretEnvSource, SecretVolumeSource, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

/// Label naming the Backup a Job (and its pod) belongs to.
pub const BACKUP_LABEL: &str = "flotilla.dev/backup";
/// Where `spec.volumeClaim` is mounted in the Job's pod.
pub const BACKUP_MOUNT: &str = "/backup";
/// Longest time a backup Job may run.
pub const BACKUP_DEADLINE_SECONDS: i64 = 6 * 3600;

/// The id of the backup (its directory under the destination): the namespace and the
/// Backup's name, so that Backups of different namespaces sharing a bucket never collide.
pub fn backup_id(backup: &Backup) -> Result<String> {
    let name = backup
        .metadata
        .name
        .as_deref()
        .ok_or(Error::MissingObjectKey("metadata.name"))?;
    let namespace = backup.namespace().unwrap_or_else(|| "default".to_owned());
    Ok(format!("{namespace}-{name}"))
}

/// Where `backup` goes: its own destination, else its Cluster's `spec.backup`; `None` when
/// neither names one.
pub fn backup_destination(backup: &Backup, cluster: &Cluster) -> Option<ResolvedDestination> {
    backup
        .spec
        .target
        .or_cluster(cluster.spec.backup.as_ref().map(|b| &b.target))
}

/// How fast `backup` reads (MiB/s): its own limit, else its Cluster's `spec.backup` one;
/// `None` (unlimited) when neither sets one.
pub fn backup_max_rate(backup: &Backup, cluster: &Cluster) -> Option<u32> {
    backup.spec.max_rate_mib_per_second.or_else(|| {
        cluster
            .spec
            .backup
            .as_ref()
            .and_then(|b| b.max_rate_mib_per_second)
    })
}

/// The URL the backup will have: its id under the destination.
pub fn backup_url(backup: &Backup, destination: &ResolvedDestination) -> Result<String> {
    Ok(format!(
        "{}/{}",
        destination.url.trim_end_matches('/'),
        backup_id(backup)?
    ))
}

/// Labels every backup pod of `cluster` carries (what its NetworkPolicy admits to the client
/// port), never the labels that select the cluster's node pods.
pub fn backup_pod_selector(cluster: &Cluster) -> Result<BTreeMap<String, String>> {
    Ok(BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "flotilla".to_owned()),
        (
            "app.kubernetes.io/instance".to_owned(),
            cluster.name()?.to_owned(),
        ),
        (
            "app.kubernetes.io/component".to_owned(),
            "backup".to_owned(),
        ),
    ]))
}

/// Labels of the Job and its pod: the Backup's and the Cluster's names.
fn labels(backup: &Backup, cluster: &Cluster) -> Result<BTreeMap<String, String>> {
    let mut labels = backup_pod_selector(cluster)?;
    labels.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        "flotilla-operator".to_owned(),
    );
    labels.insert(BACKUP_LABEL.to_owned(), backup.name_any());
    Ok(labels)
}

/// The `--endpoints` of a Job's `flotilla` CLI: the cluster's client Service.
pub fn client_endpoint(cluster: &Cluster) -> Result<String> {
    Ok(format!(
        "{}.{}.svc:{}",
        cluster.client_service_name()?,
        cluster.namespace_or_default(),
        cluster.spec.service.ports.client
    ))
}

fn owner(backup: &Backup) -> Option<OwnerReference> {
    backup.controller_owner_ref(&())
}

/// The Job taking `backup` of a database of `cluster` to `destination`, owned by the Backup.
pub fn backup_job(
    backup: &Backup,
    cluster: &Cluster,
    destination: &ResolvedDestination,
) -> Result<Job> {
    let name = backup
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingObjectKey("metadata.name"))?;
    let mut args = vec![
        "--endpoints".to_owned(),
        client_endpoint(cluster)?,
        "--timeout".to_owned(),
        "60s".to_owned(),
        "backup".to_owned(),
        "create".to_owned(),
        backup.spec.database.clone(),
        "--to".to_owned(),
        destination.url.clone(),
        "--id".to_owned(),
        backup_id(backup)?,
    ];
    if let Some(rate) = backup_max_rate(backup, cluster) {
        args.extend(["--max-rate".to_owned(), rate.to_string()]);
    }
    cli_job(
        cluster,
        JobShape {
            name,
            owner: owner(backup),
            labels: labels(backup, cluster)?,
            args,
            cluster_tls: cluster.tls_enabled(),
            backoff_limit: 0,
            env_from_secret: destination.env_from_secret.clone(),
            volume_claim: destination.volume_claim.clone(),
        },
    )
}

/// Name of the Job deleting a backup's data.
pub fn delete_job_name(backup: &str) -> String {
    format!("{backup}-del")
}

/// The Job deleting the data of `backup` at its target (`flotilla backup delete`), owned by
/// the Backup so that it goes with it. Deleting is idempotent (a backup already gone is not
/// an error), so the Job may retry. It never talks to the cluster; `cluster` gives the image
/// (and the destination's Secret and volume where the Backup names none). The URL is the one
/// the Backup recorded, else the one it would have; `None` when it has neither.
pub fn backup_delete_job(backup: &Backup, cluster: &Cluster) -> Result<Option<Job>> {
    let Some(destination) = backup_destination(backup, cluster) else {
        return Ok(None);
    };
    let url = match backup.status.as_ref().and_then(|s| s.url.clone()) {
        Some(url) => url,
        None => backup_url(backup, &destination)?,
    };
    let mut labels = labels(backup, cluster)?;
    labels.insert(
        "app.kubernetes.io/component".to_owned(),
        "backup-retention".to_owned(),
    );
    let schedule = backup
        .labels()
        .get(crate::crd::scheduled_backup::SCHEDULE_LABEL);
    if let Some(schedule) = schedule {
        labels.insert(
            crate::crd::scheduled_backup::SCHEDULE_LABEL.to_owned(),
            schedule.clone(),
        );
    }
    let args = vec![
        "backup".to_owned(),
        "delete".to_owned(),
        url,
        "--missing-ok".to_owned(),
    ];
    cli_job(
        cluster,
        JobShape {
            name: delete_job_name(&backup.name_any()),
            owner: owner(backup),
            labels,
            args,
            cluster_tls: false,
            backoff_limit: 2,
            env_from_secret: destination.env_from_secret,
            volume_claim: destination.volume_claim,
        },
    )
    .map(Some)
}

/// What differs between the Jobs running the `flotilla` CLI for a cluster.
pub(crate) struct JobShape {
    pub name: String,
    /// The object the Job goes with.
    pub owner: Option<OwnerReference>,
    pub labels: BTreeMap<String, String>,
    pub args: Vec<String>,
    /// Whether the pod speaks TLS to the cluster with the operator's certificate.
    pub cluster_tls: bool,
    pub backoff_limit: i32,
    /// Every key becomes an environment variable (store credentials, user and password).
    pub env_from_secret: Option<SecretRef>,
    /// Mounted at [`BACKUP_MOUNT`].
    pub volume_claim: Option<String>,
}

/// A Job of `cluster`: one pod running the node image's `flotilla` CLI, restricted (non-root,
/// no privilege escalation, read-only root, the runtime's seccomp profile), with the Secret
/// and volume of `shape`.
pub(crate) fn cli_job(cluster: &Cluster, shape: JobShape) -> Result<Job> {
    let JobShape {
        name,
        owner,
        labels,
        args,
        cluster_tls,
        backoff_limit,
        env_from_secret,
        volume_claim,
    } = shape;
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let mut env = Vec::new();
    if cluster_tls {
        // The operator's client certificate (the cluster's `root`) and the trust bundle: what a
        // cluster with TLS and client certificate authentication asks of every client.
        volumes.push(Volume {
            name: TLS_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(cluster.operator_tls_secret_name()?),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: TLS_VOLUME.to_owned(),
            mount_path: TLS_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        for (name, file) in [
            ("FLOTILLA_TLS_CA", "ca.crt"),
            ("FLOTILLA_TLS_CERT", "tls.crt"),
            ("FLOTILLA_TLS_KEY", "tls.key"),
        ] {
            env.push(EnvVar {
                name: name.to_owned(),
                value: Some(format!("{TLS_DIR}/{file}")),
                ..EnvVar::default()
            });
        }
    }
    if let Some(claim) = &volume_claim {
        volumes.push(Volume {
            name: "backup".to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: Some(false),
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "backup".to_owned(),
            mount_path: BACKUP_MOUNT.to_owned(),
            ..VolumeMount::default()
        });
    }
    let container = Container {
        name: "backup".to_owned(),
        image: Some(cluster.spec.image.clone()),
        image_pull_policy: Some(cluster.image_pull_policy().to_owned()),
        command: Some(vec!["flotilla".to_owned()]),
        args: Some(args),
        env_from: env_from_secret.as_ref().map(|secret| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: secret.name.clone(),
                    optional: Some(false),
                }),
                ..EnvFromSource::default()
            }]
        }),
        env: (!env.is_empty()).then_some(env),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        security_context: Some(restricted_container()),
        ..Container::default()
    };
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(cluster.namespace_or_default().to_owned()),
            labels: Some(labels.clone()),
            owner_references: owner.map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(backoff_limit),
            active_deadline_seconds: Some(BACKUP_DEADLINE_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    containers: vec![container],
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    // Service links would inject FLOTILLA_* variables, which the CLI reads.
                    enable_service_links: Some(false),
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(NODE_UID),
                        run_as_group: Some(NODE_UID),
                        fs_group: Some(NODE_UID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    })
}

#[cfg(test)]
mod tests;
