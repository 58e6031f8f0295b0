//! Membership changes under faults: a 5-node cluster whose every node runs with
//! `--test-power-loss` (what a node has not synced is lost when it is killed), a database of 4
//! shards at replication factor 3 with a secondary index, and the checked workload of the
//! fault tests. Each round of a
//! seeded schedule (`flotilla_testkit::membership`) injects a fault (power loss of the shard
//! leader, of a minority or of every node, or paused nodes) and, while it is held, makes one
//! membership change: add or remove a replica, raise or lower the replication factor, a
//! rebalance, a leadership transfer, or the removal of a node followed by a fresh node in its
//! place. Some rounds restart the nodes they hit with a low snapshot threshold, so that
//! catching up goes through snapshot installs under faults.
//!
//! After EVERY round the faults are healed and the cluster must settle (every shard a leader
//! and exactly its replication factor of Members); the workload is stopped and the replicas of
//! every shard are compared (same applied index, same content digest); then the workload goes
//! on. At the end every key is read and the whole history is checked: linearizable per key, no
//! acknowledged write lost.
//!
//! The run prints its seed and schedule; `FLOTILLA_SEED=N` replays a seed and
//! `FLOTILLA_MEMBERSHIP_ROUNDS` sets the number of rounds (see the README for a long run).
//! The nodes run on 127.0.0.1 (a fresh node joins at the address of the one it replaces).

use std::time::{Duration, Instant};

use flotilla_testkit::cluster::{Cluster, ClusterOptions, Network};
use flotilla_testkit::history::History;
use flotilla_testkit::linearizability::{self, Versions};
use flotilla_testkit::membership::{self, Outcome, Tally};
use flotilla_testkit::progress;
use flotilla_testkit::schedule;
use flotilla_testkit::workload::{Running, Workload, Writes};

use super::faults::env_number;

const DB: &str = "membership";
const NODES: usize = 5;
const SHARDS: u32 = 4;
const RF: u32 = 3;

/// Rounds when `FLOTILLA_MEMBERSHIP_ROUNDS` is not set: short enough for CI.
const DEFAULT_ROUNDS: usize = 8;

/// Bound on a cluster settling after a round (replicas caught up, moved, promoted).
const SETTLE: Duration = Duration::from_secs(120);

/// Writes acknowledged after each round to count as "writes flow again".
const PROGRESS: u64 = 30;

async fn writes_flow(running: &Running, seed: u64, round: usize, cluster: &Cluster) {
    running
        .wait_for_writes(PROGRESS, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "seed {seed} round {round}: no progress after the round: {e}\n{}",
                cluster.describe()
            )
        });
}

/// The seed CI runs when `FLOTILLA_SEED` is not set: fixed, so that a CI failure replays.
const DEFAULT_SEED: u64 = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn membership_changes_under_faults_keep_histories_linearizable_and_replicas_equal() {
    let rounds = env_number("FLOTILLA_MEMBERSHIP_ROUNDS", DEFAULT_ROUNDS);
    let seed = if std::env::var_os(schedule::SEED_ENV).is_some() {
        schedule::seed()
    } else {
        progress(format!(
            "seed {DEFAULT_SEED} (the default; {} sets another)",
            schedule::SEED_ENV
        ));
        DEFAULT_SEED
    };
    run(seed, rounds).await;
}

/// Seed 2, round 6: nodes 3 and 4 lose power while a rebalance moves replicas onto node 3.
/// Before Raft probes and votes had a deadline floor, every node then timed out on every other
/// node's Raft messages for minutes while all of them ran, and shard 0 kept a Promotable that
/// was never promoted (the same shape recurred with seed 3 at round 10). Run by hand (it
/// repeats ground the seed-1 test covers in CI).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a replay of seed 2 (a timeout storm, fixed); run by hand with --ignored"]
async fn a_power_loss_during_a_rebalance_settles_with_every_shard_at_its_replication_factor() {
    run(2, 6).await;
}

async fn run(seed: u64, rounds: usize) {
    let plan = membership::random(seed, rounds, NODES, SHARDS);
    for (n, round) in plan.iter().enumerate() {
        progress(format!("seed {seed} plan {}/{rounds}: {round}", n + 1));
    }
    let options = ClusterOptions::default()
        .fast_elections()
        .network(Network::Loopback)
        .arg("--test-power-loss");
    let mut cluster = Cluster::start(NODES, options).await;
    cluster.create_database(DB, Some(RF), Some(SHARDS)).await;
    // Batches across the shards and queries through the index, while replicas move.
    let workload = Workload {
        writes: Writes::Mixed,
        batches: 8,
        lists: 4,
        workers_per_client: 2,
        ..Workload::new(DB, 16, 4)
    };
    // A secondary index on the documents' value: its entries are part of every digest, and
    // every new replica and snapshot install builds it again.
    cluster
        .client()
        .create_index(DB, &workload.collection, "by_w", &["/w"])
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: creating the index: {e}"));
    let history = History::new();
    let mut running = workload.start(&cluster.endpoints(), &history, seed);
    writes_flow(&running, seed, 0, &cluster).await;

    let started = Instant::now();
    let (mut faults, mut changes) = (Tally::default(), Tally::default());
    let mut compared = 0;
    for (n, round) in plan.iter().enumerate() {
        let number = n + 1;
        progress(format!("seed {seed} round {number}/{rounds}: {round}"));
        let seen = membership::observe(&cluster, DB).await;
        schedule::inject(&mut cluster, DB, &round.fault)
            .await
            .unwrap_or_else(|e| panic!("seed {seed} round {number}: injecting: {e}"));
        faults.add(round.fault.kind());
        let held = Instant::now();
        let outcome = membership::apply(&cluster, DB, &seen, &round.change, round.hold).await;
        progress(format!(
            "seed {seed} round {number}: {} -> {outcome:?}",
            round.change
        ));
        changes.add(format!("{} {}", round.change.kind(), outcome.kind()));
        tokio::time::sleep(round.hold.saturating_sub(held.elapsed())).await;

        // The nodes this round stopped come back with its snapshot threshold.
        for node in &mut cluster.nodes {
            if !node.is_running() {
                node.options.snapshot_threshold = round.snapshot_threshold;
            }
        }
        cluster
            .heal_all()
            .unwrap_or_else(|e| panic!("seed {seed} round {number}: healing: {e}"));
        cluster.wait_all_ready().await;
        if let Outcome::Replacing { index, id } = outcome {
            membership::finish(&mut cluster, index, id, SETTLE).await;
        }
        cluster.wait_settled(DB, SETTLE).await;
        running.stop().await;
        compared += cluster.compare_replicas(DB).await;
        running = workload.start(&cluster.endpoints(), &history, seed ^ number as u64);
        writes_flow(&running, seed, number, &cluster).await;
    }
    running.stop().await;
    progress(format!(
        "seed {seed}: {rounds} rounds in {:.1}s; faults: {faults}; changes: {changes}; {compared} \
         replica comparisons equal",
        started.elapsed().as_secs_f64()
    ));

    let finals = workload
        .final_reads(&cluster.endpoints(), &history, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{}", cluster.describe()));
    let (ok, failed, unknown) = history.counts();
    progress(format!(
        "history: {ok} acknowledged, {failed} failed, {unknown} unknown operations"
    ));
    progress(history.many_keys_summary());
    for cause in history.unknown_causes(3) {
        progress(cause);
    }
    let report = linearizability::check(seed, Versions::Exact, &history.ops(), &finals);
    progress(&report);
    report.assert_ok();
}
