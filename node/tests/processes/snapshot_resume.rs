//! A follower back from an absence, past the log its leader kept, is sent a large snapshot
//! while writes go on and the leader snapshots and compacts its log meanwhile: it installs that
//! one snapshot and resumes by log from where it ends. Were the log behind the snapshot purged
//! during the transfer, it would need another snapshot, and under steady writes maybe one after
//! another for ever.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use flotilla_client::Consistency;
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::progress;
use flotilla_testkit::wait::{wait_for, wait_until};

const DOC_BYTES: usize = 512 << 10;
/// The shard's size: large enough that its snapshot takes a while to travel.
const SHARD_DOCS: usize = 80;
/// Log entries between snapshots: many snapshots while the large one travels.
const THRESHOLD: u64 = 10;
/// Writers that go on while the follower comes back.
const WRITERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_sent_a_large_snapshot_under_steady_writes_installs_it_once() {
    let options = ClusterOptions::default()
        .fast_elections()
        .snapshot_threshold(THRESHOLD)
        .env("FLOTILLA_HIBERNATE_AFTER", "0s");
    let mut cluster = Cluster::start(3, options).await;
    cluster.create_database("app", Some(3), None).await;
    let client = cluster.client();

    let pad = "p".repeat(DOC_BYTES - 64);
    let mut loaders = Vec::new();
    for w in 0..4 {
        let (client, pad) = (client.clone(), pad.clone());
        loaders.push(tokio::spawn(async move {
            for i in (w..SHARD_DOCS).step_by(4) {
                let body = format!("{{\"i\":{i},\"pad\":\"{pad}\"}}");
                client
                    .put("app", "big", &format!("d{i:04}"), &body, None)
                    .await
                    .unwrap_or_else(|e| panic!("writing d{i:04}: {e}"));
            }
        }));
    }
    for l in loaders {
        l.await.expect("loader");
    }

    // A follower goes away and misses several snapshots' worth of writes.
    let leader = wait_for(Duration::from_secs(20), "a shard leader", async || {
        cluster.shard_leader("app", 0).await
    })
    .await;
    let away = (leader + 1) % 3;
    cluster.kill9(away);
    for i in 0..(4 * THRESHOLD) {
        client
            .put("app", "small", &format!("gone-{i}"), "{}", None)
            .await
            .unwrap_or_else(|e| panic!("writing gone-{i}: {e}"));
    }

    // Steady writes from now on, through the other two nodes.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let client = client.clone();
        let (stop, written) = (stop.clone(), written.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("steady-{w}");
                if client
                    .put("app", "small", &key, &format!("{{\"n\":{i}}}"), None)
                    .await
                    .is_ok()
                {
                    written.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
            i
        }));
    }
    cluster.restart(away);
    cluster.wait_ready(away).await;
    let local = cluster.node(away).client();
    wait_until(
        Duration::from_secs(120),
        "the follower that was away holds the large documents",
        async || {
            local
                .get(
                    "app",
                    "big",
                    &format!("d{:04}", SHARD_DOCS - 1),
                    Consistency::Stale,
                )
                .await
                .is_ok_and(|d| d.is_some())
        },
    )
    .await;
    // Writes go on for a while after the install: the follower follows by log.
    let after = written.load(Ordering::Relaxed);
    wait_until(
        Duration::from_secs(60),
        "several snapshots' worth of writes after the install",
        async || written.load(Ordering::Relaxed) >= after + 2 * THRESHOLD,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut last = Vec::new();
    for w in writers {
        last.push(w.await.expect("writer"));
    }
    progress(format!(
        "{} steady writes while the follower came back",
        written.load(Ordering::Relaxed)
    ));
    // It has every write, and got there with a single snapshot.
    for (w, attempts) in last.iter().enumerate() {
        let want = attempts.saturating_sub(1);
        let key = format!("steady-{w}");
        wait_until(
            Duration::from_secs(30),
            "the follower has the last steady writes",
            async || {
                local
                    .get("app", "small", &key, Consistency::Stale)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|d| d.value().ok())
                    .is_some_and(|v| v["n"].as_u64().is_some_and(|n| n + 1 >= want))
            },
        )
        .await;
    }
    let installs = cluster
        .metric(away, "flotilla_snapshot_install_duration_seconds_count")
        .await;
    assert_eq!(
        installs,
        Some(1.0),
        "snapshots the follower installed after it came back"
    );
}
