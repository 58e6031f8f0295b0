//! The topology core's view of the meta state: the replicated record (nodes, labels, draining,
//! databases with their shards, replica states and the times they were entered, moves in
//! flight) with the meta group's current membership, which Raft holds.

use std::collections::BTreeSet;
use std::time::Duration;

use super::view::{
    DatabaseView, MetaGroupView, NodeView, Replica, ReplicaState, ShardView, Topology,
};
use crate::meta::MetaState;
use crate::types::NodeId;

/// The topology as the meta state records it, with the meta group's current membership.
pub fn from_meta(
    state_: &MetaState,
    meta_voters: &BTreeSet<NodeId>,
    meta_learners: &BTreeSet<NodeId>,
) -> Topology {
    let nodes = state_
        .nodes
        .keys()
        .map(|id| {
            (
                *id,
                NodeView {
                    labels: state_.labels_of(*id),
                    draining: state_.draining.contains(id),
                },
            )
        })
        .collect();
    let databases = state_
        .databases
        .iter()
        .map(|(name, db)| {
            let shards = db
                .shards
                .iter()
                .map(|record| ShardView {
                    group: record.group_id,
                    replicas: record
                        .replicas
                        .iter()
                        .map(|n| Replica {
                            node: *n,
                            state: record.state_of(*n).unwrap_or(ReplicaState::Member),
                            since: Duration::from_millis(
                                record.since_ms.get(n).copied().unwrap_or(0),
                            ),
                        })
                        .collect(),
                    replacement: record.replacement,
                })
                .collect();
            (name.clone(), DatabaseView { shards })
        })
        .collect();
    Topology {
        nodes,
        databases,
        meta: MetaGroupView {
            voters: meta_voters.clone(),
            learners: meta_learners.clone(),
        },
    }
}
