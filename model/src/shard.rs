//! A shard's Raft group as its leader (or another replica) sees it: who leads, and each
//! replica's state and replication progress.

use flotilla_proto::v1 as pb;
use serde::Serialize;

use crate::{ReplicaMove, ReplicaState, UnknownReplicaState};

/// One replica of a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaStatus {
    pub node_id: u64,
    pub client_addr: String,
    pub state: ReplicaState,
    /// Log entries behind the shard leader (0 when not seen from the leader).
    pub lag: u64,
    /// Highest log index known to be replicated on this replica.
    pub matched_index: u64,
    /// Bytes of snapshot sent to this replica so far (its catch-up progress as a Promotable).
    pub snapshot_bytes_sent: u64,
    /// Why this replica's group is stopped on its node (a corrupt record, a storage failure),
    /// as its node last said; `None` while it runs.
    pub stopped: Option<String>,
    /// Stopped for good (a corrupt record, or content that differs from the other replicas'):
    /// the replica is replaced.
    pub broken: bool,
}

/// One shard's Raft group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShardStatus {
    pub shard: u32,
    pub group_id: u64,
    /// `None` when the shard has no leader right now.
    pub leader_id: Option<u64>,
    pub term: u64,
    pub commit_index: u64,
    pub replicas: Vec<ReplicaStatus>,
    /// The move in flight, if any.
    pub replacement: Option<ReplicaMove>,
}

impl ShardStatus {
    /// The replica on the leader's node, if the shard has a leader.
    pub fn leader(&self) -> Option<&ReplicaStatus> {
        let id = self.leader_id?;
        self.replicas.iter().find(|r| r.node_id == id)
    }
}

impl From<ReplicaStatus> for pb::ReplicaStatus {
    fn from(r: ReplicaStatus) -> Self {
        pb::ReplicaStatus {
            node_id: r.node_id,
            client_addr: r.client_addr,
            state: pb::ReplicaState::from(r.state) as i32,
            lag: r.lag,
            matched_index: r.matched_index,
            snapshot_bytes_sent: r.snapshot_bytes_sent,
            stopped: r.stopped.unwrap_or_default(),
            broken: r.broken,
        }
    }
}

impl TryFrom<pb::ReplicaStatus> for ReplicaStatus {
    type Error = UnknownReplicaState;

    fn try_from(r: pb::ReplicaStatus) -> Result<Self, Self::Error> {
        Ok(ReplicaStatus {
            node_id: r.node_id,
            client_addr: r.client_addr,
            state: ReplicaState::try_from(r.state)?,
            lag: r.lag,
            matched_index: r.matched_index,
            snapshot_bytes_sent: r.snapshot_bytes_sent,
            stopped: (!r.stopped.is_empty()).then_some(r.stopped),
            broken: r.broken,
        })
    }
}

impl From<ShardStatus> for pb::ShardStatus {
    fn from(s: ShardStatus) -> Self {
        pb::ShardStatus {
            shard: s.shard,
            group_id: s.group_id,
            leader_id: s.leader_id.unwrap_or(0),
            term: s.term,
            commit_index: s.commit_index,
            replicas: s.replicas.into_iter().map(Into::into).collect(),
            replacement: s.replacement.map(Into::into),
        }
    }
}

impl TryFrom<pb::ShardStatus> for ShardStatus {
    type Error = UnknownReplicaState;

    fn try_from(s: pb::ShardStatus) -> Result<Self, Self::Error> {
        Ok(ShardStatus {
            shard: s.shard,
            group_id: s.group_id,
            leader_id: (s.leader_id != 0).then_some(s.leader_id),
            term: s.term,
            commit_index: s.commit_index,
            replicas: s
                .replicas
                .into_iter()
                .map(ReplicaStatus::try_from)
                .collect::<Result<_, _>>()?,
            replacement: s.replacement.map(Into::into),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard() -> ShardStatus {
        ShardStatus {
            shard: 2,
            group_id: 7,
            leader_id: Some(1),
            term: 3,
            commit_index: 40,
            replicas: vec![
                ReplicaStatus {
                    node_id: 1,
                    client_addr: "a:1".into(),
                    state: ReplicaState::Member,
                    lag: 0,
                    matched_index: 40,
                    snapshot_bytes_sent: 0,
                    stopped: None,
                    broken: false,
                },
                ReplicaStatus {
                    node_id: 4,
                    client_addr: "d:1".into(),
                    state: ReplicaState::Promotable,
                    lag: 12,
                    matched_index: 28,
                    snapshot_bytes_sent: 4096,
                    stopped: None,
                    broken: false,
                },
            ],
            replacement: Some(ReplicaMove { old: 2, new: 4 }),
        }
    }

    #[test]
    fn a_shard_status_survives_the_wire() {
        let wire = pb::ShardStatus::from(shard());
        assert_eq!(ShardStatus::try_from(wire), Ok(shard()));
    }

    #[test]
    fn no_leader_travels_as_zero() {
        let mut s = shard();
        s.leader_id = None;
        let wire = pb::ShardStatus::from(s.clone());
        assert_eq!(wire.leader_id, 0);
        assert_eq!(ShardStatus::try_from(wire).map(|s| s.leader_id), Ok(None));
        assert_eq!(s.leader(), None);
    }

    #[test]
    fn a_replica_in_an_unknown_state_is_refused() {
        let mut wire = pb::ShardStatus::from(shard());
        wire.replicas[1].state = 42;
        assert!(ShardStatus::try_from(wire).is_err());
    }
}
