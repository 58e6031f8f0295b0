//! A slow disk (`--test-storage-faults` and the `slow-sync` trigger file, see the node's
//! `store::slow_disk`): the shard leader's syncs stall, then every node's. Writes go on
//! (slower), the nodes stay healthy, and once the disks are fast again nothing acknowledged is
//! missing. The leader's log fsync histogram shows the stalls, so the trigger reaches the node.

use std::time::Duration;

use flotilla_client::Consistency;
use flotilla_testkit::cluster::{Cluster, ClusterOptions, SLOW_SYNC};
use flotilla_testkit::http;
use flotilla_testkit::progress;
use flotilla_testkit::wait::wait_for;

/// The summed seconds of node `i`'s log-file fsyncs (`flotilla_storage_fsync_duration_seconds`).
async fn log_fsync_seconds(cluster: &Cluster, i: usize) -> f64 {
    let (_, text) = http::get(&cluster.node(i).http_addr, "/metrics")
        .await
        .unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.starts_with("flotilla_storage_fsync_duration_seconds_sum{")
                && l.contains("flotilla.redb")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum()
}

async fn healthy(cluster: &Cluster, i: usize) -> bool {
    matches!(
        http::get(&cluster.node(i).http_addr, "/healthz").await,
        Ok((200, _))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_go_on_over_slow_disks_and_nothing_acknowledged_is_lost() {
    let mut cluster = Cluster::start(
        3,
        ClusterOptions::default()
            .fast_elections()
            .arg("--test-storage-faults"),
    )
    .await;
    cluster.create_database("db", Some(3), None).await;
    let client = cluster.client();
    let leader = wait_for(Duration::from_secs(20), "a shard leader", async || {
        cluster.shard_leader("db", 0).await
    })
    .await;
    let mut acked = Vec::new();
    let mut write = async |id: String| {
        client
            .put("db", "c", &id, r#"{"n":1}"#, None)
            .await
            .unwrap_or_else(|e| panic!("write {id}: {e}"));
        acked.push(id);
    };

    // The leader's syncs take 300 ms longer.
    let before = log_fsync_seconds(&cluster, leader).await;
    cluster.slow_disk(leader, 300).expect("slow disk");
    for i in 0..10 {
        write(format!("leader-slow-{i}")).await;
    }
    let after = log_fsync_seconds(&cluster, leader).await;
    progress(format!(
        "the leader's log fsyncs took {:.2}s during 10 writes",
        after - before
    ));
    assert!(
        after - before >= 0.3,
        "the leader's syncs were slowed ({before:.3}s -> {after:.3}s)"
    );
    assert!(
        healthy(&cluster, leader).await,
        "a slow disk is not a failure"
    );

    // Every node's syncs slow: commits wait on them.
    for i in 0..cluster.len() {
        cluster.slow_disk(i, 150).expect("slow disk");
    }
    for i in 0..10 {
        write(format!("all-slow-{i}")).await;
    }
    for i in 0..cluster.len() {
        assert!(healthy(&cluster, i).await, "node {i} stays healthy");
    }

    // Fast again: the triggers are gone, writes go on.
    cluster.heal_all().expect("heal");
    for i in 0..cluster.len() {
        assert!(!cluster.node(i).data_dir.join(SLOW_SYNC).exists());
    }
    for i in 0..10 {
        write(format!("fast-{i}")).await;
    }
    for id in &acked {
        let doc = client
            .get("db", "c", id, Consistency::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("read {id}: {e}"));
        assert!(doc.is_some(), "acknowledged write {id} is missing");
    }
}
