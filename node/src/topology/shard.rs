//! Decisions for one shard: first the marks (Member <-> Rehab, meta state only), then at most
//! one membership change per tick, in priority order: drop an abandoned Promotable, promote a
//! caught-up one, abandon a move whose new replica is doomed, finish a move, add a replica
//! (recorded as a replacement when one is doomed), remove a doomed replica, remove an extra
//! one. One change at a time keeps every step a single membership change the group's live
//! majority can commit; a leader's replica hands over leadership before it is removed.

use std::collections::BTreeMap;
use std::time::Duration;

use super::action::{Action, Change, ShardRef};
use super::checks::Ctx;
use super::view::{DatabasePolicy, Replica, ReplicaState, ShardView};
use crate::types::{GroupId, NodeId};

/// How the reason of a transition made because the replica is stopped for good begins (see
/// [`replica_broken`]).
const STOPPED_FOR_GOOD: &str = "stopped for good";

/// Whether a recorded transition's `reason` says it was made because the replica is stopped
/// for good on its node: the one place that reads the reasons this module writes.
pub fn replica_broken(reason: &str) -> bool {
    reason.starts_with(STOPPED_FOR_GOOD)
}

fn secs(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// Why a replica has to go (it is re-created elsewhere first when the shard needs it), or `None`
/// when it may stay.
pub(crate) fn doomed(
    ctx: &Ctx<'_>,
    pol: &DatabasePolicy,
    group: GroupId,
    r: &Replica,
) -> Option<String> {
    match ctx.topo.nodes.get(&r.node) {
        None => return Some(format!("node {} was removed from the cluster", r.node)),
        Some(n) if n.draining => return Some(format!("node {} is draining", r.node)),
        Some(_) if !ctx.may_host(pol, r.node) => {
            return Some(format!(
                "node {} lacks the required placement labels",
                r.node
            ));
        }
        Some(_) => {}
    }
    if let Some(why) = ctx.broken_why(group, r.node) {
        return Some(format!("{STOPPED_FOR_GOOD} on node {}: {why}", r.node));
    }
    let in_rehab = ctx.now.saturating_sub(r.since);
    match pol.replace_after {
        Some(after) if r.state == ReplicaState::Rehab && in_rehab >= after => Some(format!(
            "in Rehab for {} (replace after {})",
            secs(in_rehab),
            secs(after)
        )),
        _ => None,
    }
}

/// Replicas that are on their way out: doomed ones and the old side of an in-flight move.
pub(crate) fn leaving(
    ctx: &Ctx<'_>,
    pol: &DatabasePolicy,
    shard: &ShardView,
    node: NodeId,
) -> bool {
    shard.live_replacement().is_some_and(|r| r.old == node)
        || shard
            .replica(node)
            .is_some_and(|r| doomed(ctx, pol, shard.group, r).is_some())
}

/// Marks Member -> Rehab and Rehab -> Member, returning the shard as it is after them.
fn marks(
    ctx: &Ctx<'_>,
    sref: &ShardRef,
    pol: &DatabasePolicy,
    shard: &ShardView,
    out: &mut Vec<Action>,
) -> ShardView {
    let mut after = shard.clone();
    for r in &mut after.replicas {
        let lag = ctx.lag(shard.group, r.node);
        let unseen = ctx.unseen_for(r);
        let broken = ctx.broken_why(shard.group, r.node);
        let next = match r.state {
            ReplicaState::Member if broken.is_some() => Some((
                ReplicaState::Rehab,
                format!("{STOPPED_FOR_GOOD}: {}", broken.unwrap_or_default()),
            )),
            ReplicaState::Member if unseen >= pol.rehab_after => Some((
                ReplicaState::Rehab,
                format!("not seen for {}", secs(unseen)),
            )),
            ReplicaState::Member
                if ctx.alive(r.node)
                    && lag.is_some_and(|l| l > pol.rehab_lag.max(pol.promotion_lag)) =>
            {
                Some((
                    ReplicaState::Rehab,
                    format!("{} entries behind the leader", lag.unwrap_or_default()),
                ))
            }
            ReplicaState::Rehab if ctx.caught_up(pol, shard.group, r.node) => Some((
                ReplicaState::Member,
                format!(
                    "back and caught up ({} entries behind)",
                    lag.unwrap_or_default()
                ),
            )),
            _ => None,
        };
        if let Some((state, reason)) = next {
            let change = match state {
                ReplicaState::Rehab => Change::MarkRehab {
                    shard: sref.clone(),
                    node: r.node,
                },
                _ => Change::MarkMember {
                    shard: sref.clone(),
                    node: r.node,
                },
            };
            out.push(Action::new(change, reason));
            r.state = state;
            r.since = ctx.now;
        }
    }
    after
}

/// Removes the replica on `node` if that keeps the group's majority; when it is the leader's,
/// hands leadership to a caught-up Member first. Returns whether an action was emitted.
fn remove(
    ctx: &Ctx<'_>,
    sref: &ShardRef,
    pol: &DatabasePolicy,
    shard: &ShardView,
    node: NodeId,
    reason: String,
    out: &mut Vec<Action>,
) -> bool {
    if !ctx.removal_keeps_majority(shard, node) {
        return false;
    }
    if ctx.leader(shard.group) == Some(node) {
        let to = shard
            .voters()
            .filter(|r| r.node != node && r.state == ReplicaState::Member)
            .filter(|r| ctx.caught_up(pol, shard.group, r.node))
            .filter(|r| !leaving(ctx, pol, shard, r.node))
            .min_by_key(|r| (ctx.lag(shard.group, r.node), r.node));
        return match to {
            Some(to) => {
                out.push(Action::new(
                    Change::TransferLeadership {
                        shard: sref.clone(),
                        to: to.node,
                    },
                    format!("leader's replica must go: {reason}"),
                ));
                true
            }
            None => false,
        };
    }
    out.push(Action::new(
        Change::RemoveReplica {
            shard: sref.clone(),
            node,
        },
        reason,
    ));
    true
}

/// Decides for one shard. Returns true when the shard is settled (healthy, at its replication
/// factor, nothing in flight), so a rebalance may move one of its replicas.
pub(crate) fn decide_shard(
    ctx: &Ctx<'_>,
    sref: &ShardRef,
    pol: &DatabasePolicy,
    original: &ShardView,
    load: &mut BTreeMap<NodeId, usize>,
    out: &mut Vec<Action>,
) -> bool {
    let shard = marks(ctx, sref, pol, original, out);
    if !ctx.has_quorum(&shard) {
        // No membership change can commit without a live majority; wait for voters to return.
        return false;
    }
    let rf = pol.replication_factor.max(1);
    let replacement = shard.live_replacement();

    // An abandoned Promotable (its node gone, draining or silent): drop it, always safe.
    for r in shard
        .replicas
        .iter()
        .filter(|r| r.state == ReplicaState::Promotable)
    {
        let why = doomed(ctx, pol, shard.group, r).or_else(|| {
            let unseen = ctx.unseen_for(r);
            (unseen >= pol.rehab_after).then(|| format!("promotable not seen for {}", secs(unseen)))
        });
        if let Some(why) = why {
            remove(ctx, sref, pol, &shard, r.node, why, out);
            return false;
        }
    }

    // A Promotable recorded but missing from the group's membership (its addition failed
    // half way, e.g. the leader lost its lease): add it again.
    if let Some(progress) = ctx.group(shard.group)
        && let Some(r) = shard.replicas.iter().find(|r| {
            r.state == ReplicaState::Promotable
                && ctx.alive(r.node)
                && !progress.matched.contains_key(&r.node)
        })
    {
        out.push(Action::new(
            Change::AddPromotable {
                shard: sref.clone(),
                node: r.node,
                mentor: None,
                replaces: replacement.filter(|m| m.new == r.node).map(|m| m.old),
            },
            "recorded as Promotable but not yet in the group".to_string(),
        ));
        return false;
    }

    let keep: Vec<&Replica> = shard
        .replicas
        .iter()
        .filter(|r| !leaving(ctx, pol, &shard, r.node))
        .collect();

    // A caught-up Promotable that is needed becomes a voter.
    for r in shard
        .replicas
        .iter()
        .filter(|r| r.state == ReplicaState::Promotable)
    {
        let needed = replacement.is_some_and(|m| m.new == r.node) || keep.len() <= rf;
        if needed && ctx.caught_up(pol, shard.group, r.node) {
            let lag = ctx.lag(shard.group, r.node).unwrap_or_default();
            out.push(Action::new(
                Change::Promote {
                    shard: sref.clone(),
                    node: r.node,
                },
                format!("caught up ({lag} entries behind)"),
            ));
            return false;
        }
    }

    // A move whose new replica is doomed itself is abandoned: that replica goes.
    if let Some(m) = replacement
        && let Some(why) = shard
            .replica(m.new)
            .and_then(|r| doomed(ctx, pol, shard.group, r))
        && remove(
            ctx,
            sref,
            pol,
            &shard,
            m.new,
            format!("move abandoned: {why}"),
            out,
        )
    {
        return false;
    }

    // A move in flight: once the new replica is a Member, the old one goes, unless that would
    // leave fewer than `rf` replicas that stay (another replica failed meanwhile: the old one
    // is still useful) or cost the majority. Then the steps below may add a replica or drop a
    // doomed one, so the move is never stuck behind a second failure.
    if let Some(m) = replacement
        && shard.replica(m.new).map(|r| r.state) == Some(ReplicaState::Member)
        && keep.len() >= rf
    {
        let reason = match ctx.broken_why(shard.group, m.old) {
            Some(why) => format!(
                "{STOPPED_FOR_GOOD} on node {}: {why}; replaced by node {}",
                m.old, m.new
            ),
            None => format!("replaced by node {}", m.new),
        };
        if remove(ctx, sref, pol, &shard, m.old, reason, out) {
            return false;
        }
    }

    let mut doomed_voters: Vec<(&Replica, String)> = shard
        .voters()
        .filter_map(|r| doomed(ctx, pol, shard.group, r).map(|why| (r, why)))
        .collect();
    // Replace the replicas of dead nodes first, then by node id.
    doomed_voters.sort_by_key(|(r, _)| (ctx.alive(r.node), r.node));

    // Too few replicas that stay: add one, replacing a doomed one when there is one and no
    // other replacement is in flight.
    if keep.len() < rf
        && let Some(node) = ctx.least_loaded_target(pol, &shard, load)
    {
        let doomed_first = doomed_voters.first().filter(|_| replacement.is_none());
        let (replaces, reason) = match doomed_first {
            Some((old, why)) => (
                Some(old.node),
                format!("replacing node {}: {why}", old.node),
            ),
            None => (None, format!("{} of {rf} replicas, adding one", keep.len())),
        };
        *load.entry(node).or_default() += 1;
        out.push(Action::new(
            Change::AddPromotable {
                shard: sref.clone(),
                node,
                mentor: None,
                replaces,
            },
            reason,
        ));
        return false;
    }

    // A broken voter with no other node to be re-created on: removed first, so that its node
    // deletes its records and a new replica can be placed there (the majority check keeps
    // this safe).
    if keep.len() < rf && replacement.is_none() {
        for (r, why) in doomed_voters
            .iter()
            .filter(|(r, _)| ctx.broken(shard.group, r.node))
        {
            if remove(ctx, sref, pol, &shard, r.node, why.clone(), out) {
                return false;
            }
        }
    }

    // Enough replicas without the doomed ones (counting the old side of a move, which stays
    // until the move can finish): remove one.
    let staying = keep.len() + usize::from(replacement.is_some());
    if staying >= rf {
        for (r, why) in &doomed_voters {
            if replacement.is_some_and(|m| m.old == r.node) {
                continue;
            }
            if remove(ctx, sref, pol, &shard, r.node, why.clone(), out) {
                return false;
            }
        }
    }
    if keep.len() < rf {
        return false;
    }

    // More replicas than the replication factor: remove one, Rehab first, then Promotable,
    // then the Member on the most loaded node; the leader's last.
    if keep.len() > rf {
        let leader = ctx.leader(shard.group);
        // The new side of a move in flight stays.
        let mut extra: Vec<&Replica> = keep
            .iter()
            .copied()
            .filter(|r| replacement.is_none_or(|m| m.new != r.node))
            .collect();
        extra.sort_by_key(|r| {
            let rank = match r.state {
                ReplicaState::Rehab => 0,
                ReplicaState::Promotable => 1,
                ReplicaState::Member => 2,
            };
            let load = load.get(&r.node).copied().unwrap_or(0);
            (
                rank,
                leader == Some(r.node),
                std::cmp::Reverse(load),
                std::cmp::Reverse(r.node),
            )
        });
        for r in extra {
            let reason = format!("{} replicas, replication factor {rf}", keep.len());
            if remove(ctx, sref, pol, &shard, r.node, reason, out) {
                if let Some(l) = load.get_mut(&r.node) {
                    *l = l.saturating_sub(1);
                }
                return false;
            }
        }
        return false;
    }

    replacement.is_none()
        && doomed_voters.is_empty()
        && shard
            .replicas
            .iter()
            .all(|r| r.state == ReplicaState::Member && ctx.alive(r.node))
}
