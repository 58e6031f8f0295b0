//! Parts of the `Cluster` schema about backups: `spec.backup` (the default destination and
//! retention of the cluster's backups), `spec.bootstrap.recovery` (a new cluster made from
//! backups) and `status.recovery` (how far that recovery has come).

use super::backup::{BackupDestination, SecretRef};
use super::scheduled_backup::Retention;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The cluster's backup defaults: what a Backup or ScheduledBackup of the cluster uses where
/// it names no destination (or no retention) of its own.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("has(self.destination)").message(
    "backup needs a destination"
))]
#[serde(rename_all = "camelCase")]
pub struct ClusterBackupSpec {
    /// Where backups go by default, with the Secret and volume their Jobs get.
    #[serde(flatten)]
    pub target: BackupDestination,

    /// Read the database no faster than this many MiB per second (`flotilla backup create
    /// --max-rate`), so that the backup slows the cluster's writes less: the default of the cluster's Backups and ScheduledBackups.
    #[serde(
        default,
        rename = "maxRateMiBPerSecond",
        skip_serializing_if = "Option::is_none"
    )]
    #[x_kube(validation = Rule::new("self >= 1").message("maxRateMiBPerSecond must be at least 1"))]
    pub max_rate_mib_per_second: Option<u32>,

    /// Which completed backups a ScheduledBackup with no retention of its own keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
}

/// How a new cluster starts. Fixed at creation: it can be neither added, changed nor removed
/// afterwards, so that it never applies to a cluster that ran without it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapSpec {
    /// Fill the new cluster from backups, one database per backup, once it is initialised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoverySpec>,
}

/// Databases restored into a new cluster from backups.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecoverySpec {
    /// One backup per database (each database named once).
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("self.all(b, self.exists_one(c, c.database == b.database))").message(
        "each database is recovered from one backup only"
    ))]
    pub backups: Vec<RecoveryBackup>,

    /// Restore each database as it was at this time (RFC 3339, such as
    /// `2026-12-01T03:00:00Z`) rather than as its backup holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new(
        "self.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$')"
    ).message(
        "until must be an RFC 3339 time such as 2026-12-01T03:00:00Z"
    ))]
    pub until: Option<String>,

    /// A Secret whose every key becomes an environment variable of the restore Jobs: the
    /// object store's credentials and, on a cluster with auth, `FLOTILLA_USER` and
    /// `FLOTILLA_PASSWORD` of a user allowed to create databases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_from_secret: Option<SecretRef>,

    /// A PersistentVolumeClaim mounted at `/backup` in the restore Jobs' pods, for
    /// `file:///backup/...` URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_claim: Option<String>,
}

/// One database and the backup it is restored from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryBackup {
    /// The backup's own URL (what `flotilla backup list` prints, a Backup's `status.url`).
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self.startsWith('s3://') || self.startsWith('file:///')").message(
        "url must be an s3:// or file:/// URL"
    ))]
    pub url: String,

    /// The database to create from it.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9_]{0,61}[a-z0-9])?$')").message(
        "database must be 1-63 lowercase letters, digits, '-' or '_', starting and ending with a letter or digit"
    ))]
    pub database: String,
}

/// Where a recovery, or the restore of one database, is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RecoveryPhase {
    /// Waiting for the cluster to be initialised and ready.
    Pending,
    /// A restore Job runs.
    Restoring,
    /// Restored (or found in the cluster already).
    Completed,
    /// The restore failed, or the cluster holds databases it did not restore.
    Failed,
}

/// How far `spec.bootstrap.recovery` has come. Once Completed it is never run again.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryStatus {
    pub phase: RecoveryPhase,
    /// One entry per database of `spec.bootstrap.recovery.backups`.
    #[serde(default)]
    pub databases: Vec<DatabaseRecovery>,
    /// Why the recovery waits or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
}

/// The restore of one database.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseRecovery {
    pub database: String,
    pub phase: RecoveryPhase,
    /// The Job restoring it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Why it waits or failed, or how it completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
