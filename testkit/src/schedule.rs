//! Randomized fault schedules: a seeded sequence of rounds, each injecting one fault (kills,
//! pauses, partitions, restarts of every node), holding it for a while, then healing it. The
//! schedule is a pure function of the seed, so a failing run is replayed with the same
//! `FLOTILLA_SEED` (the timing of the cluster's answers differs, the faults do not).

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::cluster::Cluster;
use crate::error::Result;
use crate::progress;

/// Environment variable holding the seed of a run.
pub const SEED_ENV: &str = "FLOTILLA_SEED";

/// The run's seed: `FLOTILLA_SEED` when set (decimal), otherwise a random one. Printed, so that
/// any run can be replayed.
pub fn seed() -> u64 {
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(rand::random);
    progress(format!("seed {seed} (replay with {SEED_ENV}={seed})"));
    seed
}

/// Which node a fault hits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Node `i`.
    Node(usize),
    /// The leader of the workload's first shard at the time of the fault.
    Leader,
}

/// One fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9`, restarted when the round ends.
    Kill(Vec<Target>),
    /// `SIGSTOP`, `SIGCONT` when the round ends.
    Pause(Vec<Target>),
    /// Cut off from every other node.
    Isolate(Target),
    /// Split in groups (links between groups cut).
    Partition(Vec<Vec<usize>>),
    /// `kill -9` of every node, all restarted at once.
    KillAll,
    /// Power loss of these nodes: `kill -9` of nodes started with `--test-power-loss`, which
    /// keep what they have not synced in memory only, so that it is lost (on nodes without
    /// that flag, a kill). Restarted when the round ends.
    PowerLoss(Vec<Target>),
    /// Power loss of every node at once.
    PowerLossAll,
    /// `SIGTERM`: a graceful stop under load, which hands the node's leaderships over first;
    /// restarted when the round ends.
    Terminate(Target),
    /// The node drops every packet from the other nodes, which still hear it (one way).
    Deaf(Target),
    /// These nodes each lose this percentage of the packets they receive.
    Lossy(Vec<Target>, u8),
    /// Each sync of these nodes' database files takes this many milliseconds longer (nodes
    /// started with `--test-storage-faults`, see [`crate::cluster::SLOW_SYNC`]).
    SlowDisk(Vec<Target>, u32),
    /// What these nodes send leaves at this many kbit/s, through a queue (a slow, congested
    /// link: delay grows with the traffic).
    SlowLink(Vec<Target>, u32),
    /// A non-transitive partition: the two sides cannot reach each other, the bridge node
    /// reaches both.
    Bridge {
        left: Vec<usize>,
        bridge: usize,
        right: Vec<usize>,
    },
}

impl Fault {
    /// The fault's kind, for counting faults by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Kill(_) => "kill",
            Fault::Pause(_) => "pause",
            Fault::Isolate(_) => "isolate",
            Fault::Partition(_) => "partition",
            Fault::KillAll => "kill all",
            Fault::PowerLoss(_) => "power loss",
            Fault::PowerLossAll => "power loss of every node",
            Fault::Terminate(_) => "graceful stop",
            Fault::Deaf(_) => "one-way cut",
            Fault::Lossy(..) => "packet loss",
            Fault::SlowDisk(..) => "slow disk",
            Fault::SlowLink(..) => "slow link",
            Fault::Bridge { .. } => "bridge partition",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// One round: a fault held for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    pub fault: Fault,
    pub hold: Duration,
}

/// `count` of `nodes` nodes in a random order, at least one.
pub(crate) fn some_nodes(rng: &mut StdRng, nodes: usize, most: usize) -> Vec<Target> {
    let mut all: Vec<usize> = (0..nodes).collect();
    all.shuffle(rng);
    let count = rng.random_range(1..=most.max(1));
    all.into_iter().take(count).map(Target::Node).collect()
}

/// `rounds` random rounds for `nodes` nodes; partitions only when `partitions` is true.
pub fn random(seed: u64, rounds: usize, nodes: usize, partitions: bool) -> Vec<Round> {
    let mut rng = StdRng::seed_from_u64(seed);
    let majority = nodes / 2 + 1;
    let some_nodes = |rng: &mut StdRng, most: usize| some_nodes(rng, nodes, most);
    (0..rounds)
        .map(|_| {
            let kinds = if partitions { 15 } else { 8 };
            let fault = match rng.random_range(0..kinds) {
                0 => Fault::Kill(vec![Target::Leader]),
                // Usually a minority, sometimes a majority (the cluster must stop, then recover).
                1 => Fault::Kill(some_nodes(&mut rng, majority)),
                2 => Fault::Pause(vec![Target::Leader]),
                3 => Fault::Pause(some_nodes(&mut rng, majority - 1)),
                4 => Fault::KillAll,
                5 => Fault::Kill(some_nodes(&mut rng, majority - 1)),
                6 => Fault::Terminate(if rng.random_bool(0.7) {
                    Target::Leader
                } else {
                    Target::Node(rng.random_range(0..nodes))
                }),
                // The leader's disk or any nodes' (a majority's: commits wait on their syncs).
                7 => Fault::SlowDisk(
                    if rng.random_bool(0.5) {
                        vec![Target::Leader]
                    } else {
                        some_nodes(&mut rng, nodes)
                    },
                    rng.random_range(50..=800),
                ),
                8 => Fault::Isolate(Target::Leader),
                9 => Fault::Isolate(Target::Node(rng.random_range(0..nodes))),
                10 => Fault::Deaf(if rng.random_bool(0.5) {
                    Target::Leader
                } else {
                    Target::Node(rng.random_range(0..nodes))
                }),
                11 => Fault::Lossy(some_nodes(&mut rng, nodes), rng.random_range(5..=30)),
                // The leader's link (its appends and answers queue) or any nodes'.
                13 => Fault::SlowLink(
                    if rng.random_bool(0.5) {
                        vec![Target::Leader]
                    } else {
                        some_nodes(&mut rng, nodes)
                    },
                    rng.random_range(256..=1024),
                ),
                12 if nodes >= 3 => {
                    let mut all: Vec<usize> = (0..nodes).collect();
                    all.shuffle(&mut rng);
                    let bridge = all[0];
                    let rest = &all[1..];
                    let cut = rng.random_range(1..rest.len());
                    let (left, right) = rest.split_at(cut);
                    Fault::Bridge {
                        left: left.to_vec(),
                        bridge,
                        right: right.to_vec(),
                    }
                }
                _ => {
                    let mut all: Vec<usize> = (0..nodes).collect();
                    all.shuffle(&mut rng);
                    let cut = rng.random_range(1..nodes.max(2));
                    let (a, b) = all.split_at(cut.min(nodes));
                    Fault::Partition(vec![a.to_vec(), b.to_vec()])
                }
            };
            Round {
                fault,
                hold: Duration::from_millis(rng.random_range(500..3_000)),
            }
        })
        .collect()
}

async fn resolve(cluster: &Cluster, database: &str, target: &Target) -> usize {
    match target {
        Target::Node(i) => *i,
        Target::Leader => cluster.probe_shard_leader(database, 0).await.unwrap_or(0),
    }
}

/// Injects `fault` into `cluster`.
pub async fn inject(cluster: &mut Cluster, database: &str, fault: &Fault) -> Result<()> {
    progress(format!("injecting {fault}"));
    match fault {
        Fault::Kill(targets) | Fault::PowerLoss(targets) => {
            for t in targets {
                let i = resolve(cluster, database, t).await;
                cluster.kill9(i);
            }
        }
        Fault::Pause(targets) => {
            for t in targets {
                let i = resolve(cluster, database, t).await;
                if cluster.nodes[i].is_running() && !cluster.nodes[i].is_frozen() {
                    cluster.sigstop(i);
                }
            }
        }
        Fault::Isolate(t) => {
            let i = resolve(cluster, database, t).await;
            cluster.isolate(i)?;
        }
        Fault::Partition(groups) => cluster.partition(groups)?,
        Fault::Terminate(t) => {
            let i = resolve(cluster, database, t).await;
            if cluster.nodes[i].is_running() && !cluster.nodes[i].is_frozen() {
                let status = cluster.sigterm(i).await;
                progress(format!("node {i} stopped gracefully: {status}"));
            }
        }
        Fault::Deaf(t) => {
            let i = resolve(cluster, database, t).await;
            cluster.deafen(i)?;
        }
        Fault::Lossy(targets, percent) => {
            for t in targets {
                let i = resolve(cluster, database, t).await;
                cluster.lossy(i, *percent)?;
            }
        }
        Fault::SlowDisk(targets, ms) => {
            for t in targets {
                let i = resolve(cluster, database, t).await;
                cluster.slow_disk(i, *ms)?;
            }
        }
        Fault::SlowLink(targets, kbit) => {
            for t in targets {
                let i = resolve(cluster, database, t).await;
                cluster.slow_link(i, *kbit)?;
            }
        }
        Fault::Bridge {
            left,
            bridge,
            right,
        } => cluster.bridge(left, *bridge, right)?,
        Fault::KillAll | Fault::PowerLossAll => {
            for i in 0..cluster.len() {
                cluster.kill9(i);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        assert_eq!(random(7, 20, 5, true), random(7, 20, 5, true));
        assert_ne!(random(7, 20, 5, true), random(8, 20, 5, true));
    }

    #[test]
    fn every_kind_of_fault_is_scheduled() {
        let kinds: std::collections::BTreeSet<&str> = (0..20)
            .flat_map(|seed| random(seed, 30, 3, true))
            .map(|r| r.fault.kind())
            .collect();
        for kind in [
            "partition",
            "isolate",
            "one-way cut",
            "packet loss",
            "bridge partition",
            "graceful stop",
            "slow disk",
            "slow link",
        ] {
            assert!(kinds.contains(kind), "{kind} never scheduled: {kinds:?}");
        }
    }

    #[test]
    fn schedules_only_name_existing_nodes_and_partition_only_when_allowed() {
        for seed in 0..50 {
            for round in random(seed, 30, 3, false) {
                let targets = match &round.fault {
                    Fault::Kill(t) | Fault::Pause(t) => t.clone(),
                    Fault::Terminate(t) => vec![t.clone()],
                    Fault::SlowDisk(t, ms) => {
                        assert!((50..=800).contains(ms), "{ms}");
                        t.clone()
                    }
                    Fault::KillAll => vec![],
                    other => panic!("seed {seed}: {other} without partitions"),
                };
                for t in targets {
                    assert!(matches!(t, Target::Leader | Target::Node(0..3)), "{t:?}");
                }
            }
            for round in random(seed, 30, 5, true) {
                if let Fault::Partition(groups) = &round.fault {
                    let mut all: Vec<usize> = groups.concat();
                    all.sort();
                    assert_eq!(all, vec![0, 1, 2, 3, 4], "seed {seed}");
                    assert!(groups.iter().all(|g| !g.is_empty()), "seed {seed}");
                }
                if let Fault::Pause(t) = &round.fault {
                    assert!(t.len() <= 2, "pausing a majority of 5: {t:?}");
                }
                if let Fault::Bridge {
                    left,
                    bridge,
                    right,
                } = &round.fault
                {
                    let mut all: Vec<usize> = [left.clone(), right.clone(), vec![*bridge]].concat();
                    all.sort();
                    assert_eq!(all, vec![0, 1, 2, 3, 4], "seed {seed}");
                    assert!(!left.is_empty() && !right.is_empty(), "seed {seed}");
                }
                if let Fault::Lossy(t, percent) = &round.fault {
                    assert!(
                        !t.is_empty() && (5..=30).contains(percent),
                        "{t:?} {percent}"
                    );
                }
                if let Fault::SlowLink(t, kbit) = &round.fault {
                    assert!(!t.is_empty() && (256..=1024).contains(kbit), "{t:?} {kbit}");
                }
            }
        }
    }
}
