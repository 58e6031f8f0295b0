//! A ScheduledBackup creates a Backup at each scheduled time (at a fake clock), never two
//! for one time, and deletes expired Backups only after a Job deleted their data.

use super::*;
use crate::controllers::scheduled_backup;
use crate::crd::backup::{Backup, BackupPhase, BackupStatus, SecretRef};
use crate::crd::database_group::ClusterRef;
use crate::crd::{Retention, ScheduledBackup, ScheduledBackupSpec};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

fn at(text: &str) -> Timestamp {
    match text.parse() {
        Ok(ts) => ts,
        Err(e) => panic!("{text}: {e}"),
    }
}

fn every_five_minutes(keep: i32) -> ScheduledBackup {
    let mut schedule = ScheduledBackup::new(
        "nightly",
        ScheduledBackupSpec {
            cluster_ref: ClusterRef {
                name: "flotilla".to_owned(),
            },
            database: "orders".to_owned(),
            schedule: "*/5 * * * *".to_owned(),
            target: crate::crd::BackupDestination {
                destination: Some("s3://backups/flotilla".to_owned()),
                env_from_secret: Some(SecretRef {
                    name: "s3".to_owned(),
                }),
                volume_claim: None,
            },
            retention: Some(Retention {
                keep: Some(keep),
                max_age: None,
            }),
            suspend: false,
            max_rate_mib_per_second: Some(24),
        },
    );
    schedule.metadata.namespace = Some(NS.to_owned());
    schedule.metadata.creation_timestamp = Some(Time(at("2026-12-01T00:00:30Z")));
    schedule
}

impl Harness {
    async fn reconcile_schedule_at(&self, now: &str) -> ScheduledBackup {
        let stored: ScheduledBackup = self
            .api
            .get(NS, "nightly")
            .unwrap_or_else(|| panic!("no ScheduledBackup nightly"));
        if let Err(e) = scheduled_backup::reconcile_at(&stored, &self.ctx, at(now)).await {
            panic!("reconciling the schedule at {now}: {e}");
        }
        self.api
            .get(NS, "nightly")
            .unwrap_or_else(|| panic!("no ScheduledBackup nightly"))
    }

    async fn backup_names(&self) -> Vec<String> {
        let backups = kube::Api::<Backup>::namespaced(self.ctx.client.clone(), NS);
        let mut names: Vec<String> = match backups.list(&Default::default()).await {
            Ok(list) => list.items.into_iter().map(|b| b.name_any()).collect(),
            Err(e) => panic!("listing Backups: {e}"),
        };
        names.sort();
        names
    }

    /// Stands in for the Backup controller and its Job: the Backup completed.
    fn complete_backup(&self, name: &str) {
        let mut backup: Backup = self
            .api
            .get(NS, name)
            .unwrap_or_else(|| panic!("no Backup {name}"));
        backup.status = Some(BackupStatus {
            phase: Some(BackupPhase::Completed),
            completed_at: Some(Time(Timestamp::UNIX_EPOCH)),
            ..BackupStatus::default()
        });
        self.api.put(&backup);
    }

    fn finish_job(&self, name: &str, status: JobStatus) {
        let mut job: Job = self
            .api
            .get(NS, name)
            .unwrap_or_else(|| panic!("no Job {name}"));
        job.status = Some(status);
        self.api.put(&job);
    }
}

#[tokio::test]
async fn backups_are_created_on_schedule_and_expired_ones_deleted_with_their_data() {
    let h = Harness::new();
    h.api.put(&Cluster::test());
    h.api.put(&every_five_minutes(2));

    let schedule = h.reconcile_schedule_at("2026-12-01T00:01:00Z").await;
    assert_eq!(h.backup_names().await, Vec::<String>::new());
    let status = schedule.status.unwrap_or_default();
    assert_eq!(
        status.next_schedule_time,
        Some(Time(at("2026-12-01T00:05:00Z")))
    );

    for minute in ["05", "10", "15"] {
        let now = format!("2026-12-01T00:{minute}:10Z");
        h.reconcile_schedule_at(&now).await;
        // A second pass at the same time creates nothing more.
        h.reconcile_schedule_at(&now).await;
        let name = format!("nightly-2026120100{minute}");
        let backup: Backup = h
            .api
            .get(NS, &name)
            .unwrap_or_else(|| panic!("no Backup {name}"));
        assert_eq!(backup.spec.database, "orders");
        assert_eq!(backup.spec.max_rate_mib_per_second, Some(24));
        assert_eq!(
            backup
                .labels()
                .get("flotilla.dev/scheduled-backup")
                .map(String::as_str),
            Some("nightly")
        );
        h.complete_backup(&name);
    }
    assert_eq!(h.backup_names().await.len(), 3);

    // Three completed, two kept: the oldest's data is deleted by a Job first.
    let schedule = h.reconcile_schedule_at("2026-12-01T00:16:00Z").await;
    let status = schedule.status.unwrap_or_default();
    assert_eq!(
        status.last_schedule_time,
        Some(Time(at("2026-12-01T00:15:00Z")))
    );
    assert!(status.last_successful_time.is_some());
    let job: Job = h
        .api
        .get(NS, "nightly-202612010005-del")
        .unwrap_or_else(|| panic!("no deletion Job"));
    let args = job
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].args.clone().unwrap_or_default())
        .unwrap_or_default();
    assert_eq!(
        args.join(" "),
        "backup delete s3://backups/flotilla/db-nightly-202612010005 --missing-ok"
    );
    assert_eq!(
        h.backup_names().await.len(),
        3,
        "kept until its data is gone"
    );

    h.finish_job(
        "nightly-202612010005-del",
        JobStatus {
            succeeded: Some(1),
            ..JobStatus::default()
        },
    );
    h.reconcile_schedule_at("2026-12-01T00:16:10Z").await;
    assert_eq!(
        h.backup_names().await,
        ["nightly-202612010010", "nightly-202612010015"]
    );
    let reasons: Vec<String> = h
        .events()
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    // Events of one reason make one series.
    assert!(reasons.contains(&"BackupExpired".to_owned()), "{reasons:?}");
    assert!(
        reasons.contains(&"BackupScheduled".to_owned()),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_failed_data_deletion_keeps_the_backup_and_degrades_the_schedule() {
    let h = Harness::new();
    h.api.put(&Cluster::test());
    h.api.put(&every_five_minutes(1));
    for minute in ["05", "10"] {
        h.reconcile_schedule_at(&format!("2026-12-01T00:{minute}:10Z"))
            .await;
        h.complete_backup(&format!("nightly-2026120100{minute}"));
    }
    h.reconcile_schedule_at("2026-12-01T00:11:00Z").await;
    h.finish_job(
        "nightly-202612010005-del",
        JobStatus {
            conditions: Some(vec![JobCondition {
                type_: "Failed".to_owned(),
                status: "True".to_owned(),
                message: Some("Job has reached the specified backoff limit".to_owned()),
                ..JobCondition::default()
            }]),
            ..JobStatus::default()
        },
    );
    let schedule = h.reconcile_schedule_at("2026-12-01T00:12:00Z").await;
    assert_eq!(h.backup_names().await.len(), 2);
    let degraded = schedule
        .status
        .unwrap_or_default()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Degraded")
        .map(|c| (c.status, c.reason));
    assert_eq!(
        degraded,
        Some(("True".to_owned(), "RetentionFailed".to_owned()))
    );
    let warnings: Vec<String> = h
        .events()
        .await
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter_map(|e| e.reason)
        .collect();
    assert_eq!(warnings, ["RetentionFailed"]);
}
