//! A Cluster made from backups, through the controllers against the fake API: the restore
//! Job starts once the cluster is Ready and only once, the DatabaseGroup waits for it without
//! touching the cluster and then takes the restored database, and a lost status never starts
//! a restore again.

use super::*;
use crate::crd::conditions::find_condition;
use crate::crd::{BootstrapSpec, ConditionType, RecoveryBackup, RecoveryPhase, RecoverySpec};
use k8s_openapi::api::batch::v1::{Job, JobStatus};

const JOB: &str = "flotilla-restore-orders";

fn recovering_cluster() -> Cluster {
    let mut cluster = Cluster::test().with_cluster_id("c-1");
    cluster.spec.bootstrap = Some(BootstrapSpec {
        recovery: Some(RecoverySpec {
            backups: vec![RecoveryBackup {
                url: "s3://backups/flotilla/db-nightly".to_owned(),
                database: "orders".to_owned(),
            }],
            ..RecoverySpec::default()
        }),
    });
    cluster
}

impl Harness {
    /// The cluster holds `databases` (one shard each).
    fn hold_databases(&self, databases: &[&str]) {
        self.admin.edit_membership(|m| {
            m.databases = databases.iter().map(|d| ((*d).to_owned(), 1)).collect();
            m.groups.retain(|g| g.id == META_GROUP);
        });
    }

    fn job_writes(&self) -> Vec<String> {
        self.api
            .writes()
            .into_iter()
            .filter(|w| w.contains("/jobs"))
            .collect()
    }

    fn recovery_phase(&self) -> Option<RecoveryPhase> {
        self.cluster().status?.recovery.map(|r| r.phase)
    }

    fn group_reason(&self) -> String {
        let status = self.group().status.unwrap_or_default();
        find_condition(&status.conditions, ConditionType::Ready)
            .map(|c| format!("{} {}", c.status, c.reason))
            .unwrap_or_default()
    }
}

#[tokio::test]
async fn a_cluster_from_backups_restores_once_and_its_group_waits_then_takes_the_database() {
    let h = Harness::new();
    h.api.put(&recovering_cluster());
    h.admin.set_membership(Some(membership(3)));
    h.hold_databases(&[]);
    h.api.put(&DatabaseGroup::test());

    // Not Ready yet (no pod runs): nothing starts, the group waits without a call.
    ok(h.reconcile_cluster().await);
    assert!(h.api.get::<Job>(NS, JOB).is_none());
    assert_eq!(h.recovery_phase(), Some(RecoveryPhase::Pending));
    ok(h.reconcile_group().await);
    assert_eq!(h.group_reason(), "False WaitingForRecovery");
    assert_eq!(h.admin.calls(), Vec::<String>::new(), "no database created");

    // Ready: the restore Job starts, once.
    h.run_pods(3, "r1");
    ok(h.reconcile_cluster().await);
    let job = h.api.get::<Job>(NS, JOB);
    assert!(job.is_some(), "the restore Job is created");
    assert_eq!(h.recovery_phase(), Some(RecoveryPhase::Restoring));
    h.api.clear_requests();
    ok(h.reconcile_cluster().await);
    assert_eq!(h.job_writes(), Vec::<String>::new(), "no second Job");
    ok(h.reconcile_group().await);
    assert_eq!(h.group_reason(), "False WaitingForRecovery");

    // The Job succeeds and the database is there: the recovery completes.
    let mut job = job.unwrap_or_default();
    job.status = Some(JobStatus {
        succeeded: Some(1),
        ..JobStatus::default()
    });
    h.api.put(&job);
    h.hold_databases(&["orders"]);
    ok(h.reconcile_cluster().await);
    assert_eq!(h.recovery_phase(), Some(RecoveryPhase::Completed));
    let status = h.cluster().status.unwrap_or_default();
    let recovered = find_condition(&status.conditions, ConditionType::Recovered)
        .map(|c| (c.status.clone(), c.reason.clone()));
    assert_eq!(
        recovered,
        Some(("True".to_owned(), "RecoveryCompleted".to_owned()))
    );
    let reasons: Vec<String> = h
        .events()
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(reasons.iter().any(|r| r == "Recovering"), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r == "RecoveryCompleted"),
        "{reasons:?}"
    );

    // The group takes the restored database (it exists in the cluster) as its own.
    h.admin.lock().databases.insert(
        "orders".to_owned(),
        DatabaseRequest {
            name: "orders".to_owned(),
            replication_factor: 1,
            shards: 4,
            pods: Vec::new(),
            node_labels: BTreeMap::new(),
            replace_after: None,
            may_exist: false,
        },
    );
    ok(h.reconcile_group().await);
    assert_eq!(h.group_reason(), "True AllMembersReady");
    assert_eq!(
        h.group().status.and_then(|s| s.created_by_operator),
        Some(true)
    );

    // The status lost and the Job gone: nothing is restored again.
    let mut cluster = h.cluster();
    if let Some(status) = cluster.status.as_mut() {
        status.recovery = None;
    }
    h.api.put(&cluster);
    h.api.remove::<Job>(NS, JOB);
    h.api.clear_requests();
    ok(h.reconcile_cluster().await);
    assert_eq!(h.job_writes(), Vec::<String>::new());
    assert_eq!(h.recovery_phase(), Some(RecoveryPhase::Completed));
}

#[tokio::test]
async fn a_cluster_holding_other_databases_is_refused_and_restores_nothing() {
    let h = Harness::new();
    h.api.put(&recovering_cluster());
    h.admin.set_membership(Some(membership(3)));
    h.hold_databases(&["inventory"]);
    ok(h.reconcile_cluster().await);
    h.run_pods(3, "r1");
    ok(h.reconcile_cluster().await);
    assert!(h.api.get::<Job>(NS, JOB).is_none());
    assert_eq!(h.recovery_phase(), Some(RecoveryPhase::Failed));
    let status = h.cluster().status.unwrap_or_default();
    let reason =
        find_condition(&status.conditions, ConditionType::Recovered).map(|c| c.reason.clone());
    assert_eq!(reason.as_deref(), Some("RecoveryRefused"));
}
