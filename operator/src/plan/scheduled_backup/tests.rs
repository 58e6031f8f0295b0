//! The schedule and retention plan, at fixed times.

use super::*;
use crate::crd::backup::SecretRef;
use crate::crd::database_group::ClusterRef;
use crate::crd::{Retention, ScheduledBackupSpec};

fn at(text: &str) -> Timestamp {
    match text.parse() {
        Ok(ts) => ts,
        Err(e) => panic!("{text}: {e}"),
    }
}

fn schedule(cron: &str) -> ScheduledBackup {
    let mut schedule = ScheduledBackup::new(
        "nightly",
        ScheduledBackupSpec {
            cluster_ref: ClusterRef {
                name: "flotilla".to_owned(),
            },
            database: "orders".to_owned(),
            schedule: cron.to_owned(),
            target: crate::crd::BackupDestination {
                destination: Some("s3://backups/flotilla".to_owned()),
                env_from_secret: Some(SecretRef {
                    name: "s3".to_owned(),
                }),
                volume_claim: None,
            },
            retention: None,
            suspend: false,
            max_rate_mib_per_second: None,
        },
    );
    schedule.metadata.namespace = Some("db".to_owned());
    schedule.metadata.creation_timestamp = Some(Time(at("2026-12-01T00:00:30Z")));
    schedule
}

fn retained(keep: Option<i32>, max_age: Option<&str>) -> ScheduledBackup {
    let mut s = schedule("0 3 * * *");
    s.spec.retention = Some(Retention {
        keep,
        max_age: max_age.map(|d| match d.parse() {
            Ok(d) => d,
            Err(e) => panic!("{d}: {e:?}"),
        }),
    });
    s
}

fn completed(day: u32) -> ObservedBackup {
    let scheduled = at(&format!("2026-12-{day:02}T03:00:00Z"));
    ObservedBackup {
        name: backup_name("nightly", scheduled),
        scheduled_at: scheduled,
        phase: Some(BackupPhase::Completed),
        completed_at: Some(scheduled + SignedDuration::from_mins(5)),
        deletion: Deletion::None,
    }
}

fn with_phase(mut backup: ObservedBackup, phase: Option<BackupPhase>) -> ObservedBackup {
    backup.phase = phase;
    backup.completed_at = None;
    backup
}

fn condition(status: &ScheduledBackupStatus, type_: ConditionType) -> String {
    crate::crd::conditions::find_condition(&status.conditions, type_)
        .map(|c| format!("{} {}", c.status, c.reason))
        .unwrap_or_default()
}

#[test]
fn five_fields_are_required() {
    assert!(parse_schedule("0 3 * * *").is_ok());
    assert!(parse_schedule("*/5 * * * *").is_ok());
    assert!(parse_schedule("0 0 3 * * *").is_err(), "six fields");
    assert!(parse_schedule("0 3 * *").is_err());
    assert!(parse_schedule("61 3 * * *").is_err());
}

#[test]
fn backups_are_named_from_their_scheduled_time() {
    assert_eq!(
        backup_name("nightly", at("2026-12-06T03:00:00Z")),
        "nightly-202612060300"
    );
}

#[test]
fn nothing_is_due_before_the_first_scheduled_time() {
    let plan = plan_schedule(
        &schedule("0 3 * * *"),
        None,
        &[],
        at("2026-12-01T02:59:00Z"),
    );
    assert_eq!(plan.create, None);
    assert_eq!(
        plan.status.next_schedule_time,
        Some(Time(at("2026-12-01T03:00:00Z")))
    );
    assert_eq!(plan.requeue_after, Duration::from_secs(60));
    assert_eq!(
        condition(&plan.status, ConditionType::Scheduled),
        "True ScheduleActive"
    );
}

#[test]
fn the_latest_due_time_is_taken_once() {
    let s = schedule("0 3 * * *");
    // Three days missed: only the latest is taken.
    let plan = plan_schedule(&s, None, &[], at("2026-12-04T03:00:10Z"));
    let Some((name, when)) = plan.create.clone() else {
        panic!("no Backup planned")
    };
    assert_eq!(name, "nightly-202612040300");
    assert_eq!(when, at("2026-12-04T03:00:00Z"));
    assert_eq!(plan.status.last_schedule_time, Some(Time(when)));
    assert_eq!(
        plan.status.next_schedule_time,
        Some(Time(at("2026-12-05T03:00:00Z")))
    );

    // Created, status written: nothing more is due.
    let mut taken = s.clone();
    taken.status = Some(plan.status.clone());
    let created = with_phase(completed(4), Some(BackupPhase::Running));
    let again = plan_schedule(
        &taken,
        None,
        std::slice::from_ref(&created),
        at("2026-12-04T03:01:00Z"),
    );
    assert_eq!(again.create, None);

    // The status write was lost: the Backup of that name exists, none is made again.
    let lost = plan_schedule(&s, None, &[created], at("2026-12-04T03:01:00Z"));
    assert_eq!(lost.create, None);
    assert_eq!(lost.status.last_schedule_time, Some(Time(when)));
}

#[test]
fn a_suspended_schedule_creates_nothing_and_has_no_next_time() {
    let mut s = schedule("0 3 * * *");
    s.spec.suspend = true;
    let plan = plan_schedule(&s, None, &[], at("2026-12-04T03:00:10Z"));
    assert_eq!(plan.create, None);
    assert_eq!(plan.status.next_schedule_time, None);
    assert_eq!(
        condition(&plan.status, ConditionType::Scheduled),
        "False Suspended"
    );
}

#[test]
fn an_invalid_schedule_or_a_too_long_name_is_reported() {
    let plan = plan_schedule(
        &schedule("0 25 * * *"),
        None,
        &[],
        at("2026-12-04T03:00:10Z"),
    );
    assert_eq!(plan.create, None);
    assert_eq!(
        condition(&plan.status, ConditionType::Scheduled),
        "False ScheduleInvalid"
    );
    let mut long = schedule("0 3 * * *");
    long.metadata.name = Some("n".repeat(MAX_NAME_LEN + 1));
    let plan = plan_schedule(&long, None, &[], at("2026-12-04T03:00:10Z"));
    assert_eq!(plan.create, None);
    assert_eq!(
        condition(&plan.status, ConditionType::Scheduled),
        "False ScheduleInvalid"
    );
}

#[test]
fn without_retention_nothing_expires() {
    let backups: Vec<ObservedBackup> = (1..=5).map(completed).collect();
    let plan = plan_schedule(
        &schedule("0 3 * * *"),
        None,
        &backups,
        at("2026-12-30T00:00:00Z"),
    );
    assert_eq!(plan.expire, Vec::new());
}

#[test]
fn the_clusters_retention_applies_when_the_schedule_sets_none_and_its_own_wins() {
    let backups: Vec<ObservedBackup> = (1..=5).map(completed).collect();
    let cluster_keeps_four = Retention {
        keep: Some(4),
        max_age: None,
    };
    let now = at("2026-12-05T04:00:00Z");
    let plan = plan_schedule(
        &schedule("0 3 * * *"),
        Some(&cluster_keeps_four),
        &backups,
        now,
    );
    assert_eq!(
        plan.expire,
        [Expiry::DeleteData("nightly-202612010300".to_owned())]
    );
    let own = plan_schedule(
        &retained(Some(5), None),
        Some(&cluster_keeps_four),
        &backups,
        now,
    );
    assert_eq!(own.expire, Vec::new());
}

#[test]
fn keep_keeps_the_newest_completed_backups() {
    let backups: Vec<ObservedBackup> = (1..=5).map(completed).collect();
    let plan = plan_schedule(
        &retained(Some(2), None),
        None,
        &backups,
        at("2026-12-05T04:00:00Z"),
    );
    assert_eq!(
        plan.expire,
        [
            Expiry::DeleteData("nightly-202612030300".to_owned()),
            Expiry::DeleteData("nightly-202612020300".to_owned()),
            Expiry::DeleteData("nightly-202612010300".to_owned()),
        ]
    );
    assert_eq!(plan.requeue_after, RETENTION_WAIT);
}

#[test]
fn max_age_deletes_old_backups_but_never_the_newest_completed() {
    let backups: Vec<ObservedBackup> = (1..=3).map(completed).collect();
    let plan = plan_schedule(
        &retained(None, Some("48h")),
        None,
        &backups,
        at("2026-12-04T02:00:00Z"),
    );
    assert_eq!(
        plan.expire,
        [Expiry::DeleteData("nightly-202612010300".to_owned())]
    );
    // Long after the last success: the newest stays.
    let plan = plan_schedule(
        &retained(None, Some("48h")),
        None,
        &backups,
        at("2027-01-30T00:00:00Z"),
    );
    assert_eq!(plan.expire.len(), 2);
    assert!(
        !plan
            .expire
            .contains(&Expiry::DeleteData("nightly-202612030300".to_owned()))
    );
}

#[test]
fn failed_backups_expire_once_a_newer_one_completed_and_running_ones_never() {
    let backups = vec![
        with_phase(completed(1), Some(BackupPhase::Failed)),
        completed(2),
        with_phase(completed(3), Some(BackupPhase::Failed)),
        with_phase(completed(4), Some(BackupPhase::Running)),
    ];
    let plan = plan_schedule(
        &retained(Some(1), None),
        None,
        &backups,
        at("2026-12-04T03:30:00Z"),
    );
    assert_eq!(
        plan.expire,
        [Expiry::DeleteData("nightly-202612010300".to_owned())]
    );
    assert_eq!(
        plan.status.last_successful_time,
        Some(Time(at("2026-12-02T03:05:00Z")))
    );
}

#[test]
fn a_deletion_runs_to_its_end_and_a_failed_one_degrades_the_schedule() {
    let mut deleted = completed(1);
    deleted.deletion = Deletion::Succeeded;
    let mut broken = completed(2);
    broken.deletion = Deletion::Failed("access denied".to_owned());
    let mut running = completed(3);
    running.deletion = Deletion::Running;
    // No retention any more: deletions that started still finish.
    let plan = plan_schedule(
        &schedule("0 3 * * *"),
        None,
        &[deleted, broken, running, completed(4)],
        at("2026-12-04T04:00:00Z"),
    );
    assert_eq!(
        plan.expire,
        [
            Expiry::Failed {
                backup: "nightly-202612020300".to_owned(),
                message: "access denied".to_owned()
            },
            Expiry::DeleteObject("nightly-202612010300".to_owned()),
        ]
    );
    assert_eq!(
        condition(&plan.status, ConditionType::Degraded),
        "True RetentionFailed"
    );
    assert_eq!(plan.requeue_after, RETENTION_WAIT);
}
