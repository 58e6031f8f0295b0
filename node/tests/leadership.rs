//! Leadership moves on request and on a graceful stop: the named node takes over, and a leader
//! stopped with SIGTERM hands over first, so writes see at most one retry.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use flotilla_client::{ClientOptions, Group};
use support::{ClusterOptions, TestCluster, wait_for, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_to_the_named_node() {
    let cluster = TestCluster::start(3, ClusterOptions::default()).await;
    cluster.create_database("app", None, None).await;
    let client = cluster.client();

    let meta_leader = wait_for(Duration::from_secs(10), "meta leader", async || {
        cluster.meta_leader().await
    })
    .await;
    let target = (meta_leader + 1) % cluster.len();
    let target_id = cluster.node_id(target).await;
    let now = client
        .transfer_leadership(Group::Meta, target_id)
        .await
        .expect("meta transfer");
    assert_eq!(now, target_id);
    assert_eq!(cluster.meta_leader().await, Some(target));

    let shard = Group::Shard {
        database: "app".into(),
        shard: 0,
    };
    let shard_leader = wait_for(Duration::from_secs(10), "shard leader", async || {
        cluster.shard_leader("app", 0).await
    })
    .await;
    let target = (shard_leader + 2) % cluster.len();
    let target_id = cluster.node_id(target).await;
    assert_eq!(
        client
            .transfer_leadership(shard, target_id)
            .await
            .expect("shard transfer"),
        target_id
    );
    wait_until(
        Duration::from_secs(5),
        "the named node leads the shard",
        async || cluster.shard_leader("app", 0).await == Some(target),
    )
    .await;
    client
        .put("app", "c", "after-transfer", "{}", None)
        .await
        .expect("writes go on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_stopped_with_sigterm_hands_over_and_writes_see_at_most_one_retry() {
    let mut cluster = TestCluster::start(3, ClusterOptions::default()).await;
    cluster.create_database("app", None, None).await;
    let leader = wait_for(Duration::from_secs(10), "shard leader", async || {
        cluster.shard_leader("app", 0).await
    })
    .await;
    // Leave the shard leader in charge of the meta group too, so its stop moves both.
    let leader_id = cluster.node_id(leader).await;
    cluster
        .client()
        .transfer_leadership(Group::Meta, leader_id)
        .await
        .expect("meta to the shard leader");

    // Clients that may retry once: one extra attempt, no more. The puts are idempotent (each
    // writes its own key once), so a write whose outcome the node reports unknown (it was in
    // flight while the leadership moved) may be retried too.
    let others: Vec<String> = (0..cluster.len())
        .filter(|i| *i != leader)
        .map(|i| cluster.endpoint(i))
        .collect();
    let mut endpoints = vec![cluster.endpoint(leader)];
    endpoints.extend(others);
    let options = ClientOptions {
        max_attempts: 2,
        retry_uncertain_writes: true,
        ..ClientOptions::default()
    };
    let client = flotilla_client::Client::with_options(endpoints, options).expect("client");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut writers = Vec::new();
    for t in 0..4 {
        let (client, stop, ok, failed) = (client.clone(), stop.clone(), ok.clone(), failed.clone());
        writers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                match client
                    .put("app", "c", &format!("t{t}-{i}"), "{}", None)
                    .await
                {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        errors.push(e.to_string());
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                i += 1;
            }
            errors
        }));
    }
    wait_until(Duration::from_secs(10), "writes flowing", async || {
        ok.load(Ordering::Relaxed) > 100
    })
    .await;
    let status = cluster.sigterm(leader).await;
    assert!(status.success(), "graceful stop exited with {status}");
    let after = ok.load(Ordering::Relaxed);
    wait_until(
        Duration::from_secs(10),
        "writes continue after the stop",
        async || ok.load(Ordering::Relaxed) > after + 100,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for w in writers {
        errors.extend(w.await.expect("writer"));
    }
    assert!(
        errors.is_empty(),
        "writes failed despite one retry: {errors:?}"
    );
    let new_leader = wait_for(Duration::from_secs(5), "new shard leader", async || {
        cluster.shard_leader("app", 0).await
    })
    .await;
    assert_ne!(new_leader, leader);
}
