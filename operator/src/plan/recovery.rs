//! A Cluster's `spec.bootstrap.recovery`, decided from what is observed: when to start each
//! database's restore Job, when a database (and the recovery) is done or failed, and whether
//! a DatabaseGroup may touch its database yet.
//!
//! What this guarantees:
//! - Nothing is restored before the cluster is initialised (its id recorded) and Ready.
//! - A recovery that Completed is never run again, whatever is observed later.
//! - Whether a database is restored is decided from the cluster, not from a Job's output: a
//!   database that exists in the cluster when no restore of it is known to be under way
//!   counts as restored (after a lost status, a Job run again would fail on it with "exists",
//!   and that is no failure). A database whose restore this status saw start and fail stays
//!   Failed even though it exists (it may hold part of the backup).
//! - Recovery is refused (nothing started) on a cluster holding databases it does not name
//!   while none of its restores has started: such a cluster is not new.
//! - A Failed database is restored again only once its Job and its (partial) database are
//!   both gone: deleting them is how an administrator asks for another attempt.

use crate::crd::conditions::NewCondition;
use crate::crd::recovery::{DatabaseRecovery, RecoveryPhase, RecoverySpec, RecoveryStatus};
use crate::crd::{Cluster, ConditionStatus, ConditionType, Reason};
use crate::desired::restore_job::restore_job_name;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::BTreeMap;

/// What a restore Job shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// Created, its pod pending or running.
    Running,
    /// Its pod exited successfully.
    Succeeded,
    /// It failed; why, as the Job says.
    Failed(String),
}

/// What the Cluster controller observed for the recovery.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryObservation {
    /// The cluster's id is recorded and it is Ready.
    pub cluster_ready: bool,
    /// The databases the cluster holds, with their shard counts; `None` when the cluster
    /// could not be asked.
    pub databases: Option<BTreeMap<String, u32>>,
    /// The restore Jobs that exist, by database.
    pub jobs: BTreeMap<String, JobOutcome>,
}

/// A transition worth an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryEvent {
    pub warning: bool,
    pub reason: Reason,
    pub note: String,
    /// The restore Job it is about (Events of different Jobs are never aggregated into one);
    /// `None` for the recovery as a whole.
    pub job: Option<String>,
}

/// What to do and report.
#[derive(Clone, Debug, PartialEq)]
pub struct RecoveryPlan {
    pub status: RecoveryStatus,
    /// The `Recovered` condition.
    pub condition: NewCondition,
    /// Databases whose restore Job to create now.
    pub start: Vec<String>,
    pub events: Vec<RecoveryEvent>,
}

/// The plan of `spec` for cluster `cluster` (its name), after `previous`, at `now`.
pub fn plan_recovery(
    cluster: &str,
    spec: &RecoverySpec,
    previous: Option<&RecoveryStatus>,
    observed: &RecoveryObservation,
    now: &Time,
) -> RecoveryPlan {
    if let Some(done) = previous.filter(|p| p.phase == RecoveryPhase::Completed) {
        return RecoveryPlan {
            condition: condition(done, false),
            status: done.clone(),
            start: Vec::new(),
            events: Vec::new(),
        };
    }
    let Some(databases) = &observed.databases else {
        // Nothing is decided without the cluster's word on what it holds.
        let mut status = previous.cloned().unwrap_or_else(|| pending(spec));
        status.message = Some("waiting for the cluster to answer".to_owned());
        return RecoveryPlan {
            condition: condition(&status, false),
            status,
            start: Vec::new(),
            events: Vec::new(),
        };
    };
    let before =
        |database: &str| previous.and_then(|p| p.databases.iter().find(|d| d.database == database));
    let foreign: Vec<&str> = databases
        .keys()
        .filter(|name| !spec.backups.iter().any(|b| &b.database == *name))
        .map(String::as_str)
        .collect();
    let started_before = spec.backups.iter().any(|b| {
        observed.jobs.contains_key(&b.database)
            || before(&b.database).is_some_and(|d| d.phase != RecoveryPhase::Pending)
    });
    let refused = !foreign.is_empty() && !started_before;
    let mut entries = Vec::new();
    let mut start = Vec::new();
    for backup in &spec.backups {
        let database = backup.database.as_str();
        let job = restore_job_name(cluster, database);
        let was = before(database);
        let exists = databases.contains_key(database);
        let entry = |phase, message: String| DatabaseRecovery {
            database: database.to_owned(),
            phase,
            job: Some(job.clone()),
            message: Some(message),
        };
        let was_phase = was.map(|d| d.phase);
        let seen_running = matches!(
            was_phase,
            Some(RecoveryPhase::Restoring | RecoveryPhase::Failed)
        );
        let next = match (was_phase, observed.jobs.get(database)) {
            (Some(RecoveryPhase::Completed), _) => was.cloned(),
            (_, Some(JobOutcome::Succeeded)) => Some(entry(
                RecoveryPhase::Completed,
                format!("restored from {}", backup.url),
            )),
            (_, Some(JobOutcome::Failed(_))) if exists && !seen_running => Some(entry(
                RecoveryPhase::Completed,
                "the database exists in the cluster: restored by an earlier run".to_owned(),
            )),
            (_, Some(JobOutcome::Failed(why))) => Some(entry(
                RecoveryPhase::Failed,
                format!(
                    "{why} (the log of Job {job} says what went wrong; to try again, drop \
                     database {database} if it exists and delete the Job)"
                ),
            )),
            (_, Some(JobOutcome::Running)) => Some(entry(
                RecoveryPhase::Restoring,
                format!("restoring from {}", backup.url),
            )),
            (Some(RecoveryPhase::Failed), None) if exists => was.cloned(),
            (Some(RecoveryPhase::Restoring), None) if exists => Some(entry(
                RecoveryPhase::Failed,
                format!(
                    "Job {job} is gone before it finished and database {database} exists: it \
                     may hold part of the backup; to try again, drop it"
                ),
            )),
            (_, None) if exists => Some(DatabaseRecovery {
                database: database.to_owned(),
                phase: RecoveryPhase::Completed,
                job: None,
                message: Some("the database exists in the cluster already".to_owned()),
            }),
            (_, None) if refused || !observed.cluster_ready => None,
            (_, None) => {
                start.push(database.to_owned());
                Some(entry(
                    RecoveryPhase::Restoring,
                    format!("restoring from {}", backup.url),
                ))
            }
        };
        entries.push(next.unwrap_or_else(|| DatabaseRecovery {
            database: database.to_owned(),
            phase: RecoveryPhase::Pending,
            job: None,
            message: Some(if refused {
                "recovery refused".to_owned()
            } else {
                "waiting for the cluster to be initialised and ready".to_owned()
            }),
        }));
    }
    let phases = |phase| entries.iter().filter(|d| d.phase == phase).count();
    let (phase, message) = if refused {
        (
            RecoveryPhase::Failed,
            format!(
                "the cluster holds databases this recovery does not restore ({}): recovery \
                 runs only on a new cluster",
                foreign.join(", ")
            ),
        )
    } else if phases(RecoveryPhase::Completed) == entries.len() {
        (
            RecoveryPhase::Completed,
            format!("{} databases restored", entries.len()),
        )
    } else if phases(RecoveryPhase::Restoring) > 0 {
        (
            RecoveryPhase::Restoring,
            format!(
                "{} of {} databases restored",
                phases(RecoveryPhase::Completed),
                entries.len()
            ),
        )
    } else if phases(RecoveryPhase::Failed) > 0 {
        let failed: Vec<&str> = entries
            .iter()
            .filter(|d| d.phase == RecoveryPhase::Failed)
            .map(|d| d.database.as_str())
            .collect();
        (
            RecoveryPhase::Failed,
            format!("the restore of {} failed", failed.join(", ")),
        )
    } else {
        (
            RecoveryPhase::Pending,
            "waiting for the cluster to be initialised and ready".to_owned(),
        )
    };
    let status = RecoveryStatus {
        phase,
        databases: entries,
        message: Some(message),
        completed_at: (phase == RecoveryPhase::Completed).then(|| now.clone()),
    };
    let events = events(previous, &status, refused);
    RecoveryPlan {
        condition: condition(&status, refused),
        status,
        start,
        events,
    }
}

fn pending(spec: &RecoverySpec) -> RecoveryStatus {
    RecoveryStatus {
        phase: RecoveryPhase::Pending,
        databases: spec
            .backups
            .iter()
            .map(|b| DatabaseRecovery {
                database: b.database.clone(),
                phase: RecoveryPhase::Pending,
                job: None,
                message: None,
            })
            .collect(),
        message: None,
        completed_at: None,
    }
}

/// The `Recovered` condition of `status`.
fn condition(status: &RecoveryStatus, refused: bool) -> NewCondition {
    let reason = match status.phase {
        RecoveryPhase::Completed => Reason::RecoveryCompleted,
        RecoveryPhase::Restoring => Reason::Recovering,
        RecoveryPhase::Pending => Reason::RecoveryPending,
        RecoveryPhase::Failed if refused => Reason::RecoveryRefused,
        RecoveryPhase::Failed => Reason::RecoveryFailed,
    };
    NewCondition::new(
        ConditionType::Recovered,
        ConditionStatus::from_bool(status.phase == RecoveryPhase::Completed),
        reason,
        status.message.clone().unwrap_or_default(),
    )
}

/// An Event per database that started, completed or failed, and one for the recovery's end.
fn events(
    previous: Option<&RecoveryStatus>,
    now: &RecoveryStatus,
    refused: bool,
) -> Vec<RecoveryEvent> {
    let phase_before = |database: &str| {
        previous
            .and_then(|p| p.databases.iter().find(|d| d.database == database))
            .map(|d| d.phase)
    };
    let mut events = Vec::new();
    for entry in &now.databases {
        if phase_before(&entry.database) == Some(entry.phase) {
            continue;
        }
        let message = entry.message.clone().unwrap_or_default();
        let (warning, reason, note) = match entry.phase {
            RecoveryPhase::Pending => continue,
            RecoveryPhase::Restoring => (
                false,
                Reason::Recovering,
                format!(
                    "Job {} restores database {}: {message}",
                    entry.job.as_deref().unwrap_or_default(),
                    entry.database
                ),
            ),
            RecoveryPhase::Completed => (
                false,
                Reason::RecoveryCompleted,
                format!("database {}: {message}", entry.database),
            ),
            RecoveryPhase::Failed => (
                true,
                Reason::RecoveryFailed,
                format!("database {}: {message}", entry.database),
            ),
        };
        events.push(RecoveryEvent {
            warning,
            reason,
            note,
            job: entry.job.clone(),
        });
    }
    let before = previous.map(|p| p.phase);
    if before != Some(now.phase) {
        let message = now.message.clone().unwrap_or_default();
        match now.phase {
            RecoveryPhase::Completed => events.push(RecoveryEvent {
                warning: false,
                reason: Reason::RecoveryCompleted,
                note: format!("recovery complete: {message}"),
                job: None,
            }),
            RecoveryPhase::Failed if refused => events.push(RecoveryEvent {
                warning: true,
                reason: Reason::RecoveryRefused,
                note: message,
                job: None,
            }),
            _ => {}
        }
    }
    events
}

/// Whether a DatabaseGroup of `cluster` may create or change `database` now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryGate {
    /// No recovery concerns it (or it is over): go ahead. `recovered` when the database is
    /// one the recovery restored, to be taken as it is.
    Proceed { recovered: bool },
    /// Wait; the message says for what.
    Wait(String),
}

/// The gate of `database` on `cluster`: a database the recovery names waits until its
/// restore Completed (it must never be created empty first); any other database waits until
/// the recovery is over (Completed or Failed), so that it never makes the cluster look
/// non-new to the recovery.
pub fn recovery_gate(cluster: &Cluster, database: &str) -> RecoveryGate {
    let Some(spec) = cluster.recovery_spec() else {
        return RecoveryGate::Proceed { recovered: false };
    };
    let status = cluster.status.as_ref().and_then(|s| s.recovery.as_ref());
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    if spec.backups.iter().any(|b| b.database == database) {
        let entry = status.and_then(|s| s.databases.iter().find(|d| d.database == database));
        return match entry.map(|d| (d.phase, d.message.clone().unwrap_or_default())) {
            Some((RecoveryPhase::Completed, _)) => RecoveryGate::Proceed { recovered: true },
            Some((RecoveryPhase::Failed, why)) => RecoveryGate::Wait(format!(
                "the restore of database {database} by Cluster {name} failed: {why}"
            )),
            _ => RecoveryGate::Wait(format!(
                "Cluster {name} restores database {database} from a backup first"
            )),
        };
    }
    match status.map(|s| s.phase) {
        Some(RecoveryPhase::Completed | RecoveryPhase::Failed) => {
            RecoveryGate::Proceed { recovered: false }
        }
        _ => RecoveryGate::Wait(format!(
            "Cluster {name} restores its databases from backups first"
        )),
    }
}

#[cfg(test)]
mod tests;
