//! One group's storage failure stays that group's: its applies fail on one node (an injected
//! fault, `--test-storage-faults`), while another database's group on the same node, whose
//! applies share the node's writer with it, goes on; the node says on `/healthz` which group
//! stopped and why, opens it again from disk, and is healthy once the fault is gone.

use std::time::Duration;

use flotilla_client::{Client, ClientOptions, Consistency};
use flotilla_node::store::faults::apply_trigger;
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::progress;
use flotilla_testkit::wait::{wait_for, wait_until};

/// Writes to `db` from many tasks at once, so that the node's applies of both databases
/// share its writer's batches.
async fn write_many(client: &Client, db: &str, prefix: &str, count: usize) -> usize {
    let writes = (0..count).map(|i| {
        let client = client.clone();
        let (db, id) = (db.to_string(), format!("{prefix}-{i:04}"));
        async move { client.put(&db, "c", &id, r#"{"n":1}"#, None).await.is_ok() }
    });
    futures::future::join_all(writes)
        .await
        .into_iter()
        .filter(|ok| *ok)
        .count()
}

/// Whether node `node`'s own replica of `db` holds document `id` (a stale read served there).
async fn replica_has(cluster: &Cluster, node: usize, db: &str, id: &str) -> bool {
    let local = cluster.node_client(node, ClientOptions::default());
    matches!(
        local.get(db, "c", id, Consistency::Stale).await,
        Ok(Some(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_group_stops_alone_is_reported_and_is_opened_again() {
    let options = ClusterOptions::default()
        .fast_elections()
        .arg("--test-storage-faults");
    let cluster = Cluster::start(3, options).await;
    cluster.create_database("good", Some(3), None).await;
    cluster.create_database("bad", Some(3), None).await;
    let client = cluster.client();
    let status = client.database_status("bad").await.expect("status");
    let bad_group = status.shards[0].group_id;
    // The node whose replica of "bad" fails: not the shard leader, so that the shard goes on.
    let node = wait_for(Duration::from_secs(20), "a leader of bad", async || {
        cluster.shard_leader("bad", 0).await
    })
    .await;
    let node = (node + 1) % cluster.len();
    let trigger = cluster.node(node).data_dir.join(apply_trigger(bad_group));
    std::fs::write(&trigger, b"").unwrap_or_else(|e| panic!("{}: {e}", trigger.display()));

    // Both databases written at once: "bad"'s applies fail on `node`, "good"'s do not.
    let (good, bad) = tokio::join!(
        write_many(&client, "good", "during", 200),
        write_many(&client, "bad", "during", 200),
    );
    assert_eq!((good, bad), (200, 200), "both shards keep their majority");
    wait_until(
        Duration::from_secs(20),
        "the failing node's replica of good applies every write",
        async || replica_has(&cluster, node, "good", "during-0199").await,
    )
    .await;

    let http = cluster.node(node).http_addr.clone();
    let (code, body) = wait_for(
        Duration::from_secs(20),
        "/healthz names the group",
        async || {
            let (code, body) = flotilla_testkit::http::get(&http, "/healthz").await.ok()?;
            (code == 503).then_some((code, body))
        },
    )
    .await;
    progress(format!("/healthz answered {code}: {body}"));
    assert!(
        body.contains(&format!("group {bad_group} stopped"))
            && body.contains("injected storage fault"),
        "{body}"
    );

    // The fault goes away: the group is opened again from disk and catches up.
    std::fs::remove_file(&trigger).unwrap_or_else(|e| panic!("{}: {e}", trigger.display()));
    wait_until(
        Duration::from_secs(30),
        "the failing node's replica of bad runs and catches up",
        async || replica_has(&cluster, node, "bad", "during-0199").await,
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "/healthz is ok again",
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
        log.contains("raft group opened again"),
        "the group was restarted"
    );
}
