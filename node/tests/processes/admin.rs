//! Cluster administration against real nodes: removing a node, metrics and health endpoints,
//! configuration through environment variables, limits.

use std::time::Duration;

use flotilla_client::{BatchOp, Error, RemoveNodeProgress};
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::http;
use flotilla_testkit::wait::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_replicas_is_removed_and_one_with_replicas_is_refused() {
    let mut cluster = Cluster::start(3, ClusterOptions::default()).await;
    // Placed on three of four nodes: the fourth holds no replica.
    cluster.create_database("app", Some(3), None).await;
    let extra = cluster.add_node().await;
    let client = cluster.client();
    let extra_id = cluster.node_id(extra).await;

    let removed = client
        .remove_node(extra_id)
        .await
        .expect("remove the empty node");
    assert!(
        matches!(&removed, RemoveNodeProgress::Removed { steps } if !steps.is_empty()),
        "{removed:?}"
    );
    wait_until(
        Duration::from_secs(10),
        "the removed node is gone from the cluster",
        async || {
            client
                .cluster_status()
                .await
                .is_ok_and(|s| s.nodes.iter().all(|n| n.id != extra_id))
        },
    )
    .await;
    // Removing it again says it has left (idempotent); a node never seen is not found.
    let again = client
        .remove_node(extra_id)
        .await
        .expect("removing a removed node again");
    assert!(
        matches!(&again, RemoveNodeProgress::Removed { steps } if steps.iter().any(|s| s.contains("has left"))),
        "{again:?}"
    );
    let unknown = client
        .remove_node(extra_id ^ 1)
        .await
        .expect_err("an unknown node");
    assert!(matches!(unknown, Error::NotFound(_)), "{unknown:?}");

    // Three nodes, replication factor 3: nowhere to move a replica to, so removal is refused.
    let holder = client.database_status("app").await.unwrap().shards[0].replicas[0].node_id;
    let refused = client
        .remove_node(holder)
        .await
        .expect_err("a node whose replicas cannot move is refused");
    assert!(
        matches!(refused, Error::FailedPrecondition(_)),
        "{refused:?}"
    );
    assert!(
        refused.to_string().contains("cannot hold"),
        "the refusal says why: {refused}"
    );
    client
        .put("app", "c", "still", "{}", None)
        .await
        .expect("the cluster keeps serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_readiness_are_served_over_http() {
    let cluster = Cluster::start(3, ClusterOptions::default()).await;
    cluster.create_database("app", None, None).await;
    cluster
        .client()
        .put("app", "c", "a", "{}", None)
        .await
        .unwrap();
    let http = cluster.node(0).http_addr.clone();
    let (code, _) = http::get(&http, "/healthz").await.unwrap();
    assert_eq!(code, 200);
    let (code, _) = http::get(&http, "/readyz").await.unwrap();
    assert_eq!(code, 200);
    let (code, body) = http::get(&http, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    for metric in [
        "flotilla_raft_term{group=\"0\"}",
        "flotilla_raft_commit_index{group=\"1\"}",
        "flotilla_raft_applied_index{group=\"1\"}",
        "flotilla_raft_leader_changes_total{group=\"0\"}",
        "flotilla_storage_commit_duration_seconds_count",
    ] {
        assert!(
            body.contains(metric),
            "{metric} missing from /metrics:\n{body}"
        );
    }
    // Proposal latency is recorded on the node that leads the shard.
    let leader = cluster.shard_leader("app", 0).await.expect("shard leader");
    let (_, body) = http::get(&cluster.node(leader).http_addr, "/metrics")
        .await
        .unwrap();
    assert!(
        body.contains("flotilla_raft_proposal_duration_seconds_count{group=\"1\"}"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_come_from_environment_variables_and_limits_hold() {
    let cluster = Cluster::start(
        1,
        ClusterOptions::default()
            .env("FLOTILLA_MAX_BATCH_OPS", "3")
            .env("FLOTILLA_MAX_DOCUMENT_BYTES", "64"),
    )
    .await;
    cluster.create_database("app", None, None).await;
    let client = cluster.client();
    let ops = (0..4)
        .map(|i| BatchOp::put("c", format!("k{i}"), "{}"))
        .collect();
    let err = client
        .batch("app", ops)
        .await
        .expect_err("over the batch limit");
    assert!(matches!(err, Error::ResourceExhausted(_)), "{err:?}");
    let big = format!(r#"{{"x":"{}"}}"#, "y".repeat(100));
    let err = client
        .put("app", "c", "big", &big, None)
        .await
        .expect_err("over the document limit");
    assert!(matches!(err, Error::ResourceExhausted(_)), "{err:?}");
    let ops = (0..3)
        .map(|i| BatchOp::put("c", format!("k{i}"), "{}"))
        .collect();
    client.batch("app", ops).await.expect("within the limits");
}
