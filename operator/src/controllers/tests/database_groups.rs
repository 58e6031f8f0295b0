//! The DatabaseGroup controller: the database follows the group, and its deletion policy
//! decides whether deleting the group drops the database (behind a finalizer) or not.

use super::*;

async fn create_and_delete_group(policy: DeletionPolicy) -> (Harness, Vec<String>) {
    let h = Harness::new();
    h.api.put(&Cluster::test().with_cluster_id("c-1"));
    let mut group = DatabaseGroup::test();
    group.spec.deletion_policy = policy;
    h.api.put(&group);

    let held = policy == DeletionPolicy::Delete;
    if held {
        ok(h.reconcile_group().await); // adds the finalizer
    }
    ok(h.reconcile_group().await); // creates the database
    let stored = h.group();
    assert_eq!(
        stored
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&database_group::FINALIZER.to_owned()),
        held,
        "only deletionPolicy: Delete gets the finalizer"
    );
    let status = stored.status.unwrap_or_default();
    assert!(status.replication_factor_met);
    assert_eq!(status.shards.len(), 4);

    // kubectl delete: the finalizer, if any, holds the object.
    let client = h.ctx.client.clone();
    let groups = kube::Api::<DatabaseGroup>::namespaced(client, NS);
    if let Err(e) = groups.delete("orders", &Default::default()).await {
        panic!("delete: {e}");
    }
    assert_eq!(h.api.get::<DatabaseGroup>(NS, "orders").is_some(), held);
    if held {
        ok(h.reconcile_group().await);
    }
    assert!(
        h.api.get::<DatabaseGroup>(NS, "orders").is_none(),
        "finalizer not released"
    );
    let calls = h.admin.calls();
    (h, calls)
}

#[tokio::test]
async fn switching_a_group_to_retain_takes_its_finalizer_off() {
    let h = Harness::new();
    h.api.put(&Cluster::test().with_cluster_id("c-1"));
    let mut group = DatabaseGroup::test();
    group.spec.deletion_policy = DeletionPolicy::Delete;
    h.api.put(&group);
    ok(h.reconcile_group().await);
    ok(h.reconcile_group().await);
    let mut stored = h.group();
    assert!(
        stored
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| !f.is_empty())
    );

    stored.spec.deletion_policy = DeletionPolicy::Retain;
    h.api.put(&stored);
    ok(h.reconcile_group().await);
    let stored = h.group();
    assert_eq!(
        stored.metadata.finalizers.unwrap_or_default(),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn deleting_a_group_with_policy_delete_drops_the_database() {
    let (_, calls) = create_and_delete_group(DeletionPolicy::Delete).await;
    assert_eq!(calls, ["ensure orders", "delete orders"]);
}

#[tokio::test]
async fn deleting_a_group_with_policy_retain_keeps_the_database() {
    let (h, calls) = create_and_delete_group(DeletionPolicy::Retain).await;
    assert_eq!(calls, ["ensure orders"]);
    assert!(h.admin.lock().databases.contains_key("orders"));
}

#[tokio::test]
async fn a_group_whose_cluster_is_gone_is_released_without_touching_the_cluster() {
    let h = Harness::new();
    let mut group = DatabaseGroup::test();
    group.spec.deletion_policy = DeletionPolicy::Delete;
    group.metadata.finalizers = Some(vec![database_group::FINALIZER.to_owned()]);
    group.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    ));
    h.api.put(&group);
    ok(h.reconcile_group().await);
    assert!(h.api.get::<DatabaseGroup>(NS, "orders").is_none());
    assert_eq!(h.admin.calls(), Vec::<String>::new());
}

#[tokio::test]
async fn a_group_on_a_missing_cluster_says_so_in_its_status() {
    let h = Harness::new();
    h.api.put(&DatabaseGroup::test());
    ok(h.reconcile_group().await);
    ok(h.reconcile_group().await);
    let status = h
        .api
        .get::<DatabaseGroup>(NS, "orders")
        .and_then(|g| g.status)
        .unwrap_or_default();
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    assert_eq!(ready.map(|c| c.reason.as_str()), Some("ClusterNotFound"));
    assert_eq!(h.admin.calls(), Vec::<String>::new());
}

/// A database of the group's name that was made by hand before the group.
fn harness_with_existing_database() -> Harness {
    let h = Harness::new();
    h.api.put(&Cluster::test().with_cluster_id("c-1"));
    let existing = DatabaseRequest {
        name: "orders".to_owned(),
        replication_factor: 1,
        shards: 1,
        pods: Vec::new(),
        node_labels: BTreeMap::new(),
        replace_after: None,
        may_exist: true,
    };
    h.admin
        .lock()
        .databases
        .insert("orders".to_owned(), existing);
    h
}

#[tokio::test]
async fn an_existing_database_is_left_alone_without_adopt() {
    let h = harness_with_existing_database();
    h.api.put(&DatabaseGroup::test());
    ok(h.reconcile_group().await);
    let status = h.group().status.unwrap_or_default();
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    assert_eq!(ready.map(|c| c.reason.as_str()), Some("DatabaseExists"));
    assert_eq!(status.created_by_operator, None);
    // Unchanged: still the hand-made settings.
    assert_eq!(
        h.admin.lock().databases.get("orders").map(|d| d.shards),
        Some(1)
    );
}

#[tokio::test]
async fn an_adopted_database_is_kept_when_its_group_with_policy_delete_goes() {
    let h = harness_with_existing_database();
    let mut group = DatabaseGroup::test();
    group.spec.adopt = true;
    group.spec.deletion_policy = DeletionPolicy::Delete;
    h.api.put(&group);
    ok(h.reconcile_group().await); // adds the finalizer
    ok(h.reconcile_group().await); // adopts the database
    let status = h.group().status.unwrap_or_default();
    assert_eq!(status.created_by_operator, Some(false));
    assert!(status.replication_factor_met);

    let groups = kube::Api::<DatabaseGroup>::namespaced(h.ctx.client.clone(), NS);
    if let Err(e) = groups.delete("orders", &Default::default()).await {
        panic!("delete: {e}");
    }
    ok(h.reconcile_group().await);
    assert!(h.api.get::<DatabaseGroup>(NS, "orders").is_none());
    assert!(!h.admin.calls().iter().any(|c| c.starts_with("delete")));
    assert!(h.admin.lock().databases.contains_key("orders"));
}

#[tokio::test]
async fn a_database_the_operator_created_is_recorded_as_such() {
    let h = Harness::new();
    h.api.put(&Cluster::test().with_cluster_id("c-1"));
    h.api.put(&DatabaseGroup::test());
    ok(h.reconcile_group().await);
    assert_eq!(
        h.group().status.unwrap_or_default().created_by_operator,
        Some(true)
    );
    // Later passes find it and keep the record.
    ok(h.reconcile_group().await);
    let status = h.group().status.unwrap_or_default();
    assert_eq!(status.created_by_operator, Some(true));
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    assert_eq!(ready.map(|c| c.reason.as_str()), Some("AllMembersReady"));
}

/// A transition of the replica of `database`'s shard 0 on node 102 (pod `flotilla-2`).
fn topology_event(
    sequence: u64,
    database: &str,
    to: &str,
    reason: &str,
) -> crate::admin::TopologyEvent {
    crate::admin::TopologyEvent {
        sequence,
        at_unix_ms: 1_740_823_200_000,
        database: database.to_owned(),
        shard: 0,
        node_id: 102,
        pod: Some("flotilla-2".to_owned()),
        from_state: "member".to_owned(),
        to_state: to.to_owned(),
        reason: reason.to_owned(),
        replica_broken: reason.starts_with("stopped for good"),
    }
}

const CORRUPT: &str = "stopped for good: corrupt replica of group 1: differs from the other \
    replicas at log index 33 (digest 86939e6acde4 here, 323bf5b0518a on 2 of 3 replicas compared)";
const REMOVED: &str =
    "stopped for good on node 102: corrupt log entry 17 of group 1: checksum mismatch";

/// The `ReplicaBroken` Events recorded, as (type, note, related pod).
async fn broken_replica_events(h: &Harness) -> Vec<(String, String, String)> {
    h.events()
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ReplicaBroken"))
        .map(|e| {
            assert_eq!(
                e.regarding.and_then(|r| r.name).as_deref(),
                Some("orders"),
                "about the DatabaseGroup"
            );
            (
                e.type_.unwrap_or_default(),
                e.note.unwrap_or_default(),
                e.related.and_then(|r| r.name).unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_replica_rebuilt_between_two_reconciles_is_reported_once_as_a_warning() {
    let mut h = Harness::new();
    h.api.put(&Cluster::test().with_cluster_id("c-1"));
    h.api.put(&DatabaseGroup::test());
    {
        let mut cluster = h.admin.lock();
        cluster.cluster_id = "c-1".to_owned();
        cluster.events = vec![
            topology_event(1, "orders", "rehab", "not seen for 60s"),
            topology_event(2, "invoices", "rehab", CORRUPT),
        ];
    }
    ok(h.reconcile_group().await);
    assert_eq!(broken_replica_events(&h).await, Vec::new());
    let status = h.group().status.unwrap_or_default();
    assert_eq!(status.last_event_sequence, Some(2));
    assert_eq!(status.events_cluster_id.as_deref(), Some("c-1"));

    // The cluster finds a diverged replica and rebuilds it within seconds: the topology the
    // group sees on its next pass is whole again.
    h.admin.lock().events.extend([
        topology_event(3, "orders", "rehab", CORRUPT),
        topology_event(
            4,
            "orders",
            "promotable",
            &format!("replacing node 102: {REMOVED}"),
        ),
        topology_event(5, "orders", "removed", REMOVED),
    ]);
    ok(h.reconcile_group().await);
    let at = "2025-03-01T10:00:00Z";
    let pod = "flotilla-2".to_owned();
    assert_eq!(
        broken_replica_events(&h).await,
        vec![
            (
                "Warning".to_owned(),
                format!(
                    "shard 0: replica on flotilla-2 went from member to rehab at {at}: {CORRUPT}"
                ),
                pod.clone()
            ),
            (
                "Warning".to_owned(),
                format!(
                    "shard 0: replica on flotilla-2 went from member to removed at {at}: {REMOVED}"
                ),
                pod
            ),
        ]
    );
    assert_eq!(
        h.group().status.unwrap_or_default().last_event_sequence,
        Some(5)
    );

    // Later passes, and a restarted operator, read on from there.
    ok(h.reconcile_group().await);
    h.restart_operator();
    ok(h.reconcile_group().await);
    assert_eq!(broken_replica_events(&h).await.len(), 2);
    assert_eq!(h.admin.lock().events_read_after, [0, 2, 5, 5]);
}

#[tokio::test]
async fn a_cluster_made_anew_under_the_same_name_is_read_from_its_first_event() {
    let h = Harness::new();
    h.api.put(&Cluster::test().with_cluster_id("c-2"));
    let mut group = DatabaseGroup::test();
    let mut status = crate::crd::DatabaseGroupStatus::default();
    crate::plan::topology_events::EventCursor {
        cluster_id: "c-1".to_owned(),
        sequence: 500,
    }
    .record(&mut status);
    status.created_by_operator = Some(true);
    group.status = Some(status);
    h.api.put(&group);
    {
        let mut cluster = h.admin.lock();
        cluster.cluster_id = "c-2".to_owned();
        cluster.events = vec![topology_event(1, "orders", "rehab", CORRUPT)];
    }
    ok(h.reconcile_group().await);
    assert_eq!(broken_replica_events(&h).await.len(), 1);
    assert_eq!(h.admin.lock().events_read_after, [500, 0]);
    let status = h.group().status.unwrap_or_default();
    assert_eq!(status.events_cluster_id.as_deref(), Some("c-2"));
    assert_eq!(status.last_event_sequence, Some(1));
}
