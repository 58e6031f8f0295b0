//! The topology core: a pure, deterministic function the meta group leader runs every tick,
//! `(topology, health, progress, policy, now) -> actions`, that keeps every database's shards on
//! `replication_factor` healthy nodes (RavenDB's database group behaviour on Raft).
//!
//! Replicas move through the states Promotable (a learner catching up from its mentor), Member
//! (a healthy voter) and Rehab (a voter that is down or behind, kept as a voter). The rules:
//! - a Promotable is promoted once less than `promotion_lag` entries behind;
//! - a Member unseen for `rehab_after`, or more than `rehab_lag` behind, becomes Rehab; a Rehab
//!   voter that is back and caught up becomes Member again;
//! - a replica in Rehab longer than `replace_after` (or on a draining, removed or wrongly
//!   labelled node) is replaced: a Promotable on the least loaded eligible node first, and the
//!   old replica is removed only once the new one is a Member;
//! - the replication factor is followed up (add Promotables) and down (remove extras, Rehab
//!   first);
//! - a rebalance moves replicas until per-node replica counts differ by at most one;
//! - the meta group keeps its configured voter count; a draining node that holds nothing any
//!   more is retired.
//!
//! Safety: a voter is never removed when the remaining voters would lack a live majority (live
//! = a Member heard from within `alive_within`); no membership change is proposed for a group
//! without a live majority; each shard has at most one replacement in flight and gets at most
//! one membership change per tick; a shard never has two replicas on one node; placement labels
//! are respected. Once nodes are stable, applying the actions tick after tick reaches a fixed
//! point where `decide` returns nothing.
//!
//! Calling it, each tick on the meta leader: build a [`Topology`] from the meta state
//! ([`from_meta`]), a [`Health`] from the heartbeat table (on taking over,
//! [`Health::seed_missing`]), a [`Progress`] from the groups' replication metrics and a
//! [`Policy`]; call [`decide`]; carry the actions out in order, skipping the rest of a shard's
//! actions when one fails; record each carried-out action in the meta state with the commands
//! [`meta_commands`] gives (the simulations and property tests record through the same
//! commands and the production `MetaState::apply`); clear a requested rebalance once
//! [`is_balanced`] holds and no move is in flight. Deciding again from fresh inputs is always
//! safe: nothing is remembered between calls.

mod action;
mod checks;
mod commands;
mod from_meta;
mod meta_group;
mod rebalance;
mod shard;
mod view;

#[cfg(test)]
mod datasim;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

pub use action::{Action, Change, ShardRef};
pub use checks::{labels_match, majority};
pub use commands::meta_commands;
pub use from_meta::from_meta;
pub use shard::replica_broken;
pub use view::{
    DatabasePolicy, DatabaseView, GroupProgress, Health, MetaGroupView, NodeView, Policy, Progress,
    Replica, ReplicaMove, ReplicaState, ShardView, Topology,
};

use crate::types::NodeId;
use checks::Ctx;
use rebalance::Movable;

/// Decides the topology actions to carry out now. Pure and deterministic: the same inputs give
/// the same actions in the same order (databases by name, shards by index, then rebalance
/// moves, meta group membership, drained nodes).
pub fn decide(
    topology: &Topology,
    health: &Health,
    progress: &Progress,
    policy: &Policy,
    now: Duration,
) -> Vec<Action> {
    let ctx = Ctx {
        topo: topology,
        health,
        progress,
        policy,
        now,
    };
    let mut out = Vec::new();
    let mut load = projected_load(&ctx);
    let mut movable = Vec::new();
    for (name, db) in &topology.databases {
        let pol = policy.database(name);
        for (index, shard) in db.shards.iter().enumerate() {
            let sref = ShardRef {
                database: name.clone(),
                index,
                group: shard.group,
            };
            if shard::decide_shard(&ctx, &sref, pol, shard, &mut load, &mut out) {
                movable.push(Movable { sref, pol, shard });
            }
        }
    }
    rebalance::rebalance(&ctx, &movable, &mut load, &mut out);
    meta_group::decide_meta(&ctx, &mut out);
    meta_group::retire_drained(&ctx, &mut out);
    out
}

/// Replicas per registered node once the moves in flight finish: replicas that are leaving (the
/// old side of a replacement, doomed ones) are not counted.
fn projected_load(ctx: &Ctx<'_>) -> BTreeMap<NodeId, usize> {
    let mut load: BTreeMap<NodeId, usize> = ctx.topo.nodes.keys().map(|n| (*n, 0)).collect();
    for (name, db) in &ctx.topo.databases {
        let pol = ctx.policy.database(name);
        for shard in &db.shards {
            for r in &shard.replicas {
                if !shard::leaving(ctx, pol, shard, r.node) {
                    *load.entry(r.node).or_default() += 1;
                }
            }
        }
    }
    load
}

/// Whether the nodes that can hold replicas (registered, not draining, alive) hold replica
/// counts within one of each other, counting moves in flight as done. A requested rebalance is
/// finished when this holds and no replacement is in flight.
pub fn is_balanced(topology: &Topology, health: &Health, policy: &Policy, now: Duration) -> bool {
    let progress = Progress::default();
    let ctx = Ctx {
        topo: topology,
        health,
        progress: &progress,
        policy,
        now,
    };
    let nodes: Vec<NodeId> = topology
        .nodes
        .iter()
        .filter(|(id, n)| !n.draining && ctx.alive(**id))
        .map(|(id, _)| *id)
        .collect();
    rebalance::balanced(&nodes, &projected_load(&ctx))
}
