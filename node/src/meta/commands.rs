//! The meta group's commands and what applying one answers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{DatabaseRecord, ReplicaState};
use crate::types::{GroupId, NodeAddr, NodeId};

/// A change to the cluster's meta state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Recorded once by the bootstrapping node.
    InitCluster {
        cluster_id: String,
    },
    /// Adds a node to the registry, or updates its address and placement labels.
    RegisterNode {
        id: NodeId,
        addr: NodeAddr,
        labels: BTreeMap<String, String>,
    },
    RemoveNode {
        id: NodeId,
    },
    /// Start moving every replica off a node that is to leave the cluster.
    DrainNode {
        id: NodeId,
    },
    /// `record.shards[*].group_id` are assigned when applied.
    CreateDatabase {
        record: DatabaseRecord,
    },
    DropDatabase {
        name: String,
    },
    UpdateDatabase {
        name: String,
        replication_factor: Option<u32>,
        /// `Some(None)` switches replacement off.
        replace_after_ms: Option<Option<u64>>,
        placement: Option<BTreeMap<String, String>>,
        auto_rebalance: Option<bool>,
    },
    /// Sets the labels assigned to a node through the API (an empty map clears them).
    AssignLabels {
        id: NodeId,
        labels: BTreeMap<String, String>,
    },
    /// Asks for (or, once done, clears) a cluster-wide rebalance.
    RequestRebalance {
        requested: bool,
    },
    /// Declares a collection (with a shard key, fixed once set).
    CreateCollection {
        database: String,
        collection: String,
        shard_key: Option<String>,
    },
    /// Records a secondary index of a collection (each shard then creates it).
    CreateIndex {
        database: String,
        collection: String,
        name: String,
        paths: Vec<String>,
    },
    DropIndex {
        database: String,
        collection: String,
        name: String,
    },
    /// Adds a replica to a shard's record (as Promotable) or changes its state.
    SetReplicaState {
        group: GroupId,
        node: NodeId,
        state: ReplicaState,
        /// Records the replica as the replacement of the one on this node.
        replaces: Option<NodeId>,
        at_ms: u64,
        reason: String,
    },
    /// Takes a replica out of a shard's record (after it left the group's membership).
    RemoveReplica {
        group: GroupId,
        node: NodeId,
        keep_files: bool,
        at_ms: u64,
        reason: String,
    },
    /// Users, roles, and whether auth is enabled (see `meta::auth`).
    Auth(super::auth::AuthCommand),
}

/// What applying a meta command answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaOutcome {
    Done,
    /// The command asked for what was already so.
    Unchanged,
    DatabaseCreated(DatabaseRecord),
}
