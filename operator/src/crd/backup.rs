//! The `Backup` custom resource: one backup of one database of a Cluster, to an object store
//! or a directory, run once by a Job the operator creates.

use super::database_group::ClusterRef;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A backup of a database of a Flotilla cluster.
// Several printer columns share a `type_`, which clippy mistakes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "flotilla.dev",
    version = "v1alpha1",
    kind = "Backup",
    namespaced,
    cel,
    status = "BackupStatus",
    derive = "PartialEq",
    shortname = "fbk",
    category = "flotilla",
    doc = "One backup of a database of a Flotilla cluster, taken once by a Job.",
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
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Running, Completed or Failed"
    ),
    printcolumn(
        name = "URL",
        type_ = "string",
        json_path = ".status.url",
        description = "Where the backup is (what `flotilla backup restore` takes)",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("a Backup's spec is immutable: create another Backup"))]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// The Cluster (in the same namespace) that holds the database.
    pub cluster_ref: ClusterRef,

    /// The database to back up.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9_]{0,61}[a-z0-9])?$')").message(
        "database must be 1-63 lowercase letters, digits, '-' or '_', starting and ending with a letter or digit"
    ))]
    pub database: String,

    /// Where the backup goes, the Secret of its credentials and the volume it needs; each
    /// unset part is taken from the Cluster's `spec.backup`.
    #[serde(flatten)]
    pub target: BackupDestination,

    /// Read the database no faster than this many MiB per second (`flotilla backup create
    /// --max-rate`), so that the backup slows the cluster's writes less; the Cluster's `spec.backup.maxRateMiBPerSecond` when unset, unlimited when neither is set.
    #[serde(
        default,
        rename = "maxRateMiBPerSecond",
        skip_serializing_if = "Option::is_none"
    )]
    #[x_kube(validation = Rule::new("self >= 1").message("maxRateMiBPerSecond must be at least 1"))]
    pub max_rate_mib_per_second: Option<u32>,
}

/// Where backups go, as a Backup, a ScheduledBackup and a Cluster's `spec.backup` name it.
///
/// When a Backup or ScheduledBackup sets no `destination`, its Cluster's `spec.backup`
/// gives the destination, its `volumeClaim` and (unless it sets its own) its
/// `envFromSecret`; a backup whose destination neither names waits with a status saying so.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupDestination {
    /// Where the backup goes, in a new directory under it: `s3://bucket/prefix`, or
    /// `file:///path` (a directory of the Job's pod, from a volume given in `volumeClaim`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self.startsWith('s3://') || self.startsWith('file:///')").message(
        "destination must be an s3:// or file:/// URL"
    ))]
    pub destination: Option<String>,

    /// A Secret whose every key becomes an environment variable of the backup Job: the object
    /// store's credentials (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    /// `AWS_ENDPOINT_URL`, ...) and, on a cluster with auth, `FLOTILLA_USER` and
    /// `FLOTILLA_PASSWORD` of a user allowed to read the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_from_secret: Option<SecretRef>,

    /// A PersistentVolumeClaim mounted at `/backup` in the Job's pod, for a `file:///backup/...`
    /// destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_claim: Option<String>,
}

impl BackupDestination {
    /// A destination URL with nothing else.
    pub fn to(url: impl Into<String>) -> Self {
        Self {
            destination: Some(url.into()),
            ..Self::default()
        }
    }

    /// This destination where it names one, else the `fallback` (a Cluster's `spec.backup`):
    /// its URL and volume, and its Secret unless this one names its own. `None` when neither
    /// names a destination.
    pub fn or_cluster(&self, fallback: Option<&BackupDestination>) -> Option<ResolvedDestination> {
        if let Some(url) = &self.destination {
            return Some(ResolvedDestination {
                url: url.clone(),
                env_from_secret: self.env_from_secret.clone(),
                volume_claim: self.volume_claim.clone(),
            });
        }
        let fallback = fallback?;
        Some(ResolvedDestination {
            url: fallback.destination.clone()?,
            env_from_secret: self
                .env_from_secret
                .clone()
                .or_else(|| fallback.env_from_secret.clone()),
            volume_claim: fallback.volume_claim.clone(),
        })
    }
}

/// A destination with its URL known: what a backup Job is built from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvedDestination {
    pub url: String,
    pub env_from_secret: Option<SecretRef>,
    pub volume_claim: Option<String>,
}

/// A Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Where a backup is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupPhase {
    /// Waiting for its Cluster or for its Job to start.
    Pending,
    /// The Job is reading the shards.
    Running,
    /// Complete: its manifest is written and `flotilla backup verify` accepts it.
    Completed,
    /// The Job failed; the backup is incomplete and no restore will take it. A Backup is not
    /// retried: create another.
    Failed,
}

impl BackupPhase {
    /// A phase that does not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, BackupPhase::Completed | BackupPhase::Failed)
    }
}

/// Observed state of a backup.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,
    /// `Ready`: True once the backup is complete (`kubectl wait --for=condition=Ready`),
    /// False with reason BackupPending, BackupRunning or BackupFailed before or instead.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The Job that takes the backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The backup's own URL (`flotilla backup verify` / `restore` take it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Why the backup waits or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
