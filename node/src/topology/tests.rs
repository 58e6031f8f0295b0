//! Behaviour tests of the topology core, each a small cluster driven through `decide`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::sim::{Sim, cluster, with_db};
use super::*;
use crate::types::NodeId;

const T0: Duration = Duration::from_secs(1_000_000);
const TICK: Duration = Duration::from_secs(1);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn up(nodes: impl IntoIterator<Item = NodeId>) -> BTreeSet<NodeId> {
    nodes.into_iter().collect()
}

fn policy(db: &str, f: impl FnOnce(&mut DatabasePolicy)) -> Policy {
    let mut pol = DatabasePolicy {
        replace_after: Some(secs(300)),
        ..DatabasePolicy::default()
    };
    f(&mut pol);
    Policy {
        databases: BTreeMap::from([(db.to_string(), pol)]),
        ..Policy::default()
    }
}

fn shard(sim: &Sim, db: &str, i: usize) -> ShardView {
    sim.topo.databases[db].shards[i].clone()
}

fn state_of(sim: &Sim, db: &str, node: NodeId) -> Option<ReplicaState> {
    shard(sim, db, 0).replica(node).map(|r| r.state)
}

fn nodes_of(sim: &Sim, db: &str, i: usize) -> Vec<NodeId> {
    let mut n: Vec<NodeId> = shard(sim, db, i).replicas.iter().map(|r| r.node).collect();
    n.sort();
    n
}

/// Ticks until `done` holds, returning every action seen on the way.
fn run_until(sim: &mut Sim, max: usize, done: impl Fn(&Sim) -> bool) -> Vec<Action> {
    let mut seen = Vec::new();
    for _ in 0..max {
        if done(sim) {
            return seen;
        }
        seen.extend(sim.tick(TICK).unwrap());
    }
    assert!(done(sim), "not reached after {max} ticks: {:#?}", sim.topo);
    seen
}

/// Database "d" with one shard on nodes 1 and 2, and node 3 recorded as its Promotable.
fn members_and_a_promotable() -> Topology {
    let mut topo = with_db(cluster(1..=3), "d", &[&[1, 2]], T0);
    if let Some(db) = topo.databases.get_mut("d") {
        db.shards[0].replicas.push(Replica {
            node: 3,
            state: ReplicaState::Promotable,
            since: T0,
        });
    }
    topo
}

#[test]
fn a_healthy_shard_at_its_replication_factor_needs_nothing() {
    let topo = with_db(cluster(1..=3), "d", &[&[1, 2, 3]], T0);
    let mut sim = Sim::new(topo, policy("d", |_| {}), up(1..=3), T0);
    assert_eq!(sim.tick(TICK).unwrap(), vec![]);
}

#[test]
fn a_promotable_missing_from_its_group_is_added_again() {
    let topo = members_and_a_promotable();
    let mut sim = Sim::new(topo, policy("d", |_| {}), up(1..=3), T0);
    sim.observe();
    let group = shard(&sim, "d", 0).group;
    // Recorded, but the learner was never added: the leader does not report it.
    let mut progress = sim.progress();
    progress
        .groups
        .get_mut(&group)
        .expect("the shard's progress")
        .matched
        .remove(&3);
    let actions = decide(&sim.topo, &sim.health(), &progress, &sim.policy, sim.now);
    assert!(
        actions.iter().any(|a| matches!(
            a.change,
            Change::AddPromotable {
                node: 3,
                replaces: None,
                ..
            }
        )),
        "{actions:#?}"
    );
    // Once the group reports it, it is not added again.
    assert!(
        !sim.decide()
            .iter()
            .any(|a| matches!(a.change, Change::AddPromotable { .. })),
    );
}

#[test]
fn a_caught_up_promotable_is_promoted_and_a_lagging_one_waits() {
    let topo = members_and_a_promotable();
    let mut sim = Sim::new(topo, policy("d", |p| p.promotion_lag = 50), up(1..=3), T0);
    sim.behind.insert(3, 80);
    assert_eq!(sim.tick(TICK).unwrap(), vec![]);
    sim.behind.insert(3, 10);
    let actions = sim.tick(TICK).unwrap();
    assert!(
        matches!(
            &actions[..],
            [Action {
                change: Change::Promote { node: 3, .. },
                ..
            }]
        ),
        "{actions:?}"
    );
    assert_eq!(state_of(&sim, "d", 3), Some(ReplicaState::Member));
}

#[test]
fn an_unseen_member_becomes_rehab_stays_a_voter_and_returns_when_caught_up() {
    let topo = with_db(cluster(1..=3), "d", &[&[1, 2, 3]], T0);
    let mut sim = Sim::new(topo, policy("d", |_| {}), up([1, 2]), T0);
    sim.now += secs(59);
    assert_eq!(sim.tick(TICK).unwrap(), vec![], "not yet at rehab_after");
    let actions = sim.tick(TICK).unwrap();
    assert_eq!(actions.len(), 1, "{actions:?}");
    sim.policy.meta_replace_after = secs(3_600);
    assert!(matches!(
        actions[0].change,
        Change::MarkRehab { node: 3, .. }
    ));
    assert!(
        actions[0].reason.contains("not seen"),
        "{}",
        actions[0].reason
    );
    assert_eq!(state_of(&sim, "d", 3), Some(ReplicaState::Rehab));

    // Back, but behind: stays Rehab; caught up: Member again.
    sim.up.insert(3);
    sim.behind.insert(3, 5_000);
    assert_eq!(sim.tick(TICK).unwrap(), vec![]);
    sim.behind.remove(&3);
    let actions = sim.tick(TICK).unwrap();
    assert!(matches!(
        actions[..],
        [Action {
            change: Change::MarkMember { node: 3, .. },
            ..
        }]
    ));
}

#[test]
fn a_member_far_behind_becomes_rehab() {
    let topo = with_db(cluster(1..=3), "d", &[&[1, 2, 3]], T0);
    let mut sim = Sim::new(topo, policy("d", |p| p.rehab_lag = 500), up(1..=3), T0);
    sim.behind.insert(2, 600);
    let actions = sim.tick(TICK).unwrap();
    assert!(matches!(
        actions[..],
        [Action {
            change: Change::MarkRehab { node: 2, .. },
            ..
        }]
    ));
    assert!(actions[0].reason.contains("600 entries behind"));
}

#[test]
fn rehab_past_replace_after_is_replaced_on_the_least_loaded_node_and_removed_only_after_promotion()
{
    // Node 4 holds another database's replica, node 5 none: 5 is chosen.
    let topo = with_db(cluster(1..=5), "d", &[&[1, 2, 3]], T0);
    let topo = with_db(topo, "other", &[&[4]], T0);
    let mut pol = policy("d", |_| {});
    pol.databases.insert(
        "other".into(),
        DatabasePolicy {
            replication_factor: 1,
            ..DatabasePolicy::default()
        },
    );
    let mut sim = Sim::new(topo, pol, up([1, 2, 4, 5]), T0);
    let seen = run_until(&mut sim, 1_000, |s| nodes_of(s, "d", 0) == vec![1, 2, 5]);
    let kinds: Vec<String> = seen
        .iter()
        .filter(|a| a.change.shard().is_some_and(|s| s.database == "d"))
        .map(|a| a.change.to_string())
        .collect();
    assert_eq!(
        kinds,
        vec![
            "mark node 3 Rehab in d/0 (group 1)",
            "add promotable on node 5 to d/0 (group 1) replacing node 3",
            "promote node 5 in d/0 (group 1)",
            "remove node 3 from d/0 (group 1)",
        ]
    );
    let add = seen
        .iter()
        .find(|a| matches!(a.change, Change::AddPromotable { .. }))
        .unwrap();
    assert!(add.reason.contains("in Rehab for 5m"), "{}", add.reason);
    // The Rehab phase lasted replace_after.
    assert!(sim.now >= T0 + secs(60 + 300));
    assert_eq!(sim.tick(TICK).unwrap(), vec![]);
}

#[test]
fn with_dynamic_distribution_off_a_rehab_replica_is_never_replaced() {
    let topo = with_db(cluster(1..=4), "d", &[&[1, 2, 3]], T0);
    let mut sim = Sim::new(
        topo,
        policy("d", |p| p.replace_after = None),
        up([1, 2, 4]),
        T0,
    );
    sim.run_to_fixed_point(secs(60), 200, 5).unwrap();
    assert_eq!(nodes_of(&sim, "d", 0), vec![1, 2, 3]);
    assert_eq!(state_of(&sim, "d", 3), Some(ReplicaState::Rehab));
}

#[test]
fn without_a_live_majority_only_marks_are_decided() {
    let topo = with_db(cluster(1..=5), "d", &[&[1, 2, 3]], T0);
    let mut sim = Sim::new(topo, policy("d", |_| {}), up([1, 4, 5]), T0);
    let seen = run_until(&mut sim, 2_000, |s| s.now > T0 + secs(1_500));
    assert!(
        seen.iter().all(|a| !matches!(
            a.change.shard(),
            Some(s) if s.database == "d" && a.change.is_membership_change()
        )),
        "{seen:?}"
    );
    assert_eq!(nodes_of(&sim, "d", 0), vec![1, 2, 3]);
}

#[test]
fn a_voter_is_not_removed_when_that_would_lose_the_majority() {
    // RF 3 -> 1 with node 3 down: the Rehab one goes first, then one healthy Member; the last two
    // voters both alive allow going to one.
    let topo = with_db(cluster(1..=3), "d", &[&[1, 2, 3]], T0);
    let mut sim = Sim::new(
        topo,
        policy("d", |p| {
            p.replication_factor = 1;
            p.replace_after = None;
        }),
        up([1, 2]),
        T0,
    );
    sim.now += secs(61);
    sim.run_to_fixed_point(TICK, 100, 3).unwrap();
    assert_eq!(shard(&sim, "d", 0).replicas.len(), 1);

    // Two voters, one down: nothing may be removed.
    let topo = with_db(cluster(1..=2), "d", &[&[1, 2]], T0);
    let mut sim = Sim::new(
        topo,
        policy("d", |p| {
            p.replication_factor = 1;
            p.replace_after = None;
        }),
        up([1]),
        T0,
    );
    sim.run_to_fixed_point(secs(30), 100, 3).unwrap();
    assert_eq!(nodes_of(&sim, "d", 0), vec![1, 2]);
}

#[test]
fn raising_the_replication_factor_adds_promotables_and_lowering_it_prefers_rehab_replicas() {
    let topo = with_db(cluster(1..=5), "d", &[&[1, 2, 3]], T0);
    let mut sim = Sim::new(
        topo,
        policy("d", |p| p.replication_factor = 5),
        up(1..=5),
        T0,
    );
    let seen = run_until(&mut sim, 50, |s| nodes_of(s, "d", 0).len() == 5);
    assert!(
        seen.iter()
            .any(|a| matches!(a.change, Change::AddPromotable { replaces: None, .. }))
    );
    sim.run_to_fixed_point(TICK, 50, 3).unwrap();
    assert!(
        shard(&sim, "d", 0)
            .replicas
            .iter()
            .all(|r| r.state == ReplicaState::Member)
    );

    // Node 4 goes down and turns Rehab; RF back to 3 removes it first.
    sim.up.remove(&4);
    sim.now += secs(61);
    sim.tick(TICK).unwrap();
    assert_eq!(state_of(&sim, "d", 4), Some(ReplicaState::Rehab));
    sim.policy
        .databases
        .get_mut("d")
        .unwrap()
        .replication_factor = 3;
    let actions = sim.tick(TICK).unwrap();
    assert!(
        matches!(
            actions[..],
            [Action {
                change: Change::RemoveReplica { node: 4, .. },
                ..
            }]
        ),
        "{actions:?}"
    );
    sim.run_to_fixed_point(TICK, 50, 3).unwrap();
    assert_eq!(shard(&sim, "d", 0).replicas.len(), 3);
}

#[test]
fn a_draining_node_has_its_replicas_recreated_elsewhere_first_then_is_retired() {
    let topo = with_db(cluster(1..=4), "d", &[&[1, 2, 3], &[2, 3, 1]], T0);
    let mut sim = Sim::new(topo, policy("d", |_| {}), up(1..=4), T0);
    sim.topo.nodes.get_mut(&3).unwrap().draining = true;
    let mut count_during = Vec::new();
    for _ in 0..100 {
        for i in 0..2 {
            count_during.push(shard(&sim, "d", i).voters().count());
        }
        if sim.tick(TICK).unwrap().is_empty() {
            break;
        }
    }
    assert!(!sim.topo.nodes.contains_key(&3), "node 3 retired");
    assert!(!sim.topo.meta.voters.contains(&3));
    assert_eq!(nodes_of(&sim, "d", 0), vec![1, 2, 4]);
    assert_eq!(nodes_of(&sim, "d", 1), vec![1, 2, 4]);
    // Never fewer than three voters on the way: re-created before removed.
    assert!(count_during.iter().all(|c| *c >= 3), "{count_during:?}");
}

#[test]
fn placement_labels_are_respected() {
    let mut topo = with_db(cluster(1..=5), "d", &[&[1, 2]], T0);
    for (n, zone) in [(1, "a"), (2, "a"), (3, "b"), (4, "a"), (5, "b")] {
        topo.nodes
            .get_mut(&n)
            .unwrap()
            .labels
            .insert("zone".into(), zone.into());
    }
    let pol = policy("d", |p| {
        p.replication_factor = 3;
        p.required_labels.insert("zone".into(), "a".into());
    });
    let mut sim = Sim::new(topo, pol, up(1..=5), T0);
    sim.run_to_fixed_point(TICK, 50, 3).unwrap();
    assert_eq!(nodes_of(&sim, "d", 0), vec![1, 2, 4]);

    // A node losing its label has its replica moved (nowhere to go: it stays).
    sim.topo
        .nodes
        .get_mut(&4)
        .unwrap()
        .labels
        .insert("zone".into(), "b".into());
    sim.run_to_fixed_point(TICK, 50, 3).unwrap();
    assert_eq!(nodes_of(&sim, "d", 0), vec![1, 2, 4]);
    sim.topo
        .nodes
        .get_mut(&5)
        .unwrap()
        .labels
        .insert("zone".into(), "a".into());
    sim.run_to_fixed_point(TICK, 50, 3).unwrap();
    assert_eq!(nodes_of(&sim, "d", 0), vec![1, 2, 5]);
}

#[test]
fn a_new_node_receives_replicas_when_a_rebalance_is_requested() {
    let topo = with_db(
        cluster(1..=4),
        "d",
        &[&[1, 2, 3], &[1, 2, 3], &[1, 2, 3], &[1, 2, 3]],
        T0,
    );
    let mut sim = Sim::new(topo, policy("d", |_| {}), up(1..=4), T0);
    assert_eq!(
        sim.tick(TICK).unwrap(),
        vec![],
        "rebalance is off by default"
    );
    assert!(!is_balanced(&sim.topo, &sim.health(), &sim.policy, sim.now));
    sim.policy.rebalance_requested = true;
    sim.run_to_fixed_point(TICK, 200, 3).unwrap();
    let load = sim.topo.replica_load();
    assert_eq!(load.values().copied().collect::<Vec<_>>(), vec![3, 3, 3, 3]);
    assert!(is_balanced(&sim.topo, &sim.health(), &sim.policy, sim.now));
}

#[test]
fn rebalance_moves_in_flight_are_limited() {
    let shards: Vec<&[NodeId]> = vec![&[1, 2, 3]; 8];
    let topo = with_db(cluster(1..=6), "d", &shards, T0);
    let mut sim = Sim::new(topo, policy("d", |p| p.rebalance = true), up(1..=6), T0);
    sim.policy.max_rebalance_moves = 2;
    for _ in 0..100 {
        let actions = sim.tick(TICK).unwrap();
        let moving = sim
            .topo
            .databases
            .values()
            .flat_map(|db| &db.shards)
            .filter(|s| s.live_replacement().is_some())
            .count();
        assert!(moving <= 2, "{moving} moves in flight after {actions:?}");
    }
    assert!(is_balanced(&sim.topo, &sim.health(), &sim.policy, sim.now));
    assert_eq!(sim.tick(TICK).unwrap(), vec![]);
}

#[test]
fn the_leaders_replica_hands_over_leadership_before_it_is_removed() {
    let topo = with_db(cluster(1..=4), "d", &[&[1, 2, 3]], T0);
    let mut sim = Sim::new(topo, policy("d", |_| {}), up(1..=4), T0);
    sim.observe();
    let group = shard(&sim, "d", 0).group;
    assert_eq!(sim.leaders[&group], 1);
    sim.topo.nodes.get_mut(&1).unwrap().draining = true;
    let seen = run_until(&mut sim, 50, |s| !s.topo.nodes.contains_key(&1));
    let transfer = seen
        .iter()
        .position(|a| matches!(a.change, Change::TransferLeadership { .. }))
        .expect("a leadership transfer");
    let removal = seen
        .iter()
        .position(|a| matches!(a.change, Change::RemoveReplica { node: 1, .. }))
        .expect("the removal");
    assert!(transfer < removal);
}

#[test]
fn meta_voters_are_replaced_when_a_voter_is_gone_for_long() {
    let topo = cluster(1..=4);
    let mut sim = Sim::new(topo, Policy::default(), up([1, 2, 4]), T0);
    sim.run_to_fixed_point(secs(10), 100, 10).unwrap();
    assert_eq!(sim.topo.meta.voters, up([1, 2, 4]));
}

#[test]
fn meta_voters_grow_from_one_straight_to_three() {
    let mut topo = cluster(1..=3);
    topo.meta.voters = up([1]);
    topo.meta.learners = up([2, 3]);
    let mut sim = Sim::new(topo, Policy::default(), up(1..=3), T0);
    let actions = sim.tick(TICK).unwrap();
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert_eq!(sim.topo.meta.voters, up(1..=3));
}

#[test]
fn decide_is_deterministic() {
    let topo = with_db(cluster(1..=6), "d", &[&[1, 2, 3], &[4, 5, 6]], T0);
    let mut sim = Sim::new(
        topo,
        policy("d", |p| p.rebalance = true),
        up([1, 2, 4, 5, 6]),
        T0,
    );
    sim.now += secs(500);
    assert_eq!(sim.decide(), sim.decide());
}

#[test]
fn a_second_replica_on_one_node_and_a_second_replacement_are_refused() {
    let topo = with_db(cluster(1..=5), "d", &[&[1, 2, 3]], T0);
    let mut sim = Sim::new(topo, policy("d", |_| {}), up([1, 2, 3, 4, 5]), T0);
    let s = ShardRef {
        database: "d".into(),
        index: 0,
        group: 1,
    };
    let add = |node, replaces| {
        Action::new(
            Change::AddPromotable {
                shard: s.clone(),
                node,
                mentor: None,
                replaces,
            },
            "test",
        )
    };
    let refused = sim
        .record(&add(2, None))
        .expect_err("a second replica on node 2");
    assert!(
        refused.contains("already has a replica on node 2"),
        "{refused}"
    );
    sim.record(&add(4, Some(3)))
        .expect("a replacement of node 3 by node 4");
    let shard = &sim.topo.databases["d"].shards[0];
    assert_eq!(shard.replacement, Some(ReplicaMove { old: 3, new: 4 }));
    assert_eq!(
        shard.replica(4).map(|r| r.state),
        Some(ReplicaState::Promotable)
    );
    let refused = sim
        .record(&add(5, Some(3)))
        .expect_err("a second replacement");
    assert!(
        refused.contains("already replaces node 3 by node 4"),
        "{refused}"
    );
}

/// Database "d" with one shard on nodes 1 to 3, the replica on node 2 broken (corrupt or
/// diverged), in a cluster of `nodes` nodes.
fn broken_replica_on_2(nodes: u64) -> Sim {
    let topo = with_db(cluster(1..=nodes), "d", &[&[1, 2, 3]], T0);
    let mut sim = Sim::new(topo, policy("d", |_| {}), up(1..=nodes), T0);
    let group = shard(&sim, "d", 0).group;
    sim.leaders.insert(group, 1);
    sim.broken.insert((group, 2), "diverged".into());
    sim
}

#[test]
fn a_broken_replica_is_replaced_on_another_node_at_once() {
    let mut sim = broken_replica_on_2(4);
    let actions = run_until(&mut sim, 20, |s| nodes_of(s, "d", 0) == vec![1, 3, 4]);
    assert!(
        matches!(actions[0].change, Change::MarkRehab { node: 2, .. }),
        "{actions:#?}"
    );
    assert!(
        actions.iter().any(|a| matches!(
            a.change,
            Change::AddPromotable {
                node: 4,
                replaces: Some(2),
                ..
            }
        )),
        "{actions:#?}"
    );
    // The transitions of the broken replica say so (what `Admin.ClusterEvents` types as the
    // cause REPLICA_BROKEN); its replacement's do not.
    for a in &actions {
        let of_broken = matches!(
            a.change,
            Change::MarkRehab { node: 2, .. } | Change::RemoveReplica { node: 2, .. }
        );
        assert_eq!(replica_broken(&a.reason), of_broken, "{a}");
    }
    // Well before the Rehab timeout (300 s): a broken replica is not waited for.
    assert!(sim.now < T0 + secs(30), "took until {:?}", sim.now - T0);
    run_until(&mut sim, 20, |s| {
        s.decide().is_empty() && state_of(s, "d", 4) == Some(ReplicaState::Member)
    });
}

#[test]
fn a_broken_replica_with_nowhere_else_to_go_is_removed_and_created_again_on_its_node() {
    let mut sim = broken_replica_on_2(3);
    let group = shard(&sim, "d", 0).group;
    let actions = run_until(&mut sim, 20, |s| nodes_of(s, "d", 0) == vec![1, 3]);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a.change, Change::RemoveReplica { node: 2, .. })),
        "{actions:#?}"
    );
    // Its node deleted the broken records on removal (`Sim::tick`): a new replica goes there.
    assert!(!sim.broken.contains_key(&(group, 2)));
    run_until(&mut sim, 20, |s| {
        s.decide().is_empty() && state_of(s, "d", 2) == Some(ReplicaState::Member)
    });
    assert_eq!(nodes_of(&sim, "d", 0), vec![1, 2, 3]);
}

#[test]
fn no_new_replica_goes_to_a_node_that_still_holds_a_broken_one() {
    let mut sim = broken_replica_on_2(3);
    let group = shard(&sim, "d", 0).group;
    run_until(&mut sim, 20, |s| nodes_of(s, "d", 0) == vec![1, 3]);
    // Removed, but its node has not deleted the records yet (it still says so).
    sim.broken.insert((group, 2), "diverged".into());
    for _ in 0..5 {
        let actions = sim.tick(TICK).unwrap();
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a.change, Change::AddPromotable { .. })),
            "{actions:#?}"
        );
    }
    sim.broken.remove(&(group, 2));
    run_until(&mut sim, 20, |s| {
        state_of(s, "d", 2) == Some(ReplicaState::Member)
    });
}

#[test]
fn two_broken_replicas_of_three_wait_for_a_majority() {
    let mut sim = broken_replica_on_2(5);
    let group = shard(&sim, "d", 0).group;
    sim.broken.insert((group, 3), "diverged".into());
    // Only node 1 still counts: no membership change can be committed.
    for _ in 0..5 {
        let actions = sim.tick(TICK).unwrap();
        assert!(
            actions.iter().all(|a| !a.change.is_membership_change()),
            "{actions:#?}"
        );
    }
}
