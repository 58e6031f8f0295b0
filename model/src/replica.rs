//! The state of one replica of a shard, and a move of a replica from one node to another.

use std::fmt;
use std::str::FromStr;

use flotilla_proto::v1 as pb;
use serde::{Deserialize, Serialize};

/// The state of one replica of a shard (RavenDB's vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaState {
    /// A healthy voter.
    Member,
    /// A Raft learner catching up from its mentor; promoted when its lag is small.
    Promotable,
    /// A voter that is down or far behind. It stays a voter so the group keeps its majority;
    /// once back and caught up it is a Member again.
    Rehab,
}

impl ReplicaState {
    /// Every state, in order.
    pub const ALL: [ReplicaState; 3] = [
        ReplicaState::Member,
        ReplicaState::Promotable,
        ReplicaState::Rehab,
    ];

    /// Voters are Members and Rehab replicas; Promotables are learners.
    pub fn is_voter(self) -> bool {
        matches!(self, ReplicaState::Member | ReplicaState::Rehab)
    }

    /// The lowercase name, as recorded in topology events and written in JSON.
    pub fn name(self) -> &'static str {
        match self {
            ReplicaState::Member => "member",
            ReplicaState::Promotable => "promotable",
            ReplicaState::Rehab => "rehab",
        }
    }
}

/// The capitalised name, as shown to people and in Kubernetes status: `Member`.
impl fmt::Display for ReplicaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplicaState::Member => "Member",
            ReplicaState::Promotable => "Promotable",
            ReplicaState::Rehab => "Rehab",
        })
    }
}

/// A name that is no replica state (or a wire value this version does not know).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown replica state {0:?} (expected member, promotable or rehab)")]
pub struct UnknownReplicaState(pub String);

/// Either spelling: `member` or `Member`.
impl FromStr for ReplicaState {
    type Err = UnknownReplicaState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ReplicaState::ALL
            .into_iter()
            .find(|state| state.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownReplicaState(s.to_string()))
    }
}

impl From<ReplicaState> for pb::ReplicaState {
    fn from(s: ReplicaState) -> Self {
        match s {
            ReplicaState::Member => pb::ReplicaState::Member,
            ReplicaState::Promotable => pb::ReplicaState::Promotable,
            ReplicaState::Rehab => pb::ReplicaState::Rehab,
        }
    }
}

/// From the wire's `ReplicaState` field (an `i32`).
impl TryFrom<i32> for ReplicaState {
    type Error = UnknownReplicaState;

    fn try_from(v: i32) -> Result<Self, Self::Error> {
        match pb::ReplicaState::try_from(v) {
            Ok(pb::ReplicaState::Member) => Ok(ReplicaState::Member),
            Ok(pb::ReplicaState::Promotable) => Ok(ReplicaState::Promotable),
            Ok(pb::ReplicaState::Rehab) => Ok(ReplicaState::Rehab),
            Ok(pb::ReplicaState::Unspecified) | Err(_) => {
                Err(UnknownReplicaState(format!("wire value {v}")))
            }
        }
    }
}

/// A move in flight in a shard: `new` was added as a Promotable to take the place of `old`,
/// which leaves once `new` is a Member. A shard has at most one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaMove {
    pub old: u64,
    pub new: u64,
}

impl From<ReplicaMove> for pb::ReplicaMove {
    fn from(m: ReplicaMove) -> Self {
        pb::ReplicaMove {
            old_node_id: m.old,
            new_node_id: m.new,
        }
    }
}

impl From<pb::ReplicaMove> for ReplicaMove {
    fn from(m: pb::ReplicaMove) -> Self {
        ReplicaMove {
            old: m.old_node_id,
            new: m.new_node_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_from_its_name_its_display_and_the_wire() {
        for state in ReplicaState::ALL {
            assert_eq!(state.name().parse::<ReplicaState>(), Ok(state));
            assert_eq!(state.to_string().parse::<ReplicaState>(), Ok(state));
            let wire = pb::ReplicaState::from(state) as i32;
            assert_eq!(ReplicaState::try_from(wire), Ok(state));
        }
    }

    #[test]
    fn an_unknown_state_is_refused_not_guessed() {
        assert!("absent".parse::<ReplicaState>().is_err());
        assert!(ReplicaState::try_from(0).is_err());
        assert!(ReplicaState::try_from(99).is_err());
    }

    #[test]
    fn only_promotables_do_not_vote() {
        let voters: Vec<_> = ReplicaState::ALL
            .into_iter()
            .filter(|s| s.is_voter())
            .collect();
        assert_eq!(voters, [ReplicaState::Member, ReplicaState::Rehab]);
    }
}
