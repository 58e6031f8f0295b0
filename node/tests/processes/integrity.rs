//! A flipped bit in a stopped node's stored Raft log is found when the node starts again: the
//! node does not serve that group (and does not restart it in a loop), says why on `/healthz`,
//! the shard status says why, the shard's other replicas go on serving reads and writes, and
//! the replica is rebuilt from them.
//! A node that was killed checks its data files whole when it starts again; one stopped
//! cleanly does not.

use std::path::Path;
use std::time::Duration;

use flotilla_client::{ClientOptions, Consistency};
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::progress;
use flotilla_testkit::wait::{wait_for, wait_until};
use redb::{Database, ReadableDatabase, TableDefinition};

/// The Raft log table of a node's log file: (group, index) -> stored entry.
const LOGS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("raft_log");

/// Flips one bit in the last stored log entry of group `gid` in the (closed) log file of
/// `data_dir`, as a failing disk would; returns the entry's index.
fn flip_last_entry(data_dir: &Path, gid: u64) -> u64 {
    let path = data_dir.join("flotilla.redb");
    let db = Database::create(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (index, mut bytes) = {
        let txn = db.begin_read().expect("read");
        let table = txn.open_table(LOGS).expect("the log table");
        let mut rows = table.range((gid, 0)..=(gid, u64::MAX)).expect("range");
        let (k, v) = rows
            .next_back()
            .expect("the group has a stored entry")
            .expect("row");
        (k.value().1, v.value().to_vec())
    };
    let at = bytes.len() - 1;
    bytes[at] ^= 0x01;
    let txn = db.begin_write().expect("write");
    {
        let mut table = txn.open_table(LOGS).expect("the log table");
        table
            .insert((gid, index), bytes.as_slice())
            .expect("insert");
    }
    txn.commit().expect("commit");
    index
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_log_entry_stops_its_group_on_that_node_only() {
    let mut cluster = Cluster::start(3, ClusterOptions::default().fast_elections()).await;
    cluster.create_database("db", Some(3), Some(1)).await;
    let client = cluster.client();
    let gid = client.database_status("db").await.expect("status").shards[0].group_id;
    for i in 0..20 {
        client
            .put("db", "c", &format!("before-{i:02}"), r#"{"n":1}"#, None)
            .await
            .expect("write");
    }
    // The node whose log is damaged: not the shard leader.
    let leader = wait_for(Duration::from_secs(20), "a leader of db", async || {
        cluster.shard_leader("db", 0).await
    })
    .await;
    let node = (leader + 1) % cluster.len();
    let local = cluster.node_client(node, ClientOptions::default());
    wait_until(
        Duration::from_secs(20),
        "the node's replica holds every write",
        async || {
            matches!(
                local.get("db", "c", "before-19", Consistency::Stale).await,
                Ok(Some(_))
            )
        },
    )
    .await;

    cluster.sigterm(node).await;
    let index = flip_last_entry(&cluster.node(node).data_dir, gid);
    progress(format!(
        "flipped a bit of entry {index} of group {gid} on node {node}"
    ));
    cluster.restart(node);

    let http = cluster.node(node).http_addr.clone();
    let expected = format!("group {gid} stopped: corrupt log entry {index} of group {gid}");
    let body = wait_for(
        Duration::from_secs(30),
        "/healthz names the corrupt group",
        async || {
            let (code, body) = flotilla_testkit::http::get(&http, "/healthz").await.ok()?;
            (code == 503 && body.contains(&expected)).then_some(body)
        },
    )
    .await;
    progress(format!("/healthz: {body}"));
    assert!(body.contains("not restarted"), "{body}");

    // The other two replicas keep the shard: writes and linearizable reads go on.
    for i in 0..20 {
        client
            .put("db", "c", &format!("after-{i:02}"), r#"{"n":2}"#, None)
            .await
            .expect("a write with one replica stopped");
    }
    let read = client
        .get("db", "c", "after-19", Consistency::Linearizable)
        .await
        .expect("a read with one replica stopped");
    assert!(read.is_some());

    // The replica is taken out for it: the cluster's topology events say why (the shard status
    // says so too while it is a member, which is only until the topology acts).
    let node_id = cluster.node_id(node).await;
    let why = format!("corrupt log entry {index} of group {gid}");
    let event = cluster
        .wait_for_event(
            Duration::from_secs(30),
            "a topology event names the corrupt replica and why",
            |e| {
                e.node_id == node_id
                    && e.to_state == "rehab"
                    && e.replica_broken
                    && e.reason.contains(&why)
            },
        )
        .await;
    progress(format!(
        "event: {} -> {}: {}",
        event.from_state, event.to_state, event.reason
    ));

    // Never opened again from its files: stopped for good, then rebuilt from the other
    // replicas (removed, its records deleted, re-created on its node: there is no other).
    cluster
        .wait_running_member("db", 0, node_id, Duration::from_secs(90))
        .await;
    wait_until(
        Duration::from_secs(30),
        "the rebuilt replica holds every write",
        async || {
            matches!(
                local.get("db", "c", "after-19", Consistency::Stale).await,
                Ok(Some(_))
            )
        },
    )
    .await;
    wait_until(
        Duration::from_secs(30),
        "/healthz is healthy again",
        async || {
            matches!(
                flotilla_testkit::http::get(&http, "/healthz").await,
                Ok((200, _))
            )
        },
    )
    .await;
    let log = std::fs::read_to_string(cluster.node(node).log_path()).unwrap_or_default();
    assert!(
        !log.contains("raft group opened again"),
        "the corrupt group was restarted from its files"
    );
    assert!(
        log.contains("records of a replica stopped for good deleted"),
        "the corrupt records were deleted before the replica was re-created"
    );
    assert_eq!(cluster.compare_replicas("db").await, 3);
}

/// What node `i` logged in its latest run.
fn last_run_log(cluster: &Cluster, i: usize) -> String {
    let log = std::fs::read_to_string(cluster.node(i).log_path()).unwrap_or_default();
    match log.rfind("---- harness: starting") {
        Some(at) => log[at..].to_string(),
        None => log,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_checks_its_files_whole_when_it_starts_and_one_stopped_cleanly_does_not() {
    let mut cluster = Cluster::start(3, ClusterOptions::default().fast_elections()).await;
    cluster.create_database("db", Some(3), Some(1)).await;
    let client = cluster.client();
    for i in 0..20 {
        client
            .put("db", "c", &format!("d{i:02}"), r#"{"n":1}"#, None)
            .await
            .expect("write");
    }
    cluster.sigterm(1).await;
    cluster.restart(1);
    cluster.wait_ready(1).await;
    let clean = last_run_log(&cluster, 1);
    assert!(
        !clean.contains("did not stop cleanly"),
        "a node stopped cleanly trusts its files: {clean}"
    );

    cluster.kill9(2);
    cluster.restart(2);
    cluster.wait_ready(2).await;
    let killed = last_run_log(&cluster, 2);
    for file in ["flotilla.redb", "state.redb"] {
        assert!(
            killed
                .lines()
                .any(|l| l.contains("file checked: whole") && l.contains(file)),
            "{file} is checked after a kill: {killed}"
        );
    }
    // And the node serves: its replica has every write.
    let local = cluster.node_client(2, ClientOptions::default());
    wait_until(
        Duration::from_secs(20),
        "the restarted node's replica holds every write",
        async || {
            matches!(
                local.get("db", "c", "d19", Consistency::Stale).await,
                Ok(Some(_))
            )
        },
    )
    .await;
}
