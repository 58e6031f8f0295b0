//! What a `ScheduledBackup` does now, from its spec, the Backups it created and the time:
//! which Backup to create (at most one: the latest scheduled time not yet taken, named from
//! that time so that a repeated pass never makes a second), which expired Backups to delete
//! with their data, and what it reports.
//!
//! Retention applies to completed backups: `keep` keeps the newest N, `maxAge` deletes those
//! scheduled longer ago; the newest completed backup never expires (a schedule that stopped
//! succeeding keeps its last good backup). A failed backup expires once a newer one
//! completed. Pending and running backups never expire. A backup whose data deletion has
//! started is deleted to the end even if the rules changed meanwhile.

use crate::crd::Backup;
use crate::crd::Retention;
use crate::crd::conditions::NewCondition;
use crate::crd::{
    BackupPhase, ConditionStatus, ConditionType, Reason, ScheduledBackup, ScheduledBackupStatus,
};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use std::time::Duration;

pub use crate::crd::scheduled_backup::{SCHEDULE_LABEL, SCHEDULED_AT_ANNOTATION};
/// Longest name of a ScheduledBackup: its Backups add `-YYYYMMDDHHMM` and their deletion
/// Jobs `-del`, and a Job's name must stay a valid label value (63 characters).
pub const MAX_NAME_LEN: usize = 63 - 13 - 4;
/// Longest wait between two passes, so that a clock or watch that missed something is
/// corrected.
pub const MAX_WAIT: Duration = Duration::from_secs(600);
/// Wait while an expired backup's data is being deleted.
pub const RETENTION_WAIT: Duration = Duration::from_secs(10);

/// Parses a five-field cron expression (minute, hour, day of month, month, day of week).
pub fn parse_schedule(expression: &str) -> Result<Cron, String> {
    let fields = expression.split_whitespace().count();
    if fields != 5 {
        return Err(format!(
            "schedule {expression:?} has {fields} fields; it needs five (minute hour day-of-month month day-of-week)"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(expression.trim())
        .map_err(|e| format!("schedule {expression:?}: {e}"))
}

/// The name of the Backup taken at `scheduled`: `<schedule>-YYYYMMDDHHMM` (UTC).
pub fn backup_name(schedule: &str, scheduled: Timestamp) -> String {
    format!("{schedule}-{}", scheduled.strftime("%Y%m%d%H%M"))
}

/// Where the data deletion of an expired backup is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// Not started.
    None,
    Running,
    Succeeded,
    Failed(String),
}

/// A Backup the schedule created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedBackup {
    pub name: String,
    pub scheduled_at: Timestamp,
    pub phase: Option<BackupPhase>,
    pub completed_at: Option<Timestamp>,
    pub deletion: Deletion,
}

/// What to do with an expired backup now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Start the Job deleting its data.
    DeleteData(String),
    /// Its data is deleted: delete the Backup object.
    DeleteObject(String),
    /// Its data deletion failed; the message says why.
    Failed { backup: String, message: String },
}

/// What the controller does in one pass.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulePlan {
    /// The Backup to create: its name and scheduled time.
    pub create: Option<(String, Timestamp)>,
    pub expire: Vec<Expiry>,
    pub status: ScheduledBackupStatus,
    /// When to look again.
    pub requeue_after: Duration,
}

fn time(ts: Timestamp) -> Time {
    Time(ts)
}

/// The plan of `schedule` at `now`, given the Backups it created; `cluster_retention` (the
/// Cluster's `spec.backup.retention`) applies when the schedule sets no retention.
pub fn plan_schedule(
    schedule: &ScheduledBackup,
    cluster_retention: Option<&Retention>,
    backups: &[ObservedBackup],
    now: Timestamp,
) -> SchedulePlan {
    let previous = schedule.status.clone().unwrap_or_default();
    let mut status = previous.clone();
    status.observed_generation = schedule.metadata.generation;
    let name = schedule.metadata.name.clone().unwrap_or_default();
    let cron = if name.len() > MAX_NAME_LEN {
        Err(format!(
            "the name {name:?} is longer than {MAX_NAME_LEN} characters, too long to name its Backups"
        ))
    } else {
        parse_schedule(&schedule.spec.schedule)
    };
    let zoned = now.to_zoned(TimeZone::UTC);
    let mut create = None;
    let mut wait = MAX_WAIT;
    let scheduled = match &cron {
        Err(why) => NewCondition::new(
            ConditionType::Scheduled,
            ConditionStatus::False,
            Reason::ScheduleInvalid,
            why.clone(),
        ),
        Ok(_) if schedule.spec.suspend => {
            status.next_schedule_time = None;
            NewCondition::new(
                ConditionType::Scheduled,
                ConditionStatus::False,
                Reason::Suspended,
                "suspend is set: no Backup is created",
            )
        }
        Ok(cron) => {
            // Times after the last one taken (or after the schedule was created) are due; only
            // the latest of them is taken.
            let since = previous
                .last_schedule_time
                .as_ref()
                .map(|t| t.0)
                .or_else(|| schedule.metadata.creation_timestamp.as_ref().map(|t| t.0))
                .unwrap_or(now);
            let due = cron
                .find_previous_occurrence(&zoned, true)
                .ok()
                .map(|z| z.timestamp())
                .filter(|t| *t > since);
            if let Some(at) = due {
                let backup = backup_name(&name, at);
                if !backups.iter().any(|b| b.name == backup) {
                    create = Some((backup.clone(), at));
                }
                status.last_schedule_time = Some(time(at));
                status.last_backup = Some(backup);
            }
            let next = cron
                .find_next_occurrence(&zoned, false)
                .ok()
                .map(|z| z.timestamp());
            status.next_schedule_time = next.map(time);
            if let Some(next) = next {
                let until = next.duration_since(now).max(SignedDuration::from_secs(1));
                wait = wait.min(Duration::try_from(until).unwrap_or(MAX_WAIT));
            }
            NewCondition::new(
                ConditionType::Scheduled,
                ConditionStatus::True,
                Reason::ScheduleActive,
                format!("backups are taken on {:?} (UTC)", schedule.spec.schedule),
            )
        }
    };
    let retention = schedule.spec.retention.as_ref().or(cluster_retention);
    let expire = expiries(retention, backups, now);
    if expire.iter().any(|e| !matches!(e, Expiry::Failed { .. }))
        || backups.iter().any(|b| b.deletion == Deletion::Running)
    {
        wait = wait.min(RETENTION_WAIT);
    }
    let newest_success = backups
        .iter()
        .filter(|b| b.phase == Some(BackupPhase::Completed))
        .filter_map(|b| b.completed_at.or(Some(b.scheduled_at)))
        .max();
    if let Some(at) = newest_success
        && previous
            .last_successful_time
            .as_ref()
            .is_none_or(|t| t.0 < at)
    {
        status.last_successful_time = Some(time(at));
    }
    let failed: Vec<String> = expire
        .iter()
        .filter_map(|e| match e {
            Expiry::Failed { backup, message } => Some(format!("{backup}: {message}")),
            _ => None,
        })
        .collect();
    let degraded = if failed.is_empty() {
        NewCondition::new(
            ConditionType::Degraded,
            ConditionStatus::False,
            Reason::Healthy,
            "nothing is wrong",
        )
    } else {
        NewCondition::new(
            ConditionType::Degraded,
            ConditionStatus::True,
            Reason::RetentionFailed,
            format!("deleting expired backups failed: {}", failed.join("; ")),
        )
    };
    let now_time = time(now);
    for condition in [scheduled, degraded] {
        crate::crd::conditions::set_condition(
            &mut status.conditions,
            condition,
            schedule.metadata.generation,
            &now_time,
        );
    }
    SchedulePlan {
        create,
        expire,
        status,
        requeue_after: wait,
    }
}

/// The Backups that expired, with what to do about each.
fn expiries(
    retention: Option<&Retention>,
    backups: &[ObservedBackup],
    now: Timestamp,
) -> Vec<Expiry> {
    let mut newest_first: Vec<&ObservedBackup> = backups.iter().collect();
    newest_first.sort_by(|a, b| {
        b.scheduled_at
            .cmp(&a.scheduled_at)
            .then(b.name.cmp(&a.name))
    });
    let newest_completed = newest_first
        .iter()
        .find(|b| b.phase == Some(BackupPhase::Completed))
        .map(|b| b.scheduled_at);
    let cutoff = retention
        .and_then(|r| r.max_age)
        .and_then(|d| SignedDuration::try_from(std::time::Duration::from(d)).ok())
        .and_then(|age| now.checked_sub(age).ok());
    let keep = retention
        .and_then(|r| r.keep)
        .map(|k| usize::try_from(k).unwrap_or(0));
    let mut completed_seen = 0usize;
    let mut expired = Vec::new();
    for backup in newest_first {
        let expires = match backup.phase {
            // Deletion under way: carried to the end.
            _ if backup.deletion != Deletion::None => true,
            _ if retention.is_none() => false,
            Some(BackupPhase::Completed) => {
                completed_seen += 1;
                let beyond_keep = keep.is_some_and(|k| completed_seen > k);
                let too_old = cutoff.is_some_and(|cutoff| backup.scheduled_at < cutoff);
                completed_seen > 1 && (beyond_keep || too_old)
            }
            Some(BackupPhase::Failed) => newest_completed.is_some_and(|t| t > backup.scheduled_at),
            _ => false,
        };
        if !expires {
            continue;
        }
        expired.push(match &backup.deletion {
            Deletion::None => Expiry::DeleteData(backup.name.clone()),
            Deletion::Running => continue,
            Deletion::Succeeded => Expiry::DeleteObject(backup.name.clone()),
            Deletion::Failed(message) => Expiry::Failed {
                backup: backup.name.clone(),
                message: message.clone(),
            },
        });
    }
    expired
}

/// A Backup of the schedule as the plan sees it, with the Job deleting its data, if any,
/// among `jobs`.
pub fn observe_backup(backup: &Backup, jobs: &[Job], now: Timestamp) -> ObservedBackup {
    let name = backup.metadata.name.clone().unwrap_or_default();
    let scheduled_at = backup
        .annotations()
        .get(SCHEDULED_AT_ANNOTATION)
        .and_then(|t| t.parse().ok())
        .or_else(|| backup.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now);
    let status = backup.status.as_ref();
    let job_name = crate::desired::backup_job::delete_job_name(&name);
    let deletion = match jobs
        .iter()
        .find(|j| j.metadata.name.as_deref() == Some(&job_name))
    {
        None => Deletion::None,
        Some(job) => {
            let status = job.status.clone().unwrap_or_default();
            let failed = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Failed" && c.status == "True");
            if status.succeeded.unwrap_or(0) > 0 {
                Deletion::Succeeded
            } else if let Some(failed) = failed {
                Deletion::Failed(format!(
                    "{} (the pod's log of Job {job_name} says what went wrong)",
                    failed
                        .message
                        .clone()
                        .or_else(|| failed.reason.clone())
                        .unwrap_or_else(|| "the Job failed".to_owned())
                ))
            } else {
                Deletion::Running
            }
        }
    };
    ObservedBackup {
        name,
        scheduled_at,
        phase: status.and_then(|s| s.phase),
        completed_at: status.and_then(|s| s.completed_at.as_ref()).map(|t| t.0),
        deletion,
    }
}

#[cfg(test)]
mod tests;
