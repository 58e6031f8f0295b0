//! What the topology core decides: actions for the meta leader to carry out, each with a reason,
//! and the bounded event log that records every transition.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

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

    /// The event to record once the action was carried out; `from_state` is the replica's state
    /// before it.
    pub fn event(&self, at: Duration, from_state: Option<ReplicaState>) -> TopologyEvent {
        let shard = self.change.shard();
        TopologyEvent {
            at,
            database: shard.map(|s| s.database.clone()),
            shard: shard.map(|s| s.index),
            group: shard.map(|s| s.group),
            node: self.change.node(),
            from_state,
            to_state: self.change.to_state(),
            change: self.change.to_string(),
            reason: self.reason.clone(),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.change, self.reason)
    }
}

/// One recorded topology transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyEvent {
    pub at: Duration,
    pub database: Option<String>,
    pub shard: Option<usize>,
    pub group: Option<GroupId>,
    pub node: NodeId,
    pub from_state: Option<ReplicaState>,
    pub to_state: Option<ReplicaState>,
    /// The change, in words.
    pub change: String,
    pub reason: String,
}

/// The newest topology events, oldest first, at most `capacity` of them. Each event gets a
/// sequence number so followers can resume after the last one they saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLog {
    capacity: usize,
    next_seq: u64,
    events: VecDeque<(u64, TopologyEvent)>,
}

impl EventLog {
    pub const DEFAULT_CAPACITY: usize = 1000;

    pub fn new(capacity: usize) -> Self {
        EventLog {
            capacity: capacity.max(1),
            next_seq: 0,
            events: VecDeque::new(),
        }
    }

    /// Appends an event, dropping the oldest beyond capacity; returns its sequence number.
    pub fn push(&mut self, event: TopologyEvent) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.events.push_back((seq, event));
        while self.events.len() > self.capacity {
            self.events.pop_front();
        }
        seq
    }

    /// Events with a sequence number at or after `seq`, oldest first.
    pub fn since(&self, seq: u64) -> impl Iterator<Item = &(u64, TopologyEvent)> {
        self.events.iter().filter(move |(s, _)| *s >= seq)
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The sequence number the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog::new(EventLog::DEFAULT_CAPACITY)
    }
}
