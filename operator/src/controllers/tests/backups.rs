//! A Backup runs as one Job against its Cluster and its status follows the Job to the end;
//! a Backup of a missing or paused Cluster waits and says why.

use super::*;
use crate::controllers::backup;
use crate::crd::backup::{Backup, BackupPhase};
use crate::plugin::{BackupRequest, backup_object};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;

fn request(cluster: &str) -> BackupRequest {
    BackupRequest {
        cluster: cluster.to_owned(),
        database: "orders".to_owned(),
        destination: Some("s3://backups/flotilla".to_owned()),
        env_from_secret: Some("s3".to_owned()),
        volume_claim: None,
        max_rate_mib_per_second: None,
        name: Some("nightly".to_owned()),
    }
}

impl Harness {
    async fn create_backup(&self, request: &BackupRequest) -> kube::Result<Backup> {
        let backup = backup_object(request, NS, Timestamp::UNIX_EPOCH);
        Api::<Backup>::namespaced(self.ctx.client.clone(), NS)
            .create(&PostParams::default(), &backup)
            .await
    }

    async fn reconcile_backup(&self) -> Backup {
        let stored: Backup = self
            .api
            .get(NS, "nightly")
            .unwrap_or_else(|| panic!("no Backup nightly"));
        if let Err(e) = backup::reconcile(Arc::new(stored), self.ctx.clone()).await {
            panic!("reconciling the backup: {e}");
        }
        self.api
            .get(NS, "nightly")
            .unwrap_or_else(|| panic!("no Backup nightly"))
    }

    fn set_job_status(&self, status: JobStatus) {
        let mut job: Job = self
            .api
            .get(NS, "nightly")
            .unwrap_or_else(|| panic!("no Job nightly"));
        job.status = Some(status);
        self.api.put(&job);
    }
}

fn phase(backup: &Backup) -> Option<BackupPhase> {
    backup.status.as_ref().and_then(|s| s.phase)
}

#[tokio::test]
async fn a_backup_runs_as_one_job_and_completes_with_its_url() {
    let h = Harness::new();
    h.api.put(&Cluster::test());
    h.create_backup(&request("flotilla"))
        .await
        .unwrap_or_else(|e| panic!("creating the Backup: {e}"));
    let pending = h.reconcile_backup().await;
    assert_eq!(phase(&pending), Some(BackupPhase::Pending));
    let job: Job = h.api.get(NS, "nightly").unwrap_or_else(|| panic!("no Job"));
    let args = job
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].args.clone().unwrap_or_default())
        .unwrap_or_default();
    assert!(args.contains(&"db-nightly".to_owned()), "{args:?}");

    h.set_job_status(JobStatus {
        active: Some(1),
        ..JobStatus::default()
    });
    assert_eq!(
        phase(&h.reconcile_backup().await),
        Some(BackupPhase::Running)
    );
    h.set_job_status(JobStatus {
        succeeded: Some(1),
        ..JobStatus::default()
    });
    let done = h.reconcile_backup().await;
    let status = done.status.clone().unwrap_or_default();
    assert_eq!(status.phase, Some(BackupPhase::Completed));
    assert_eq!(
        status.url.as_deref(),
        Some("s3://backups/flotilla/db-nightly")
    );
    let reasons: Vec<String> = h
        .events()
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        reasons.contains(&"BackupStarted".to_owned())
            && reasons.contains(&"BackupCompleted".to_owned()),
        "{reasons:?}"
    );
    // Done is done: a later reconcile (the Job gone) changes nothing.
    h.api.remove::<Job>(NS, "nightly");
    assert_eq!(h.reconcile_backup().await.status, done.status);
    assert!(h.api.get::<Job>(NS, "nightly").is_none(), "no second Job");
}

#[tokio::test]
async fn a_failed_job_fails_the_backup_without_a_retry() {
    let h = Harness::new();
    h.api.put(&Cluster::test());
    h.create_backup(&request("flotilla"))
        .await
        .unwrap_or_else(|e| panic!("creating the Backup: {e}"));
    h.reconcile_backup().await;
    h.set_job_status(JobStatus {
        failed: Some(1),
        conditions: Some(vec![JobCondition {
            type_: "Failed".to_owned(),
            status: "True".to_owned(),
            reason: Some("BackoffLimitExceeded".to_owned()),
            ..JobCondition::default()
        }]),
        ..JobStatus::default()
    });
    let failed = h.reconcile_backup().await;
    assert_eq!(phase(&failed), Some(BackupPhase::Failed));
    let reasons: Vec<String> = h
        .events()
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(reasons.contains(&"BackupFailed".to_owned()), "{reasons:?}");
}

#[tokio::test]
async fn a_backup_of_a_missing_or_paused_cluster_waits_without_a_job() {
    let h = Harness::new();
    h.create_backup(&request("flotilla"))
        .await
        .unwrap_or_else(|e| panic!("creating the Backup: {e}"));
    let waiting = h.reconcile_backup().await;
    assert_eq!(phase(&waiting), Some(BackupPhase::Pending));
    assert!(h.api.get::<Job>(NS, "nightly").is_none());
    h.api.put(&Cluster::test().paused());
    let paused = h.reconcile_backup().await;
    let message = paused.status.and_then(|s| s.message).unwrap_or_default();
    assert!(message.contains("paused"), "{message}");
    assert!(h.api.get::<Job>(NS, "nightly").is_none());
}

#[tokio::test]
async fn the_api_refuses_a_backup_to_an_unknown_scheme_and_any_change_of_its_spec() {
    let h = Harness::new();
    let mut bad = request("flotilla");
    bad.destination = Some("ftp://host/dir".to_owned());
    let refused = h.create_backup(&bad).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.message.contains("s3:// or file:///")),
        "{refused:?}"
    );
    let created = h
        .create_backup(&request("flotilla"))
        .await
        .unwrap_or_else(|e| panic!("creating the Backup: {e}"));
    let mut changed = created.clone();
    changed.spec.database = "other".to_owned();
    let replaced = Api::<Backup>::namespaced(h.ctx.client.clone(), NS)
        .replace("nightly", &PostParams::default(), &changed)
        .await;
    assert!(
        matches!(&replaced, Err(kube::Error::Api(s)) if s.message.contains("immutable")),
        "{replaced:?}"
    );
}

#[tokio::test]
async fn a_backup_naming_no_destination_waits_for_one_and_then_takes_its_clusters() {
    let h = Harness::new();
    h.api.put(&Cluster::test());
    let mut nowhere = request("flotilla");
    nowhere.destination = None;
    nowhere.env_from_secret = None;
    h.create_backup(&nowhere)
        .await
        .unwrap_or_else(|e| panic!("creating the Backup: {e}"));
    let waiting = h.reconcile_backup().await;
    assert_eq!(phase(&waiting), Some(BackupPhase::Pending));
    let reason = waiting
        .status
        .as_ref()
        .and_then(|s| s.conditions.first())
        .map(|c| c.reason.clone());
    assert_eq!(reason.as_deref(), Some("NoBackupDestination"));
    assert!(h.api.get::<Job>(NS, "nightly").is_none());

    let mut cluster = Cluster::test();
    cluster.spec.backup = Some(crate::crd::ClusterBackupSpec {
        target: crate::crd::BackupDestination::to("s3://cluster-default/flotilla"),
        retention: None,
        max_rate_mib_per_second: None,
    });
    h.api.put(&cluster);
    let started = h.reconcile_backup().await;
    let url = started.status.and_then(|s| s.url);
    assert_eq!(
        url.as_deref(),
        Some("s3://cluster-default/flotilla/db-nightly")
    );
    assert!(h.api.get::<Job>(NS, "nightly").is_some());
}
