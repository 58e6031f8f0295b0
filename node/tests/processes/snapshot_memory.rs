//! A shard far larger than the nodes' caches is snapshotted, sent to a new replica and
//! installed there with bounded memory: the node that builds and sends it, and the new replica
//! that receives and installs it, each grow by a small part of the shard's size (a snapshot held
//! whole would cost the shard's size several times over). The limits are lowered for the test
//! (an 8 MiB state cache); `FLOTILLA_SNAPSHOT_MIB` sets the shard's size (default 96) for a
//! longer run by hand.

use std::time::Duration;

use flotilla_client::{Consistency, ReplicaState};
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::wait::wait_until;

const DOC_BYTES: usize = 512 << 10;
const MIB: u64 = 1 << 20;
/// Log entries between snapshots.
const THRESHOLD: u64 = 100;

/// Resets the peak resident memory the kernel keeps for process `pid` (`VmHWM`) to what it
/// holds now.
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .unwrap_or_else(|e| panic!("resetting the peak memory of process {pid}: {e}"));
}

/// A field of `/proc/<pid>/status` in bytes (`VmRSS`, `VmHWM`).
fn memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading the status of process {pid}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no {field} for process {pid}: {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shard_larger_than_the_caches_snapshots_and_installs_in_bounded_memory() {
    let shard_mib: u64 = std::env::var("FLOTILLA_SNAPSHOT_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96);
    assert!(
        shard_mib >= 64,
        "a shard of {shard_mib} MiB is too small to tell a bounded snapshot from a whole one"
    );
    let docs = (shard_mib * MIB) as usize / DOC_BYTES;
    let options = ClusterOptions::default()
        .fast_elections()
        // Snapshots while loading purge the log, so that a new replica starts from one.
        .snapshot_threshold(THRESHOLD)
        .arg(format!("--state-cache-bytes={}", 8 * MIB));
    let mut cluster = Cluster::start(3, options.clone()).await;
    cluster.create_database("app", Some(3), None).await;
    let client = cluster.client();

    // The load: documents of 512 KiB, eight writers at once.
    let pad = "p".repeat(DOC_BYTES - 64);
    let mut writers = Vec::new();
    for w in 0..8 {
        let (client, pad) = (client.clone(), pad.clone());
        writers.push(tokio::spawn(async move {
            for i in (w..docs).step_by(8) {
                let body = format!("{{\"i\":{i},\"pad\":\"{pad}\"}}");
                client
                    .put("app", "c", &format!("d{i:06}"), &body, None)
                    .await
                    .unwrap_or_else(|e| panic!("writing d{i:06}: {e}"));
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }

    // Small writes after the load, enough to trigger a snapshot covering all of it; then, once
    // no node has a snapshot still to build, the one sent holds every large document, and the
    // new replica catches up on small entries only (a replica sent a snapshot that a build in
    // progress supersedes catches up on the large documents by log, through the log's page
    // cache, which this test does not measure).
    for i in 0..(THRESHOLD + 10) {
        client
            .put("app", "small", &format!("s{i}"), "{}", None)
            .await
            .unwrap_or_else(|e| panic!("writing s{i}: {e}"));
    }
    for i in 0..cluster.len() {
        wait_until(
            Duration::from_secs(120),
            "every node has snapshotted the load",
            async || {
                let last = cluster
                    .metric(i, r#"flotilla_raft_last_log_index{group="1"}"#)
                    .await;
                let snapshot = cluster
                    .metric(i, r#"flotilla_raft_snapshot_index{group="1"}"#)
                    .await;
                matches!((last, snapshot), (Some(l), Some(s)) if s + THRESHOLD as f64 > l)
            },
        )
        .await;
    }

    // A new node gets a replica: by hand here, mentored by the leader, or moved there by the
    // rebalancer first. Either way one of the three sends it the whole shard as a snapshot.
    let spare_index = cluster.add_node_with(options).await;
    let spare = cluster.node_id(spare_index).await;
    let pids: Vec<u32> = (0..=spare_index)
        .map(|i| cluster.node(i).pid().expect("the node runs"))
        .collect();
    let before: Vec<u64> = pids
        .iter()
        .map(|pid| {
            reset_peak(*pid);
            memory(*pid, "VmRSS")
        })
        .collect();
    let leader = client.database_status("app").await.expect("status").shards[0].leader_id;
    match client.add_replica("app", Some(0), spare, leader).await {
        Ok(steps) => assert!(!steps.is_empty()),
        Err(e) if e.to_string().contains("already holds a replica") => {}
        Err(e) => panic!("adding a replica on the new node: {e}"),
    }
    wait_until(
        Duration::from_secs(180),
        "the new replica is a Member",
        async || {
            client.database_status("app").await.is_ok_and(|s| {
                s.shards[0]
                    .replicas
                    .iter()
                    .any(|r| r.node_id == spare && r.state == ReplicaState::Member)
            })
        },
    )
    .await;
    let peaks: Vec<u64> = pids.iter().map(|pid| memory(*pid, "VmHWM")).collect();

    // The new replica holds every document itself.
    let local = cluster.node(spare_index).client();
    wait_until(
        Duration::from_secs(30),
        "the new replica holds every document",
        async || {
            local
                .get("app", "c", &format!("d{:06}", docs - 1), Consistency::Stale)
                .await
                .is_ok_and(|d| d.is_some())
        },
    )
    .await;
    for i in (0..docs).step_by(docs / 16 + 1) {
        let doc = local
            .get("app", "c", &format!("d{i:06}"), Consistency::Stale)
            .await
            .expect("read")
            .unwrap_or_else(|| panic!("d{i:06} is missing on the new replica"));
        assert_eq!(doc.value().expect("json")["i"], i);
    }
    let log = std::fs::read_to_string(cluster.node(spare_index).log_path()).unwrap_or_default();
    assert!(
        log.contains("snapshot installed"),
        "the new replica installed a snapshot"
    );

    let shard_bytes = docs as u64 * DOC_BYTES as u64;
    for (i, (before, peak)) in before.iter().zip(&peaks).enumerate() {
        let who = match i == spare_index {
            true => "new replica".to_string(),
            false => format!("node {i}"),
        };
        let grew = peak.saturating_sub(*before);
        println!(
            "{who}: {} MiB resident before, peak {} MiB (+{} MiB) for a shard of {} MiB",
            before / MIB,
            peak / MIB,
            grew / MIB,
            shard_bytes / MIB
        );
        assert!(
            grew < shard_bytes / 3,
            "the {who} grew by {} MiB for a snapshot of {} MiB",
            grew / MIB,
            shard_bytes / MIB
        );
    }
}
