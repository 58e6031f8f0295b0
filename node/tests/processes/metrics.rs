//! The node's metrics move with what it does: writes count as committed and applied
//! proposals and as gRPC calls with their codes, a watch that its client drops counts as
//! `Canceled`, the HTTP API counts its routes, a follower brought back past the log the
//! leader kept installs a snapshot, the leader builds snapshots and compacts its log, each
//! shard reports its documents, every fsync is timed, and a write that a storage fault
//! makes fail counts as a failed proposal.

use std::time::Duration;

use flotilla_client::{Client, ClientOptions};
use flotilla_node::store::faults::apply_trigger;
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::progress;
use flotilla_testkit::wait::{wait_for, wait_until};
use futures::StreamExt;

/// The sum of the samples of `name` whose labels include every one of `labels`
/// (`key="value"`); `None` when there is no such sample.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        if metric != name || !labels.iter().all(|l| rest.contains(l)) {
            continue;
        }
        if let Ok(v) = value.parse::<f64>() {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

async fn scrape(cluster: &Cluster, node: usize) -> String {
    match cluster.node(node).http_get("/metrics").await {
        Ok((200, body)) => body,
        Ok((code, body)) => panic!("/metrics of node {node} answered {code}: {body}"),
        Err(e) => panic!("/metrics of node {node}: {e}"),
    }
}

/// `name{labels}` summed over every node that answers (one may be down).
async fn cluster_sample(cluster: &Cluster, name: &str, labels: &[&str]) -> f64 {
    let mut sum = 0.0;
    for node in 0..cluster.len() {
        if let Ok((200, text)) = cluster.node(node).http_get("/metrics").await {
            sum += sample(&text, name, labels).unwrap_or(0.0);
        }
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_metrics_follow_writes_watches_snapshots_and_failed_proposals() {
    let options = ClusterOptions::default()
        .fast_elections()
        .arg("--snapshot-threshold=20")
        .arg("--test-storage-faults");
    let mut cluster = Cluster::start(3, options).await;
    cluster.create_database("m", Some(3), Some(1)).await;
    let client = cluster.client();
    let group = client.database_status("m").await.expect("status").shards[0].group_id;
    let group_label = format!("group=\"{group}\"");
    let leader = wait_for(Duration::from_secs(20), "a leader of m", async || {
        cluster.shard_leader("m", 0).await
    })
    .await;

    // A watch opened on the leader (which stays up), one event read, then dropped by its
    // client.
    let client = cluster.node_client(leader, ClientOptions::default());
    let mut watch = client.watch("m", None, 0).await.expect("watch");
    client
        .put("m", "c", "first", r#"{"n":0}"#, None)
        .await
        .expect("put");
    let event = tokio::time::timeout(Duration::from_secs(10), watch.next()).await;
    assert!(matches!(event, Ok(Some(Ok(_)))), "a watch event: {event:?}");
    drop(watch);

    // A follower is away while the log moves past several snapshots.
    let away = (leader + 1) % cluster.len();
    cluster.kill9(away);
    let endpoints = (0..cluster.len())
        .filter(|i| *i != away)
        .map(|i| cluster.endpoint(i));
    // One call per write (no coalescing into Multi calls), so that Put counts them.
    let options = ClientOptions {
        coalesce_calls: false,
        ..ClientOptions::default()
    };
    let client = Client::with_options(endpoints.collect(), options).expect("client");
    for i in 0..99 {
        client
            .put("m", "c", &format!("d{i:03}"), r#"{"n":1}"#, None)
            .await
            .expect("put");
    }
    client.delete("m", "c", "d000", None).await.expect("delete");
    client.delete("m", "c", "d001", None).await.expect("delete");

    let text = wait_for(
        Duration::from_secs(20),
        "the leader reports the writes, its snapshots and its compactions",
        async || {
            let text = scrape(&cluster, leader).await;
            let at_least = |name: &str, labels: &[&str], n: f64| {
                sample(&text, name, labels).is_some_and(|v| v >= n)
            };
            let ready = at_least(
                "flotilla_raft_proposals_committed_total",
                &[&group_label],
                100.0,
            ) && at_least(
                "flotilla_raft_proposals_applied_total",
                &[&group_label],
                100.0,
            ) && at_least("flotilla_snapshot_build_duration_seconds_count", &[], 1.0)
                && at_least(
                    "flotilla_storage_compaction_duration_seconds_count",
                    &[],
                    1.0,
                );
            ready.then_some(text)
        },
    )
    .await;
    assert_eq!(
        sample(
            &text,
            "flotilla_shard_documents",
            &["database=\"m\"", "shard=\"0\""]
        ),
        Some(98.0),
        "100 put, 2 deleted"
    );
    for file in ["flotilla.redb", "state.redb"] {
        let fsyncs = sample(
            &text,
            "flotilla_storage_fsync_duration_seconds_count",
            &[&format!("file=\"{file}\"")],
        );
        assert!(
            fsyncs.is_some_and(|n| n >= 1.0),
            "fsyncs of {file}: {fsyncs:?}"
        );
    }
    let peer_calls = sample(
        &text,
        "flotilla_grpc_server_handled_total",
        &["server=\"peer\"", "grpc_code=\"OK\""],
    );
    assert!(
        peer_calls.is_some_and(|n| n >= 1.0),
        "peer calls: {peer_calls:?}"
    );

    let puts = cluster_sample(
        &cluster,
        "flotilla_grpc_server_handled_total",
        &[
            "server=\"client\"",
            "grpc_method=\"Put\"",
            "grpc_code=\"OK\"",
        ],
    )
    .await;
    assert!(puts >= 99.0, "{puts} Put calls counted OK");
    // The server sees the client go when its stream is next polled.
    wait_until(
        Duration::from_secs(20),
        "the dropped watch counts as Canceled",
        async || {
            let canceled = cluster_sample(
                &cluster,
                "flotilla_grpc_server_handled_total",
                &["grpc_method=\"Watch\"", "grpc_code=\"Canceled\""],
            )
            .await;
            canceled >= 1.0
        },
    )
    .await;

    // The HTTP API counts its routes.
    let http = cluster.node(leader).http_addr.clone();
    let answer = flotilla_testkit::http::get(&http, "/v1/cluster").await;
    assert!(matches!(answer, Ok((200, _))), "{answer:?}");
    let routes = sample(
        &scrape(&cluster, leader).await,
        "flotilla_http_requests_total",
        &["path=\"/v1/cluster\"", "code=\"200\""],
    );
    assert_eq!(routes, Some(1.0));

    // Back, the follower is past the log the leader kept: it installs a snapshot.
    cluster.restart(away);
    cluster.wait_ready(away).await;
    wait_until(
        Duration::from_secs(30),
        "the follower that was away installs a snapshot and holds every document",
        async || {
            let text = scrape(&cluster, away).await;
            let installed = sample(
                &text,
                "flotilla_snapshot_install_duration_seconds_count",
                &[],
            );
            let documents = sample(
                &text,
                "flotilla_shard_documents",
                &["database=\"m\"", "shard=\"0\""],
            );
            installed.is_some_and(|n| n >= 1.0) && documents == Some(98.0)
        },
    )
    .await;

    // A storage fault on the leader's replica: its writes fail as proposals.
    let trigger = cluster.node(leader).data_dir.join(apply_trigger(group));
    std::fs::write(&trigger, b"").unwrap_or_else(|e| panic!("{}: {e}", trigger.display()));
    let node_client = cluster.node(leader).client();
    let failed = wait_for(
        Duration::from_secs(30),
        "a failed proposal counted on the leader",
        async || {
            let _ = node_client
                .put("m", "c", "doomed", r#"{"n":2}"#, None)
                .await;
            let text = scrape(&cluster, leader).await;
            sample(
                &text,
                "flotilla_raft_proposals_failed_total",
                &[&group_label],
            )
            .filter(|n| *n >= 1.0)
            .map(|_| text)
        },
    )
    .await;
    progress(
        failed
            .lines()
            .filter(|l| l.starts_with("flotilla_raft_proposals_failed_total"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    std::fs::remove_file(&trigger).unwrap_or_else(|e| panic!("{}: {e}", trigger.display()));
}
