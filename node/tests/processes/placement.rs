//! Where replicas live, with real node processes: placement labels choose the nodes of a
//! database (and moving the labels moves the replicas), a rebalance spreads replicas onto a new
//! node, and a replica added by hand takes its initial snapshot from the mentor it names.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_client::{Client, Consistency, DatabaseOptions, DatabaseUpdate, Error, ReplicaState};
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::wait::wait_until;

fn options() -> ClusterOptions {
    ClusterOptions::default()
        .fast_elections()
        .env("FLOTILLA_REHAB_AFTER", "3s")
}

fn zone(z: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("zone".to_string(), z.to_string())])
}

/// The shard's replicas, when every one of them is a Member.
async fn members(client: &Client, db: &str) -> Option<Vec<u64>> {
    let status = client.database_status(db).await.ok()?;
    let shard = status.shards.first()?;
    let all_members = shard.leader_id.is_some()
        && shard.replacement.is_none()
        && shard
            .replicas
            .iter()
            .all(|r| r.state == ReplicaState::Member);
    let mut nodes: Vec<u64> = shard.replicas.iter().map(|r| r.node_id).collect();
    nodes.sort();
    all_members.then_some(nodes)
}

async fn write(client: &Client, db: &str, n: usize) {
    for i in 0..n {
        client
            .put(db, "c", &format!("k{i}"), &format!("{{\"i\":{i}}}"), None)
            .await
            .unwrap_or_else(|e| panic!("writing {db}/c/k{i}: {e}"));
    }
}

async fn assert_readable(client: &Client, db: &str, n: usize, consistency: Consistency) {
    for i in 0..n {
        let doc = client
            .get(db, "c", &format!("k{i}"), consistency)
            .await
            .unwrap_or_else(|e| panic!("reading {db}/c/k{i}: {e}"))
            .unwrap_or_else(|| panic!("{db}/c/k{i} is missing"));
        assert_eq!(doc.value().unwrap()["i"], i);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn placement_labels_choose_the_nodes_and_moving_them_moves_the_replicas() {
    let mut cluster = Cluster::start(3, options().arg("--labels=zone=a")).await;
    let b = cluster
        .add_node_with(options().arg("--labels=zone=b,disk=ssd"))
        .await;
    let b_id = cluster.node_id(b).await;
    let client = cluster.client();
    wait_until(
        Duration::from_secs(20),
        "the cluster status shows every node's labels",
        async || {
            client.cluster_status().await.is_ok_and(|s| {
                s.nodes.len() == 4
                    && s.nodes.iter().all(|n| {
                        n.labels.get("zone").map(String::as_str)
                            == Some(if n.id == b_id { "b" } else { "a" })
                    })
            })
        },
    )
    .await;

    // Only node b may hold it.
    let created = client
        .create_database_with(
            "east",
            &DatabaseOptions {
                replication_factor: Some(1),
                placement: zone("b"),
                ..Default::default()
            },
        )
        .await
        .expect("create with placement zone=b");
    assert_eq!(created.placement, zone("b"));
    wait_until(
        Duration::from_secs(20),
        "east lives on node b",
        async || members(&client, "east").await == Some(vec![b_id]),
    )
    .await;
    write(&client, "east", 20).await;

    // What the labels cannot satisfy is refused, and nothing changes.
    let refused = client
        .update_database_with(
            "east",
            &DatabaseUpdate {
                replication_factor: Some(2),
                ..Default::default()
            },
        )
        .await
        .expect_err("two replicas in zone b, which has one node");
    assert!(
        matches!(refused, Error::FailedPrecondition(_)),
        "{refused:?}"
    );
    let refused = client
        .create_database_with(
            "west",
            &DatabaseOptions {
                placement: zone("c"),
                ..Default::default()
            },
        )
        .await
        .expect_err("no node in zone c");
    assert!(
        matches!(refused, Error::FailedPrecondition(_)),
        "{refused:?}"
    );
    let refused = client
        .create_database_with(
            "bad",
            &DatabaseOptions {
                placement: BTreeMap::from([("zone".to_string(), "a b".to_string())]),
                ..Default::default()
            },
        )
        .await
        .expect_err("a label value with a space");
    assert!(matches!(refused, Error::InvalidArgument(_)), "{refused:?}");

    // Zone a now: the replica moves off node b onto a zone-a node, with every document.
    client
        .update_database_with(
            "east",
            &DatabaseUpdate {
                placement: Some(zone("a")),
                ..Default::default()
            },
        )
        .await
        .expect("move east to zone a");
    wait_until(
        Duration::from_secs(60),
        "east has one Member, in zone a",
        async || {
            members(&client, "east")
                .await
                .is_some_and(|m| m.len() == 1 && m[0] != b_id)
        },
    )
    .await;
    assert_readable(&client, "east", 20, Consistency::Linearizable).await;

    // Labels assigned through the API override the node's own: the holder moves to zone c,
    // so the replica moves again, to the last zone-a node that holds nothing of it.
    let holder = members(&client, "east").await.expect("settled")[0];
    let now = client
        .assign_labels(holder, &zone("c"))
        .await
        .expect("assign zone c");
    assert_eq!(now["zone"], "c");
    wait_until(
        Duration::from_secs(60),
        "east moved off the relabelled node",
        async || {
            members(&client, "east")
                .await
                .is_some_and(|m| m.len() == 1 && m[0] != holder && m[0] != b_id)
        },
    )
    .await;
    assert_readable(&client, "east", 20, Consistency::Linearizable).await;
    let unknown = client
        .assign_labels(12345, &zone("a"))
        .await
        .expect_err("an unknown node");
    assert!(matches!(unknown, Error::NotFound(_)), "{unknown:?}");
    let bad = client
        .assign_labels(
            holder,
            &BTreeMap::from([("zone".to_string(), "c d".to_string())]),
        )
        .await
        .expect_err("a bad label");
    assert!(matches!(bad, Error::InvalidArgument(_)), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebalance_spreads_replicas_onto_a_new_node_without_losing_a_write() {
    let mut cluster = Cluster::start(3, options()).await;
    let dbs = ["a", "b", "c"];
    for db in dbs {
        cluster.create_database(db, Some(3), None).await;
    }
    let client = cluster.client();
    for db in dbs {
        write(&client, db, 20).await;
    }
    let new = cluster.add_node().await;
    let new_id = cluster.node_id(new).await;
    wait_until(
        Duration::from_secs(20),
        "the new node is registered, holding nothing",
        async || {
            client
                .cluster_status()
                .await
                .is_ok_and(|s| s.nodes.iter().any(|n| n.id == new_id && n.replicas == 0))
        },
    )
    .await;

    let steps = client.rebalance().await.expect("rebalance");
    assert!(!steps.is_empty());
    wait_until(
        Duration::from_secs(90),
        "the rebalance finished: every node holds 2 or 3 replicas",
        async || {
            client.cluster_status().await.is_ok_and(|s| {
                !s.rebalancing
                    && s.nodes.len() == 4
                    && s.nodes.iter().all(|n| (2..=3).contains(&n.replicas))
            })
        },
    )
    .await;
    for db in dbs {
        let m = members(&client, db)
            .await
            .unwrap_or_else(|| panic!("{db} is settled"));
        assert_eq!(m.len(), 3, "{db} keeps its replication factor");
        assert_readable(&client, db, 20, Consistency::Linearizable).await;
    }
    let events: Vec<_> = {
        use futures::StreamExt;
        let stream = client.cluster_events(false, 0).await.expect("events");
        stream.collect::<Vec<_>>().await
    };
    assert!(
        events
            .iter()
            .flatten()
            .any(|e| e.node_id == new_id && e.reason.contains("rebalance")),
        "the moves are recorded as rebalance events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_added_by_hand_is_mentored_by_the_chosen_node() {
    let cluster = Cluster::start(4, options().snapshot_threshold(50)).await;
    cluster.create_database("app", Some(3), None).await;
    let client = cluster.client();
    write(&client, "app", 150).await;
    let status = client.database_status("app").await.expect("status");
    let shard = &status.shards[0];
    let leader = shard.leader_id.expect("a leader");
    let mentor = shard
        .replicas
        .iter()
        .map(|r| r.node_id)
        .find(|n| *n != leader)
        .expect("a follower");
    let holders: Vec<u64> = shard.replicas.iter().map(|r| r.node_id).collect();
    let cs = client.cluster_status().await.expect("cluster status");
    let spare = cs
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|n| !holders.contains(n))
        .expect("a node without a replica");

    let refused = client
        .add_replica("app", Some(0), spare, Some(spare))
        .await
        .expect_err("a mentor must hold a replica");
    assert!(matches!(refused, Error::InvalidArgument(_)), "{refused:?}");

    let steps = client
        .add_replica("app", Some(0), spare, Some(mentor))
        .await
        .expect("add a mentored replica");
    assert!(
        steps
            .iter()
            .any(|s| s.contains(&format!("initial snapshot from node {mentor}"))),
        "{steps:?}"
    );
    // One shard, so it is a move: the new replica takes another's place.
    wait_until(
        Duration::from_secs(60),
        "the new replica is a Member and the move is done",
        async || {
            members(&client, "app")
                .await
                .is_some_and(|m| m.len() == 3 && m.contains(&spare))
        },
    )
    .await;
    let mentor_index = cluster.index_of(mentor).await.expect("mentor index");
    let log = std::fs::read_to_string(cluster.node(mentor_index).log_path()).unwrap_or_default();
    assert!(
        log.contains("mentored a new replica"),
        "the mentor sent the snapshot"
    );
    // The new replica holds every document itself.
    let spare_index = cluster.index_of(spare).await.expect("spare index");
    let local = cluster.node(spare_index).client();
    wait_until(
        Duration::from_secs(20),
        "the new replica serves every document locally",
        async || {
            for i in 0..150 {
                match local
                    .get("app", "c", &format!("k{i}"), Consistency::Stale)
                    .await
                {
                    Ok(Some(_)) => {}
                    _ => return false,
                }
            }
            true
        },
    )
    .await;
}
