//! How replica states are stored: as they always were, so that meta states written by
//! earlier versions (in snapshots and state files) read back. Rehab then carried its start
//! time, which `ShardRecord::since_ms` has always recorded too; it is read from there.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ReplicaState;
use crate::types::NodeId;

#[derive(Serialize, Deserialize)]
enum Stored {
    Member,
    Promotable,
    Rehab { since_ms: u64 },
}

pub fn serialize<S: Serializer>(
    states: &BTreeMap<NodeId, ReplicaState>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let stored: BTreeMap<NodeId, Stored> = states
        .iter()
        .map(|(n, state)| {
            let stored = match state {
                ReplicaState::Member => Stored::Member,
                ReplicaState::Promotable => Stored::Promotable,
                ReplicaState::Rehab => Stored::Rehab { since_ms: 0 },
            };
            (*n, stored)
        })
        .collect();
    stored.serialize(s)
}

pub fn deserialize<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<NodeId, ReplicaState>, D::Error> {
    let stored = BTreeMap::<NodeId, Stored>::deserialize(d)?;
    Ok(stored
        .into_iter()
        .map(|(n, stored)| {
            let state = match stored {
                Stored::Member => ReplicaState::Member,
                Stored::Promotable => ReplicaState::Promotable,
                Stored::Rehab { .. } => ReplicaState::Rehab,
            };
            (n, state)
        })
        .collect())
}
