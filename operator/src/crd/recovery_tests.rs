//! CEL rules of `spec.backup`, `spec.bootstrap` and the now optional destination of Backups
//! and ScheduledBackups, evaluated offline.

use super::validation::validate_cel;
use super::*;
use kube::CustomResourceExt;
use serde_json::{Value, json};

fn object(kind: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "db"},
        "spec": spec,
    })
}

fn check_cluster(new: Value, old: Option<Value>) -> Result<(), String> {
    let old = old.map(|o| object("Cluster", o));
    validate_cel(&Cluster::crd(), &object("Cluster", new), old.as_ref()).map_err(|e| e.to_string())
}

fn rejected_with(result: Result<(), String>, needle: &str) {
    match result {
        Ok(()) => panic!("accepted, expected a rejection mentioning {needle:?}"),
        Err(message) => assert!(message.contains(needle), "{message}"),
    }
}

fn base() -> Value {
    json!({"replicas": 3, "image": "flotilla/flotilla-node:0.1.0"})
}

fn recovering(recovery: Value) -> Value {
    let mut spec = base();
    spec["bootstrap"] = json!({ "recovery": recovery });
    spec
}

fn one_backup() -> Value {
    json!({"backups": [{"url": "file:///backup/db-nightly", "database": "orders"}]})
}

#[test]
fn a_cluster_created_from_backups_is_accepted_and_may_be_updated_otherwise() {
    let spec = recovering(json!({
        "backups": [
            {"url": "s3://bucket/flotilla/db-nightly", "database": "orders"},
            {"url": "file:///backup/db-users", "database": "users"},
        ],
        "until": "2026-12-01T03:00:00Z",
        "envFromSecret": {"name": "admin"},
        "volumeClaim": "backups",
    }));
    assert_eq!(check_cluster(spec.clone(), None), Ok(()));
    let mut grown = spec.clone();
    grown["replicas"] = json!(5);
    assert_eq!(check_cluster(grown, Some(spec)), Ok(()));
}

#[test]
fn bootstrap_can_be_neither_added_changed_nor_removed() {
    let spec = recovering(one_backup());
    rejected_with(
        check_cluster(spec.clone(), Some(base())),
        "bootstrap is immutable",
    );
    rejected_with(
        check_cluster(base(), Some(spec.clone())),
        "bootstrap is immutable",
    );
    let other =
        recovering(json!({"backups": [{"url": "file:///backup/other", "database": "orders"}]}));
    rejected_with(check_cluster(other, Some(spec)), "bootstrap is immutable");
}

#[test]
fn until_must_be_an_rfc3339_time() {
    let mut recovery = one_backup();
    recovery["until"] = json!("yesterday");
    rejected_with(
        check_cluster(recovering(recovery), None),
        "until must be an RFC 3339 time",
    );
}

#[test]
fn each_database_is_recovered_from_one_backup_and_urls_are_s3_or_file() {
    let twice = json!({"backups": [
        {"url": "file:///backup/a", "database": "orders"},
        {"url": "file:///backup/b", "database": "orders"},
    ]});
    rejected_with(
        check_cluster(recovering(twice), None),
        "each database is recovered from one backup only",
    );
    let http = json!({"backups": [{"url": "http://example.com/b", "database": "orders"}]});
    rejected_with(
        check_cluster(recovering(http), None),
        "url must be an s3:// or file:/// URL",
    );
}

#[test]
fn the_clusters_backup_defaults_need_a_destination() {
    let mut spec = base();
    spec["backup"] = json!({"retention": {"keep": 7}});
    rejected_with(
        check_cluster(spec.clone(), None),
        "backup needs a destination",
    );
    spec["backup"] = json!({
        "destination": "s3://bucket/flotilla",
        "envFromSecret": {"name": "s3"},
        "retention": {"keep": 7, "maxAge": "720h"},
    });
    assert_eq!(check_cluster(spec.clone(), None), Ok(()));
    spec["backup"]["destination"] = json!("ftp://host/x");
    rejected_with(
        check_cluster(spec, None),
        "destination must be an s3:// or file:/// URL",
    );
}

#[test]
fn a_backup_and_a_schedule_may_leave_the_destination_to_their_cluster() {
    let backup = json!({"clusterRef": {"name": "db"}, "database": "orders"});
    assert_eq!(
        validate_cel(&Backup::crd(), &object("Backup", backup.clone()), None)
            .map_err(|e| e.to_string()),
        Ok(())
    );
    let mut bad = backup;
    bad["destination"] = json!("/tmp/x");
    assert!(validate_cel(&Backup::crd(), &object("Backup", bad), None).is_err());
    let schedule = json!({
        "clusterRef": {"name": "db"}, "database": "orders", "schedule": "0 3 * * *",
    });
    assert_eq!(
        validate_cel(
            &ScheduledBackup::crd(),
            &object("ScheduledBackup", schedule),
            None
        )
        .map_err(|e| e.to_string()),
        Ok(())
    );
}

#[test]
fn the_flattened_destination_keeps_the_yaml_of_existing_backups() {
    let spec: BackupSpec = match serde_json::from_value(json!({
        "clusterRef": {"name": "db"},
        "database": "orders",
        "destination": "s3://bucket/flotilla",
        "envFromSecret": {"name": "s3"},
        "volumeClaim": "backups",
    })) {
        Ok(spec) => spec,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        spec.target.destination.as_deref(),
        Some("s3://bucket/flotilla")
    );
    assert_eq!(spec.target.volume_claim.as_deref(), Some("backups"));
    let back = serde_json::to_value(&spec).unwrap_or_default();
    assert_eq!(back["destination"], json!("s3://bucket/flotilla"));
    assert_eq!(back["envFromSecret"]["name"], json!("s3"));
}
