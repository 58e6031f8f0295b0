//! Rebalance: move replicas from the most loaded nodes to the least loaded ones until replica
//! counts per node differ by at most one. Each move is a replacement (add a Promotable on the
//! target, promote it, then remove the old replica), started only on settled shards, at most one
//! per shard. Every move lowers the sum of squared loads, so rebalancing terminates.

use std::collections::{BTreeMap, BTreeSet};

use super::action::{Action, Change, ShardRef};
use super::checks::{Ctx, rebalancing};
use super::view::{DatabasePolicy, ReplicaState, ShardView};
use crate::types::NodeId;

/// A shard that may give up one replica to a rebalance.
pub(crate) struct Movable<'a> {
    pub sref: ShardRef,
    pub pol: &'a DatabasePolicy,
    pub shard: &'a ShardView,
}

/// Nodes that take part: registered, not draining, alive.
fn participants(ctx: &Ctx<'_>) -> Vec<NodeId> {
    ctx.topo
        .nodes
        .iter()
        .filter(|(id, n)| !n.draining && ctx.alive(**id))
        .map(|(id, _)| *id)
        .collect()
}

/// Whether the participating nodes' replica counts (`load`) differ by at most one.
pub fn balanced(nodes: &[NodeId], load: &BTreeMap<NodeId, usize>) -> bool {
    let counts = nodes.iter().map(|n| load.get(n).copied().unwrap_or(0));
    match (counts.clone().min(), counts.max()) {
        (Some(min), Some(max)) => max - min <= 1,
        _ => true,
    }
}

pub(crate) fn rebalance(
    ctx: &Ctx<'_>,
    movable: &[Movable<'_>],
    load: &mut BTreeMap<NodeId, usize>,
    out: &mut Vec<Action>,
) {
    let nodes = participants(ctx);
    let in_flight = ctx
        .topo
        .databases
        .values()
        .flat_map(|db| &db.shards)
        .filter(|s| s.live_replacement().is_some())
        .count();
    let mut budget = ctx.policy.max_rebalance_moves.saturating_sub(in_flight);
    let mut used: BTreeSet<usize> = BTreeSet::new();
    let count = |load: &BTreeMap<NodeId, usize>, n: NodeId| load.get(&n).copied().unwrap_or(0);
    while budget > 0 && !balanced(&nodes, load) {
        let mut by_load = nodes.clone();
        by_load.sort_by_key(|n| (count(load, *n), *n));
        let found = by_load.iter().rev().find_map(|from| {
            by_load
                .iter()
                .take_while(|to| count(load, **to) + 2 <= count(load, *from))
                .find_map(|to| {
                    movable
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !used.contains(i))
                        .filter(|(_, m)| rebalancing(ctx.policy, m.pol))
                        .find(|(_, m)| {
                            m.shard.replica(*from).map(|r| r.state) == Some(ReplicaState::Member)
                                && ctx.placeable(m.pol, m.shard, *to)
                        })
                        .map(|(i, _)| (i, *from, *to))
                })
        });
        let Some((i, from, to)) = found else {
            break;
        };
        let reason = format!(
            "rebalance: node {from} holds {} replicas, node {to} holds {}",
            count(load, from),
            count(load, to)
        );
        used.insert(i);
        budget -= 1;
        *load.entry(from).or_default() -= 1;
        *load.entry(to).or_default() += 1;
        out.push(Action::new(
            Change::AddPromotable {
                shard: movable[i].sref.clone(),
                node: to,
                mentor: None,
                replaces: Some(from),
            },
            reason,
        ));
    }
}
