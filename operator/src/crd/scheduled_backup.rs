//! The `ScheduledBackup` custom resource: `Backup`s of one database, created on a cron
//! schedule, the expired ones deleted with their data.

use super::backup::BackupDestination;
use super::database_group::ClusterRef;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::Duration;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Label naming the ScheduledBackup a Backup (and a deletion Job) belongs to.
pub const SCHEDULE_LABEL: &str = "flotilla.dev/scheduled-backup";
/// Annotation of a Backup: the time it was scheduled for (RFC 3339).
pub const SCHEDULED_AT_ANNOTATION: &str = "flotilla.dev/scheduled-at";

/// Backups of a database taken on a schedule.
// Several printer columns share a `type_`, which clippy mistakes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "flotilla.dev",
    version = "v1alpha1",
    kind = "ScheduledBackup",
    namespaced,
    cel,
    status = "ScheduledBackupStatus",
    derive = "PartialEq",
    shortname = "fsbk",
    category = "flotilla",
    doc = "Backups of a database of a Flotilla cluster, created on a cron schedule and deleted (with their data) when they expire.",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.clusterRef.name",
        description = "The Cluster holding the database"
    ),
    printcolumn(
        name = "Database",
        type_ = "string",
        json_path = ".spec.database",
        description = "The database backed up"
    ),
    printcolumn(
        name = "Schedule",
        type_ = "string",
        json_path = ".spec.schedule",
        description = "Cron schedule (UTC)"
    ),
    printcolumn(
        name = "Suspend",
        type_ = "boolean",
        json_path = ".spec.suspend",
        description = "No Backup is created while set"
    ),
    printcolumn(
        name = "Last",
        type_ = "date",
        json_path = ".status.lastScheduleTime",
        description = "When the last Backup was scheduled"
    ),
    printcolumn(
        name = "Next",
        type_ = "string",
        json_path = ".status.nextScheduleTime",
        description = "When the next Backup is scheduled",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledBackupSpec {
    /// The Cluster (in the same namespace) that holds the database.
    pub cluster_ref: ClusterRef,

    /// The database to back up.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9_]{0,61}[a-z0-9])?$')").message(
        "database must be 1-63 lowercase letters, digits, '-' or '_', starting and ending with a letter or digit"
    ))]
    pub database: String,

    /// When to take a backup: a cron expression of five fields (minute, hour, day of month,
    /// month, day of week), in UTC, such as `0 3 * * *` (every day at 03:00).
    #[schemars(length(min = 9, max = 256))]
    #[x_kube(validation = Rule::new("self.matches('^ *[^ ]+( +[^ ]+){4} *$')").message(
        "schedule must be a cron expression of five fields, such as '0 3 * * *'"
    ))]
    pub schedule: String,

    /// Where each backup goes, its Secret and volume, as a Backup names them (and taken
    /// from the Cluster's `spec.backup` where unset). The Secret is also given to the Jobs
    /// deleting expired backups.
    #[serde(flatten)]
    pub target: BackupDestination,

    /// Read the database no faster than this many MiB per second (`flotilla backup create
    /// --max-rate`), so that the backup slows the cluster's writes less (given to each Backup it creates).
    #[serde(
        default,
        rename = "maxRateMiBPerSecond",
        skip_serializing_if = "Option::is_none"
    )]
    #[x_kube(validation = Rule::new("self >= 1").message("maxRateMiBPerSecond must be at least 1"))]
    pub max_rate_mib_per_second: Option<u32>,

    /// Which completed backups to keep; the Cluster's `spec.backup.retention` when unset,
    /// and every backup is kept when neither is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,

    /// No Backup is created while set (those taken are kept, and retention still applies).
    #[serde(default)]
    pub suspend: bool,
}

/// Which completed backups to keep. A backup expires when either rule says so; the newest
/// completed backup never expires. Failed backups expire once a newer one completed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("has(self.keep) || has(self.maxAge)").message(
    "retention needs keep, maxAge or both"
))]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Keep this many of the newest completed backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("keep must be at least 1"))]
    pub keep: Option<i32>,
    /// Delete completed backups scheduled longer ago than this (a duration such as `720h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s')").message("maxAge must be a positive duration"))]
    pub max_age: Option<Duration>,
}

/// Observed state of a schedule.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledBackupStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Scheduled` (False when suspended or the schedule is invalid) and `Degraded` (True when
    /// deleting an expired backup failed).
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The scheduled time of the last Backup created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// When the newest completed Backup completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    /// When the next Backup is due; unset while suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// The last Backup created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<String>,
}
