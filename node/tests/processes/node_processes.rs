//! Node processes under the harness's hands: killed, frozen, stopped, restarted and wiped, the
//! cluster keeps serving and each node keeps (or, once wiped, loses) its identity.

use std::time::Duration;

use flotilla_client::{Consistency, Health};
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::wait::{wait_for, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_restarts_with_its_identity_and_data() {
    let mut cluster = Cluster::start(3, ClusterOptions::default().fast_elections()).await;
    cluster.create_database("t", None, None).await;
    let client = cluster.client();
    client.put("t", "c", "a", "1", None).await.unwrap();

    let victim = wait_for(
        Duration::from_secs(10),
        "the shard has a leader",
        async || cluster.shard_leader("t", 0).await,
    )
    .await;
    let id = cluster.node_id(victim).await;
    cluster.kill9(victim);
    assert!(!cluster.node_mut(victim).is_running());

    // The survivors elect a new leader and keep taking writes. A write caught by the change of
    // leader may come back "outcome unknown"; writing the same value again is safe.
    wait_until(
        Duration::from_secs(20),
        "a write is acknowledged after the leader is killed",
        async || match client.put("t", "c", "b", "2", None).await {
            Ok(_) => true,
            Err(flotilla_client::Error::OutcomeUnknown(_)) => false,
            Err(e) => panic!("writing after the leader was killed: {e}"),
        },
    )
    .await;

    cluster.restart(victim);
    cluster.wait_ready(victim).await;
    assert_eq!(
        cluster.node_id(victim).await,
        id,
        "a restarted node keeps its id"
    );
    let node = cluster.node(victim).client();
    wait_until(
        Duration::from_secs(10),
        "the restarted node catches up",
        async || {
            matches!(
                node.get("t", "c", "b", Consistency::Stale).await,
                Ok(Some(_))
            )
        },
    )
    .await;
    assert!(
        node.get("t", "c", "a", Consistency::Stale)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_is_reported_unreachable_and_recovers() {
    let mut cluster = Cluster::start(3, ClusterOptions::default().fast_elections()).await;
    let frozen = 1;
    let id = cluster.node_id(frozen).await;
    cluster.sigstop(frozen);

    let client = cluster.client();
    let unreachable = async || {
        client.cluster_status().await.is_ok_and(|s| {
            s.nodes
                .iter()
                .any(|n| n.id == id && n.health == Health::Unreachable)
        })
    };
    wait_until(
        Duration::from_secs(20),
        "the frozen node is unreachable",
        unreachable,
    )
    .await;

    cluster.sigcont(frozen);
    cluster.wait_ready(frozen).await;
    let healthy = async || {
        client.cluster_status().await.is_ok_and(|s| {
            s.nodes
                .iter()
                .any(|n| n.id == id && n.health == Health::Healthy)
        })
    };
    wait_until(
        Duration::from_secs(20),
        "the node is healthy again",
        healthy,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_exits_cleanly_and_a_new_node_joins() {
    let mut cluster = Cluster::start(3, ClusterOptions::default()).await;
    let status = cluster.sigterm(2).await;
    assert!(status.success(), "graceful stop exited with {status}");

    let added = cluster.add_node().await;
    assert_eq!(added, 3);
    let status = cluster.client().cluster_status().await.unwrap();
    assert!(
        status
            .node_by_client_addr(&cluster.endpoint(added))
            .is_some(),
        "{status:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_returns_under_a_new_id() {
    let mut cluster = Cluster::start(3, ClusterOptions::default()).await;
    let old_id = cluster.node_id(2).await;
    cluster.kill9(2);
    cluster.wipe(2);
    cluster.restart(2);
    cluster.wait_ready(2).await;
    // The old id stays registered (unreachable) until it is removed; the address now also
    // belongs to a new node id.
    let addr = cluster.endpoint(2);
    let client = cluster.client();
    let new_id = flotilla_testkit::wait::wait_for(
        Duration::from_secs(20),
        "the wiped node registers under a new id",
        async || {
            let status = client.cluster_status().await.ok()?;
            status
                .nodes
                .iter()
                .find(|n| n.client_addr == addr && n.id != old_id)
                .map(|n| n.id)
        },
    )
    .await;
    assert_ne!(new_id, old_id, "a wiped node must come back under a new id");
    cluster.create_database("t", None, None).await;
    cluster
        .client()
        .put("t", "c", "a", "{}", None)
        .await
        .unwrap();
}
