//! Writes: proposing a command to a group led here, and the leader checks that come first (a
//! leader that lost its quorum refuses at once; a write never proposed may go elsewhere).

use std::time::Duration;

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;

use super::{ElectionTimeout, GroupHandle, Host, heartbeat_until};
use crate::command::{Command, MetaCommand, MetaOutcome, Response, Stamped};
use crate::consensus::RaftMetrics;
use crate::error::{NodeError, NodeResult};
use crate::metrics::{ProposalFailure, group_labels};
use crate::types::{GroupId, META_GROUP};

impl Host {
    /// Proposes a meta command; fails with `NotLeader` when this node does not lead the meta group.
    pub async fn propose_meta(&self, cmd: MetaCommand) -> NodeResult<MetaOutcome> {
        let meta = self.meta();
        match self.write(&meta, META_GROUP, Command::Meta(cmd)).await? {
            (Response::Meta(Ok(outcome)), _) => Ok(outcome),
            (Response::Meta(Err(refused)), _) => Err(NodeError::Meta(refused)),
            (other, _) => Err(NodeError::Internal(format!(
                "unexpected meta response {other:?}"
            ))),
        }
    }

    /// Proposes `cmd` to a group led here; returns the response and the entry's log index.
    pub async fn write(
        &self,
        group: &GroupHandle,
        gid: GroupId,
        cmd: Command,
    ) -> NodeResult<(Response, u64)> {
        // While this node hands its leaderships over, new writes are not proposed here: they
        // wait for the successor and go to it (they were never proposed, so that is safe).
        if self.is_stopping() && group.is_leader() {
            let mut rx = group.raft.metrics();
            let me = self.id;
            let moved = async {
                loop {
                    let leader = rx.borrow_watched().current_leader;
                    if leader.is_some() && leader != Some(me) {
                        return;
                    }
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            };
            let _ =
                tokio::time::timeout(2 * self.raft_config.election_timeout_max_duration(), moved)
                    .await;
            return Err(NodeError::NotLeader {
                leader: self.leader_of(group).filter(|(id, _)| *id != me),
            });
        }
        // Only a write that was never proposed may be sent elsewhere: decide before proposing.
        // (Refused because another node leads, it is forwarded there: that is no failure.)
        if let Err(e) = self.check_leading(group).await {
            if !matches!(e, NodeError::NotLeader { .. }) {
                self.metrics.proposal_failed(gid, ProposalFailure::NoQuorum);
            }
            return Err(e);
        }
        self.refuse_when_full(gid, &cmd)?;
        let started = std::time::Instant::now();
        // A data group's writes carry this leader's clock: their commit time (see `Stamped`).
        let cmd = if gid == META_GROUP {
            cmd
        } else {
            Stamped::wrap(cmd, crate::txn::resolve::now_ms())
        };
        let fut = group.raft.client_write(cmd);
        let Ok(result) = tokio::time::timeout(self.config.request_timeout, fut).await else {
            self.metrics.proposal_failed(gid, ProposalFailure::Timeout);
            return Err(NodeError::DeadlineExceeded(
                "write not committed in time".into(),
            ));
        };
        match result {
            Ok(resp) => {
                self.metrics
                    .proposal_seconds
                    .get_or_create(&group_labels(gid))
                    .observe(started.elapsed().as_secs_f64());
                Ok((resp.data, resp.log_id.index))
            }
            Err(e) => {
                let fatal = matches!(e, openraft::error::RaftError::Fatal(_));
                let (why, error) = match self.map_write_error(e) {
                    // Proposed while leading, then the leadership moved: the entry may still
                    // commit.
                    NodeError::NotLeader { .. } => (
                        ProposalFailure::LeaderChanged,
                        NodeError::OutcomeUnknown(
                            "leadership changed while the write was in flight".into(),
                        ),
                    ),
                    // The group stopped (turned Fatal) after the write was handed to it: it may
                    // have been appended, and committed by the next leader.
                    NodeError::Unavailable(why) => (
                        if fatal {
                            ProposalFailure::GroupStopped
                        } else {
                            ProposalFailure::Rejected
                        },
                        NodeError::OutcomeUnknown(why),
                    ),
                    other => (ProposalFailure::Rejected, other),
                };
                self.metrics.proposal_failed(gid, why);
                Err(error)
            }
        }
    }

    /// `NotLeader` unless this node leads `group`; `Unavailable` unless it holds a leader lease
    /// (heard from a quorum lately), which openraft requires of every write. An isolated
    /// leader refuses at once instead of letting requests wait for a quorum that is not there.
    /// A leader whose group hibernates, or that has been quiet for a while, hears from nobody
    /// until asked: it sends a heartbeat round and waits up to one election timeout for it.
    pub async fn check_leading(&self, group: &GroupHandle) -> NodeResult<()> {
        let m = group.metrics();
        if m.state != ServerState::Leader {
            return Err(NodeError::NotLeader {
                leader: self.leader_of(group),
            });
        }
        if m.membership_config.membership().voter_ids().count() <= 1 {
            return Ok(());
        }
        let timeout = Duration::from_millis(self.config.election_timeout);
        // The lease lasts the longest election timeout (twice `timeout`); renew it at half.
        let acked_within = |m: &RaftMetrics, within: Duration| match m.last_quorum_acked.as_ref() {
            Some(t) => openraft::Instant::elapsed(&**t) < within,
            // Just elected: the votes granted are its acknowledgement.
            None => true,
        };
        if acked_within(&m, timeout) {
            return Ok(());
        }
        let unavailable = || {
            NodeError::Unavailable(
                "this node leads the group but has not heard from a quorum recently".into(),
            )
        };
        let gid = group.sm.state().gid;
        // Heartbeats kept going out and nobody answered for a whole lease: cut off.
        if !self.beats.is_asleep(gid) && !acked_within(&m, 2 * timeout) {
            return Err(unavailable());
        }
        self.beats.wake(gid);
        group.raft.runtime_config().tick(true);
        heartbeat_until(group, timeout, |m| acked_within(m, timeout).then_some(()))
            .await
            .ok_or_else(unavailable)
    }

    pub fn map_write_error(
        &self,
        e: openraft::error::RaftError<
            crate::consensus::TypeConfig,
            openraft::error::ClientWriteError<crate::consensus::TypeConfig>,
        >,
    ) -> NodeError {
        use openraft::error::{ClientWriteError, RaftError};
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => NodeError::NotLeader {
                leader: f
                    .leader_id
                    .and_then(|id| f.leader_node.map(|n| (id, n.client_addr))),
            },
            RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
                use openraft::error::ChangeMembershipError;
                match c {
                    // Another change is still committing: worth retrying shortly.
                    ChangeMembershipError::InProgress(p) => NodeError::Unavailable(p.to_string()),
                    other => NodeError::FailedPrecondition(other.to_string()),
                }
            }
            RaftError::APIError(other) => NodeError::Unavailable(other.to_string()),
            RaftError::Fatal(f) => NodeError::Unavailable(format!("raft group stopped: {f}")),
        }
    }
}
