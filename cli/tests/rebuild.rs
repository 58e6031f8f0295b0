//! `flotilla cluster rebuild-node` end to end: real node processes, the real `flotilla`
//! binary, writes running the whole time. A rebuild that cannot work is refused before anything
//! changes; a damaged node that is up (and leads a shard) or wiped and back under a new
//! identity has every replica replaced by a fresh copy from its peers, leaves the cluster, and
//! no acknowledged write is lost; no shard ever has fewer Members than its replication factor
//! minus the damaged node's own replica.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_client::{Client, Consistency, Group, ReplicaState};
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::wait::{wait_for, wait_until};

mod common;
use common::{flotilla, text};

const DB: &str = "ledger";
const SHARDS: u32 = 2;

/// Puts new documents until stopped; the ids of the acknowledged ones.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(client: Client) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (stop, acked) = (stop.clone(), acked.clone());
            async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("doc-{i}");
                    i += 1;
                    // A write that fails (a leader change under way) is simply not counted.
                    if client
                        .put(DB, "docs", &id, &format!(r#"{{"n":{i}}}"#), None)
                        .await
                        .is_ok()
                    {
                        acked.lock().unwrap().push(id);
                    }
                }
            }
        });
        Writer { stop, acked, task }
    }

    /// Waits until `more` writes beyond those acknowledged so far are acknowledged.
    async fn wait_more(&self, more: usize) {
        let target = self.acked.lock().unwrap().len() + more;
        wait_until(Duration::from_secs(60), "writes acknowledged", async || {
            self.acked.lock().unwrap().len() >= target
        })
        .await;
    }

    async fn finish(self) -> Vec<String> {
        // Writes go through after the rebuild too.
        self.wait_more(20).await;
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        Arc::try_unwrap(self.acked).unwrap().into_inner().unwrap()
    }
}

/// Every acknowledged document reads back (linearizable), and every shard has its replication
/// factor of Members, none of them on `old`, which is out of the cluster.
async fn check_rebuilt(cluster: &Cluster, acked: &[String], old: u64) {
    assert!(
        acked.len() > 50,
        "too few writes went through: {}",
        acked.len()
    );
    let client = cluster.client();
    for id in acked {
        let doc = client
            .get(DB, "docs", id, Consistency::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("reading acknowledged {id}: {e}"));
        assert!(doc.is_some(), "acknowledged document {id} is lost");
    }
    let status = client.database_status(DB).await.unwrap();
    for s in &status.shards {
        let nodes: BTreeSet<u64> = s.replicas.iter().map(|r| r.node_id).collect();
        assert!(
            !nodes.contains(&old),
            "shard {} still on node {old}",
            s.shard
        );
        assert_eq!(nodes.len(), 3, "shard {}: {:?}", s.shard, s.replicas);
    }
    let nodes = client.cluster_status().await.unwrap().nodes;
    assert!(
        nodes.iter().all(|n| n.id != old),
        "node {old} is still registered"
    );
}

/// Waits until every shard has all of its replicas as Members.
async fn wait_members(client: &Client) {
    wait_until(
        Duration::from_secs(60),
        "every replica a Member",
        async || {
            let Ok(s) = client.database_status(DB).await else {
                return false;
            };
            s.shards.iter().all(|s| {
                s.replicas.len() == 3 && s.replicas.iter().all(|r| r.state == ReplicaState::Member)
            })
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_back_under_a_new_identity_takes_the_fresh_copies_under_writes() {
    let mut cluster = Cluster::start(3, ClusterOptions::default().fast_elections()).await;
    cluster.create_database(DB, Some(3), Some(SHARDS)).await;
    let endpoints = cluster.endpoints().join(",");
    let client = cluster.client();
    wait_members(&client).await;
    let old = cluster.node_id(2).await;

    // Every node holds every shard: nowhere for fresh copies, refused, nothing changed.
    let out = flotilla(&endpoints, &["cluster", "rebuild-node", &old.to_string()]).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("empty data directory"),
        "{}",
        text(&out)
    );
    let status = client.cluster_status().await.unwrap();
    assert!(status.nodes.iter().any(|n| n.id == old && !n.draining));
    // An unknown node is refused as not found (exit code 3).
    let out = flotilla(&endpoints, &["cluster", "rebuild-node", "987654"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));

    // The damaged node's disk is replaced: it comes back empty, under a new identity.
    let writer = Writer::start(cluster.client());
    writer.wait_more(20).await;
    cluster.kill9(2);
    cluster.wipe(2);
    cluster.restart(2);
    cluster.wait_ready(2).await;
    // Registered beside the old identity, at the same address.
    let addr = cluster.endpoint(2);
    let fresh = wait_for(
        Duration::from_secs(30),
        "the wiped node's new identity",
        async || {
            let status = client.cluster_status().await.ok()?;
            status
                .nodes
                .iter()
                .find(|n| n.client_addr == addr && n.id != old)
                .map(|n| n.id)
        },
    )
    .await;

    let out = flotilla(
        &endpoints,
        &[
            "cluster",
            "rebuild-node",
            &old.to_string(),
            "--timeout",
            "3m",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let log = text(&out);
    assert!(log.contains("done, replicas on nodes"), "{log}");
    assert!(log.contains(&format!("node {fresh}")), "{log}");
    let acked = writer.finish().await;
    check_rebuilt(&cluster, &acked, old).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_node_that_leads_hands_over_before_its_replicas_are_copied_elsewhere() {
    let mut cluster = Cluster::start(3, ClusterOptions::default().fast_elections()).await;
    cluster.create_database(DB, Some(3), Some(SHARDS)).await;
    let extra = cluster.add_node().await;
    let endpoints = cluster.endpoints().join(",");
    let client = cluster.client();
    wait_members(&client).await;
    let damaged = cluster.node_id(1).await;
    // The damaged node leads shard 0 (so its leadership must move before any copy is made).
    client
        .transfer_leadership(
            Group::Shard {
                database: DB.into(),
                shard: 0,
            },
            damaged,
        )
        .await
        .unwrap();

    let writer = Writer::start(cluster.client());
    writer.wait_more(20).await;
    let out = flotilla(
        &endpoints,
        &[
            "cluster",
            "rebuild-node",
            &damaged.to_string(),
            "--timeout",
            "3m",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let log = text(&out);
    assert!(log.contains("shard 0: leadership moved to node"), "{log}");
    let acked = writer.finish().await;
    check_rebuilt(&cluster, &acked, damaged).await;
    let spare = cluster.node_id(extra).await;
    let status = client.database_status(DB).await.unwrap();
    assert!(
        status
            .shards
            .iter()
            .all(|s| s.replicas.iter().any(|r| r.node_id == spare)),
        "the spare node {spare} holds a copy of every shard: {status:?}"
    );
}
