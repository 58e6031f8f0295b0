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

/// `rounds` random rounds for `nodes` nodes; partitions only when `partitions` is true.
pub fn random(seed: u64, rounds: usize, nodes: usize, partitions: bool) -> Vec<Round> {
    let mut rng = StdRng::seed_from_u64(seed);
    let majority = nodes / 2 + 1;
    let some_nodes = |rng: &mut StdRng, most: usize| -> Vec<Target> {
        let mut all: Vec<usize> = (0..nodes).collect();
        all.shuffle(rng);
        let count = rng.random_range(1..=most.max(1));
        all.into_iter().take(count).map(Target::Node).collect()
    };
    (0..rounds)
        .map(|_| {
            let kinds = if partitions { 9 } else { 6 };
            let fault = match rng.random_range(0..kinds) {
                0 => Fault::Kill(vec![Target::Leader]),
                // Usually a minority, sometimes a majority (the cluster must stop, then recover).
                1 => Fault::Kill(some_nodes(&mut rng, majority)),
                2 => Fault::Pause(vec![Target::Leader]),
                3 => Fault::Pause(some_nodes(&mut rng, majority - 1)),
                4 => Fault::KillAll,
                5 => Fault::Kill(some_nodes(&mut rng, majority - 1)),
                6 => Fault::Isolate(Target::Leader),
                7 => Fault::Isolate(Target::Node(rng.random_range(0..nodes))),
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
        Fault::Kill(targets) => {
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
        Fault::KillAll => {
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
    fn schedules_only_name_existing_nodes_and_partition_only_when_allowed() {
        for seed in 0..50 {
            for round in random(seed, 30, 3, false) {
                let targets = match &round.fault {
                    Fault::Kill(t) | Fault::Pause(t) => t.clone(),
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
            }
        }
    }
}
