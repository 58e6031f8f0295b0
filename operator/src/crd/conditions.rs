//! Typed condition types and reasons, and the one place that writes conditions.
//!
//! Conditions follow the Kubernetes API conventions (`metav1.Condition`): a list keyed
//! by `type`, whose `lastTransitionTime` only moves when `status` changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use std::fmt;

/// Condition types the operator reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionType {
    /// Everything the spec asks for is running and healthy.
    Ready,
    /// The operator is moving the resource towards its spec.
    Progressing,
    /// Something is wrong that the operator cannot fix by itself.
    Degraded,
    /// A DatabaseGroup's collections and indexes are as its spec declares them.
    CollectionsApplied,
    /// A ScheduledBackup's schedule is valid and it creates Backups on it.
    Scheduled,
    /// A Cluster's `spec.bootstrap.recovery` restored every database it names.
    Recovered,
}

impl ConditionType {
    /// Every condition type, in the order they are reported.
    pub const ALL: [ConditionType; 3] = [Self::Ready, Self::Progressing, Self::Degraded];

    /// The value of `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Progressing => "Progressing",
            Self::Degraded => "Degraded",
            Self::CollectionsApplied => "CollectionsApplied",
            Self::Scheduled => "Scheduled",
            Self::Recovered => "Recovered",
        }
    }
}

impl fmt::Display for ConditionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The value of a condition's `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    /// `True` when `value` holds, `False` otherwise.
    pub fn from_bool(value: bool) -> Self {
        if value { Self::True } else { Self::False }
    }

    /// The value of `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

/// Reasons of conditions and Events, in CamelCase as the API conventions ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Every node (or replica) is a caught-up member.
    AllMembersReady,
    /// The first node is initialising the cluster.
    Bootstrapping,
    /// Nodes are being added.
    ScalingUp,
    /// Nodes are being drained and removed.
    ScalingDown,
    /// A scale-down would leave fewer nodes than a replication factor needs.
    ScaleDownRefused,
    /// Pods are restarted one at a time onto a new template.
    RollingRestart,
    /// Leadership is moved off a pod before it restarts.
    LeadershipTransfer,
    /// A restart waits until every group keeps a caught-up majority without the pod.
    WaitingForQuorum,
    /// Some nodes are not ready.
    NodesNotReady,
    /// The cluster cannot be reached through its admin API.
    ClusterUnreachable,
    /// `spec.paused` is set.
    Paused,
    /// Nothing is in progress.
    Idle,
    /// Nothing is wrong.
    Healthy,
    /// The referenced Cluster does not exist.
    ClusterNotFound,
    /// The database is being created.
    Creating,
    /// Fewer replicas are Members than the replication factor asks for.
    ReplicationFactorNotMet,
    /// A node whose data is lost is replaced by a fresh one.
    ReplacingNode,
    /// A reconcile failed; the message says why.
    ReconcileError,
    /// The operator may not read Kubernetes Nodes, so their labels do not become the
    /// nodes' placement labels.
    NodeLabelsForbidden,
    /// A node got the placement labels of the Kubernetes Node it runs on.
    PlacementLabels,
    /// A child object was edited by hand (or by another writer) and put back.
    DriftReverted,
    /// `storage.size` is smaller than the volumes, which never shrink.
    VolumeSizeRefused,
    /// The volumes grow to a larger `storage.size`.
    VolumeGrowth,
    /// The nodes report a cluster id other than the one recorded.
    ClusterIdMismatch,
    /// A backup waits for its Cluster or its Job's pod.
    BackupPending,
    /// A backup's Job is reading the shards.
    BackupRunning,
    /// A backup is complete.
    BackupCompleted,
    /// A backup's Job failed.
    BackupFailed,
    /// A database of the group's name exists that the operator did not create, and the
    /// group does not say `adopt: true`.
    DatabaseExists,
    /// The operator issued a certificate (or a new cluster CA) into a Secret.
    CertificateIssued,
    /// The cluster's certificates cannot be issued or read; the message says why.
    CertificatesNotReady,
    /// A DatabaseGroup's collections and indexes are as declared.
    CollectionsApplied,
    /// Indexes are being built or collections created.
    CollectionsPending,
    /// A collection's shard key in the spec differs from the one the database has.
    ShardKeyConflict,
    /// An index of the spec's name exists on other paths.
    IndexConflict,
    /// The cluster refused to create a collection or an index; the message says why.
    CollectionRefused,
    /// A ScheduledBackup's cron schedule (or name) cannot be used.
    ScheduleInvalid,
    /// A ScheduledBackup creates Backups on its schedule.
    ScheduleActive,
    /// `spec.suspend` is set: no Backup is created.
    Suspended,
    /// A Backup was created on schedule.
    BackupScheduled,
    /// An expired backup and its data were deleted.
    BackupExpired,
    /// Deleting an expired backup's data failed.
    RetentionFailed,
    /// A backup names no destination, and neither does its Cluster's `spec.backup`.
    NoBackupDestination,
    /// A recovery waits for the new cluster to be initialised and ready.
    RecoveryPending,
    /// Restore Jobs of a recovery run.
    Recovering,
    /// Every database of a recovery is restored.
    RecoveryCompleted,
    /// A restore of a recovery failed.
    RecoveryFailed,
    /// The cluster holds databases the recovery did not restore: it is not new.
    RecoveryRefused,
    /// A DatabaseGroup waits for its Cluster's recovery before it touches its database.
    WaitingForRecovery,
    /// A restored database has another shard count than the DatabaseGroup asks for.
    ShardCountMismatch,
    /// A replica was stopped for good on its node (a corrupt record, or content that differs
    /// from the other replicas'); the cluster rebuilds it.
    ReplicaBroken,
}

impl Reason {
    /// The value of `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllMembersReady => "AllMembersReady",
            Self::Bootstrapping => "Bootstrapping",
            Self::ScalingUp => "ScalingUp",
            Self::ScalingDown => "ScalingDown",
            Self::ScaleDownRefused => "ScaleDownRefused",
            Self::RollingRestart => "RollingRestart",
            Self::LeadershipTransfer => "LeadershipTransfer",
            Self::WaitingForQuorum => "WaitingForQuorum",
            Self::NodesNotReady => "NodesNotReady",
            Self::ClusterUnreachable => "ClusterUnreachable",
            Self::Paused => "Paused",
            Self::Idle => "Idle",
            Self::Healthy => "Healthy",
            Self::ClusterNotFound => "ClusterNotFound",
            Self::Creating => "Creating",
            Self::ReplicationFactorNotMet => "ReplicationFactorNotMet",
            Self::ReplacingNode => "ReplacingNode",
            Self::ReconcileError => "ReconcileError",
            Self::NodeLabelsForbidden => "NodeLabelsForbidden",
            Self::PlacementLabels => "PlacementLabels",
            Self::DriftReverted => "DriftReverted",
            Self::VolumeSizeRefused => "VolumeSizeRefused",
            Self::VolumeGrowth => "VolumeGrowth",
            Self::ClusterIdMismatch => "ClusterIdMismatch",
            Self::BackupPending => "BackupPending",
            Self::BackupRunning => "BackupRunning",
            Self::BackupCompleted => "BackupCompleted",
            Self::BackupFailed => "BackupFailed",
            Self::DatabaseExists => "DatabaseExists",
            Self::CertificateIssued => "CertificateIssued",
            Self::CertificatesNotReady => "CertificatesNotReady",
            Self::CollectionsApplied => "CollectionsApplied",
            Self::CollectionsPending => "CollectionsPending",
            Self::ShardKeyConflict => "ShardKeyConflict",
            Self::IndexConflict => "IndexConflict",
            Self::CollectionRefused => "CollectionRefused",
            Self::ScheduleInvalid => "ScheduleInvalid",
            Self::ScheduleActive => "ScheduleActive",
            Self::Suspended => "Suspended",
            Self::BackupScheduled => "BackupScheduled",
            Self::BackupExpired => "BackupExpired",
            Self::RetentionFailed => "RetentionFailed",
            Self::NoBackupDestination => "NoBackupDestination",
            Self::RecoveryPending => "RecoveryPending",
            Self::Recovering => "Recovering",
            Self::RecoveryCompleted => "RecoveryCompleted",
            Self::RecoveryFailed => "RecoveryFailed",
            Self::RecoveryRefused => "RecoveryRefused",
            Self::WaitingForRecovery => "WaitingForRecovery",
            Self::ShardCountMismatch => "ShardCountMismatch",
            Self::ReplicaBroken => "ReplicaBroken",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A condition to report, before it is merged into a status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCondition {
    pub type_: ConditionType,
    pub status: ConditionStatus,
    pub reason: Reason,
    pub message: String,
}

impl NewCondition {
    pub fn new(
        type_: ConditionType,
        status: ConditionStatus,
        reason: Reason,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// Writes `new` into `conditions`, keeping `lastTransitionTime` when the status is unchanged.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    new: NewCondition,
    observed_generation: Option<i64>,
    now: &Time,
) {
    let status = new.status.as_str();
    let existing = conditions
        .iter()
        .position(|c| c.type_ == new.type_.as_str());
    let last_transition_time = match existing.map(|i| &conditions[i]) {
        Some(old) if old.status == status => old.last_transition_time.clone(),
        _ => now.clone(),
    };
    let condition = Condition {
        type_: new.type_.as_str().to_owned(),
        status: status.to_owned(),
        reason: new.reason.as_str().to_owned(),
        message: new.message,
        observed_generation,
        last_transition_time,
    };
    match existing {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// The condition of type `type_`, if reported.
pub fn find_condition(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
}

/// Whether the condition of type `type_` is reported as `True`.
pub fn is_true(conditions: &[Condition], type_: ConditionType) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH))
    }

    fn ready(status: ConditionStatus, reason: Reason) -> NewCondition {
        NewCondition::new(ConditionType::Ready, status, reason, "message")
    }

    #[test]
    fn a_new_condition_is_appended_with_the_current_time() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            ready(ConditionStatus::True, Reason::AllMembersReady),
            Some(3),
            &at(10),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].type_, "Ready");
        assert_eq!(conditions[0].status, "True");
        assert_eq!(conditions[0].reason, "AllMembersReady");
        assert_eq!(conditions[0].observed_generation, Some(3));
        assert_eq!(conditions[0].last_transition_time, at(10));
    }

    #[test]
    fn an_unchanged_status_keeps_its_transition_time() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            ready(ConditionStatus::False, Reason::Bootstrapping),
            Some(1),
            &at(10),
        );
        set_condition(
            &mut conditions,
            ready(ConditionStatus::False, Reason::NodesNotReady),
            Some(2),
            &at(20),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].reason, "NodesNotReady");
        assert_eq!(conditions[0].last_transition_time, at(10));
    }

    #[test]
    fn a_changed_status_moves_its_transition_time() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            ready(ConditionStatus::False, Reason::Bootstrapping),
            Some(1),
            &at(10),
        );
        set_condition(
            &mut conditions,
            ready(ConditionStatus::True, Reason::AllMembersReady),
            Some(1),
            &at(20),
        );
        assert!(is_true(&conditions, ConditionType::Ready));
        assert_eq!(conditions[0].last_transition_time, at(20));
    }
}
