//! Cluster membership at the meta leader: admitting a node that joins, and removing one, which
//! first drains its replicas (the observer moves them) and hands over the meta leadership
//! when it is the node leaving.

use std::collections::BTreeSet;

use flotilla_proto::v1::ErrorReason;
use openraft::ChangeMembers;

use super::Host;
use super::leadership::best_successor;
use crate::command::MetaCommand;
use crate::error::{NodeError, NodeResult, Refusal};
use crate::meta::MetaError;
use crate::types::{NodeAddr, NodeId};

/// Where the removal of a node stands after one call of [`Host::remove_node`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// The node is draining: `remaining` replicas are still to move off it. Call again.
    Draining { remaining: usize },
    /// The node led the meta group and handed it to `successor`, which carries out the
    /// removal when called again.
    HandedOver { successor: NodeId },
    /// The node is out of the cluster (the steps taken by this call).
    Removed { steps: Vec<String> },
}

impl Host {
    /// Adds `id` to the meta group as a learner (if needed) and registers it.
    pub async fn admit_node(
        &self,
        id: NodeId,
        addr: NodeAddr,
        labels: crate::labels::Labels,
    ) -> NodeResult<String> {
        let state = self.meta_state();
        if state.removed.contains(&id) {
            return Err(MetaError::NodeRemoved(id).into());
        }
        let meta = self.meta();
        if !meta.is_leader() {
            return Err(NodeError::NotLeader {
                leader: self.meta_leader(),
            });
        }
        self.check_identity(id, &addr).await?;
        let m = meta.metrics();
        let known = m.membership_config.membership().get_node(&id).cloned();
        if known.as_ref() != Some(&addr) {
            let fut = meta.raft.add_learner(id, addr.clone(), false);
            tokio::time::timeout(self.config.request_timeout, fut)
                .await
                .map_err(|_| NodeError::DeadlineExceeded("adding learner".into()))?
                .map_err(|e| self.map_write_error(e))?;
        }
        self.propose_meta(MetaCommand::RegisterNode { id, addr, labels })
            .await?;
        Ok(self.meta_state().cluster_id.clone().unwrap_or_default())
    }

    /// Removes a node from the cluster, one step per call: first its replicas are moved off it
    /// (the node drains; the observer moves them), then it leaves the meta group and the
    /// registry, and its id is never used again.
    pub async fn remove_node(&self, id: NodeId) -> NodeResult<Removal> {
        let meta = self.meta();
        if !meta.is_leader() {
            return Err(NodeError::NotLeader {
                leader: self.meta_leader(),
            });
        }
        let state = self.meta_state();
        let membership = meta.metrics().membership_config.membership().clone();
        let in_membership = membership.get_node(&id).is_some();
        if state.removed.contains(&id) && !in_membership {
            return Ok(Removal::Removed {
                steps: vec![format!("node {id} has left the cluster")],
            });
        }
        if !state.nodes.contains_key(&id) && !in_membership {
            return Err(MetaError::NodeNotMember(id).into());
        }
        let hosted = state.groups_on(id);
        if !hosted.is_empty() {
            // Two phases: first the replicas move (the observer re-creates each elsewhere, then
            // removes this one), then the node leaves. Refuse when nowhere else can hold them.
            for (gid, shard) in hosted.iter().filter(|_| !state.draining.contains(&id)) {
                let elsewhere = state.nodes.keys().any(|n| {
                    *n != id && !shard.replicas.contains(n) && !state.draining.contains(n)
                });
                if !elsewhere {
                    let name = state
                        .shard_by_group(*gid)
                        .map(|(d, i)| format!("{} shard {i}", d.name))
                        .unwrap_or_else(|| format!("group {gid}"));
                    return Err(NodeError::refused(
                        Refusal::FailedPrecondition,
                        ErrorReason::NotEnoughNodes,
                        format!(
                            "the remaining nodes cannot hold the replicas of {name} (on nodes {:?}; {} nodes in the cluster): add a node or lower its replication factor first",
                            shard.replicas,
                            state.nodes.len()
                        ),
                    ));
                }
            }
            if !state.draining.contains(&id) {
                self.propose_meta(MetaCommand::DrainNode { id }).await?;
            }
            return Ok(Removal::Draining {
                remaining: hosted.len(),
            });
        }
        let mut steps = Vec::new();
        if id == self.id {
            // The leaving node leads the meta group: hand that over, then the new leader
            // carries out the removal when the request is retried.
            let fresh = self.alive_within();
            let successor = best_successor(&meta.metrics(), self.id, fresh).ok_or_else(|| {
                NodeError::FailedPrecondition("no other voter can take over the meta group".into())
            })?;
            self.transfer_leadership(&meta, successor).await?;
            return Ok(Removal::HandedOver { successor });
        }
        if in_membership && state.nodes.contains_key(&id) && !state.draining.contains(&id) {
            // Marked as leaving first, so that it is not added back as a learner meanwhile.
            self.propose_meta(MetaCommand::DrainNode { id }).await?;
        }
        if in_membership {
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            let change = if voters.contains(&id) {
                if voters.len() <= 1 {
                    return Err(NodeError::refused(
                        Refusal::FailedPrecondition,
                        ErrorReason::LastVoter,
                        "cannot remove the last voter",
                    ));
                }
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([id]))
            };
            let fut = meta.raft.change_membership(change, false);
            tokio::time::timeout(self.config.request_timeout, fut)
                .await
                .map_err(|_| NodeError::DeadlineExceeded("membership change".into()))?
                .map_err(|e| self.map_write_error(e))?;
            if voters.contains(&id) {
                // Leave it out of the voters and then out of the group.
                let fut = meta
                    .raft
                    .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false);
                let _ = tokio::time::timeout(self.config.request_timeout, fut).await;
            }
            steps.push(format!("removed node {id} from the meta group"));
        }
        self.propose_meta(MetaCommand::RemoveNode { id }).await?;
        steps.push(format!(
            "node {id} removed from the registry; its id will not be reused"
        ));
        Ok(Removal::Removed { steps })
    }
}
