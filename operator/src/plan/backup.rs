//! A `Backup`'s status from what is observed: its Cluster and the Job taking it. Once
//! Completed or Failed, a Backup never changes again.

use crate::crd::backup::{BackupPhase, BackupStatus};
use crate::crd::conditions::{NewCondition, set_condition};
use crate::crd::{ConditionStatus, ConditionType, Reason};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// What the controller saw.
#[derive(Debug, Clone, PartialEq)]
pub enum BackupObservation {
    /// No Cluster of that name in the namespace (or it is being deleted).
    ClusterNotFound,
    /// The Cluster is paused: no Job is started.
    ClusterPaused,
    /// Neither the Backup nor its Cluster's `spec.backup` names a destination.
    NoDestination,
    /// The Job exists (as applied or as read back).
    Job(Box<Job>),
}

/// The status a Backup gets; `previous` keeps a final phase and the start time.
pub fn backup_status(
    previous: Option<&BackupStatus>,
    observation: &BackupObservation,
    job_name: &str,
    url: Option<&str>,
    now: &Time,
) -> BackupStatus {
    if let Some(previous) = previous
        && previous.phase.is_some_and(BackupPhase::is_final)
    {
        return previous.clone();
    }
    let mut status = phase_of(previous, observation, job_name, url, now);
    let (condition_status, reason) = match status.phase {
        Some(BackupPhase::Completed) => (ConditionStatus::True, Reason::BackupCompleted),
        Some(BackupPhase::Failed) => (ConditionStatus::False, Reason::BackupFailed),
        Some(BackupPhase::Running) => (ConditionStatus::False, Reason::BackupRunning),
        Some(BackupPhase::Pending) | None
            if matches!(observation, BackupObservation::NoDestination) =>
        {
            (ConditionStatus::False, Reason::NoBackupDestination)
        }
        Some(BackupPhase::Pending) | None => (ConditionStatus::False, Reason::BackupPending),
    };
    let message = status
        .message
        .clone()
        .or_else(|| status.url.clone())
        .unwrap_or_default();
    status.conditions = previous.map(|p| p.conditions.clone()).unwrap_or_default();
    set_condition(
        &mut status.conditions,
        NewCondition::new(ConditionType::Ready, condition_status, reason, message),
        None,
        now,
    );
    status
}

/// The status without its conditions.
fn phase_of(
    previous: Option<&BackupStatus>,
    observation: &BackupObservation,
    job_name: &str,
    url: Option<&str>,
    now: &Time,
) -> BackupStatus {
    let started_at = previous.and_then(|p| p.started_at.clone());
    let pending = |message: String| BackupStatus {
        phase: Some(BackupPhase::Pending),
        message: Some(message),
        ..BackupStatus::default()
    };
    match observation {
        BackupObservation::ClusterNotFound => {
            pending("its Cluster does not exist (yet)".to_owned())
        }
        BackupObservation::ClusterPaused => {
            pending("its Cluster is paused: the backup starts when it is resumed".to_owned())
        }
        BackupObservation::NoDestination => pending(
            "no destination: set spec.destination, or spec.backup.destination of its Cluster"
                .to_owned(),
        ),
        BackupObservation::Job(job) => {
            let status = job.status.clone().unwrap_or_default();
            let failed = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Failed" && c.status == "True");
            let (phase, message, completed_at) = if status.succeeded.unwrap_or(0) > 0 {
                let done = status
                    .completion_time
                    .clone()
                    .unwrap_or_else(|| now.clone());
                (BackupPhase::Completed, None, Some(done))
            } else if let Some(failed) = failed {
                let why = failed
                    .message
                    .clone()
                    .or_else(|| failed.reason.clone())
                    .unwrap_or_else(|| "the backup Job failed".to_owned());
                (
                    BackupPhase::Failed,
                    Some(format!(
                        "{why} (the pod's log of Job {job_name} says what went wrong)"
                    )),
                    Some(
                        failed
                            .last_transition_time
                            .clone()
                            .unwrap_or_else(|| now.clone()),
                    ),
                )
            } else if status.active.unwrap_or(0) > 0 {
                (BackupPhase::Running, None, None)
            } else {
                (
                    BackupPhase::Pending,
                    Some("waiting for the Job's pod to start".to_owned()),
                    None,
                )
            };
            let started_at = started_at
                .or_else(|| status.start_time.clone())
                .or_else(|| (phase != BackupPhase::Pending).then(|| now.clone()));
            BackupStatus {
                phase: Some(phase),
                conditions: Vec::new(),
                job: Some(job_name.to_owned()),
                url: url.map(str::to_owned),
                started_at,
                completed_at,
                message,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap_or_default())
    }

    fn job(status: JobStatus) -> BackupObservation {
        BackupObservation::Job(Box::new(Job {
            status: Some(status),
            ..Job::default()
        }))
    }

    fn status(previous: Option<&BackupStatus>, observation: &BackupObservation) -> BackupStatus {
        backup_status(
            previous,
            observation,
            "nightly",
            Some("s3://b/db-nightly"),
            &at(100),
        )
    }

    #[test]
    fn a_job_moves_the_backup_from_pending_to_running_to_completed() {
        let created = status(None, &job(JobStatus::default()));
        assert_eq!(created.phase, Some(BackupPhase::Pending));
        assert_eq!(created.url.as_deref(), Some("s3://b/db-nightly"));
        let running = status(
            Some(&created),
            &job(JobStatus {
                active: Some(1),
                start_time: Some(at(50)),
                ..JobStatus::default()
            }),
        );
        assert_eq!(running.phase, Some(BackupPhase::Running));
        assert_eq!(running.started_at, Some(at(50)));
        let done = status(
            Some(&running),
            &job(JobStatus {
                succeeded: Some(1),
                completion_time: Some(at(90)),
                ..JobStatus::default()
            }),
        );
        assert_eq!(done.phase, Some(BackupPhase::Completed));
        assert_eq!(
            (done.started_at, done.completed_at),
            (Some(at(50)), Some(at(90)))
        );
    }

    #[test]
    fn a_failed_job_fails_the_backup_for_good_with_its_reason() {
        let failed = status(
            None,
            &job(JobStatus {
                conditions: Some(vec![JobCondition {
                    type_: "Failed".to_owned(),
                    status: "True".to_owned(),
                    reason: Some("BackoffLimitExceeded".to_owned()),
                    message: Some("Job has reached the specified backoff limit".to_owned()),
                    ..JobCondition::default()
                }]),
                ..JobStatus::default()
            }),
        );
        assert_eq!(failed.phase, Some(BackupPhase::Failed));
        let message = failed.message.clone().unwrap_or_default();
        assert!(
            message.contains("backoff limit") && message.contains("nightly"),
            "{message}"
        );
        // A final phase stays whatever is observed next (the Job deleted, the cluster gone).
        assert_eq!(
            status(Some(&failed), &BackupObservation::ClusterNotFound),
            failed
        );
    }

    #[test]
    fn without_its_cluster_or_with_it_paused_a_backup_waits_and_says_why() {
        let waiting = status(None, &BackupObservation::ClusterNotFound);
        assert_eq!(waiting.phase, Some(BackupPhase::Pending));
        assert!(
            waiting
                .message
                .unwrap_or_default()
                .contains("does not exist")
        );
        let paused = status(None, &BackupObservation::ClusterPaused);
        assert!(paused.message.unwrap_or_default().contains("paused"));
        let nowhere = status(None, &BackupObservation::NoDestination);
        assert_eq!(nowhere.phase, Some(BackupPhase::Pending));
        assert!(
            nowhere
                .message
                .clone()
                .unwrap_or_default()
                .contains("spec.backup.destination"),
            "{nowhere:?}"
        );
        assert_eq!(
            nowhere.conditions[0].reason,
            Reason::NoBackupDestination.as_str()
        );
    }
}
