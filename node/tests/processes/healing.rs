//! Database groups that heal themselves, with real node processes: a replica that stays away is
//! marked Rehab and replaced after `replace_after`; one that returns is a Member again; replicas
//! follow the replication factor and can be added and removed by hand, never breaking a majority;
//! a meta voter gone for long is replaced by a learner.

use std::time::Duration;

use flotilla_client::{
    Client, ClientOptions, Consistency, DatabaseStatus, Error, RemoveNodeProgress, ReplicaState,
};
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::wait::{wait_for, wait_until};

fn options() -> ClusterOptions {
    ClusterOptions::default()
        .fast_elections()
        .env("FLOTILLA_REHAB_AFTER", "2s")
}

fn states(status: &DatabaseStatus) -> Vec<(u64, ReplicaState)> {
    let mut v: Vec<(u64, ReplicaState)> = status.shards[0]
        .replicas
        .iter()
        .map(|r| (r.node_id, r.state))
        .collect();
    v.sort_by_key(|(n, _)| *n);
    v
}

async fn shard_states(client: &Client, db: &str) -> Option<Vec<(u64, ReplicaState)>> {
    client.database_status(db).await.ok().map(|s| states(&s))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_away_past_replace_after_is_replaced_and_the_replication_factor_restored() {
    let mut cluster = Cluster::start(4, options()).await;
    cluster.create_database("app", Some(3), None).await;
    let client = cluster.client();
    client
        .update_database("app", None, Some("3s"))
        .await
        .expect("set replace-after");
    for i in 0..50 {
        client
            .put(
                "app",
                "c",
                &format!("k{i}"),
                &format!("{{\"i\":{i}}}"),
                None,
            )
            .await
            .unwrap();
    }
    let status = client.database_status("app").await.unwrap();
    let holders: Vec<u64> = status.shards[0]
        .replicas
        .iter()
        .map(|r| r.node_id)
        .collect();
    let leader = status.shards[0].leader_id.expect("leader");
    let victim_id = *holders.iter().find(|n| **n != leader).expect("a follower");
    let victim = cluster.index_of(victim_id).await.expect("victim index");
    cluster.kill9(victim);

    wait_until(
        Duration::from_secs(20),
        "the lost replica is marked Rehab",
        async || {
            shard_states(&client, "app")
                .await
                .is_some_and(|s| s.contains(&(victim_id, ReplicaState::Rehab)))
        },
    )
    .await;
    let healed = wait_for(
        Duration::from_secs(60),
        "a new replica replaces it",
        async || {
            let s = shard_states(&client, "app").await?;
            let members = s
                .iter()
                .filter(|(_, st)| *st == ReplicaState::Member)
                .count();
            (members == 3 && s.len() == 3 && s.iter().all(|(n, _)| *n != victim_id)).then_some(s)
        },
    )
    .await;
    assert!(
        healed.iter().any(|(n, _)| !holders.contains(n)),
        "the new replica is on the fourth node: {healed:?}"
    );
    for i in 0..50 {
        let doc = client
            .get("app", "c", &format!("k{i}"), Consistency::Linearizable)
            .await
            .unwrap();
        assert!(doc.is_some(), "k{i} survived the replacement");
    }
    let mut events = client.cluster_events(false, 0).await.unwrap();
    let mut seen = Vec::new();
    while let Some(e) = futures::StreamExt::next(&mut events).await {
        let e = e.unwrap();
        seen.push((e.node_id, e.to_state));
    }
    assert!(seen.contains(&(victim_id, "rehab".to_string())), "{seen:?}");
    assert!(
        seen.contains(&(victim_id, "removed".to_string())),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rehab_replica_that_returns_is_a_member_again() {
    let mut cluster = Cluster::start(3, options()).await;
    cluster.create_database("app", Some(3), None).await;
    let client = cluster.client();
    client
        .update_database("app", None, Some("off"))
        .await
        .unwrap();
    let leader = wait_for(Duration::from_secs(10), "leader", async || {
        cluster.shard_leader("app", 0).await
    })
    .await;
    let victim = (leader + 1) % 3;
    let victim_id = cluster.node_id(victim).await;
    cluster.kill9(victim);
    wait_until(Duration::from_secs(20), "Rehab", async || {
        shard_states(&client, "app")
            .await
            .is_some_and(|s| s.contains(&(victim_id, ReplicaState::Rehab)))
    })
    .await;
    client
        .put("app", "c", "while-away", "{}", None)
        .await
        .unwrap();
    cluster.restart(victim);
    wait_until(Duration::from_secs(30), "Member again", async || {
        shard_states(&client, "app")
            .await
            .is_some_and(|s| s.contains(&(victim_id, ReplicaState::Member)) && s.len() == 3)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_follow_the_replication_factor_and_hand_made_changes_keep_a_majority() {
    let mut cluster = Cluster::start(4, options()).await;
    cluster.create_database("app", Some(2), None).await;
    let client = cluster.client();
    client.put("app", "c", "a", "{}", None).await.unwrap();
    let count = async |n: usize| {
        let client = client.clone();
        wait_until(
            Duration::from_secs(30),
            &format!("{n} Members"),
            async move || {
                shard_states(&client, "app").await.is_some_and(|s| {
                    s.len() == n && s.iter().all(|(_, st)| *st == ReplicaState::Member)
                })
            },
        )
        .await
    };
    client.update_database("app", Some(3), None).await.unwrap();
    count(3).await;
    let held: Vec<u64> = shard_states(&client, "app")
        .await
        .unwrap()
        .iter()
        .map(|(n, _)| *n)
        .collect();
    client.update_database("app", Some(2), None).await.unwrap();
    count(2).await;

    // By hand: add a replica on a node that never held one (raises the factor to 3).
    let status = client.cluster_status().await.unwrap();
    let spare = status
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|n| !held.contains(n))
        .expect("a spare node");
    client.add_replica("app", None, spare, None).await.unwrap();
    count(3).await;
    assert_eq!(
        client
            .database_status("app")
            .await
            .unwrap()
            .database
            .replication_factor,
        3
    );

    // With one of three replicas down, removing another would leave no live majority.
    let s = shard_states(&client, "app").await.unwrap();
    let (down, keep) = (s[0].0, s[1].0);
    let down_index = cluster.index_of(down).await.unwrap();
    cluster.kill9(down_index);
    wait_until(
        Duration::from_secs(20),
        "the meta leader sees the stopped node as unreachable",
        async || {
            client.cluster_status().await.is_ok_and(|st| {
                st.nodes
                    .iter()
                    .any(|n| n.id == down && n.health == flotilla_client::Health::Unreachable)
            }) && shard_states(&client, "app")
                .await
                .is_some_and(|s| s.contains(&(down, ReplicaState::Rehab)))
        },
    )
    .await;
    let refused = client
        .remove_replica("app", None, keep, false)
        .await
        .expect_err("no live majority left");
    assert!(
        matches!(refused, Error::FailedPrecondition(_)),
        "{refused:?}"
    );
    cluster.restart(down_index);
    cluster.wait_ready(down_index).await;
    wait_until(
        Duration::from_secs(30),
        "the restarted replica is a Member again",
        async || {
            shard_states(&client, "app")
                .await
                .is_some_and(|s| s.contains(&(down, ReplicaState::Member)))
        },
    )
    .await;
    let steps = client
        .remove_replica("app", None, keep, false)
        .await
        .expect("removal with all replicas up");
    assert!(!steps.is_empty());
    count(2).await;
    let doc = client
        .get("app", "c", "a", Consistency::Linearizable)
        .await
        .unwrap();
    assert!(doc.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removing_a_node_moves_its_replicas_first_under_write_load() {
    let cluster = Cluster::start(4, options()).await;
    cluster.create_database("app", Some(3), None).await;
    let client = cluster.client();
    let holder = client.database_status("app").await.unwrap().shards[0].replicas[0].node_id;
    let holder_index = cluster.index_of(holder).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = format!("w{i}");
                if client.put("app", "c", &id, "{}", Some(0)).await.is_ok() {
                    acked.push(id);
                }
                i += 1;
            }
            acked
        })
    };
    // The first answers say the node is draining; the last one that it left.
    let mut drained = false;
    let steps = client
        .remove_node_until_done(holder, Duration::from_secs(60), |step| {
            drained |= matches!(step, RemoveNodeProgress::Draining { .. });
        })
        .await
        .expect("the node is drained and removed");
    assert!(drained, "the node drained before it left");
    assert!(!steps.is_empty());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.await.expect("writer");
    assert!(!acked.is_empty(), "writes went on during the move");
    // The removed node, left running, is cut off from the cluster: it learns it was removed
    // (its peers refuse its heartbeats as removed) and refuses client calls, so that clients
    // go to the other nodes rather than read its last view.
    let holder_index = holder_index.expect("the removed node is one of the test's");
    let alone = cluster.node_client(
        holder_index,
        ClientOptions {
            total_timeout: Duration::from_secs(1),
            max_attempts: 1,
            ..ClientOptions::default()
        },
    );
    wait_until(
        Duration::from_secs(20),
        "the removed node refuses client calls as removed",
        async || {
            matches!(
                alone.database_status("app").await,
                Err(Error::Unavailable(m)) if m.contains("removed from the cluster")
            )
        },
    )
    .await;

    // The node is gone from every shard at once; the shard's status may show a leader elected
    // a moment ago, which reports its followers as Rehab until it has heard from them.
    let s = shard_states(&client, "app").await.expect("status");
    assert_eq!(s.len(), 3, "{s:?}");
    assert!(s.iter().all(|(n, _)| *n != holder), "{s:?}");
    flotilla_testkit::wait::until_async(
        "three Members",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let s = client.database_status("app").await;
            let done = s.as_ref().is_ok_and(|s| {
                let s = states(s);
                s.len() == 3
                    && s.iter()
                        .all(|(n, st)| *n != holder && *st == ReplicaState::Member)
            });
            match done {
                true => Ok(Some(())),
                false => Err(format!("{s:?}")),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let status = client.cluster_status().await.unwrap();
    assert!(
        status.nodes.iter().all(|n| n.id != holder),
        "the node left the cluster"
    );
    for id in &acked {
        let doc = client
            .get("app", "c", id, Consistency::Linearizable)
            .await
            .unwrap();
        assert!(
            doc.is_some(),
            "{id} was acknowledged and must survive the move"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_meta_voter_gone_for_long_is_replaced_by_a_learner() {
    let mut cluster = Cluster::start(4, options()).await;
    let client = cluster.client();
    let voters = |s: &flotilla_client::ClusterStatus| -> Vec<u64> {
        let mut v: Vec<u64> = s
            .nodes
            .iter()
            .filter(|n| {
                matches!(
                    n.meta_role,
                    flotilla_client::MetaRole::Leader | flotilla_client::MetaRole::Follower
                )
            })
            .map(|n| n.id)
            .collect();
        v.sort();
        v
    };
    let status = client.cluster_status().await.expect("status");
    let before = voters(&status);
    assert_eq!(before.len(), 3, "{status:?}");
    let leader = status.meta_leader_id.expect("a meta leader");
    let gone = *before.iter().find(|v| **v != leader).expect("a follower");
    let gone_index = cluster.index_of(gone).await.expect("index");
    cluster.kill9(gone_index);
    // Past --rehab-after (2 s here) the learner takes its vote; three healthy voters remain.
    let after = wait_for(
        Duration::from_secs(30),
        "three voters without the stopped node",
        async || {
            let s = client.cluster_status().await.ok()?;
            let v = voters(&s);
            let healthy = s
                .nodes
                .iter()
                .filter(|n| v.contains(&n.id))
                .all(|n| n.health == flotilla_client::Health::Healthy);
            (v.len() == 3 && !v.contains(&gone) && healthy).then_some(v)
        },
    )
    .await;
    assert!(after.iter().any(|v| !before.contains(v)), "{after:?}");
    // It comes back as a learner and the group keeps three voters.
    cluster.restart(gone_index);
    cluster.wait_ready(gone_index).await;
    wait_until(
        Duration::from_secs(20),
        "the returning node is a healthy learner",
        async || {
            client.cluster_status().await.is_ok_and(|s| {
                voters(&s).len() == 3
                    && s.nodes.iter().any(|n| {
                        n.id == gone
                            && n.meta_role == flotilla_client::MetaRole::Learner
                            && n.health == flotilla_client::Health::Healthy
                    })
            })
        },
    )
    .await;
}
