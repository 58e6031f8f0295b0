//! Sessions across a partition: a follower cut off from its shard's leader stops applying, so
//! a plain stale read there goes back in time for a client that wrote through the leader. A
//! session's reads never do: the cut-off replica, behind the session's floor, refuses with
//! `REPLICA_BEHIND` after a short wait, and the read goes to a replica that has the write. So
//! do its listings, queries and live queries, and HTTP reads that name the floor.

use std::time::Duration;

use flotilla_client::{Client, ClientOptions, Consistency, Error, ListOptions, LiveQueryOptions};
use flotilla_testkit::cluster::{Cluster, ClusterOptions, Network};
use flotilla_testkit::environment::{current_test, not_run};
use flotilla_testkit::progress;
use flotilla_testkit::wait::{wait_for, wait_until};

const DB: &str = "sessions";

fn body(n: u64) -> String {
    format!("{{\"n\":{n}}}")
}

/// The document's body as `client` reads it from its node, stale.
async fn stale_body(client: &Client) -> Option<String> {
    client
        .get(DB, "c", "k", Consistency::Stale)
        .await
        .ok()
        .flatten()
        .map(|d| d.json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_never_reads_back_in_time_from_a_cut_off_replica() {
    if super::network() != Network::Namespaces {
        not_run(
            &current_test(),
            "it needs network namespaces for the partition",
        );
        return;
    }
    let options = ClusterOptions::default()
        .fast_elections()
        .network(Network::Namespaces);
    let mut cluster = Cluster::start(3, options).await;
    cluster.create_database(DB, Some(3), Some(1)).await;
    let leader = wait_for(Duration::from_secs(20), "a shard leader", async || {
        cluster.shard_leader(DB, 0).await
    })
    .await;
    let cut = (leader + 1) % cluster.len();
    let other = (leader + 2) % cluster.len();
    let short = ClientOptions {
        total_timeout: Duration::from_secs(5),
        coalesce_calls: false,
        ..ClientOptions::default()
    };
    let on_cut = cluster.node_client(cut, short.clone());
    let writer = cluster.node_client(leader, short.clone());
    writer
        .put(DB, "c", "k", &body(1), None)
        .await
        .expect("first write");
    wait_until(
        Duration::from_secs(20),
        "the replica to be cut off has the first write",
        async || stale_body(&on_cut).await == Some(body(1)),
    )
    .await;

    cluster.isolate(cut).expect("isolating");
    // A session writes through the leader: its floor is that write's revision.
    let session = writer.session();
    let put = session
        .put(DB, "c", "k", &body(2), None)
        .await
        .expect("second write, by the majority");
    progress(format!("the session wrote revision {}", put.revision));

    // Without the session, the cut-off replica answers with the old state.
    assert_eq!(stale_body(&on_cut).await, Some(body(1)));

    // The session's read there is refused, with the reason...
    let only_cut = on_cut.session();
    for (shard, revision) in session.floors(DB) {
        only_cut.saw(DB, shard, revision);
    }
    match only_cut.get(DB, "c", "k", Consistency::Stale).await {
        Err(Error::Unavailable(why)) => {
            assert!(why.contains("has applied revision"), "{why}")
        }
        other => panic!("expected REPLICA_BEHIND, got {other:?}"),
    }
    // So is its listing.
    let listing = ListOptions {
        consistency: Consistency::Stale,
        ..ListOptions::default()
    };
    match only_cut.list(DB, "c", &listing).await {
        Err(Error::Unavailable(why)) => {
            assert!(why.contains("has applied revision"), "{why}")
        }
        other => panic!("expected REPLICA_BEHIND for the listing, got {other:?}"),
    }
    // ...and with another replica to ask, it gets the session's write.
    let both = Client::with_options(
        vec![cluster.endpoint(cut), cluster.endpoint(other)],
        short.clone(),
    )
    .expect("a client");
    let through_both = both.session();
    for (shard, revision) in session.floors(DB) {
        through_both.saw(DB, shard, revision);
    }
    let read = through_both
        .get(DB, "c", "k", Consistency::Stale)
        .await
        .expect("a stale read of the session")
        .expect("the document");
    assert_eq!(read.json, body(2));
    assert!(read.revision >= put.revision);
    let page = through_both
        .list(DB, "c", &listing)
        .await
        .expect("a stale listing of the session");
    let bodies: Vec<&str> = page.documents.iter().map(|d| d.json.as_str()).collect();
    assert_eq!(bodies, vec![body(2).as_str()]);

    // A session's query and live query are refused there the same way...
    let query = only_cut.query(DB, "c").consistency(Consistency::Stale);
    match query.page(None).await {
        Err(Error::Unavailable(why)) => {
            assert!(why.contains("has applied revision"), "{why}")
        }
        other => panic!("expected REPLICA_BEHIND for the query, got {other:?}"),
    }
    let live = LiveQueryOptions {
        consistency: Consistency::Stale,
        ..LiveQueryOptions::default()
    };
    match only_cut.live_query(DB, "c", None, &live).await {
        Err(Error::Unavailable(why)) => {
            assert!(why.contains("has applied revision"), "{why}")
        }
        Err(other) => panic!("expected REPLICA_BEHIND for the live query, got {other:?}"),
        Ok(_) => panic!("the live query read the cut-off replica"),
    }
    // ...while the session's query through another replica answers its write, at a revision
    // that raises the session's floor no lower than it was.
    let page = through_both
        .query(DB, "c")
        .consistency(Consistency::Stale)
        .page(None)
        .await
        .expect("a stale query of the session");
    let bodies: Vec<&str> = page.documents.iter().map(|d| d.json.as_str()).collect();
    assert_eq!(bodies, vec![body(2).as_str()]);
    assert!(
        through_both
            .floors(DB)
            .iter()
            .all(|(_, r)| *r >= put.revision)
    );
    // Over HTTP the floor is the at_least parameter: without it the cut-off replica answers
    // the old value; with it, 503 and the reason.
    let floor: Vec<String> = session
        .floors(DB)
        .iter()
        .map(|(shard, revision)| format!("{shard}:{revision}"))
        .collect();
    let path = format!("/v1/databases/{DB}/collections/c/documents/k?consistency=stale");
    let node = cluster.node(cut);
    let (status, text) = node.http_get(&path).await.expect("an HTTP read");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"n\":1"), "{text}");
    let with_floor = format!("{path}&at_least={}", floor.join(","));
    let (status, text) = node.http_get(&with_floor).await.expect("an HTTP read");
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("REPLICA_BEHIND"), "{text}");
    let (status, text) = node
        .http_get(&format!("{path}&at_least=zero"))
        .await
        .expect("an HTTP read");
    assert_eq!(status, 400, "{text}");

    // Healed: the replica catches up and serves the session again.
    cluster.heal().expect("healing");
    wait_until(
        Duration::from_secs(30),
        "the healed replica serves the session",
        async || {
            matches!(
                only_cut.get(DB, "c", "k", Consistency::Stale).await,
                Ok(Some(d)) if d.json == body(2)
            )
        },
    )
    .await;
}
