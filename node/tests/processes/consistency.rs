//! Periodic consistency checks: a replica that silently stops applying document writes (an
//! injected fault, `diverge-apply-<group>`: the entries count as applied, nothing is written,
//! no checksum can tell) is found by the next check of its shard, which compares every
//! replica's digest at the same log index. The leader counts it, the replica stores a
//! divergence mark and stops serving the shard for good (the topology events say why), and the
//! topology rebuilds it from the healthy replicas: removed, its records deleted, and
//! re-created on the same node (a 3-node cluster has no other). Afterwards the replicas are
//! equal again, and the rebuilt one holds the writes it had skipped.

use std::time::Duration;

use flotilla_client::{ClientOptions, Consistency};
use flotilla_node::store::faults::diverge_trigger;
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::progress;
use flotilla_testkit::wait::{wait_for, wait_until};

/// Checks that found the replicas equal, counted over the nodes.
async fn consistent_checks(cluster: &mut Cluster) -> f64 {
    cluster
        .metric_sum(
            "flotilla_consistency_checks_total",
            "outcome=\"consistent\"",
        )
        .await
}

async fn wait_consistent_checks(cluster: &mut Cluster, at_least: f64, what: &str) {
    wait_until(Duration::from_secs(30), what, async || {
        consistent_checks(cluster).await >= at_least
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_diverged_replica_is_found_stopped_and_rebuilt_from_the_others() {
    let options = ClusterOptions::default()
        .fast_elections()
        .arg("--test-storage-faults")
        .arg("--consistency-check-interval=1s");
    let mut cluster = Cluster::start(3, options).await;
    cluster.create_database("db", Some(3), Some(1)).await;
    let client = cluster.client();
    let gid = client.database_status("db").await.expect("status").shards[0].group_id;
    let group = format!("group=\"{gid}\"");
    for i in 0..20 {
        client
            .put("db", "c", &format!("before-{i:02}"), r#"{"n":1}"#, None)
            .await
            .expect("write");
    }
    // Checks run and find the replicas equal.
    wait_consistent_checks(
        &mut cluster,
        1.0,
        "a consistency check finds the replicas equal",
    )
    .await;

    // A follower skips the next writes without a trace.
    let leader = wait_for(Duration::from_secs(20), "a leader of db", async || {
        cluster.shard_leader("db", 0).await
    })
    .await;
    let node = (leader + 1) % cluster.len();
    let node_id = cluster.node_id(node).await;
    let trigger = cluster.node(node).data_dir.join(diverge_trigger(gid));
    std::fs::write(&trigger, b"").unwrap_or_else(|e| panic!("{}: {e}", trigger.display()));
    for i in 0..10 {
        client
            .put("db", "c", &format!("during-{i:02}"), r#"{"n":2}"#, None)
            .await
            .expect("a write the follower skips");
    }
    // The next check finds it: the replica stops for good and is taken out, and the cluster's
    // topology events say why.
    let why = cluster
        .wait_for_event(
            Duration::from_secs(60),
            "a topology event names the diverged replica",
            |e| {
                e.node_id == node_id
                    && e.to_state == "rehab"
                    && e.replica_broken
                    && e.reason.contains("differs from the other replicas")
            },
        )
        .await
        .reason;
    // No more skipping: the rebuilt replica applies everything.
    std::fs::remove_file(&trigger).unwrap_or_else(|e| panic!("{}: {e}", trigger.display()));
    progress(format!("replica on node {node_id}: {why}"));
    assert!(
        why.contains("differs from the other replicas at log index"),
        "{why}"
    );
    assert!(
        cluster
            .metric_sum("flotilla_consistency_replicas_diverged_total", &group)
            .await
            >= 1.0,
        "the leader counted the diverged replica"
    );

    // Rebuilt from the others on the same node: a Member again, holding what it skipped.
    cluster
        .wait_running_member("db", 0, node_id, Duration::from_secs(90))
        .await;
    cluster.wait_settled("db", Duration::from_secs(90)).await;
    let local = cluster.node_client(node, ClientOptions::default());
    wait_until(
        Duration::from_secs(30),
        "the rebuilt replica holds the writes it skipped",
        async || {
            matches!(
                local.get("db", "c", "during-09", Consistency::Stale).await,
                Ok(Some(_))
            )
        },
    )
    .await;
    let log = std::fs::read_to_string(cluster.node(node).log_path()).unwrap_or_default();
    assert!(
        log.contains("records of a replica stopped for good deleted"),
        "the node deleted the diverged replica's records before it was re-created"
    );
    assert_eq!(cluster.compare_replicas("db").await, 3);

    // Later checks find the replicas equal again.
    let consistent = consistent_checks(&mut cluster).await;
    client
        .put("db", "c", "after", r#"{"n":3}"#, None)
        .await
        .expect("write");
    wait_consistent_checks(
        &mut cluster,
        consistent + 1.0,
        "a check after the rebuild finds the replicas equal",
    )
    .await;
}
