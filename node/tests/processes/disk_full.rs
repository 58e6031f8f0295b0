//! A node whose data volume fills up (a real tmpfs, filled with a ballast file): it hands its
//! leaderships over and the shard goes on taking writes on the other replicas; with every
//! volume full, writes that add data are refused as STORAGE_FULL (HTTP 507) while reads and
//! deletes go on; once space is freed, writes resume by themselves, nothing acknowledged is
//! lost and the replicas are equal.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_client::{Client, ClientOptions, Error};
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::environment::{current_test, not_run};
use flotilla_testkit::http;
use flotilla_testkit::progress;
use flotilla_testkit::tmpfs::Tmpfs;
use flotilla_testkit::wait::{wait_for, wait_until};

/// Each node's data volume.
const VOLUME: u64 = 48 << 20;
/// The reserve below which a node counts its volume as full.
const RESERVE: u64 = 3 << 20;
/// What a filled volume keeps free: below the reserve, enough for Raft's own small writes.
const LEFT: u64 = 1 << 20;

async fn readyz(cluster: &Cluster, i: usize) -> (u16, String) {
    http::get(&cluster.node(i).http_addr, "/readyz")
        .await
        .unwrap_or((0, String::new()))
}

/// The body of document number `i`.
fn body(i: usize) -> String {
    format!(r#"{{"n":{i},"pad":"{}"}}"#, "x".repeat(200))
}

/// Writes documents `prefix-NN` for `range`, each acknowledged, and records them in `acked`.
async fn write_all(
    client: &Client,
    prefix: &str,
    range: std::ops::Range<usize>,
    acked: &mut BTreeMap<String, Option<String>>,
) {
    for i in range {
        let id = format!("{prefix}-{i:02}");
        client
            .put("db", "c", &id, &body(i), None)
            .await
            .unwrap_or_else(|e| panic!("write {id}: {e}"));
        acked.insert(id, Some(body(i)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_volume_refuses_writes_that_add_data_loses_nothing_and_resumes_when_freed() {
    if let Err(e) = Tmpfs::available() {
        not_run(&current_test(), e);
        return;
    }
    let root = tempfile::Builder::new()
        .prefix("flotilla-test-")
        .tempdir()
        .unwrap_or_else(|e| panic!("a temporary directory: {e}"));
    let volumes: Vec<Tmpfs> = (0..3)
        .map(|i| {
            Tmpfs::mount(&root.path().join(format!("node-{i}")), VOLUME)
                .unwrap_or_else(|e| panic!("mounting a tmpfs: {e}"))
        })
        .collect();
    let mut options = ClusterOptions::default()
        .fast_elections()
        .arg("--storage-reserve-bytes")
        .arg(RESERVE.to_string());
    options.dir = Some(root.path().to_path_buf());
    let mut cluster = Cluster::start(3, options).await;
    cluster.create_database("db", Some(3), Some(1)).await;
    let client = cluster.client_with(ClientOptions {
        total_timeout: Duration::from_secs(20),
        ..ClientOptions::default()
    });
    // What every acknowledged write left: id -> body (None: deleted).
    let mut acked: BTreeMap<String, Option<String>> = BTreeMap::new();
    write_all(&client, "before", 0..30, &mut acked).await;

    // The shard leader's volume fills: it hands the shard over, and writes go on elsewhere.
    let leader = wait_for(Duration::from_secs(20), "a leader of db", async || {
        cluster.shard_leader("db", 0).await
    })
    .await;
    progress(format!(
        "filling the volume of node {leader}, the shard leader"
    ));
    volumes[leader].fill(LEFT);
    wait_until(
        Duration::from_secs(20),
        "the full node answers /readyz with 503 naming its storage",
        async || {
            let (status, text) = readyz(&cluster, leader).await;
            status == 503 && text.contains("storage full")
        },
    )
    .await;
    assert_eq!(
        cluster.metric(leader, "flotilla_storage_full").await,
        Some(1.0)
    );
    let successor = wait_for(
        Duration::from_secs(20),
        "another node leads the shard",
        async || cluster.shard_leader("db", 0).await.filter(|l| *l != leader),
    )
    .await;
    progress(format!("node {successor} leads the shard now"));
    write_all(&client, "one-full", 30..60, &mut acked).await;

    // Every volume fills: writes that add data are refused and say why; reads and deletes go on.
    for (i, volume) in volumes.iter().enumerate() {
        if i != leader {
            volume.fill(LEFT);
        }
    }
    for i in 0..3 {
        wait_until(
            Duration::from_secs(20),
            "every node reports its storage full",
            async || readyz(&cluster, i).await.0 == 503,
        )
        .await;
    }
    // A few attempts, all answered: the refusal is the answer (an attempt cut short by the
    // client's deadline would leave the outcome unknown).
    let short = cluster.client_with(ClientOptions {
        total_timeout: Duration::from_secs(20),
        max_attempts: 3,
        ..ClientOptions::default()
    });
    // While leaderships still move between the full nodes, an attempt may meet a leader change
    // (its outcome then unknown) or a leader without its lease (unavailable): ask with new ids
    // until the refusal itself is the answer.
    let mut attempt = 0;
    let refused = wait_for(
        Duration::from_secs(30),
        "a write refused as STORAGE_FULL",
        async || {
            attempt += 1;
            let id = format!("refused-{attempt}");
            match short.put("db", "c", &id, &body(0), None).await {
                Err(Error::StorageFull(message)) => {
                    progress(format!("{id} refused: {message}"));
                    Some(id)
                }
                Err(Error::OutcomeUnknown(message)) => {
                    progress(format!("{id}: outcome unknown ({message}); asking again"));
                    None
                }
                // A leader whose full followers answer slowly may lose its lease for a moment:
                // the write was not proposed (nothing applied), and is asked again.
                Err(Error::Unavailable(message)) => {
                    progress(format!("{id}: unavailable ({message}); asking again"));
                    None
                }
                other => panic!("a write with every volume full answered {other:?}"),
            }
        },
    )
    .await;
    let any = wait_for(Duration::from_secs(20), "a leader of db", async || {
        cluster.shard_leader("db", 0).await
    })
    .await;
    let answer = reqwest::Client::new()
        .put(format!(
            "http://{}/v1/databases/db/collections/c/documents/refused-too",
            cluster.node(any).http_addr
        ))
        .body(body(1))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap_or_else(|e| panic!("HTTP put: {e}"));
    assert_eq!(
        answer.status().as_u16(),
        507,
        "HTTP put with every volume full"
    );
    let text = answer.text().await.unwrap_or_default();
    assert!(text.contains("ERROR_REASON_STORAGE_FULL"), "{text}");
    let read = client
        .get("db", "c", "before-00", Default::default())
        .await
        .unwrap_or_else(|e| panic!("a read with every volume full: {e}"));
    assert_eq!(read.map(|d| d.json), Some(body(0)));
    client
        .delete("db", "c", "before-01", None)
        .await
        .unwrap_or_else(|e| panic!("a delete with every volume full: {e}"));
    acked.insert("before-01".into(), None);

    // Space is freed: the nodes are ready again and take writes, with nothing lost.
    for volume in &volumes {
        volume.empty();
    }
    cluster.wait_all_ready().await;
    write_all(&client, "after", 60..80, &mut acked).await;
    for (id, expected) in &acked {
        let got = client
            .get("db", "c", id, Default::default())
            .await
            .unwrap_or_else(|e| panic!("read {id}: {e}"));
        assert_eq!(
            got.map(|d| d.json).as_ref(),
            expected.as_ref(),
            "document {id}"
        );
    }
    for refused in [refused.as_str(), "refused-too"] {
        let got = client
            .get("db", "c", refused, Default::default())
            .await
            .unwrap_or_else(|e| panic!("read {refused}: {e}"));
        assert!(got.is_none(), "the refused write {refused} applied");
    }
    let compared = cluster.compare_replicas("db").await;
    progress(format!(
        "{} documents checked, {compared} replicas equal",
        acked.len()
    ));
    cluster.stop_all(Duration::from_secs(30)).await;
}
