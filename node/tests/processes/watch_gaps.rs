//! Watches never skip changes silently: a replica that falls behind and is caught up by a
//! snapshot no longer holds the changes the snapshot covers, and a watch that needs them (one
//! already running from revision 0, or one resumed from an old revision) ends with
//! `OUT_OF_RANGE`, reason `REVISION_COMPACTED`, naming the first revision still kept.

use std::time::Duration;

use flotilla_client::{Client, ClientOptions, Error, WatchStream};
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::progress;
use flotilla_testkit::wait::{wait_for, wait_until, within};
use futures::StreamExt;

const DB: &str = "feeds";

/// Writes `count` documents one request (and one log entry) at a time; their revisions.
async fn write(client: &Client, prefix: &str, count: usize) -> Vec<u64> {
    let mut revisions = Vec::with_capacity(count);
    for i in 0..count {
        let put = client
            .put(DB, "c", &format!("{prefix}-{i:04}"), r#"{"n":1}"#, None)
            .await
            .unwrap_or_else(|e| panic!("write {prefix}-{i}: {e}"));
        revisions.push(put.revision);
    }
    revisions
}

/// The next item of `watch`, within a generous bound.
async fn next(
    watch: &mut WatchStream,
    what: &str,
) -> flotilla_client::Result<flotilla_client::WatchEvent> {
    within(Duration::from_secs(30), what, watch.next())
        .await
        .unwrap_or_else(|| panic!("{what}: the watch ended without an error"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_over_changes_a_snapshot_install_replaced_ends_with_the_first_revision_kept() {
    let options = ClusterOptions::default()
        .fast_elections()
        .snapshot_threshold(50);
    let mut cluster = Cluster::start(3, options).await;
    cluster.create_database(DB, Some(3), None).await;
    let leader = wait_for(Duration::from_secs(20), "a shard leader", async || {
        cluster.shard_leader(DB, 0).await
    })
    .await;
    let behind = (leader + 1) % cluster.len();
    let one_by_one = ClientOptions {
        coalesce_calls: false,
        ..ClientOptions::default()
    };
    let writer = cluster.node_client(leader, one_by_one.clone());
    let reader = cluster.node_client(behind, one_by_one);

    // A watch of new changes on the replica that is about to fall behind.
    let mut watch = reader.watch(DB, Some("c"), 0).await.expect("watch");
    write(&writer, "before", 1).await;
    let first = next(&mut watch, "the first change")
        .await
        .expect("an event");
    let seen = first.document.revision;

    // Frozen while the others write far past a snapshot and compact their logs, it is caught
    // up by a snapshot when it runs again.
    cluster.sigstop(behind);
    let frozen_writes = write(&writer, "while-frozen", 200).await;
    cluster.sigcont(behind);
    let log = cluster.node(behind).log_path();
    wait_until(
        Duration::from_secs(30),
        "the frozen replica installs a snapshot",
        async || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("snapshot installed")),
    )
    .await;

    // The running watch ends, saying where the kept changes start; it did not jump there.
    // (The replica froze before the other writes reached it. It may still get the first of
    // them from the leader's log before the snapshot, if the leader had not compacted them
    // yet: those it delivers in order, none skipped, before it ends.)
    let mut seen = seen;
    let mut delivered = 0;
    let first_kept = loop {
        match next(&mut watch, "the running watch").await {
            Err(Error::RevisionCompacted { first_revision, .. }) => break first_revision,
            Ok(event) if frozen_writes.get(delivered) == Some(&event.document.revision) => {
                seen = event.document.revision;
                delivered += 1;
            }
            Ok(event) => panic!(
                "the watch jumped from revision {seen} to {} (the next write was at {:?})",
                event.document.revision,
                frozen_writes.get(delivered)
            ),
            Err(other) => panic!("expected RevisionCompacted, got {other:?}"),
        }
    };
    assert!(
        first_kept > seen + 1,
        "the first revision kept ({first_kept}) is past the last delivered ({seen})"
    );
    progress(format!(
        "the watch ended at revision {seen}: the replica keeps changes from {first_kept} on"
    ));

    // Resumed from where it stopped: refused at once, with the same answer.
    let mut resumed = reader.watch(DB, Some("c"), seen + 1).await.expect("watch");
    match next(&mut resumed, "the resumed watch").await {
        Err(Error::RevisionCompacted { first_revision, .. }) => {
            assert_eq!(first_revision, first_kept)
        }
        other => panic!("expected RevisionCompacted, got {other:?}"),
    }

    // From the first revision kept: served, with the changes that follow.
    let mut fresh = reader
        .watch(DB, Some("c"), first_kept)
        .await
        .expect("watch");
    write(&writer, "after", 1).await;
    let event = loop {
        let event = next(&mut fresh, "the watch from the first kept revision")
            .await
            .expect("an event");
        if event.document.id == "after-0000" {
            break event;
        }
    };
    assert!(event.document.revision >= first_kept);
}

/// A node that stops (SIGTERM) ends the watches open on it with `UNAVAILABLE` (so that their
/// clients resume them on another node) and exits; before, an open watch held its server's
/// graceful stop forever, and a watch opened while it was stopping too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watches_open_on_a_stopping_node_end_and_the_node_exits() {
    let mut cluster = Cluster::start(3, ClusterOptions::default().fast_elections()).await;
    cluster.create_database(DB, Some(3), None).await;
    let only_node_0 = ClientOptions {
        coalesce_calls: false,
        ..ClientOptions::default()
    };
    let reader = cluster.node_client(0, only_node_0);
    let mut watch = reader.watch(DB, Some("c"), 0).await.expect("watch");
    let writer = cluster.client();
    write(&writer, "before", 1).await;
    let event = next(&mut watch, "the first change")
        .await
        .expect("an event");
    assert_eq!(event.document.id, "before-0000");

    // Exits within the harness' stop timeout (it panics otherwise).
    let status = cluster.sigterm(0).await;
    progress(format!("node 0 exited: {status}"));
    match next(&mut watch, "the end of the watch").await {
        Err(Error::Unavailable(why)) => assert!(why.contains("stopping"), "{why}"),
        // The connection closed as the node exited, before the answer was read.
        Err(Error::Transport { .. }) => {}
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
}
