//! Idle data groups hibernate: their heartbeats and election timers stop once every replica
//! has caught up, they serve reads and writes as before (waking up for a write), and their
//! followers still elect a new leader when the leader's node dies, or when the leader hands
//! its leadership to a node that never takes it.

use std::time::Duration;

use flotilla_client::{Client, ClientOptions, Consistency, Group};
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::http;
use flotilla_testkit::wait::{wait_for, wait_until};

const WAIT: Duration = Duration::from_secs(30);

/// The value of `flotilla_raft_hibernating` for `group` on node `i`, if it reports one.
async fn hibernating(cluster: &Cluster, i: usize, group: u64) -> Option<bool> {
    let (_, body) = http::get(&cluster.node(i).http_addr, "/metrics")
        .await
        .ok()?;
    let prefix = format!("flotilla_raft_hibernating{{group=\"{group}\"}} ");
    let line = body.lines().find(|l| l.starts_with(&prefix))?;
    Some(line[prefix.len()..].trim() == "1")
}

/// Whether every node in `nodes` reports `group` hibernating.
async fn all_hibernating(cluster: &Cluster, nodes: &[usize], group: u64) -> bool {
    for &i in nodes {
        if hibernating(cluster, i, group).await != Some(true) {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_group_hibernates_serves_requests_and_fails_over() {
    let mut cluster = Cluster::start(
        3,
        ClusterOptions::default().env("FLOTILLA_HIBERNATE_AFTER", "1s"),
    )
    .await;
    cluster.create_database("app", Some(3), None).await;
    let client = cluster.client();
    let status = client
        .database_status("app")
        .await
        .expect("database status");
    let group = status.shards[0].group_id;
    let first = client
        .put("app", "c", "first", r#"{"n":1}"#, None)
        .await
        .expect("put");
    let everyone = [0, 1, 2];
    wait_until(WAIT, "every replica of the shard hibernates", async || {
        all_hibernating(&cluster, &everyone, group).await
    })
    .await;
    // The meta group never hibernates: it carries the cluster's liveness.
    assert_eq!(hibernating(&cluster, 0, 0).await, None);

    let leader = cluster
        .shard_leader("app", 0)
        .await
        .expect("a shard leader");
    let read = client
        .get("app", "c", "first", Consistency::Linearizable)
        .await
        .expect("a linearizable read of a hibernating group")
        .expect("the document");
    assert_eq!(read.version, first.version);
    assert_eq!(cluster.shard_leader("app", 0).await, Some(leader));

    client
        .put("app", "c", "second", r#"{"n":2}"#, None)
        .await
        .expect("a write wakes the group");
    wait_until(
        WAIT,
        "the group hibernates again after the write",
        async || all_hibernating(&cluster, &everyone, group).await,
    )
    .await;

    cluster.kill9(leader);
    let survivors: Vec<usize> = everyone.into_iter().filter(|i| *i != leader).collect();
    let rest =
        flotilla_client::Client::connect(survivors.iter().map(|i| cluster.endpoint(*i)).collect())
            .expect("a client of the surviving nodes");
    wait_for(WAIT, "a write through the surviving nodes", async || {
        rest.put("app", "c", "third", r#"{"n":3}"#, None).await.ok()
    })
    .await;
    let new_leader = wait_for(WAIT, "a surviving node leads the shard", async || {
        let status = rest.database_status("app").await.ok()?;
        let id = status.shards[0].leader_id?;
        (id != cluster.node_id(leader).await).then_some(id)
    })
    .await;
    assert!(new_leader != 0);

    cluster.restart(leader);
    cluster.wait_ready(leader).await;
    let restarted = cluster.node(leader).client();
    wait_until(
        WAIT,
        "the restarted node has the write it missed",
        async || {
            matches!(
                restarted.get("app", "c", "third", Consistency::Stale).await,
                Ok(Some(doc)) if doc.json == r#"{"n":3}"#
            )
        },
    )
    .await;
    wait_until(WAIT, "all three replicas hibernate again", async || {
        all_hibernating(&cluster, &everyone, group).await
    })
    .await;
}

/// Far more groups than tokio lets one task poll resources in a row: the hibernation loop must
/// still follow every one of them, so all of them go to sleep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_idle_groups_on_a_node_all_hibernate() {
    const SHARDS: usize = 200;
    // Two hundred groups elect their leaders at once: on a 2-core machine with debug builds
    // that takes minutes, not seconds.
    let cluster = Cluster::start(
        3,
        ClusterOptions {
            ready_timeout: Duration::from_secs(240),
            ..ClusterOptions::default().env("FLOTILLA_HIBERNATE_AFTER", "1s")
        },
    )
    .await;
    cluster
        .create_database("many", Some(3), Some(SHARDS as u32))
        .await;
    wait_until(
        WAIT,
        "every replica of every group hibernates",
        async || {
            for i in 0..3 {
                let Ok((_, body)) = http::get(&cluster.node(i).http_addr, "/metrics").await else {
                    return false;
                };
                let asleep = body
                    .lines()
                    .filter(|l| l.starts_with("flotilla_raft_hibernating{") && l.ends_with(" 1"))
                    .count();
                if asleep != SHARDS {
                    return false;
                }
            }
            true
        },
    )
    .await;
}

/// A leader handing its leadership over sends no heartbeats until the new leader is elected. When
/// the node it names never takes over (frozen here), the other follower, its timer asleep with
/// the group, must still elect a leader instead of waiting on the old one for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_to_a_frozen_node_leaves_a_hibernating_group_a_leader() {
    let mut cluster = Cluster::start(
        3,
        ClusterOptions::default().env("FLOTILLA_HIBERNATE_AFTER", "1s"),
    )
    .await;
    cluster.create_database("app", Some(3), None).await;
    let client = cluster.client();
    let group = client
        .database_status("app")
        .await
        .expect("database status")
        .shards[0]
        .group_id;
    client
        .put("app", "c", "first", r#"{"n":1}"#, None)
        .await
        .expect("put");
    wait_until(WAIT, "every replica of the shard hibernates", async || {
        all_hibernating(&cluster, &[0, 1, 2], group).await
    })
    .await;
    let leader = wait_for(WAIT, "a shard leader", async || {
        cluster.shard_leader("app", 0).await
    })
    .await;
    let frozen = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let frozen_id = cluster.node_id(frozen).await;
    cluster.sigstop(frozen);

    // One attempt, through the leader's node: the transfer cannot complete.
    let once = Client::with_options(
        vec![cluster.endpoint(leader)],
        ClientOptions {
            max_attempts: 1,
            total_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            ..ClientOptions::default()
        },
    )
    .expect("a client of the leader's node");
    let shard = Group::Shard {
        database: "app".into(),
        shard: 0,
    };
    let transfer = once.transfer_leadership(shard, frozen_id).await;
    assert!(
        transfer.is_err(),
        "a frozen node took over leadership: {transfer:?}"
    );

    let rest = Client::connect(vec![cluster.endpoint(leader), cluster.endpoint(other)])
        .expect("a client of the running nodes");
    wait_for(WAIT, "a write through the running nodes", async || {
        rest.put("app", "c", "second", r#"{"n":2}"#, None)
            .await
            .ok()
    })
    .await;
    let frozen_node_id = frozen_id;
    wait_until(WAIT, "a running node leads the shard", async || {
        let Ok(status) = rest.database_status("app").await else {
            return false;
        };
        status.shards[0]
            .leader_id
            .is_some_and(|id| id != frozen_node_id)
    })
    .await;

    cluster.sigcont(frozen);
    let thawed = cluster.node(frozen).client();
    wait_until(
        WAIT,
        "the thawed node has the write it missed",
        async || {
            matches!(
                thawed.get("app", "c", "second", Consistency::Stale).await,
                Ok(Some(doc)) if doc.json == r#"{"n":2}"#
            )
        },
    )
    .await;
}
