//! Tests of the generated CRDs: names, columns, subresources, and their CEL rules
//! evaluated offline.

use super::validation::validate_cel;
use super::*;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinitionVersion;
use kube::CustomResourceExt;
use serde_json::{Value, json};

fn version(crd: &CustomResourceDefinition) -> CustomResourceDefinitionVersion {
    crd.spec.versions.first().cloned().unwrap_or_default()
}

fn schema(crd: &CustomResourceDefinition) -> Value {
    version(crd)
        .schema
        .and_then(|s| s.open_api_v3_schema)
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or_default()
}

fn cluster(spec: Value) -> Value {
    json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": "db"},
        "spec": spec,
    })
}

fn group(spec: Value) -> Value {
    json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "DatabaseGroup",
        "metadata": {"name": "orders"},
        "spec": spec,
    })
}

fn check_cluster(new: Value, old: Option<Value>) -> Result<(), String> {
    validate_cel(&Cluster::crd(), &cluster(new), old.map(cluster).as_ref())
        .map_err(|e| e.to_string())
}

fn check_group(new: Value, old: Option<Value>) -> Result<(), String> {
    validate_cel(&DatabaseGroup::crd(), &group(new), old.map(group).as_ref())
        .map_err(|e| e.to_string())
}

fn rejected_with(result: Result<(), String>, needle: &str) {
    match result {
        Ok(()) => panic!("accepted, expected a rejection mentioning {needle:?}"),
        Err(message) => assert!(message.contains(needle), "{message}"),
    }
}

fn base_cluster() -> Value {
    json!({"replicas": 3, "image": "flotilla/flotilla-node:0.1.0"})
}

fn base_group() -> Value {
    json!({"clusterRef": {"name": "db"}, "replicationFactor": 3, "shards": 4})
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

#[test]
fn both_crds_are_namespaced_in_the_flotilla_group_with_a_status_subresource() {
    for crd in all_crds() {
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = version(&crd);
        assert_eq!(version.name, VERSION);
        assert!(version.served && version.storage);
        assert!(version.subresources.and_then(|s| s.status).is_some());
        assert_eq!(crd.spec.names.categories, Some(vec!["flotilla".to_owned()]));
    }
}

#[test]
fn short_names_are_flc_and_dbg() {
    assert_eq!(
        Cluster::crd().spec.names.short_names,
        Some(vec!["flc".to_owned()])
    );
    assert_eq!(
        DatabaseGroup::crd().spec.names.short_names,
        Some(vec!["dbg".to_owned(), "dbgroup".to_owned()])
    );
}

#[test]
fn printer_columns_show_health_size_and_age() {
    let columns = |crd: &CustomResourceDefinition| -> Vec<String> {
        version(crd)
            .additional_printer_columns
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.name)
            .collect()
    };
    assert_eq!(
        columns(&Cluster::crd()),
        ["Ready", "Nodes", "Leader", "Status", "Reason", "Age"]
    );
    assert_eq!(
        columns(&DatabaseGroup::crd()),
        ["Cluster", "Ready", "RF", "Shards", "Members", "Age"]
    );
}

#[test]
fn kubectl_scale_changes_the_cluster_replicas() {
    let scale = version(&Cluster::crd())
        .subresources
        .and_then(|s| s.scale)
        .unwrap_or_default();
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.readyNodes");
}

#[test]
fn the_storage_size_is_a_non_null_string() {
    let size = &schema(&Cluster::crd())["properties"]["spec"]["properties"]["storage"]["properties"]
        ["size"];
    assert_eq!(size["type"], "string", "{size}");
    assert!(size.get("nullable").is_none_or(|n| n == false), "{size}");
}

#[test]
fn conditions_are_a_list_map_keyed_by_type() {
    for crd in all_crds() {
        let conditions = &schema(&crd)["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
    }
}

#[test]
fn every_cel_rule_compiles() {
    for crd in all_crds() {
        let compiled = kube::core::cel::compile_schema(&schema(&crd));
        assert!(
            !compiled.has_errors(),
            "{}: {:?}",
            crd.spec.names.kind,
            compiled
                .compilation_errors()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn a_good_cluster_is_accepted_on_create_and_update() {
    assert_eq!(check_cluster(base_cluster(), None), Ok(()));
    let scaled = with(base_cluster(), "replicas", json!(5));
    assert_eq!(check_cluster(scaled, Some(base_cluster())), Ok(()));
    let tuned = with(
        with(base_cluster(), "heartbeatInterval", json!("100ms")),
        "electionTimeout",
        json!("1s"),
    );
    assert_eq!(check_cluster(tuned, None), Ok(()));
}

#[test]
fn a_cluster_needs_at_least_one_replica() {
    rejected_with(
        check_cluster(with(base_cluster(), "replicas", json!(0)), None),
        "replicas must be at least 1",
    );
    assert_eq!(
        check_cluster(with(base_cluster(), "replicas", json!(1)), None),
        Ok(())
    );
}

#[test]
fn meta_voters_must_be_three_or_five() {
    for bad in [1, 2, 4, 7] {
        rejected_with(
            check_cluster(with(base_cluster(), "metaVoters", json!(bad)), None),
            "metaVoters must be 3 or 5",
        );
    }
    assert_eq!(
        check_cluster(with(base_cluster(), "metaVoters", json!(5)), None),
        Ok(())
    );
}

#[test]
fn the_election_timeout_must_exceed_the_heartbeat() {
    let spec = with(
        with(base_cluster(), "heartbeatInterval", json!("1s")),
        "electionTimeout",
        json!("500ms"),
    );
    rejected_with(check_cluster(spec, None), "electionTimeout must be longer");
}

#[test]
fn the_storage_size_may_grow_but_never_shrink() {
    let storage = |size: &str| with(base_cluster(), "storage", json!({"size": size}));
    assert_eq!(
        check_cluster(storage("20Gi"), Some(storage("10Gi"))),
        Ok(())
    );
    assert_eq!(
        check_cluster(storage("10240Mi"), Some(storage("10Gi"))),
        Ok(())
    );
    rejected_with(
        check_cluster(storage("5Gi"), Some(storage("10Gi"))),
        "storage.size may grow, never shrink",
    );
}

#[test]
fn the_storage_size_must_be_a_positive_quantity() {
    let storage = |size: &str| with(base_cluster(), "storage", json!({"size": size}));
    assert_eq!(check_cluster(storage("10Gi"), None), Ok(()));
    rejected_with(check_cluster(storage("ten"), None), "positive quantity");
    rejected_with(check_cluster(storage("0"), None), "positive quantity");
}

#[test]
fn the_storage_class_cannot_change_or_be_added() {
    let old = with(base_cluster(), "storage", json!({"size": "10Gi"}));
    let classed = |class: &str| {
        with(
            base_cluster(),
            "storage",
            json!({"size": "10Gi", "storageClassName": class}),
        )
    };
    rejected_with(
        check_cluster(classed("fast"), Some(old)),
        "storageClassName is immutable",
    );
    rejected_with(
        check_cluster(classed("slow"), Some(classed("fast"))),
        "storageClassName is immutable",
    );
    assert_eq!(
        check_cluster(classed("fast"), Some(classed("fast"))),
        Ok(())
    );
}

#[test]
fn a_good_database_group_is_accepted_on_create_and_update() {
    assert_eq!(check_group(base_group(), None), Ok(()));
    let more_replicas = with(base_group(), "replicationFactor", json!(5));
    assert_eq!(check_group(more_replicas, Some(base_group())), Ok(()));
    let named = with(base_group(), "databaseName", json!("orders_v2"));
    assert_eq!(check_group(named.clone(), Some(named)), Ok(()));
}

#[test]
fn the_shard_count_cannot_change() {
    rejected_with(
        check_group(with(base_group(), "shards", json!(8)), Some(base_group())),
        "shards is immutable",
    );
}

#[test]
fn the_cluster_reference_cannot_change() {
    rejected_with(
        check_group(
            with(base_group(), "clusterRef", json!({"name": "other"})),
            Some(base_group()),
        ),
        "clusterRef is immutable",
    );
}

#[test]
fn the_database_name_cannot_change_be_added_or_removed() {
    let a = with(base_group(), "databaseName", json!("a"));
    let b = with(base_group(), "databaseName", json!("b"));
    rejected_with(check_group(b, Some(a.clone())), "databaseName is immutable");
    rejected_with(
        check_group(a.clone(), Some(base_group())),
        "databaseName is immutable",
    );
    rejected_with(
        check_group(base_group(), Some(a)),
        "databaseName is immutable",
    );
}

#[test]
fn the_deletion_policy_is_retain_or_delete() {
    for good in ["Retain", "Delete"] {
        assert_eq!(
            check_group(with(base_group(), "deletionPolicy", json!(good)), None),
            Ok(())
        );
    }
    rejected_with(
        check_group(with(base_group(), "deletionPolicy", json!("Orphan")), None),
        "deletionPolicy must be Retain or Delete",
    );
}

#[test]
fn replication_factor_and_shards_must_be_positive() {
    rejected_with(
        check_group(with(base_group(), "replicationFactor", json!(0)), None),
        "replicationFactor must be at least 1",
    );
    rejected_with(
        check_group(with(base_group(), "shards", json!(0)), None),
        "shards must be at least 1",
    );
}

#[test]
fn the_derived_validators_agree_with_the_crd_rules() {
    let good = Cluster::test();
    assert!(good.validate_cel().is_ok());
    let bad = Cluster::test().with_replicas(0);
    assert!(bad.validate_cel().is_err());
    let group = DatabaseGroup::test();
    let mut resharded = group.clone();
    resharded.spec.shards += 1;
    assert!(resharded.validate_cel_update(&group).is_err());
}

#[test]
fn placement_labels_default_to_zone_and_region_and_must_be_label_keys() {
    let parsed: Result<Cluster, _> = serde_json::from_value(cluster(base_cluster()));
    assert_eq!(
        parsed.map(|c| c.spec.placement_labels).unwrap_or_default(),
        [
            "topology.kubernetes.io/zone",
            "topology.kubernetes.io/region"
        ]
    );
    let with = |keys: Value| {
        let mut spec = base_cluster();
        spec["placementLabels"] = keys;
        spec
    };
    assert_eq!(
        check_cluster(with(json!(["topology.kubernetes.io/zone", "rack"])), None),
        Ok(())
    );
    assert_eq!(check_cluster(with(json!([])), None), Ok(()));
    rejected_with(
        check_cluster(with(json!(["zone name"])), None),
        "placementLabels must be label keys",
    );
}

#[test]
fn a_collections_shard_key_cannot_change_or_be_removed_once_set() {
    let keyed = |key: Value| {
        with(
            base_group(),
            "collections",
            json!([{"name": "invoices", "shardKey": key, "indexes": [{"paths": ["/status"]}]}]),
        )
    };
    let unkeyed = with(
        base_group(),
        "collections",
        json!([{"name": "invoices"}, {"name": "events"}]),
    );
    assert_eq!(check_group(keyed(json!("/customerId")), None), Ok(()));
    assert_eq!(
        check_group(keyed(json!("/customerId")), Some(unkeyed.clone())),
        Ok(()),
        "a key may be set on a collection that had none in the spec"
    );
    rejected_with(
        check_group(keyed(json!("/region")), Some(keyed(json!("/customerId")))),
        "shardKey is immutable once set",
    );
    rejected_with(
        check_group(unkeyed, Some(keyed(json!("/customerId")))),
        "shardKey is immutable once set",
    );
    rejected_with(
        check_group(keyed(json!("customerId")), None),
        "shardKey must be a JSON pointer",
    );
    rejected_with(
        check_group(
            with(
                base_group(),
                "collections",
                json!([{"name": "invoices", "indexes": [{"paths": ["status"]}]}]),
            ),
            None,
        ),
        "index paths must be JSON pointers",
    );
}

fn check_schedule(spec: Value) -> Result<(), String> {
    let object = json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "ScheduledBackup",
        "metadata": {"name": "nightly"},
        "spec": spec,
    });
    validate_cel(&super::ScheduledBackup::crd(), &object, None).map_err(|e| e.to_string())
}

fn base_schedule() -> Value {
    json!({
        "clusterRef": {"name": "db"},
        "database": "orders",
        "schedule": "0 3 * * *",
        "destination": "s3://backups/flotilla",
        "retention": {"keep": 7, "maxAge": "720h"},
    })
}

#[test]
fn a_scheduled_backup_needs_five_cron_fields_and_a_retention_rule() {
    assert_eq!(check_schedule(base_schedule()), Ok(()));
    rejected_with(
        check_schedule(with(base_schedule(), "schedule", json!("0 0 3 * * *"))),
        "five fields",
    );
    rejected_with(
        check_schedule(with(base_schedule(), "retention", json!({}))),
        "retention needs keep, maxAge or both",
    );
    rejected_with(
        check_schedule(with(base_schedule(), "retention", json!({"keep": 0}))),
        "keep must be at least 1",
    );
    rejected_with(
        check_schedule(with(base_schedule(), "destination", json!("ftp://x"))),
        "destination must be an s3:// or file:/// URL",
    );
}
