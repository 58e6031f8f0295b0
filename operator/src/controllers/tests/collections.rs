//! A DatabaseGroup's collections and indexes: created when the database lacks them,
//! reported while they build, dropped when the spec no longer declares them (only those the
//! operator created), and a shard key that differs from the database's refused.

use super::*;
use crate::crd::{CollectionSpec, IndexSpec, IndexState, ManagedIndex};
use crate::plan::collections::{ObservedCollection, ObservedIndex};

fn collection(name: &str, key: Option<&str>, indexes: &[&[&str]]) -> CollectionSpec {
    CollectionSpec {
        name: name.to_owned(),
        shard_key: key.map(str::to_owned),
        indexes: indexes
            .iter()
            .map(|paths| IndexSpec {
                paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            })
            .collect(),
    }
}

/// The `invoices` collection placed by `/customerId` with an index `total` made by hand.
fn made_by_hand(key: &str) -> ObservedCollection {
    ObservedCollection {
        name: "invoices".to_owned(),
        shard_key: Some(key.to_owned()),
        indexes: vec![ObservedIndex {
            name: "total".to_owned(),
            paths: vec!["/total".to_owned()],
            shards: vec![(0, true, 3)],
        }],
    }
}

fn condition(group: &DatabaseGroup) -> (String, String) {
    group
        .status
        .as_ref()
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "CollectionsApplied")
        })
        .map(|c| (c.status.clone(), c.reason.clone()))
        .unwrap_or_default()
}

fn index_names(h: &Harness, collection: &str) -> Vec<String> {
    h.admin
        .lock()
        .collections
        .get("orders")
        .and_then(|cs| cs.iter().find(|c| c.name == collection).cloned())
        .map(|c| c.indexes.into_iter().map(|i| i.name).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn declared_indexes_are_created_reported_and_dropped_only_when_the_operator_made_them() {
    let h = Harness::new();
    h.api.put(&Cluster::test().with_cluster_id("c-1"));
    h.admin
        .lock()
        .collections
        .insert("orders".to_owned(), vec![made_by_hand("/customerId")]);
    let mut group = DatabaseGroup::test();
    group.spec.collections = vec![
        collection(
            "invoices",
            Some("/customerId"),
            &[&["/status"], &["/customerId", "/createdAt"], &["/total"]],
        ),
        collection("events", None, &[&["/kind"]]),
    ];
    h.api.put(&group);
    h.admin.lock().indexes_building = Some(7);

    ok(h.reconcile_group().await);
    let calls = h.admin.calls();
    assert_eq!(
        calls,
        [
            "ensure orders",
            "create index status of invoices on /status",
            "create index customerId_createdAt of invoices on /customerId,/createdAt",
            "create collection events (shard key the document id)",
            "create index kind of events on /kind",
        ]
    );
    let stored = h.group();
    assert_eq!(
        condition(&stored),
        ("False".to_owned(), "CollectionsPending".to_owned())
    );
    let status = stored.status.clone().unwrap_or_default();
    let invoices = &status.collections[0];
    assert_eq!(invoices.shard_key.as_deref(), Some("/customerId"));
    assert_eq!(invoices.indexes.len(), 3);
    assert!(
        invoices
            .indexes
            .iter()
            .all(|i| i.state == IndexState::Building && i.documents == 7),
        "{invoices:?}"
    );
    let managed: Vec<String> = status
        .managed_indexes
        .iter()
        .map(|m| format!("{}/{}", m.collection, m.name))
        .collect();
    assert_eq!(
        managed,
        [
            "events/kind",
            "invoices/customerId_createdAt",
            "invoices/status"
        ],
        "the index made by hand is not the operator's"
    );

    // Built: ready, and nothing more to do.
    h.admin.lock().indexes_building = None;
    ok(h.reconcile_group().await);
    let stored = h.group();
    assert_eq!(
        condition(&stored),
        ("True".to_owned(), "CollectionsApplied".to_owned())
    );
    assert_eq!(h.admin.calls().len(), calls.len() + 1, "only the ensure");

    // `/status` and `/total` leave the spec: the operator's index goes, the hand-made stays.
    let mut edited = stored;
    edited.spec.collections[0] = collection(
        "invoices",
        Some("/customerId"),
        &[&["/customerId", "/createdAt"]],
    );
    h.api.put(&edited);
    ok(h.reconcile_group().await);
    assert_eq!(
        h.admin.calls().last().map(String::as_str),
        Some("drop index status of invoices")
    );
    assert_eq!(
        index_names(&h, "invoices"),
        ["total", "customerId_createdAt"]
    );
    let status = h.group().status.unwrap_or_default();
    assert!(!status.managed_indexes.contains(&ManagedIndex {
        collection: "invoices".to_owned(),
        name: "status".to_owned()
    }));

    // No collections declared any more: every index the operator made goes.
    let mut emptied = h.group();
    emptied.spec.collections.clear();
    h.api.put(&emptied);
    ok(h.reconcile_group().await);
    assert_eq!(index_names(&h, "invoices"), ["total"]);
    assert_eq!(index_names(&h, "events"), Vec::<String>::new());
    let status = h.group().status.unwrap_or_default();
    assert_eq!(status.managed_indexes, Vec::new());
    assert_eq!(status.collections, Vec::new());
}

#[tokio::test]
async fn a_shard_key_other_than_the_databases_is_refused_with_a_warning_and_nothing_changes() {
    let h = Harness::new();
    h.api.put(&Cluster::test().with_cluster_id("c-1"));
    h.admin
        .lock()
        .collections
        .insert("orders".to_owned(), vec![made_by_hand("/region")]);
    let mut group = DatabaseGroup::test();
    group.spec.collections = vec![collection("invoices", Some("/customerId"), &[&["/status"]])];
    h.api.put(&group);

    ok(h.reconcile_group().await);
    assert_eq!(h.admin.calls(), ["ensure orders"], "nothing changed");
    assert_eq!(
        h.admin.lock().collections.get("orders").cloned(),
        Some(vec![made_by_hand("/region")])
    );
    let stored = h.group();
    assert_eq!(
        condition(&stored),
        ("False".to_owned(), "ShardKeyConflict".to_owned())
    );
    let warnings: Vec<String> = h
        .events()
        .await
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter_map(|e| e.reason)
        .collect();
    assert_eq!(warnings, ["ShardKeyConflict"]);

    // Seen again: no second Warning for the same conflict.
    ok(h.reconcile_group().await);
    let warnings = h
        .events()
        .await
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .count();
    assert_eq!(warnings, 1);
}
