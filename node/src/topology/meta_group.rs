//! Meta group membership: keep the configured number of voters (odd, 3 or 5) on healthy nodes.
//! Caught-up learners are promoted first (through `meta::voters`, which keeps counts odd); a
//! voter that is draining, removed or silent for `meta_replace_after` is demoted only once the
//! healthy voters are enough without it and the live majority holds.

use super::action::{Action, Change};
use super::checks::{Ctx, majority};
use crate::meta::voters::{desired_voters, to_promote};
use crate::types::{META_GROUP, NodeId};

/// A learner that may become a voter: registered, not draining, alive.
fn healthy(ctx: &Ctx<'_>, node: NodeId) -> bool {
    ctx.topo.nodes.get(&node).is_some_and(|n| !n.draining) && ctx.alive(node)
}

/// Why a voter should give up its vote, if it should, and whether it is only silent (it may
/// come back; it keeps its vote unless that leaves an even number of healthy voters).
fn unfit(ctx: &Ctx<'_>, node: NodeId) -> Option<(String, bool)> {
    match ctx.topo.nodes.get(&node) {
        None => Some((format!("node {node} was removed from the cluster"), false)),
        Some(n) if n.draining => Some((format!("node {node} is draining"), false)),
        Some(_) => {
            let seen = ctx.health.last_seen.get(&node).copied().unwrap_or_default();
            let unseen = ctx.now.saturating_sub(seen);
            (unseen >= ctx.policy.meta_replace_after).then(|| {
                (
                    format!("node {node} not seen for {}s", unseen.as_secs()),
                    true,
                )
            })
        }
    }
}

pub(crate) fn decide_meta(ctx: &Ctx<'_>, out: &mut Vec<Action>) {
    let meta = &ctx.topo.meta;
    if meta.voters.is_empty() {
        return;
    }
    let target = ctx.policy.meta_voters.max(1);
    let lag_ok = |n: NodeId| {
        ctx.lag(META_GROUP, n)
            .is_some_and(|l| l < ctx.policy.default_database.promotion_lag.max(1))
    };
    // A voter keeps counting as good through short silences (a restart, a blip); only after
    // `meta_replace_after` does a learner take its place.
    let good: Vec<NodeId> = meta
        .voters
        .iter()
        .copied()
        .filter(|n| unfit(ctx, *n).is_none())
        .collect();
    let candidates: Vec<NodeId> = meta
        .learners
        .iter()
        .copied()
        .filter(|n| !meta.voters.contains(n) && healthy(ctx, *n) && lag_ok(*n))
        .collect();
    let live = meta.voters.iter().filter(|n| ctx.alive(**n)).count();
    if live < majority(meta.voters.len()) {
        return;
    }
    let promote = to_promote(good.len(), &candidates, target);
    if !promote.is_empty() {
        for node in promote {
            out.push(Action::new(
                Change::AddMetaVoter { node },
                format!("{} healthy meta voters, target {target}", good.len()),
            ));
        }
        return;
    }
    let want = desired_voters(good.len() + candidates.len(), target);
    let mut leaving: Vec<(NodeId, String)> = meta
        .voters
        .iter()
        .filter_map(|n| unfit(ctx, *n).map(|why| (*n, why)))
        .filter(|_| good.len() >= want)
        // Dropping a silent voter to an even count gains no fault tolerance: keep it.
        .filter(|(_, (_, silent))| !silent || !good.len().is_multiple_of(2))
        .map(|(n, (why, _))| (n, why))
        .collect();
    if leaving.is_empty() && meta.voters.len() > target {
        // Above the target: give up the vote of the highest id healthy voter.
        if let Some(n) = meta.voters.iter().next_back() {
            leaving.push((
                *n,
                format!("{} meta voters, target {target}", meta.voters.len()),
            ));
        }
    }
    let leader = ctx.leader(META_GROUP);
    for (node, why) in leaving {
        let rest = meta.voters.iter().filter(|v| **v != node);
        let rest_live = rest.clone().filter(|v| ctx.alive(**v)).count();
        if rest.count() == 0 || rest_live < majority(meta.voters.len() - 1) {
            continue;
        }
        if leader == Some(node) {
            let to = good
                .iter()
                .copied()
                .filter(|n| *n != node && lag_ok(*n))
                .min();
            if let Some(to) = to {
                out.push(Action::new(
                    Change::TransferMetaLeadership { to },
                    format!("meta leader must give up its vote: {why}"),
                ));
                return;
            }
            continue;
        }
        out.push(Action::new(Change::RemoveMetaVoter { node }, why));
        return;
    }
}

/// Draining nodes that hold no replica and no meta vote leave the cluster.
pub(crate) fn retire_drained(ctx: &Ctx<'_>, out: &mut Vec<Action>) {
    let load = ctx.topo.replica_load();
    for (id, n) in &ctx.topo.nodes {
        if n.draining
            && load.get(id).copied().unwrap_or(0) == 0
            && !ctx.topo.meta.voters.contains(id)
        {
            out.push(Action::new(
                Change::RetireNode { node: *id },
                "drained: no replicas and no meta vote left",
            ));
        }
    }
}
