//! Leadership moves on request and on a graceful stop: the named node takes over, and a leader
//! stopped with SIGTERM hands over first, so writes see at most one retry. When a leader's
//! process dies, its followers take over without waiting for their timers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use flotilla_client::{ClientOptions, Group};
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::http;
use flotilla_testkit::wait::{wait_for, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_to_the_named_node() {
    let cluster = Cluster::start(3, ClusterOptions::default()).await;
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
    let mut cluster = Cluster::start(3, ClusterOptions::default()).await;
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

/// The value of `flotilla_raft_takeovers` for `group` on node `i` (0 when not reported).
async fn takeovers(cluster: &Cluster, i: usize, group: u64) -> u64 {
    let Ok((_, body)) = http::get(&cluster.node(i).http_addr, "/metrics").await else {
        return 0;
    };
    let prefix = format!("flotilla_raft_takeovers_total{{group=\"{group}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_take_over_at_once_when_the_leaders_process_is_gone() {
    // Long timers: the followers' lease on their leader lasts two election timeouts (8 s)
    // from its last heartbeat, and no ordinary election can succeed before it ends. A new
    // leader well within that time can only come from the takeover.
    let election = Duration::from_secs(4);
    let mut cluster = Cluster::start(
        3,
        ClusterOptions {
            election_timeout_ms: Some(election.as_millis() as u64),
            ..ClusterOptions::default()
        },
    )
    .await;
    cluster.create_database("app", Some(3), None).await;
    let client = cluster.client();
    client
        .put("app", "c", "before", "{}", None)
        .await
        .expect("put before the kill");
    let group = client
        .database_status("app")
        .await
        .expect("database status")
        .shards[0]
        .group_id;
    let leader = wait_for(Duration::from_secs(10), "shard leader", async || {
        cluster.shard_leader("app", 0).await
    })
    .await;

    cluster.kill9(leader);
    let new_leader = wait_for(
        election + election / 2,
        "a new shard leader before the gone leader's lease ends",
        async || {
            cluster
                .shard_leader("app", 0)
                .await
                .filter(|l| *l != leader)
        },
    )
    .await;
    assert!(
        takeovers(&cluster, new_leader, group).await >= 1,
        "the new leader did not report a takeover"
    );
    client
        .put("app", "c", "after", "{}", None)
        .await
        .expect("writes resume");

    // Back at the same address, the old leader is a follower like any other.
    cluster.restart(leader);
    cluster.wait_ready(leader).await;
    let back = flotilla_client::Client::with_options(
        vec![cluster.endpoint(leader)],
        ClientOptions::default(),
    )
    .expect("a client of the restarted node");
    wait_until(
        Duration::from_secs(30),
        "the restarted node has caught up",
        async || {
            back.get("app", "c", "after", flotilla_client::Consistency::Stale)
                .await
                .is_ok_and(|d| d.is_some())
        },
    )
    .await;
}
