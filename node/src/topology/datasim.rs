//! A seeded, deterministic simulation of a cluster with data: the topology core decides, a
//! model of Raft replicates. Each shard has a log; a write is acknowledged only when the
//! shard's leader and a majority of its voters are up (and then those up voters hold it); up
//! replicas catch up from the leader at a random pace; an election picks the up voter holding
//! the most (Raft's vote rule); a new replica starts empty. The scenario of a 5-node cluster:
//! a member goes away and returns (Rehab, then Member again, caught up), another stays away
//! past `replace_after` (replaced, the replication factor restored), a sixth node joins and a
//! rebalance spreads the replicas, a node is removed (its replicas are re-created first). After
//! every tick every majority of a shard's voters includes one holding every acknowledged write
//! (so whoever is elected has them); at the end every replica holds all of them.
//!
//! Replay one seed with `FLOTILLA_SIM_SEED=<seed> cargo test -p flotilla-node datasim`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::sim::{Sim, cluster, with_db};
use super::{Change, Policy, ReplicaState, Topology};
use crate::types::{GroupId, NodeId};

const T0: Duration = Duration::from_secs(1_000_000);
const TICK: Duration = Duration::from_secs(1);
/// Seeds run by default.
const SEEDS: u64 = 24;

struct DataSim {
    sim: Sim,
    rng: StdRng,
    /// Every action carried out, for the failure report.
    trace: Vec<String>,
}

fn policy() -> Policy {
    let mut p = Policy {
        alive_within: Duration::from_secs(3),
        ..Policy::default()
    };
    p.default_database.rehab_after = Duration::from_secs(10);
    p.default_database.replace_after = Some(Duration::from_secs(60));
    p.default_database.promotion_lag = 20;
    p.default_database.rehab_lag = 5_000;
    p
}

impl DataSim {
    /// Three nodes holding database `app` (4 shards, replication factor 3), two more joined
    /// without replicas.
    fn new(seed: u64) -> DataSim {
        let topo: Topology = with_db(cluster(1..=3), "app", &[&[1, 2, 3][..]; 4], T0);
        let up: BTreeSet<NodeId> = (1..=3).collect();
        let mut sim = Sim::new(topo, policy(), up, T0);
        for g in sim.groups() {
            sim.log_len.insert(g, 0);
            sim.held.insert(g, (1..=3).map(|n| (n, 0)).collect());
        }
        DataSim {
            sim,
            rng: StdRng::seed_from_u64(seed),
            trace: Vec::new(),
        }
    }

    fn voters(&self, group: GroupId) -> Vec<NodeId> {
        self.sim
            .shard(group)
            .map(|s| s.voters().map(|r| r.node).collect())
            .unwrap_or_default()
    }

    /// Clients write to every shard; a write is acknowledged when the leader and a majority
    /// of voters are up, and those up voters that are caught up hold it.
    fn write(&mut self) {
        for g in self.sim.groups() {
            let Some(leader) = self.sim.leaders.get(&g).copied() else {
                continue;
            };
            let voters = self.voters(g);
            let len = self.sim.log_len[&g];
            let held = self.sim.held.entry(g).or_default();
            let holding: Vec<NodeId> = voters
                .iter()
                .copied()
                .filter(|v| self.sim.up.contains(v) && held.get(v) == Some(&len))
                .collect();
            if !self.sim.up.contains(&leader)
                || !holding.contains(&leader)
                || holding.len() < super::majority(voters.len())
            {
                continue;
            }
            let n = self.rng.random_range(1..=20);
            for v in holding {
                held.insert(v, len + n);
            }
            self.sim.log_len.insert(g, len + n);
        }
    }

    /// Up replicas (voters and learners) catch up from an up leader, at a random pace.
    fn replicate(&mut self) {
        for g in self.sim.groups() {
            let Some(leader) = self.sim.leaders.get(&g).copied() else {
                continue;
            };
            if !self.sim.up.contains(&leader) {
                continue;
            }
            let replicas: Vec<NodeId> = self
                .sim
                .shard(g)
                .map(|s| s.replicas.iter().map(|r| r.node).collect())
                .unwrap_or_default();
            let len = self.sim.log_len[&g];
            for n in replicas.into_iter().filter(|n| self.sim.up.contains(n)) {
                let pace = self.rng.random_range(10..=400);
                let held = self.sim.held.entry(g).or_default().entry(n).or_insert(0);
                *held = (*held + pace).min(len);
            }
        }
    }

    /// One tick of the whole model, checking that no acknowledged write has been lost.
    fn tick(&mut self) -> Result<(), String> {
        self.write();
        self.replicate();
        let actions = self.sim.tick(TICK)?;
        for a in &actions {
            self.trace.push(format!("{:?} {a}", self.sim.now));
            match &a.change {
                Change::AddPromotable { shard, node, .. } => {
                    self.sim
                        .held
                        .entry(shard.group)
                        .or_default()
                        .insert(*node, 0);
                }
                // Raft commits a promotion once the new voter has the configuration entry,
                // which follows every acknowledged write.
                Change::Promote { shard, node } => {
                    let len = self.sim.log_len.get(&shard.group).copied().unwrap_or(0);
                    self.sim
                        .held
                        .entry(shard.group)
                        .or_default()
                        .insert(*node, len);
                }
                Change::RemoveReplica { shard, node } => {
                    if let Some(h) = self.sim.held.get_mut(&shard.group) {
                        h.remove(node);
                    }
                }
                _ => {}
            }
        }
        if self.sim.policy.rebalance_requested
            && super::is_balanced(
                &self.sim.topo,
                &self.sim.health(),
                &self.sim.policy,
                self.sim.now,
            )
            && self.sim.groups().iter().all(|g| {
                self.sim
                    .shard(*g)
                    .is_some_and(|s| s.live_replacement().is_none())
            })
        {
            self.sim.policy.rebalance_requested = false;
        }
        self.check_no_loss()
    }

    /// Every majority of a shard's voters includes one holding every acknowledged write, so
    /// whoever is elected has them all (Raft's quorum intersection).
    fn check_no_loss(&self) -> Result<(), String> {
        for g in self.sim.groups() {
            let len = self.sim.log_len[&g];
            let voters = self.voters(g);
            let holders = voters
                .iter()
                .filter(|n| self.sim.held.get(&g).and_then(|h| h.get(n)).copied() == Some(len))
                .count();
            if voters.is_empty() || holders + super::majority(voters.len()) <= voters.len() {
                return Err(format!(
                    "group {g}: {len} writes acknowledged, but only {holders} of voters {voters:?} hold them all"
                ));
            }
        }
        Ok(())
    }

    fn run(&mut self, seconds: u64) -> Result<(), String> {
        for _ in 0..seconds {
            self.tick()?;
        }
        Ok(())
    }

    /// Ticks until `done` holds, at most `seconds`.
    fn run_until(
        &mut self,
        seconds: u64,
        what: &str,
        done: impl Fn(&Sim) -> bool,
    ) -> Result<(), String> {
        for _ in 0..seconds {
            if done(&self.sim) {
                return Ok(());
            }
            self.tick()?;
        }
        Err(format!("not reached within {seconds} s: {what}"))
    }

    fn state_of(&self, group: GroupId, node: NodeId) -> Option<ReplicaState> {
        self.sim
            .shard(group)
            .and_then(|s| s.replica(node))
            .map(|r| r.state)
    }

    fn holds_everything(&self, group: GroupId, node: NodeId) -> bool {
        self.sim
            .held
            .get(&group)
            .and_then(|h| h.get(&node))
            .copied()
            == self.sim.log_len.get(&group).copied()
    }

    fn scenario(&mut self) -> Result<(), String> {
        let groups = self.sim.groups();
        // Two nodes join, holding nothing yet.
        for n in [4, 5] {
            self.sim.topo.nodes.insert(n, Default::default());
            self.sim.topo.meta.learners.insert(n);
            self.sim.up.insert(n);
        }
        let settle = self.rng.random_range(5..15);
        self.run(settle)?;

        // A member goes away for less than replace_after: Rehab, then Member again, caught up.
        let away = self.rng.random_range(1..=3);
        self.sim.up.remove(&away);
        self.run_until(40, "the away member is Rehab", |s| {
            s.shard(groups[0])
                .and_then(|sh| sh.replica(away))
                .is_some_and(|r| r.state == ReplicaState::Rehab)
        })?;
        let pause = self.rng.random_range(0..20);
        self.run(pause)?;
        self.sim.up.insert(away);
        self.run_until(60, "the returning replica is a caught-up Member", |s| {
            groups.iter().all(|g| {
                s.shard(*g)
                    .and_then(|sh| sh.replica(away))
                    .is_some_and(|r| r.state == ReplicaState::Member)
            })
        })?;

        // Another stays away past replace_after: replaced elsewhere, then removed.
        let gone = (1..=3)
            .filter(|n| *n != away)
            .nth(self.rng.random_range(0..2));
        let gone = gone.ok_or("no second member")?;
        self.sim.up.remove(&gone);
        self.run_until(300, "the lost member is replaced in every shard", |s| {
            groups.iter().all(|g| {
                s.shard(*g).is_some_and(|sh| {
                    !sh.has_replica_on(gone)
                        && sh.replicas.len() == 3
                        && sh.replicas.iter().all(|r| r.state == ReplicaState::Member)
                })
            })
        })?;
        // It comes back empty-handed: not a replica any more, nothing breaks.
        self.sim.up.insert(gone);
        self.run(20)?;

        // A sixth node joins and a rebalance spreads the 12 replicas: two on every node.
        self.sim.topo.nodes.insert(6, Default::default());
        self.sim.topo.meta.learners.insert(6);
        self.sim.up.insert(6);
        self.run(3)?;
        self.sim.policy.rebalance_requested = true;
        self.run_until(400, "the rebalance finished", |s| {
            !s.policy.rebalance_requested
        })?;
        let load = self.sim.topo.replica_load();
        if !load.values().all(|l| *l == 2) {
            return Err(format!("unbalanced after the rebalance: {load:?}"));
        }

        // Remove a node: its replicas are re-created first, then it is retired.
        let leaving = self.rng.random_range(1..=6);
        if let Some(n) = self.sim.topo.nodes.get_mut(&leaving) {
            n.draining = true;
        }
        self.run_until(400, "the drained node is retired", |s| {
            !s.topo.nodes.contains_key(&leaving)
        })?;
        self.sim.up.remove(&leaving);
        self.run_until(200, "every shard settles at three caught-up Members", |s| {
            groups.iter().all(|g| {
                s.shard(*g).is_some_and(|sh| {
                    sh.replicas.len() == 3
                        && sh.replicas.iter().all(|r| {
                            r.state == ReplicaState::Member
                                && s.held.get(g).and_then(|h| h.get(&r.node)).copied()
                                    == s.log_len.get(g).copied()
                        })
                })
            })
        })?;
        for g in &groups {
            let sh = self.sim.shard(*g).ok_or("shard vanished")?;
            if sh.has_replica_on(leaving) {
                return Err(format!(
                    "group {g} still has a replica on removed node {leaving}"
                ));
            }
            for r in &sh.replicas {
                if !self.holds_everything(*g, r.node) || self.state_of(*g, r.node).is_none() {
                    return Err(format!("group {g}: node {} misses writes", r.node));
                }
            }
            if self.sim.log_len[g] == 0 {
                return Err(format!("group {g} acknowledged no write at all"));
            }
        }
        Ok(())
    }
}

#[test]
fn seeded_cluster_runs_heal_rebalance_and_drain_without_losing_an_acknowledged_write() {
    let seeds: Vec<u64> = match std::env::var("FLOTILLA_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("FLOTILLA_SIM_SEED is a number")],
        Err(_) => (0..SEEDS).map(|i| 0x5eed_0000 + i).collect(),
    };
    let mut writes: BTreeMap<u64, u64> = BTreeMap::new();
    for seed in seeds {
        let mut ds = DataSim::new(seed);
        if let Err(e) = ds.scenario() {
            let tail: Vec<&String> = ds.trace.iter().rev().take(30).collect();
            panic!(
                "seed {seed} (replay: FLOTILLA_SIM_SEED={seed}): {e}\nlast actions, newest first:\n{tail:#?}"
            );
        }
        writes.insert(seed, ds.sim.log_len.values().sum());
    }
    // Different seeds take different paths.
    let distinct: BTreeSet<u64> = writes.values().copied().collect();
    assert!(distinct.len() > 1 || writes.len() == 1, "{writes:?}");
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let run = |seed| {
        let mut ds = DataSim::new(seed);
        ds.scenario().expect("scenario");
        (ds.trace, ds.sim.log_len)
    };
    assert_eq!(run(7), run(7));
}
