//! Acknowledged writes survive: a full restart of every node, a kill -9 of the shard leader under
//! write load, and a replica that was down while the log moved past the snapshot threshold.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_client::{Client, ClientOptions, Consistency, Error, ListOptions};
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::wait::{wait_until, within};

const DB: &str = "durable";
const COLL: &str = "items";

/// Every document of `COLL` as (id -> json), read from `client` at `consistency`.
async fn read_all(
    client: &Client,
    consistency: Consistency,
) -> Result<BTreeMap<String, String>, Error> {
    let mut out = BTreeMap::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .list_with(
                DB,
                COLL,
                &ListOptions {
                    prefix: String::new(),
                    limit: 1000,
                    page_token: token.clone(),
                    consistency,
                },
            )
            .await?;
        for d in page.documents {
            out.insert(d.id, d.json);
        }
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => return Ok(out),
        }
    }
}

/// Fails with a short description of the difference (not the whole maps).
fn assert_same(got: &BTreeMap<String, String>, acked: &BTreeMap<String, String>, what: &str) {
    let missing: Vec<&String> = acked
        .keys()
        .filter(|k| got.get(*k) != acked.get(*k))
        .collect();
    let extra: Vec<&String> = got.keys().filter(|k| !acked.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: {} of {} acknowledged writes missing or different (e.g. {:?}), {} unexpected (e.g. {:?}); read {} documents",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)],
        extra.len(),
        &extra[..extra.len().min(5)],
        got.len()
    );
}

/// Writes `count` distinct documents from `tasks` concurrent writers; returns what was acknowledged.
async fn write_concurrently(
    client: &Client,
    prefix: &str,
    count: usize,
    tasks: usize,
) -> BTreeMap<String, String> {
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let mut handles = Vec::new();
    for t in 0..tasks {
        let client = client.clone();
        let acked = acked.clone();
        let prefix = prefix.to_string();
        handles.push(tokio::spawn(async move {
            for i in (t..count).step_by(tasks) {
                let id = format!("{prefix}-{i:06}");
                let json = format!(r#"{{"i":{i},"writer":{t}}}"#);
                client
                    .put(DB, COLL, &id, &json, None)
                    .await
                    .unwrap_or_else(|e| panic!("write {id} failed: {e}"));
                acked.lock().unwrap().insert(id, json);
            }
        }));
    }
    for h in handles {
        h.await.expect("writer task");
    }
    Arc::try_unwrap(acked)
        .expect("writers done")
        .into_inner()
        .unwrap()
}

/// Waits until node `i`'s own replica (a stale read) holds every acknowledged write.
async fn wait_replica_has(cluster: &Cluster, i: usize, acked: &BTreeMap<String, String>) {
    let client = cluster.node(i).client();
    wait_until(
        Duration::from_secs(60),
        &format!("node {i} holds every acknowledged write"),
        async || match read_all(&client, Consistency::Stale).await {
            Ok(docs) => acked.iter().all(|(id, json)| docs.get(id) == Some(json)),
            Err(_) => false,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_writes_survive_a_restart_of_every_node() {
    let mut cluster = Cluster::start(3, ClusterOptions::default()).await;
    cluster.create_database(DB, Some(3), None).await;
    let acked = write_concurrently(&cluster.client(), "doc", 1000, 16).await;
    assert_eq!(acked.len(), 1000);

    for i in 0..cluster.len() {
        cluster.kill9(i);
    }
    for i in 0..cluster.len() {
        cluster.restart(i);
    }
    cluster.wait_all_ready().await;

    for i in 0..cluster.len() {
        let linearizable = within(
            Duration::from_secs(60),
            "linearizable read through one node",
            async {
                loop {
                    match read_all(&cluster.node(i).client(), Consistency::Linearizable).await {
                        Ok(docs) => break docs,
                        Err(e) if e.is_unavailable() => {
                            tokio::time::sleep(Duration::from_millis(100)).await
                        }
                        Err(e) => panic!("reading through node {i}: {e}"),
                    }
                }
            },
        )
        .await;
        assert_same(
            &linearizable,
            &acked,
            &format!("linearizable read through node {i}"),
        );
        wait_replica_has(&cluster, i, &acked).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_shard_leader_under_load_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3, ClusterOptions::default().fast_elections()).await;
    cluster.create_database(DB, Some(3), None).await;
    let client = cluster.client();
    let acked = Arc::new(Mutex::new(BTreeMap::<String, String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for t in 0..8 {
        let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            let mut failures = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = format!("w{t}-{i:06}");
                let json = format!(r#"{{"t":{t},"i":{i}}}"#);
                match client.put(DB, COLL, &id, &json, None).await {
                    Ok(_) => {
                        acked.lock().unwrap().insert(id, json);
                    }
                    // The outcome of an interrupted write is unknown: it is not counted as acknowledged.
                    Err(_) => failures += 1,
                }
                i += 1;
            }
            failures
        }));
    }
    let acked_now = || acked.lock().unwrap().len();
    wait_until(Duration::from_secs(30), "writes flowing", async || {
        acked_now() >= 200
    })
    .await;
    let leader =
        flotilla_testkit::wait::wait_for(Duration::from_secs(10), "shard leader", async || {
            cluster.shard_leader(DB, 0).await
        })
        .await;
    let before = acked_now();
    cluster.kill9(leader);
    wait_until(
        Duration::from_secs(30),
        "writes resume after the leader was killed",
        async || acked_now() >= before + 300,
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    cluster.restart(leader);
    cluster.wait_ready(leader).await;
    let acked = acked.lock().unwrap().clone();
    let docs = read_all(&cluster.client(), Consistency::Linearizable)
        .await
        .expect("read back");
    let extra_ok: BTreeMap<String, String> = docs
        .into_iter()
        .filter(|(k, _)| acked.contains_key(k))
        .collect();
    // Writes whose outcome was unknown may exist too; only acknowledged ones are required.
    assert_same(&extra_ok, &acked, "after the leader was killed");
    wait_replica_has(&cluster, leader, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_down_for_twenty_thousand_writes_catches_up_by_snapshot() {
    let mut cluster = Cluster::start(3, ClusterOptions::default().snapshot_threshold(2_000)).await;
    cluster.create_database(DB, Some(3), None).await;
    // Stop a follower of the shard, then move the log far past the snapshot threshold.
    let leader =
        flotilla_testkit::wait::wait_for(Duration::from_secs(10), "shard leader", async || {
            cluster.shard_leader(DB, 0).await
        })
        .await;
    let down = (leader + 1) % cluster.len();
    cluster.kill9(down);
    // One entry per write: a client that sends concurrent writes together would let the shard
    // leader put many in one entry, and the log might not pass the threshold.
    let one_by_one = cluster.client_with(ClientOptions {
        coalesce_calls: false,
        total_timeout: Duration::from_secs(30),
        ..ClientOptions::default()
    });
    let acked = write_concurrently(&one_by_one, "bulk", 20_000, 64).await;
    assert_eq!(acked.len(), 20_000);

    cluster.restart(down);
    cluster.wait_ready(down).await;
    wait_replica_has(&cluster, down, &acked).await;
    let log = std::fs::read_to_string(cluster.node(down).log_path()).expect("node log");
    assert!(
        log.contains("snapshot installed"),
        "node {down} should have caught up by snapshot; its log:\n{}",
        cluster.node(down).log_tail(30)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_whose_log_grows_large_in_bytes_takes_a_snapshot() {
    // Far more entries than the test writes, but a small byte limit.
    let options = ClusterOptions::default()
        .snapshot_threshold(1_000_000)
        .arg("--snapshot-log-bytes=65536");
    let cluster = Cluster::start(3, options).await;
    cluster.create_database(DB, Some(3), None).await;
    let body = format!(r#"{{"pad":"{}"}}"#, "x".repeat(1024));
    let client = cluster.client();
    for i in 0..100 {
        client
            .put(DB, "c", &format!("k{i}"), &body, None)
            .await
            .expect("put");
    }
    // 100 KiB of documents: every replica passes the limit and snapshots its shard.
    for i in 0..cluster.len() {
        wait_until(
            Duration::from_secs(20),
            &format!("node {i} snapshots the shard"),
            async || {
                std::fs::read_to_string(cluster.node(i).log_path())
                    .is_ok_and(|log| log.contains("snapshot built"))
            },
        )
        .await;
    }
}
