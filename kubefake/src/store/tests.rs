//! Tests of the object store: versions, watches, apply, deletion.

use super::*;

fn store_and_type(plural: &str) -> (Store, ResourceType) {
    let store = Store::default();
    let namespaces = store.resolve("", "v1", "namespaces");
    let namespaces = namespaces.unwrap_or_else(|| panic!("namespaces are served"));
    if let Err(e) = store.create(&namespaces, None, json!({"metadata": {"name": "ns"}})) {
        panic!("creating namespace ns: {}", e.message);
    }
    let rt = match plural {
        "pods" => store.resolve("", "v1", "pods"),
        "configmaps" => store.resolve("", "v1", "configmaps"),
        _ => store.resolve("apps", "v1", "statefulsets"),
    };
    (store, rt.unwrap_or_else(|| panic!("{plural} is served")))
}

#[test]
fn a_finalizer_holds_a_deleted_object_until_it_is_removed() {
    let (store, rt) = store_and_type("configmaps");
    let created = store.create(
        &rt,
        Some("ns"),
        json!({"metadata": {"name": "a", "finalizers": ["x"]}}),
    );
    assert!(created.is_ok());
    let deleting = store.delete(&rt, Some("ns"), "a", DeleteOptions::default());
    assert!(deleting.as_ref().is_ok_and(is_deleting));
    let released = store.patch(
        &rt,
        Some("ns"),
        "a",
        false,
        PatchKind::Merge,
        &json!({"metadata": {"finalizers": null}}),
        "test",
    );
    assert!(released.is_ok());
    assert_eq!(
        store.get(&rt, Some("ns"), "a").map_err(|e| e.code),
        Err(404)
    );
}

#[test]
fn dependents_go_with_their_owner() {
    let (store, sts) = store_and_type("statefulsets");
    let owner = store
        .create(&sts, Some("ns"), json!({"metadata": {"name": "o"}}))
        .unwrap_or_default();
    let uid = owner["metadata"]["uid"].clone();
    let (_, cm) = store_and_type("configmaps");
    let cm = store.resolve("", "v1", "configmaps").unwrap_or(cm);
    let child = json!({"metadata": {"name": "c", "ownerReferences": [{"uid": uid, "name": "o", "kind": "StatefulSet", "apiVersion": "apps/v1"}]}});
    assert!(store.create(&cm, Some("ns"), child).is_ok());
    assert!(
        store
            .delete(&sts, Some("ns"), "o", DeleteOptions::default())
            .is_ok()
    );
    assert_eq!(
        store.get(&cm, Some("ns"), "c").map_err(|e| e.code),
        Err(404)
    );
}

#[test]
fn a_spec_change_bumps_the_generation_and_a_status_change_does_not() {
    let (store, sts) = store_and_type("statefulsets");
    let _ = store.create(
        &sts,
        Some("ns"),
        json!({"metadata": {"name": "s"}, "spec": {"replicas": 1}}),
    );
    let patch = |body: Value, status: bool| {
        store
            .patch(&sts, Some("ns"), "s", status, PatchKind::Merge, &body, "t")
            .map(|o| o["metadata"]["generation"].as_i64())
    };
    assert_eq!(patch(json!({"status": {"replicas": 1}}), true), Ok(Some(1)));
    assert_eq!(patch(json!({"spec": {"replicas": 2}}), false), Ok(Some(2)));
    let status = store
        .get(&sts, Some("ns"), "s")
        .map(|o| o["status"].clone());
    assert_eq!(
        status,
        Ok(json!({"replicas": 1})),
        "the main resource ignores status"
    );
}

#[test]
fn marking_an_object_for_deletion_bumps_its_generation() {
    let (store, cm) = store_and_type("configmaps");
    let _ = store.create(
        &cm,
        Some("ns"),
        json!({"metadata": {"name": "f", "finalizers": ["example.com/hold"]}}),
    );
    let generation = |o: &Value| o["metadata"]["generation"].as_i64();
    let marked = store.delete(&cm, Some("ns"), "f", DeleteOptions::default());
    assert_eq!(marked.as_ref().map(generation), Ok(Some(2)));
    let again = store.delete(&cm, Some("ns"), "f", DeleteOptions::default());
    assert_eq!(again.as_ref().map(generation), Ok(Some(2)), "only once");
}

#[test]
fn pods_are_deleted_gracefully_then_for_good() {
    let (store, pods) = store_and_type("pods");
    let _ = store.create(
        &pods,
        Some("ns"),
        json!({"metadata": {"name": "p"}, "spec": {"terminationGracePeriodSeconds": 5}}),
    );
    let marked = store.delete(&pods, Some("ns"), "p", DeleteOptions::default());
    assert_eq!(
        marked.map(|p| p["metadata"]["deletionGracePeriodSeconds"].as_i64()),
        Ok(Some(5))
    );
    let now = DeleteOptions {
        grace_period_seconds: Some(0),
        ..DeleteOptions::default()
    };
    assert!(store.delete(&pods, Some("ns"), "p", now).is_ok());
    assert_eq!(
        store.get(&pods, Some("ns"), "p").map_err(|e| e.code),
        Err(404)
    );
}

#[test]
fn a_watch_resumes_from_a_resource_version() {
    let (store, cm) = store_and_type("configmaps");
    let _ = store.create(&cm, Some("ns"), json!({"metadata": {"name": "a"}}));
    let after_a = store.revision();
    let _ = store.create(&cm, Some("ns"), json!({"metadata": {"name": "b"}}));
    let start = store.watch(&cm, &Filter::default(), Some(after_a));
    let names: Vec<String> = start
        .map(|s| s.initial)
        .unwrap_or_default()
        .iter()
        .filter_map(|r| text(&r.object, "/metadata/name").map(str::to_owned))
        .collect();
    assert_eq!(names, ["b"]);
}

#[test]
fn an_object_needs_its_namespace() {
    let store = Store::default();
    let rt = store.resolve("", "v1", "configmaps");
    let rt = rt.unwrap_or_else(|| panic!("configmaps are served"));
    let refused = store.create(&rt, Some("missing"), json!({"metadata": {"name": "a"}}));
    assert_eq!(refused.map_err(|e| e.code), Err(404));
    let accepted = store.create(&rt, Some("default"), json!({"metadata": {"name": "a"}}));
    assert!(
        accepted.is_ok(),
        "the default namespace exists from the start"
    );
}
