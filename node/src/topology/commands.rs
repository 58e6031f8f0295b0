//! How a carried-out action is recorded: the meta commands that record it in the meta state
//! (`MetaState::apply` is the one place where replica states, their times and the replacement
//! in flight change). Membership of the meta group itself is Raft's, not the meta state's: the
//! meta voter changes and leadership transfers record nothing here.

use super::action::{Action, Change};
use crate::meta::{MetaCommand, ReplicaState};

/// The meta commands recording `action`, carried out at `at_ms` (unix milliseconds).
pub fn meta_commands(action: &Action, at_ms: u64) -> Vec<MetaCommand> {
    let reason = action.reason.clone();
    let set = |group, node, state, replaces| MetaCommand::SetReplicaState {
        group,
        node,
        state,
        replaces,
        at_ms,
        reason: reason.clone(),
    };
    match &action.change {
        Change::AddPromotable {
            shard,
            node,
            replaces,
            ..
        } => vec![set(shard.group, *node, ReplicaState::Promotable, *replaces)],
        Change::Promote { shard, node } | Change::MarkMember { shard, node } => {
            vec![set(shard.group, *node, ReplicaState::Member, None)]
        }
        Change::MarkRehab { shard, node } => {
            vec![set(shard.group, *node, ReplicaState::Rehab, None)]
        }
        Change::RemoveReplica { shard, node } => vec![MetaCommand::RemoveReplica {
            group: shard.group,
            node: *node,
            keep_files: true,
            at_ms,
            reason,
        }],
        Change::RetireNode { node } => vec![MetaCommand::RemoveNode { id: *node }],
        Change::TransferLeadership { .. }
        | Change::AddMetaVoter { .. }
        | Change::RemoveMetaVoter { .. }
        | Change::TransferMetaLeadership { .. } => Vec::new(),
    }
}
