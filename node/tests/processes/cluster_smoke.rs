//! Smoke test with real node processes: three nodes form a cluster, a database is created
//! through the client library, and a document written through one node is read back through
//! every node.

use std::time::Duration;

use flotilla_client::{Consistency, Error};
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::wait::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_create_a_database_and_serve_a_document() {
    let cluster = Cluster::start(3, ClusterOptions::default()).await;

    let status = cluster.client().cluster_status().await.unwrap();
    assert_eq!(status.nodes.len(), 3, "{status:#?}");
    assert!(status.meta_leader().is_some(), "{status:#?}");

    let client = cluster.client();
    client.create_database("t", None, None).await.unwrap();
    let db = client
        .wait_for_database("t", Duration::from_secs(30), |_| {})
        .await
        .unwrap();
    assert_eq!(db.database.replication_factor, 3);

    let put = client
        .put("t", "users", "alice", r#"{"name":"Alice"}"#, None)
        .await
        .unwrap();
    assert_eq!(put.version, 1);

    // Every node answers, forwarding to the shard leader where needed.
    for i in 0..cluster.len() {
        let doc = cluster
            .node(i)
            .client()
            .get("t", "users", "alice", Consistency::Linearizable)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("node {i} does not see the document"));
        assert_eq!(doc.version, 1);
        assert_eq!(doc.value().unwrap()["name"], "Alice");
    }
    // A stale read from each replica catches up with the write.
    for i in 0..cluster.len() {
        let node = cluster.node(i).client();
        wait_until(
            Duration::from_secs(10),
            "a stale read sees the write",
            async || {
                matches!(
                    node.get("t", "users", "alice", Consistency::Stale).await,
                    Ok(Some(d)) if d.version == 1
                )
            },
        )
        .await;
    }

    let second = client
        .put("t", "users", "alice", r#"{"name":"Alice B."}"#, Some(1))
        .await
        .unwrap();
    assert_eq!(second.version, 2);
    let stale_write = client
        .put("t", "users", "alice", r#"{"name":"lost"}"#, Some(1))
        .await
        .unwrap_err();
    assert!(
        matches!(stale_write, Error::VersionMismatch(_)),
        "{stale_write:?}"
    );
    assert_eq!(
        client
            .get("t", "users", "nobody", Consistency::Linearizable)
            .await
            .unwrap(),
        None
    );
}
