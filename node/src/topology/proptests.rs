//! Property tests: random clusters, placements, failures and policies, driven through the
//! simulator. Every action of every tick is checked against the safety rules (majority kept,
//! one replacement per shard, one replica per node, labels, eligible targets), and once nodes
//! are stable the cluster must reach a fixed point where `decide` returns nothing, with every
//! shard that can be healed healed. proptest prints the failing case and its seed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;

use super::sim::Sim;
use super::*;
use crate::meta::voters::desired_voters;
use crate::types::{GroupId, NodeId};

const T0: Duration = Duration::from_secs(1_000_000);
const STEP: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
struct NodeSpec {
    up: bool,
    draining: bool,
    zone_a: bool,
}

#[derive(Debug, Clone)]
struct DbSpec {
    rf: usize,
    replace: bool,
    rebalance: bool,
    zone_a_only: bool,
    /// Per shard: (node index, state) pairs; duplicates are dropped.
    shards: Vec<Vec<(usize, ReplicaState)>>,
}

#[derive(Debug, Clone)]
struct Spec {
    nodes: Vec<NodeSpec>,
    meta_voters: usize,
    rebalance_requested: bool,
    dbs: Vec<DbSpec>,
    /// (tick, node index, up) changes while the run starts; stable afterwards.
    failures: Vec<(usize, usize, bool)>,
}

fn state() -> impl Strategy<Value = ReplicaState> {
    prop_oneof![
        6 => Just(ReplicaState::Member),
        2 => Just(ReplicaState::Promotable),
        2 => Just(ReplicaState::Rehab),
    ]
}

fn node_spec() -> impl Strategy<Value = NodeSpec> {
    (
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.12),
        any::<bool>(),
    )
        .prop_map(|(up, draining, zone_a)| NodeSpec {
            up,
            draining,
            zone_a,
        })
}

fn db_spec(nodes: usize) -> impl Strategy<Value = DbSpec> {
    let shard = prop::collection::vec((0..nodes, state()), 1..=4);
    (
        1usize..=4,
        prop::bool::weighted(0.8),
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop::collection::vec(shard, 1..=3),
    )
        .prop_map(|(rf, replace, rebalance, zone_a_only, shards)| DbSpec {
            rf,
            replace,
            rebalance,
            zone_a_only,
            shards,
        })
}

fn spec() -> impl Strategy<Value = Spec> {
    (3usize..=7).prop_flat_map(|n| {
        (
            prop::collection::vec(node_spec(), n),
            prop_oneof![Just(1usize), Just(3usize)],
            prop::bool::weighted(0.3),
            prop::collection::vec(db_spec(n), 1..=2),
            prop::collection::vec((0usize..30, 0..n, any::<bool>()), 0..6),
        )
            .prop_map(
                |(nodes, meta_voters, rebalance_requested, dbs, failures)| Spec {
                    nodes,
                    meta_voters,
                    rebalance_requested,
                    dbs,
                    failures,
                },
            )
    })
}

fn id(i: usize) -> NodeId {
    i as NodeId + 1
}

fn build(spec: &Spec) -> Sim {
    let mut topo = Topology::default();
    for (i, n) in spec.nodes.iter().enumerate() {
        let zone = if n.zone_a { "a" } else { "b" };
        topo.nodes.insert(
            id(i),
            NodeView {
                labels: BTreeMap::from([("zone".to_string(), zone.to_string())]),
                draining: n.draining,
            },
        );
        if i < spec.meta_voters {
            topo.meta.voters.insert(id(i));
        } else {
            topo.meta.learners.insert(id(i));
        }
    }
    let mut policy = Policy {
        rebalance_requested: spec.rebalance_requested,
        ..Policy::default()
    };
    let mut group: GroupId = 1;
    for (d, db) in spec.dbs.iter().enumerate() {
        let name = format!("db{d}");
        let mut view = DatabaseView::default();
        for replicas in &db.shards {
            let mut seen = BTreeSet::new();
            let replicas = replicas
                .iter()
                .filter(|(i, _)| seen.insert(*i))
                .map(|(i, state)| Replica {
                    node: id(*i),
                    state: *state,
                    since: T0,
                })
                .collect();
            view.shards.push(ShardView {
                group,
                replicas,
                replacement: None,
            });
            group += 1;
        }
        topo.databases.insert(name.clone(), view);
        let mut pol = DatabasePolicy {
            replication_factor: db.rf,
            replace_after: db.replace.then_some(Duration::from_secs(300)),
            rebalance: db.rebalance,
            ..DatabasePolicy::default()
        };
        if db.zone_a_only {
            pol.required_labels.insert("zone".into(), "a".into());
        }
        policy.databases.insert(name, pol);
    }
    let up = spec
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.up)
        .map(|(i, _)| id(i))
        .collect();
    Sim::new(topo, policy, up, T0)
}

fn majority_up(sim: &Sim, voters: impl Iterator<Item = NodeId> + Clone) -> bool {
    let total = voters.clone().count();
    total > 0 && voters.filter(|v| sim.up.contains(v)).count() >= majority(total)
}

/// Runs the failures, then ticks to a fixed point, checking safety on every tick.
fn run(spec: &Spec) -> Result<Sim, TestCaseError> {
    let mut sim = build(spec);
    for t in 0..30 {
        for (at, i, up) in &spec.failures {
            if *at == t && *up {
                sim.up.insert(id(*i));
            } else if *at == t {
                sim.up.remove(&id(*i));
            }
        }
        sim.tick(STEP).map_err(TestCaseError::fail)?;
    }
    // Quiet for 40 ticks (800 s): longer than rehab_after plus replace_after, so no timed rule
    // is left to fire.
    sim.run_to_fixed_point(STEP, 1_500, 40)
        .map_err(TestCaseError::fail)?;
    Ok(sim)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 300,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn safety_holds_on_every_tick_and_stable_clusters_reach_a_fixed_point(spec in spec()) {
        let sim = run(&spec)?;
        let ctx_alive = |n: &NodeId| sim.up.contains(n);
        for (name, db) in &sim.topo.databases {
            let pol = sim.policy.database(name);
            let eligible: Vec<NodeId> = sim
                .topo
                .nodes
                .iter()
                .filter(|(n, v)| {
                    !v.draining && ctx_alive(n) && labels_match(&pol.required_labels, &v.labels)
                })
                .map(|(n, _)| *n)
                .collect();
            for (i, sh) in db.shards.iter().enumerate() {
                let live_members = sh
                    .voters()
                    .filter(|r| r.state == ReplicaState::Member && ctx_alive(&r.node))
                    .count();
                let quorum = live_members >= majority(sh.voters().count());
                if !quorum {
                    continue;
                }
                prop_assert!(
                    sh.replicas.iter().all(|r| r.state != ReplicaState::Promotable),
                    "{name}/{i}: a Promotable left at the fixed point: {sh:?}"
                );
                let new_in_rehab = |m: ReplicaMove| {
                    sh.replica(m.new).map(|r| r.state) == Some(ReplicaState::Rehab)
                        && pol.replace_after.is_none()
                };
                let short = sh.replicas.len() <= pol.replication_factor
                    || eligible.len() < pol.replication_factor;
                if let Some(m) = sh.live_replacement().filter(|m| !new_in_rehab(*m) && !short) {
                    // A move stays unfinished only when its new replica is in Rehab for good
                    // (dynamic distribution off), finishing it would leave the shard short of
                    // replicas (too few eligible nodes), or would cost the majority.
                    let rest: Vec<NodeId> =
                        sh.voters().map(|r| r.node).filter(|n| *n != m.old).collect();
                    let live = rest
                        .iter()
                        .filter(|n| {
                            ctx_alive(n) && sh.replica(**n).map(|r| r.state) == Some(ReplicaState::Member)
                        })
                        .count();
                    prop_assert!(live < majority(rest.len()), "{name}/{i}: move stuck: {sh:?}");
                }
                if pol.replace_after.is_some() && eligible.len() >= pol.replication_factor {
                    let mut nodes: Vec<NodeId> = sh.replicas.iter().map(|r| r.node).collect();
                    nodes.sort();
                    prop_assert_eq!(
                        sh.replicas.len(), pol.replication_factor,
                        "{}/{}: {:?} (eligible {:?})", name, i, sh, eligible
                    );
                    prop_assert!(
                        sh.replicas
                            .iter()
                            .all(|r| r.state == ReplicaState::Member && eligible.contains(&r.node)),
                        "{name}/{i}: not healed: {sh:?} (eligible {eligible:?})"
                    );
                }
            }
        }
    }

    #[test]
    fn meta_voters_end_healthy_and_at_the_target(spec in spec()) {
        let start = build(&spec);
        let had_majority = majority_up(&start, start.topo.meta.voters.iter().copied());
        let sim = run(&spec)?;
        if had_majority && spec.failures.is_empty() {
            let healthy: BTreeSet<NodeId> = sim
                .topo
                .nodes
                .iter()
                .filter(|(n, v)| !v.draining && sim.up.contains(n))
                .map(|(n, _)| *n)
                .collect();
            let voters = &sim.topo.meta.voters;
            let good = voters.intersection(&healthy).count();
            prop_assume!(!healthy.is_empty());
            prop_assert!(
                good >= desired_voters(healthy.len(), sim.policy.meta_voters),
                "voters {voters:?}, healthy {healthy:?}"
            );
            if !good.is_multiple_of(2) && majority_up(&sim, voters.iter().copied()) {
                // Unhealthy voters are gone unless removing one would cost the majority.
                for v in voters.difference(&healthy) {
                    let rest: Vec<NodeId> = voters.iter().copied().filter(|x| x != v).collect();
                    prop_assert!(
                        !majority_up(&sim, rest.iter().copied()),
                        "voter {v} should have gone: voters {voters:?}, healthy {healthy:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_requested_rebalance_evens_out_replica_counts(
        nodes in 3usize..=7,
        rf in 1usize..=3,
        shards in prop::collection::vec(prop::collection::vec(0usize..3, 3), 1..=8),
        added in 1usize..=3,
    ) {
        // Shards start on the first three nodes; `added` more join empty.
        prop_assume!(rf <= nodes);
        let mut spec = Spec {
            nodes: (0..nodes + added)
                .map(|_| NodeSpec { up: true, draining: false, zone_a: true })
                .collect(),
            meta_voters: 3,
            rebalance_requested: true,
            dbs: vec![DbSpec {
                rf,
                replace: true,
                rebalance: false,
                zone_a_only: false,
                shards: vec![],
            }],
            failures: vec![],
        };
        spec.dbs[0].shards = shards
            .iter()
            .map(|s| s.iter().map(|i| (*i, ReplicaState::Member)).collect())
            .collect();
        let sim = run(&spec)?;
        prop_assert!(
            is_balanced(&sim.topo, &sim.health(), &sim.policy, sim.now),
            "{:?}", sim.topo.replica_load()
        );
        for sh in &sim.topo.databases["db0"].shards {
            prop_assert_eq!(sh.replicas.len(), rf);
        }
    }

    #[test]
    fn decide_is_a_pure_function_of_its_inputs(spec in spec(), later in 0u64..2_000) {
        let mut sim = build(&spec);
        sim.now += Duration::from_secs(later);
        prop_assert_eq!(sim.decide(), sim.clone().decide());
    }
}
