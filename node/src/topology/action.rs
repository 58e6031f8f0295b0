//! What the topology core decides: actions for the meta leader to carry out, each with a
//! reason. Once carried out, an action is recorded in the meta state (see `commands`), which
//! also logs the transition as an event.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::view::ReplicaState;
use crate::types::{GroupId, NodeId};

/// One shard of one database.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShardRef {
    pub database: String,
    /// Index of the shard in its database.
    pub index: usize,
    pub group: GroupId,
}

impl fmt::Display for ShardRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} (group {})", self.database, self.index, self.group)
    }
}

/// A change to carry out. Membership changes (`AddPromotable`, `Promote`, `RemoveReplica`) go
/// through the shard's Raft group and are then recorded in the meta state; the marks
/// (`MarkRehab`, `MarkMember`) only change the meta state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Add `node` as a Raft learner. `mentor` sends the initial snapshot (`None`: the leader).
    /// With `replaces`, record the in-flight replacement `replaces -> node`: once `node` is a
    /// Member, the old replica is removed.
    AddPromotable {
        shard: ShardRef,
        node: NodeId,
        mentor: Option<NodeId>,
        replaces: Option<NodeId>,
    },
    /// Make the learner on `node` a voter and record it as Member.
    Promote { shard: ShardRef, node: NodeId },
    /// Record the voter on `node` as Rehab (it stays a voter).
    MarkRehab { shard: ShardRef, node: NodeId },
    /// Record the Rehab voter on `node` as Member again.
    MarkMember { shard: ShardRef, node: NodeId },
    /// Remove the replica on `node` from the group's membership (and clear a replacement it was
    /// part of). Its files stay on the node (soft delete).
    RemoveReplica { shard: ShardRef, node: NodeId },
    /// Ask the shard's leader to hand leadership to `to` (before the leader's replica leaves).
    TransferLeadership { shard: ShardRef, to: NodeId },
    /// Promote the meta group learner on `node` to voter.
    AddMetaVoter { node: NodeId },
    /// Demote the meta group voter on `node` to learner.
    RemoveMetaVoter { node: NodeId },
    /// Hand meta group leadership to `to` (before the leader's vote is removed).
    TransferMetaLeadership { to: NodeId },
    /// A draining node holds no replica and no meta vote: remove it from the cluster.
    RetireNode { node: NodeId },
}

impl Change {
    pub fn shard(&self) -> Option<&ShardRef> {
        match self {
            Change::AddPromotable { shard, .. }
            | Change::Promote { shard, .. }
            | Change::MarkRehab { shard, .. }
            | Change::MarkMember { shard, .. }
            | Change::RemoveReplica { shard, .. }
            | Change::TransferLeadership { shard, .. } => Some(shard),
            Change::AddMetaVoter { .. }
            | Change::RemoveMetaVoter { .. }
            | Change::TransferMetaLeadership { .. }
            | Change::RetireNode { .. } => None,
        }
    }

    /// The node the change is about.
    pub fn node(&self) -> NodeId {
        match self {
            Change::AddPromotable { node, .. }
            | Change::Promote { node, .. }
            | Change::MarkRehab { node, .. }
            | Change::MarkMember { node, .. }
            | Change::RemoveReplica { node, .. }
            | Change::AddMetaVoter { node }
            | Change::RemoveMetaVoter { node }
            | Change::RetireNode { node } => *node,
            Change::TransferLeadership { to, .. } | Change::TransferMetaLeadership { to } => *to,
        }
    }

    /// Whether the change goes through a shard's Raft membership.
    pub fn is_membership_change(&self) -> bool {
        matches!(
            self,
            Change::AddPromotable { .. } | Change::Promote { .. } | Change::RemoveReplica { .. }
        )
    }

    /// The replica state after the change, for the event log (`None`: no replica any more, or
    /// not about a replica).
    pub fn to_state(&self) -> Option<ReplicaState> {
        match self {
            Change::AddPromotable { .. } => Some(ReplicaState::Promotable),
            Change::Promote { .. } | Change::MarkMember { .. } => Some(ReplicaState::Member),
            Change::MarkRehab { .. } => Some(ReplicaState::Rehab),
            _ => None,
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::AddPromotable {
                shard,
                node,
                mentor,
                replaces,
            } => {
                write!(f, "add promotable on node {node} to {shard}")?;
                if let Some(m) = mentor {
                    write!(f, " (mentor {m})")?;
                }
                if let Some(old) = replaces {
                    write!(f, " replacing node {old}")?;
                }
                Ok(())
            }
            Change::Promote { shard, node } => write!(f, "promote node {node} in {shard}"),
            Change::MarkRehab { shard, node } => write!(f, "mark node {node} Rehab in {shard}"),
            Change::MarkMember { shard, node } => write!(f, "mark node {node} Member in {shard}"),
            Change::RemoveReplica { shard, node } => {
                write!(f, "remove node {node} from {shard}")
            }
            Change::TransferLeadership { shard, to } => {
                write!(f, "transfer leadership of {shard} to node {to}")
            }
            Change::AddMetaVoter { node } => write!(f, "make node {node} a meta voter"),
            Change::RemoveMetaVoter { node } => write!(f, "make node {node} a meta learner"),
            Change::TransferMetaLeadership { to } => {
                write!(f, "transfer meta leadership to node {to}")
            }
            Change::RetireNode { node } => write!(f, "retire drained node {node}"),
        }
    }
}

/// A decided change and why, in words for the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub change: Change,
    pub reason: String,
}

impl Action {
    pub fn new(change: Change, reason: impl Into<String>) -> Self {
        Action {
            change,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.change, self.reason)
    }
}
