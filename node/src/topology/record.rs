//! Recording carried-out actions: `apply` changes a [`Topology`] the way the meta state
//! records each action once it is done (states with the time they were entered, the in-flight
//! replacement set by `AddPromotable { replaces }` and cleared when either of its replicas is
//! removed). The meta state keeps the same rules; the tests use this as the reference.

use std::time::Duration;

use super::action::{Action, Change, ShardRef};
use super::view::{Replacement, Replica, ReplicaState, ShardView, Topology};
use crate::types::NodeId;

/// Why an action cannot be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("no shard {0}")]
    NoShard(ShardRef),
    #[error("node {0} is not registered")]
    NotRegistered(NodeId),
    #[error("the shard already has a replica on node {0}")]
    DuplicateReplica(NodeId),
    #[error("the shard already replaces node {} by node {}", .0.old, .0.new)]
    ReplacementInFlight(Replacement),
    #[error("the shard has no replica on node {0}")]
    NoReplica(NodeId),
    #[error("the replica on node {node} is {state}, not {expected}")]
    WrongState {
        node: NodeId,
        state: ReplicaState,
        expected: ReplicaState,
    },
    #[error("node {0} is not a meta learner")]
    NotMetaLearner(NodeId),
    #[error("node {0} is not a meta voter")]
    NotMetaVoter(NodeId),
}

fn shard_mut<'a>(topo: &'a mut Topology, s: &ShardRef) -> Result<&'a mut ShardView, ApplyError> {
    topo.databases
        .get_mut(&s.database)
        .and_then(|db| db.shards.get_mut(s.index))
        .filter(|sh| sh.group == s.group)
        .ok_or_else(|| ApplyError::NoShard(s.clone()))
}

fn set_state(
    shard: &mut ShardView,
    node: NodeId,
    from: ReplicaState,
    to: ReplicaState,
    now: Duration,
) -> Result<(), ApplyError> {
    match shard.replicas.iter_mut().find(|r| r.node == node) {
        Some(r) if r.state == from => {
            r.state = to;
            r.since = now;
            Ok(())
        }
        Some(r) => Err(ApplyError::WrongState {
            node,
            state: r.state,
            expected: from,
        }),
        None => Err(ApplyError::NoReplica(node)),
    }
}

/// Records a carried-out action in the topology at time `now`. Leadership transfers change no
/// topology. Refuses (changing nothing) what would break the topology's invariants.
pub fn apply(topo: &mut Topology, action: &Action, now: Duration) -> Result<(), ApplyError> {
    match &action.change {
        Change::AddPromotable {
            shard,
            node,
            replaces,
            ..
        } => {
            if !topo.nodes.contains_key(node) {
                return Err(ApplyError::NotRegistered(*node));
            }
            let sh = shard_mut(topo, shard)?;
            // Adding a recorded Promotable again (its learner is missing from the group)
            // records nothing new.
            let again = sh
                .replica(*node)
                .is_some_and(|r| r.state == ReplicaState::Promotable)
                && replaces.is_none_or(|old| {
                    sh.live_replacement() == Some(Replacement { old, new: *node })
                });
            if again {
                return Ok(());
            }
            if sh.has_replica_on(*node) {
                return Err(ApplyError::DuplicateReplica(*node));
            }
            if let Some(old) = replaces {
                if let Some(m) = sh.live_replacement() {
                    return Err(ApplyError::ReplacementInFlight(m));
                }
                if !sh.has_replica_on(*old) {
                    return Err(ApplyError::NoReplica(*old));
                }
                sh.replacement = Some(Replacement {
                    old: *old,
                    new: *node,
                });
            }
            sh.replicas.push(Replica {
                node: *node,
                state: ReplicaState::Promotable,
                since: now,
            });
            Ok(())
        }
        Change::Promote { shard, node } => set_state(
            shard_mut(topo, shard)?,
            *node,
            ReplicaState::Promotable,
            ReplicaState::Member,
            now,
        ),
        Change::MarkRehab { shard, node } => set_state(
            shard_mut(topo, shard)?,
            *node,
            ReplicaState::Member,
            ReplicaState::Rehab,
            now,
        ),
        Change::MarkMember { shard, node } => set_state(
            shard_mut(topo, shard)?,
            *node,
            ReplicaState::Rehab,
            ReplicaState::Member,
            now,
        ),
        Change::RemoveReplica { shard, node } => {
            let sh = shard_mut(topo, shard)?;
            let before = sh.replicas.len();
            sh.replicas.retain(|r| r.node != *node);
            if sh.replicas.len() == before {
                return Err(ApplyError::NoReplica(*node));
            }
            if sh
                .replacement
                .is_some_and(|m| m.old == *node || m.new == *node)
            {
                sh.replacement = None;
            }
            Ok(())
        }
        Change::TransferLeadership { .. } | Change::TransferMetaLeadership { .. } => Ok(()),
        Change::AddMetaVoter { node } => {
            if !topo.meta.learners.remove(node) {
                return Err(ApplyError::NotMetaLearner(*node));
            }
            topo.meta.voters.insert(*node);
            Ok(())
        }
        Change::RemoveMetaVoter { node } => {
            if !topo.meta.voters.remove(node) {
                return Err(ApplyError::NotMetaVoter(*node));
            }
            topo.meta.learners.insert(*node);
            Ok(())
        }
        Change::RetireNode { node } => {
            if topo.nodes.remove(node).is_none() {
                return Err(ApplyError::NotRegistered(*node));
            }
            topo.meta.learners.remove(node);
            Ok(())
        }
    }
}
