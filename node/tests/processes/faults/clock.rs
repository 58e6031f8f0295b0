//! Wall clocks that jump under load (libfaketime on every node, its offset file changed while
//! the nodes run).

use flotilla_client::Consistency;
use flotilla_testkit::cluster::ClusterOptions;
use flotilla_testkit::environment::{current_test, not_run};
use flotilla_testkit::workload::Workload;

use super::{DB, FAILOVER, Run};

/// How far `at` is from the real time now, in seconds (negative: behind).
fn off(at: std::time::SystemTime) -> i64 {
    match at.duration_since(std::time::SystemTime::now()) {
        Ok(ahead) => ahead.as_secs() as i64,
        Err(behind) => -(behind.duration().as_secs() as i64),
    }
}

/// Shifts node `i`'s wall clock to `seconds` from the real time. A jump ahead is waited for
/// until the node's own answers (their `Date`) show it; the `Date` of a clock set back stays
/// where it was (the HTTP server renews it only once its clock passes the last one), so a jump
/// back is seen in the node's log instead (see the restart below).
async fn shift(run: &Run, i: usize, seconds: i64) {
    run.cluster.node(i).shift_clock(seconds);
    if seconds <= 0 {
        return;
    }
    let addr = run.cluster.node(i).http_addr.clone();
    flotilla_testkit::wait::wait_until(
        std::time::Duration::from_secs(10),
        &format!("node {i}'s wall clock is {seconds:+} s off"),
        async || {
            flotilla_testkit::http::node_time(&addr)
                .await
                .is_ok_and(|at| (off(at) - seconds).abs() < 60)
        },
    )
    .await;
}

/// The time of the first line node `i` logged in its latest run.
fn started_at(run: &Run, i: usize) -> Option<std::time::SystemTime> {
    let log = std::fs::read_to_string(run.cluster.node(i).log_path()).ok()?;
    let last_run = &log[log.rfind("---- harness: starting")?..];
    let stamp = last_run.lines().nth(1)?.split_whitespace().next()?;
    humantime::parse_rfc3339_weak(stamp).ok()
}

/// Wall clocks that jump, forward and back, on the shard leader and a follower, while workers
/// write and read under the leader's lease: the history stays linearizable (leases and Raft's
/// timers run on the monotonic clock), also across a leader killed while the clocks disagree.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wall_clock_jumps_keep_lease_reads_linearizable() {
    let Some(library) = flotilla_testkit::environment::faketime_library() else {
        not_run(
            &current_test(),
            "it needs libfaketime (Debian's faketime package; scripts/test.sh installs it)",
        );
        return;
    };
    let options = ClusterOptions::default()
        .fast_elections()
        .arg("--test-crash-point")
        .fake_clock(library);
    let workload = Workload {
        reads: Consistency::Lease,
        ..Workload::new(DB, 8, 4)
    };
    let mut run = Run::start_on(3, options, workload).await;
    const HOUR: i64 = 3600;
    let leader = run.leader().await;
    let follower = (leader + 1) % 3;
    shift(&run, leader, HOUR).await;
    run.progress_within(FAILOVER, "the leader's wall clock jumped an hour ahead")
        .await;
    shift(&run, follower, -HOUR).await;
    run.progress_within(FAILOVER, "a follower's wall clock jumped an hour back")
        .await;
    shift(&run, leader, -2 * HOUR).await;
    run.progress_within(FAILOVER, "the leader's wall clock jumped two hours back")
        .await;
    // A new leader elected while the clocks disagree by hours.
    run.cluster.kill9(leader);
    run.leader_except(Some(leader)).await;
    run.progress_within(FAILOVER, "the leader was killed").await;
    run.cluster.restart(leader);
    run.cluster.wait_ready(leader).await;
    // The old leader came back two hours behind, as its log's times show.
    let behind = started_at(&run, leader).map(off);
    assert!(
        behind.is_some_and(|b| (b + 2 * HOUR).abs() < 60),
        "the restarted node's clock is {behind:?} s off, not two hours behind"
    );
    let now = run.leader().await;
    shift(&run, now, 30 * HOUR).await;
    run.progress_within(FAILOVER, "the new leader's wall clock jumped a day ahead")
        .await;
    for i in 0..3 {
        shift(&run, i, 0).await;
    }
    run.progress_within(FAILOVER, "every wall clock is right again")
        .await;
    run.finish().await;
}
