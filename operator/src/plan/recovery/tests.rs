//! When restore Jobs start, when a recovery is done, how failures and lost statuses are
//! taken, and when a DatabaseGroup may touch its database.

use super::*;
use crate::crd::recovery::{BootstrapSpec, RecoveryBackup};
use k8s_openapi::jiff::Timestamp;

fn now() -> Time {
    Time(Timestamp::UNIX_EPOCH)
}

fn spec() -> RecoverySpec {
    RecoverySpec {
        backups: ["orders", "users"]
            .into_iter()
            .map(|db| RecoveryBackup {
                url: format!("file:///backup/{db}-nightly"),
                database: db.to_owned(),
            })
            .collect(),
        ..RecoverySpec::default()
    }
}

/// A ready cluster holding `databases` (one shard each), with `jobs`.
fn observed(databases: &[&str], jobs: &[(&str, JobOutcome)]) -> RecoveryObservation {
    RecoveryObservation {
        cluster_ready: true,
        databases: Some(databases.iter().map(|d| ((*d).to_owned(), 1)).collect()),
        jobs: jobs
            .iter()
            .map(|(d, o)| ((*d).to_owned(), o.clone()))
            .collect(),
    }
}

fn plan(previous: Option<&RecoveryStatus>, observed: &RecoveryObservation) -> RecoveryPlan {
    plan_recovery("flotilla", &spec(), previous, observed, &now())
}

fn phases(plan: &RecoveryPlan) -> Vec<(&str, RecoveryPhase)> {
    plan.status
        .databases
        .iter()
        .map(|d| (d.database.as_str(), d.phase))
        .collect()
}

fn reasons(plan: &RecoveryPlan) -> Vec<&'static str> {
    plan.events.iter().map(|e| e.reason.as_str()).collect()
}

use JobOutcome::{Failed, Running, Succeeded};
use RecoveryPhase::{Completed, Pending, Restoring};

#[test]
fn nothing_starts_before_the_cluster_is_initialised_and_ready() {
    let mut not_ready = observed(&[], &[]);
    not_ready.cluster_ready = false;
    let plan = plan(None, &not_ready);
    assert!(plan.start.is_empty());
    assert_eq!(plan.status.phase, Pending);
    assert_eq!(
        (plan.condition.status, plan.condition.reason),
        (ConditionStatus::False, Reason::RecoveryPending)
    );
}

#[test]
fn a_ready_new_cluster_starts_one_restore_job_per_database() {
    let plan = plan(None, &observed(&[], &[]));
    assert_eq!(plan.start, vec!["orders", "users"]);
    assert_eq!(plan.status.phase, Restoring);
    assert_eq!(
        plan.status.databases[0].job.as_deref(),
        Some("flotilla-restore-orders")
    );
    assert_eq!(reasons(&plan), vec!["Recovering", "Recovering"]);
    let jobs: Vec<Option<&str>> = plan.events.iter().map(|e| e.job.as_deref()).collect();
    assert_eq!(
        jobs,
        vec![
            Some("flotilla-restore-orders"),
            Some("flotilla-restore-users")
        ],
        "each Job's Events stay apart"
    );
    assert_eq!(plan.condition.reason, Reason::Recovering);
}

#[test]
fn a_running_job_is_not_started_again() {
    let first = plan(None, &observed(&[], &[]));
    let second = plan(
        Some(&first.status),
        &observed(&["orders"], &[("orders", Running), ("users", Running)]),
    );
    assert!(second.start.is_empty());
    assert_eq!(second.status, first.status);
    assert!(second.events.is_empty(), "{:?}", second.events);
}

#[test]
fn succeeded_jobs_complete_their_databases_and_then_the_recovery() {
    let first = plan(None, &observed(&[], &[]));
    let half = plan(
        Some(&first.status),
        &observed(&["orders"], &[("orders", Succeeded), ("users", Running)]),
    );
    assert_eq!(
        phases(&half),
        vec![("orders", Completed), ("users", Restoring)]
    );
    assert_eq!(half.status.phase, Restoring);
    assert_eq!(reasons(&half), vec!["RecoveryCompleted"]);
    let done = plan(
        Some(&half.status),
        &observed(
            &["orders", "users"],
            &[("orders", Succeeded), ("users", Succeeded)],
        ),
    );
    assert_eq!(done.status.phase, Completed);
    assert_eq!(done.status.completed_at, Some(now()));
    assert_eq!(
        (done.condition.status, done.condition.reason),
        (ConditionStatus::True, Reason::RecoveryCompleted)
    );
    assert_eq!(
        reasons(&done),
        vec!["RecoveryCompleted", "RecoveryCompleted"]
    );
}

#[test]
fn a_completed_recovery_is_never_run_again() {
    let done = plan(
        None,
        &observed(
            &["orders", "users"],
            &[("orders", Succeeded), ("users", Succeeded)],
        ),
    );
    assert_eq!(done.status.phase, Completed);
    // Its databases dropped, its Jobs deleted, the cluster not answering: nothing starts.
    for later in [observed(&[], &[]), RecoveryObservation::default()] {
        let again = plan(Some(&done.status), &later);
        assert!(again.start.is_empty());
        assert_eq!(again.status, done.status);
        assert!(again.events.is_empty());
    }
}

#[test]
fn after_a_lost_status_existing_databases_count_as_restored_and_nothing_starts() {
    let plan = plan(None, &observed(&["orders", "users"], &[]));
    assert!(plan.start.is_empty());
    assert_eq!(plan.status.phase, Completed);
    assert!(
        plan.status.databases[0]
            .message
            .clone()
            .unwrap_or_default()
            .contains("exists")
    );
}

#[test]
fn a_job_run_again_failing_on_an_existing_database_is_no_failure() {
    let why = Failed("BackoffLimitExceeded".to_owned());
    let plan = plan(
        None,
        &observed(
            &["orders", "users"],
            &[("orders", why), ("users", Succeeded)],
        ),
    );
    assert_eq!(
        phases(&plan),
        vec![("orders", Completed), ("users", Completed)]
    );
    assert_eq!(plan.status.phase, Completed);
    assert!(!plan.events.iter().any(|e| e.warning), "{:?}", plan.events);
}

#[test]
fn a_restore_seen_failing_fails_even_though_its_database_exists() {
    let first = plan(None, &observed(&[], &[]));
    let failed = plan(
        Some(&first.status),
        &observed(
            &["orders"],
            &[
                ("orders", Failed("BackoffLimitExceeded".to_owned())),
                ("users", Succeeded),
            ],
        ),
    );
    assert_eq!(
        phases(&failed),
        vec![("orders", RecoveryPhase::Failed), ("users", Completed)]
    );
    assert_eq!(failed.status.phase, RecoveryPhase::Failed);
    assert_eq!(failed.condition.reason, Reason::RecoveryFailed);
    let warning = failed.events.iter().find(|e| e.warning);
    assert!(
        warning.is_some_and(|e| e.note.contains("flotilla-restore-orders")),
        "{:?}",
        failed.events
    );
    // Still failed on the next pass, with nothing started.
    let again = plan(
        Some(&failed.status),
        &observed(&["orders", "users"], &[("orders", Failed("x".to_owned()))]),
    );
    assert!(again.start.is_empty());
    assert_eq!(again.status.phase, RecoveryPhase::Failed);
}

#[test]
fn a_job_gone_mid_restore_with_its_database_there_is_a_failure() {
    let first = plan(None, &observed(&[], &[]));
    let gone = plan(
        Some(&first.status),
        &observed(&["orders"], &[("users", Running)]),
    );
    assert_eq!(phases(&gone)[0], ("orders", RecoveryPhase::Failed));
    assert!(gone.start.is_empty());
}

#[test]
fn a_failed_database_is_tried_again_once_its_job_and_database_are_gone() {
    let first = plan(None, &observed(&[], &[]));
    let failed = plan(
        Some(&first.status),
        &observed(
            &["orders", "users"],
            &[("orders", Failed("x".to_owned())), ("users", Succeeded)],
        ),
    );
    let retried = plan(
        Some(&failed.status),
        &observed(&["users"], &[("users", Succeeded)]),
    );
    assert_eq!(retried.start, vec!["orders"]);
    assert_eq!(retried.status.phase, Restoring);
}

#[test]
fn a_cluster_holding_databases_it_does_not_restore_is_refused() {
    let plan = plan(None, &observed(&["inventory"], &[]));
    assert!(plan.start.is_empty());
    assert_eq!(plan.status.phase, RecoveryPhase::Failed);
    assert_eq!(plan.condition.reason, Reason::RecoveryRefused);
    assert!(
        plan.status
            .message
            .clone()
            .unwrap_or_default()
            .contains("inventory")
    );
    assert_eq!(reasons(&plan), vec!["RecoveryRefused"]);
}

#[test]
fn other_databases_made_once_restores_started_do_not_refuse() {
    let first = plan(None, &observed(&[], &[]));
    let later = plan(
        Some(&first.status),
        &observed(
            &["inventory", "orders"],
            &[("orders", Succeeded), ("users", Running)],
        ),
    );
    assert_eq!(later.status.phase, Restoring);
    assert_eq!(later.condition.reason, Reason::Recovering);
}

#[test]
fn an_unanswering_cluster_keeps_the_status_and_starts_nothing() {
    let first = plan(None, &observed(&[], &[]));
    let unknown = RecoveryObservation {
        cluster_ready: true,
        ..RecoveryObservation::default()
    };
    let plan = plan(Some(&first.status), &unknown);
    assert!(plan.start.is_empty());
    assert_eq!(plan.status.databases, first.status.databases);
    assert_eq!(plan.status.phase, Restoring);
}

fn recovering_cluster(status: Option<RecoveryStatus>) -> Cluster {
    let mut cluster = Cluster::test();
    cluster.spec.bootstrap = Some(BootstrapSpec {
        recovery: Some(spec()),
    });
    cluster.status_mut().recovery = status;
    cluster
}

#[test]
fn a_database_group_waits_for_the_restore_of_its_database() {
    let waiting = recovering_cluster(None);
    assert!(matches!(
        recovery_gate(&waiting, "orders"),
        RecoveryGate::Wait(why) if why.contains("restores database orders")
    ));
    let half = plan(
        None,
        &observed(&["orders"], &[("orders", Succeeded), ("users", Running)]),
    );
    let cluster = recovering_cluster(Some(half.status));
    assert_eq!(
        recovery_gate(&cluster, "orders"),
        RecoveryGate::Proceed { recovered: true }
    );
    assert!(matches!(
        recovery_gate(&cluster, "users"),
        RecoveryGate::Wait(_)
    ));
    // A database the recovery does not name waits until the recovery is over.
    assert!(matches!(
        recovery_gate(&cluster, "inventory"),
        RecoveryGate::Wait(_)
    ));
}

#[test]
fn a_failed_restore_keeps_its_group_waiting_while_other_groups_go_ahead() {
    let first = plan(None, &observed(&[], &[]));
    let failed = plan(
        Some(&first.status),
        &observed(
            &[],
            &[("orders", Failed("x".to_owned())), ("users", Succeeded)],
        ),
    );
    let cluster = recovering_cluster(Some(failed.status));
    assert!(matches!(
        recovery_gate(&cluster, "orders"),
        RecoveryGate::Wait(why) if why.contains("failed")
    ));
    assert_eq!(
        recovery_gate(&cluster, "inventory"),
        RecoveryGate::Proceed { recovered: false }
    );
}

#[test]
fn without_a_recovery_every_group_goes_ahead() {
    assert_eq!(
        recovery_gate(&Cluster::test(), "orders"),
        RecoveryGate::Proceed { recovered: false }
    );
}
