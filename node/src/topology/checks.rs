//! Small named checks the decisions are built from: is a node alive, how long unseen, how far
//! behind, may it hold a replica, would removing a voter keep the group's majority.

use std::collections::BTreeMap;
use std::time::Duration;

use super::view::{
    DatabasePolicy, GroupProgress, Health, Policy, Progress, Replica, ReplicaState, ShardView,
    Topology,
};
use crate::types::{GroupId, NodeId};

/// Everything one decision reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub topo: &'a Topology,
    pub health: &'a Health,
    pub progress: &'a Progress,
    pub policy: &'a Policy,
    pub now: Duration,
}

impl Ctx<'_> {
    /// Heard from within the policy's alive window.
    pub fn alive(&self, node: NodeId) -> bool {
        self.health
            .last_seen
            .get(&node)
            .is_some_and(|t| self.now.saturating_sub(*t) <= self.policy.alive_within)
    }

    /// How long `replica` has gone unheard, counting no further back than when it entered its
    /// state (a fresh replica or a just-marked one is not judged on older silence).
    pub fn unseen_for(&self, replica: &Replica) -> Duration {
        let seen = self
            .health
            .last_seen
            .get(&replica.node)
            .copied()
            .unwrap_or_default()
            .max(replica.since);
        self.now.saturating_sub(seen)
    }

    pub fn group(&self, group: GroupId) -> Option<&GroupProgress> {
        self.progress.groups.get(&group)
    }

    pub fn leader(&self, group: GroupId) -> Option<NodeId> {
        self.group(group).and_then(|g| g.leader)
    }

    /// Entries `node` is behind its group's leader; `None` when unknown.
    pub fn lag(&self, group: GroupId, node: NodeId) -> Option<u64> {
        self.group(group).and_then(|g| g.lag(node))
    }

    /// The replica of `group` on `node` is stopped for good there (see [`Progress::broken`]).
    pub fn broken(&self, group: GroupId, node: NodeId) -> bool {
        self.progress.broken.contains_key(&(group, node))
    }

    /// Why the replica of `group` on `node` is stopped for good there, if it is.
    pub fn broken_why(&self, group: GroupId, node: NodeId) -> Option<&str> {
        self.progress.broken.get(&(group, node)).map(String::as_str)
    }

    /// Alive, not broken and less than `promotion_lag` entries behind.
    pub fn caught_up(&self, pol: &DatabasePolicy, group: GroupId, node: NodeId) -> bool {
        self.alive(node)
            && !self.broken(group, node)
            && self
                .lag(group, node)
                .is_some_and(|lag| lag < pol.promotion_lag.max(1))
    }

    /// Registered, not draining, and carrying the database's required labels: a replica here
    /// may stay.
    pub fn may_host(&self, pol: &DatabasePolicy, node: NodeId) -> bool {
        self.topo
            .nodes
            .get(&node)
            .is_some_and(|n| !n.draining && labels_match(&pol.required_labels, &n.labels))
    }

    /// A node a new replica of `shard` may be placed on: may host, alive, and holding no
    /// replica of the shard yet (nor the records of a broken one).
    pub fn placeable(&self, pol: &DatabasePolicy, shard: &ShardView, node: NodeId) -> bool {
        self.may_host(pol, node)
            && self.alive(node)
            && !shard.has_replica_on(node)
            && !self.broken(shard.group, node)
    }

    /// The least loaded placeable node for a new replica of `shard` (ties: lowest id).
    pub fn least_loaded_target(
        &self,
        pol: &DatabasePolicy,
        shard: &ShardView,
        load: &BTreeMap<NodeId, usize>,
    ) -> Option<NodeId> {
        self.topo
            .nodes
            .keys()
            .copied()
            .filter(|n| self.placeable(pol, shard, *n))
            .min_by_key(|n| (load.get(n).copied().unwrap_or(0), *n))
    }

    /// A voter of `group` counted towards the majority: a Member that is alive and not broken.
    pub fn counts_for_quorum(&self, group: GroupId, replica: &Replica) -> bool {
        replica.state == ReplicaState::Member
            && self.alive(replica.node)
            && !self.broken(group, replica.node)
    }

    /// The shard's live voters form a majority of its voters, so its membership can change.
    pub fn has_quorum(&self, shard: &ShardView) -> bool {
        let voters = shard.voters().count();
        let live = shard
            .voters()
            .filter(|r| self.counts_for_quorum(shard.group, r))
            .count();
        voters > 0 && live >= majority(voters)
    }

    /// Removing the replica on `node` keeps a majority of live voters in the group.
    pub fn removal_keeps_majority(&self, shard: &ShardView, node: NodeId) -> bool {
        match shard.replica(node) {
            None => true,
            Some(r) if !r.state.is_voter() => true,
            Some(_) => {
                let rest: Vec<&Replica> = shard.voters().filter(|r| r.node != node).collect();
                let live = rest
                    .iter()
                    .filter(|r| self.counts_for_quorum(shard.group, r))
                    .count();
                !rest.is_empty() && live >= majority(rest.len())
            }
        }
    }
}

/// Votes needed for a majority of `voters`.
pub fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// The node carries every required label with the required value.
pub fn labels_match(
    required: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    required.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Whether the database's shards may be moved to even out load.
pub fn rebalancing(policy: &Policy, pol: &DatabasePolicy) -> bool {
    pol.rebalance || policy.rebalance_requested
}
