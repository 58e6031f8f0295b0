//! Leadership: transferring a group's leadership to another voter, and handing every
//! leadership over to caught-up voters when the node stops.

use std::time::Duration;

use flotilla_proto::v1::ErrorReason;
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;

use super::{ElectionTimeout, GroupHandle, Host, heartbeat_until};
use crate::consensus::RaftMetrics;
use crate::error::{NodeError, NodeResult, Refusal};
use crate::types::NodeId;

impl Host {
    /// Transfers the leadership of a group led here to `to`, waiting until `to` leads.
    pub async fn transfer_leadership(&self, group: &GroupHandle, to: NodeId) -> NodeResult<NodeId> {
        let m = group.metrics();
        if m.current_leader == Some(to) {
            return Ok(to);
        }
        if m.state != ServerState::Leader {
            return Err(NodeError::NotLeader {
                leader: self.leader_of(group),
            });
        }
        if !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == to)
        {
            return Err(NodeError::refused(
                Refusal::FailedPrecondition,
                ErrorReason::NotAVoter,
                format!("node {to} is not a voter of this group"),
            ));
        }
        // Followers stop waiting on this node for the group (see `Beats`): should the hand-over
        // fail, they elect a leader once their timers run out.
        self.beats
            .begin_handover(group.sm.state().gid, m.current_term);
        let ask = || async {
            group
                .raft
                .trigger()
                .transfer_leader(to)
                .await
                .map_err(|e| NodeError::Unavailable(e.to_string()))
        };
        ask().await?;
        // The request to `to` is sent once, with a short timeout: asked again every election
        // timeout while this node still leads, so that one lost request does not sink it.
        let again = self.raft_config.election_timeout_max_duration();
        let mut rx = group.raft.metrics();
        let wait = async {
            loop {
                let m = rx.borrow_watched().clone();
                if m.current_leader == Some(to) {
                    return Ok::<(), NodeError>(());
                }
                match tokio::time::timeout(again, rx.changed()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Ok(()),
                    Err(_) if m.state == ServerState::Leader => ask().await?,
                    Err(_) => {}
                }
            }
        };
        tokio::time::timeout(
            Duration::from_secs(5) + self.raft_config.election_timeout_max_duration(),
            wait,
        )
        .await
        .map_err(|_| {
            NodeError::Unavailable(format!("node {to} did not take over leadership in time"))
        })??;
        Ok(to)
    }

    /// First half of a graceful stop: hand the leadership of every group led here to a
    /// caught-up voter. Bounded by the configured shutdown timeout.
    pub async fn hand_over_leadership(&self) {
        self.stopping.send_replace(true);
        if tokio::time::timeout(self.config.shutdown_timeout, self.hand_over_groups())
            .await
            .is_err()
        {
            tracing::warn!("leadership handover timed out");
        }
    }

    /// Hands the leadership of every group led here to a caught-up voter, all at once (a group
    /// with no live voter to take it stays led here).
    pub(crate) async fn hand_over_groups(&self) {
        let mut tasks = Vec::new();
        for (gid, group) in self.groups() {
            let m = group.metrics();
            if m.state != ServerState::Leader {
                continue;
            }
            tasks.push(async move {
                let Some(target) = self.successor(&group).await else {
                    return;
                };
                match self.transfer_leadership(&group, target).await {
                    Ok(_) => tracing::info!(group = gid, to = target, "leadership handed over"),
                    Err(e) => tracing::warn!(group = gid, to = target, error = %e, "leadership handover failed"),
                }
            });
        }
        futures::future::join_all(tasks).await;
    }

    /// The caught-up voter to hand `group`'s leadership to. A hibernating group has heard
    /// from nobody lately: it sends a heartbeat round first and waits up to one election
    /// timeout for the answers.
    async fn successor(&self, group: &GroupHandle) -> Option<NodeId> {
        let fresh = Duration::from_millis(self.config.election_timeout);
        if let Some(target) = best_successor(&group.metrics(), self.id, fresh) {
            return Some(target);
        }
        heartbeat_until(group, fresh, |m| best_successor(m, self.id, fresh)).await
    }
}

/// The live voter (not `me`) with the most replicated log, when this node leads. A voter
/// counts as live when it acknowledged the leader within `fresh`.
pub fn best_successor(m: &RaftMetrics, me: NodeId, fresh: Duration) -> Option<NodeId> {
    let replication = m.replication.as_ref()?;
    let heartbeat = m.heartbeat.as_ref()?;
    m.membership_config
        .membership()
        .voter_ids()
        .filter(|v| *v != me)
        .filter(|v| {
            heartbeat
                .get(v)
                .cloned()
                .flatten()
                .is_some_and(|t| openraft::Instant::elapsed(&*t) < fresh)
        })
        .max_by_key(|v| replication.get(v).cloned().flatten().map(|l| l.index))
}
