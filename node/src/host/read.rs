//! Reads: the barrier a read waits for before it is served from this replica, at the
//! consistency it asks for (ReadIndex, leader lease, or none).

use flotilla_proto::v1::{ErrorReason, ShardRevision};

use crate::error::{NodeError, NodeResult, Refusal};

use super::{GroupHandle, Host};

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadConsistency {
    Linearizable,
    Lease,
    Stale,
}

/// Longest a read waits for this replica to reach a session's floor before it is refused.
const FLOOR_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl Host {
    /// Waits (briefly) until this replica of shard `shard` (`group`) has applied revision
    /// `floor`: a session's floor, so that its stale reads never go back in time. A replica
    /// still behind refuses with UNAVAILABLE, reason `REPLICA_BEHIND`: the client asks another.
    pub async fn wait_for_revision(
        &self,
        group: &GroupHandle,
        shard: usize,
        floor: u64,
    ) -> NodeResult<()> {
        let state = group.sm.state();
        if state.applied_index() >= floor {
            return Ok(());
        }
        let mut rx = state.subscribe();
        let wait = FLOOR_WAIT.min(self.config.request_timeout);
        match tokio::time::timeout(wait, rx.wait_for(|applied| *applied >= floor)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(NodeError::refused(
                Refusal::Unavailable,
                ErrorReason::ReplicaBehind,
                format!(
                    "this replica of shard {shard} has applied revision {}, and the session has \
                     seen {floor}: another replica serves the read",
                    state.applied_index()
                ),
            )),
        }
    }

    /// Waits (briefly) until this replica of shard `shard` has applied the revision of it that
    /// a session's floor `at_least` names, if it names one (see [`Host::wait_for_revision`]).
    pub async fn session_floor(
        &self,
        group: &GroupHandle,
        shard: usize,
        at_least: &[ShardRevision],
    ) -> NodeResult<()> {
        let floor = at_least
            .iter()
            .filter(|a| a.shard as usize == shard)
            .map(|a| a.revision)
            .max();
        match floor {
            Some(floor) => self.wait_for_revision(group, shard, floor).await,
            None => Ok(()),
        }
    }

    /// Waits until a read on this replica of `group` may be served at `consistency`.
    pub async fn read_barrier(
        &self,
        group: &GroupHandle,
        consistency: ReadConsistency,
    ) -> NodeResult<()> {
        use openraft::ReadPolicy;
        use openraft::error::{LinearizableReadError, RaftError};
        let policy = match consistency {
            ReadConsistency::Stale => return Ok(()),
            ReadConsistency::Lease => ReadPolicy::LeaseRead,
            ReadConsistency::Linearizable => ReadPolicy::ReadIndex,
        };
        self.check_leading(group).await?;
        let fut = group.raft.ensure_linearizable(policy);
        match tokio::time::timeout(self.config.request_timeout, fut).await {
            Err(_) => Err(NodeError::DeadlineExceeded(
                "read index not confirmed in time".into(),
            )),
            Ok(Ok(read)) => {
                // Serve from storage only once it shows everything up to the read index.
                let state = group.sm.state();
                if state.applied_index() < read.index() {
                    let mut rx = state.subscribe();
                    let wait = rx.wait_for(|applied| *applied >= read.index());
                    tokio::time::timeout(self.config.request_timeout, wait)
                        .await
                        .map_err(|_| {
                            NodeError::DeadlineExceeded(
                                "state machine did not catch up in time".into(),
                            )
                        })?
                        .map_err(|_| NodeError::Unavailable("raft group stopped".into()))?;
                }
                Ok(())
            }
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f)))) => {
                Err(NodeError::NotLeader {
                    leader: f
                        .leader_id
                        .and_then(|id| f.leader_node.map(|n| (id, n.client_addr))),
                })
            }
            Ok(Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(q)))) => {
                Err(NodeError::Unavailable(format!("no quorum: {q}")))
            }
            Ok(Err(RaftError::Fatal(f))) => {
                Err(NodeError::Unavailable(format!("raft group stopped: {f}")))
            }
        }
    }
}
