//! The meta group's state: node registry and database records, and how meta commands change it.
//! Applying is deterministic and does no I/O, so every replica computes the same state.

pub mod auth;
pub mod collections;
pub mod commands;
pub mod placement;
mod stored;
pub mod voters;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::types::{GroupId, META_GROUP, NodeAddr, NodeId};
pub use commands::{MetaCommand, MetaOutcome};

/// Why the meta state refused a command. Every replica refuses the same commands, so the
/// refusal is part of the replicated outcome; callers act on the variant, never the text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MetaError {
    #[error(
        "node {0} was removed from this cluster; start it with an empty data directory to join as a new node"
    )]
    NodeRemoved(NodeId),
    #[error("node {0} is not a member of this cluster")]
    NodeNotMember(NodeId),
    #[error("database {0} already exists")]
    DatabaseExists(String),
    #[error("database {0} does not exist")]
    DatabaseNotFound(String),
    #[error("raft group {0} belongs to no database")]
    GroupNotFound(GroupId),
    /// A collection's shard key is fixed once declared.
    #[error("collection {collection} is placed by {current} already; a shard key cannot change")]
    ShardKeyFixed { collection: String, current: String },
    #[error("invalid index: {0}")]
    InvalidIndex(String),
    /// A meta command reached a data group (a bug of the sender).
    #[error("meta command sent to a data group")]
    NotMetaGroup,
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
}

/// Default time a replica may stay in Rehab before it is replaced.
pub const DEFAULT_REPLACE_AFTER_MS: u64 = 15 * 60 * 1000;

/// A database: its shards and where each shard's replicas live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseRecord {
    pub name: String,
    pub replication_factor: u32,
    pub shards: Vec<ShardRecord>,
    /// How long a replica may stay in Rehab before it is replaced (`None`: never).
    pub replace_after_ms: Option<u64>,
    /// Node labels (`key -> value`) a node must carry to hold this database's replicas.
    pub placement: BTreeMap<String, String>,
    /// Move replicas on their own so nodes hold replica counts within one of each other.
    pub auto_rebalance: bool,
    /// Declared collections (shard key, indexes); a collection not listed is placed by id.
    #[serde(default)]
    pub collections: BTreeMap<String, collections::CollectionRecord>,
}

pub use flotilla_model::{ReplicaMove, ReplicaState};

/// One shard of a database: a data group replicated on `replicas`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    pub group_id: GroupId,
    /// Every replica: voters and learners.
    pub replicas: Vec<NodeId>,
    /// The founding replicas: they (and only they) initialise the group.
    pub initial: Vec<NodeId>,
    /// State of each replica; a replica not listed is a Member.
    #[serde(with = "stored")]
    pub states: BTreeMap<NodeId, ReplicaState>,
    /// When each replica entered its state (unix milliseconds); 0 for the founding replicas.
    pub since_ms: BTreeMap<NodeId, u64>,
    /// The replacement in flight, if any.
    pub replacement: Option<ReplicaMove>,
}

impl ShardRecord {
    pub fn new(group_id: GroupId, replicas: Vec<NodeId>) -> ShardRecord {
        ShardRecord {
            group_id,
            initial: replicas.clone(),
            replicas,
            states: BTreeMap::new(),
            since_ms: BTreeMap::new(),
            replacement: None,
        }
    }

    pub fn state_of(&self, node: NodeId) -> Option<ReplicaState> {
        self.replicas.contains(&node).then(|| {
            self.states
                .get(&node)
                .copied()
                .unwrap_or(ReplicaState::Member)
        })
    }
}

/// A recorded topology transition (kept in a bounded log in the meta state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyEvent {
    pub sequence: u64,
    pub at_ms: u64,
    pub database: String,
    pub shard: u32,
    pub node: NodeId,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// Most topology events kept.
pub const MAX_EVENTS: usize = 1000;

impl DatabaseRecord {
    /// The shard a document id maps to: a stable hash onto the fixed shard count.
    pub fn shard_of(&self, id: &str) -> usize {
        flotilla_query::shard_of_id(id, self.shards.len() as u32) as usize
    }
}

/// The replicated cluster state held by the meta group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaState {
    pub cluster_id: Option<String>,
    pub nodes: BTreeMap<NodeId, NodeAddr>,
    /// Placement labels each registered node was started with (`--labels`).
    pub labels: BTreeMap<NodeId, BTreeMap<String, String>>,
    /// Labels set through the Admin API (by an administrator or the Kubernetes operator, e.g.
    /// the zone of the machine a node runs on); they take precedence over `labels`.
    pub assigned_labels: BTreeMap<NodeId, BTreeMap<String, String>>,
    /// Ids of nodes removed from the cluster; never accepted back.
    pub removed: BTreeSet<NodeId>,
    pub databases: BTreeMap<String, DatabaseRecord>,
    /// Next data group id to assign (the meta group is 0).
    pub next_group_id: GroupId,
    /// Replicas removed softly: their files stay on the node (group -> nodes).
    pub retired: BTreeMap<GroupId, BTreeSet<NodeId>>,
    /// Nodes being emptied before they leave the cluster.
    pub draining: BTreeSet<NodeId>,
    /// The most recent topology transitions, oldest first.
    pub events: VecDeque<TopologyEvent>,
    pub next_event: u64,
    /// A rebalance was asked for and is not finished yet.
    pub rebalance_requested: bool,
    /// Users, roles and whether auth is enabled. Keep it the last field: a state stored
    /// before it existed ends where it begins (see [`crate::codec::trailing`]).
    #[serde(deserialize_with = "crate::codec::trailing")]
    pub auth: auth::AuthState,
}

impl MetaState {
    pub fn apply(&mut self, cmd: &MetaCommand) -> Result<MetaOutcome, MetaError> {
        match cmd {
            MetaCommand::InitCluster { cluster_id } => {
                if self.cluster_id.is_none() {
                    self.cluster_id = Some(cluster_id.clone());
                }
                Ok(MetaOutcome::Done)
            }
            MetaCommand::RegisterNode { id, addr, labels } => {
                if self.removed.contains(id) {
                    return Err(MetaError::NodeRemoved(*id));
                }
                self.nodes.insert(*id, addr.clone());
                self.labels.insert(*id, labels.clone());
                Ok(MetaOutcome::Done)
            }
            MetaCommand::RemoveNode { id } => {
                self.nodes.remove(id);
                self.labels.remove(id);
                self.assigned_labels.remove(id);
                self.draining.remove(id);
                self.removed.insert(*id);
                Ok(MetaOutcome::Done)
            }
            MetaCommand::DrainNode { id } => {
                if !self.nodes.contains_key(id) {
                    return Err(MetaError::NodeNotMember(*id));
                }
                self.draining.insert(*id);
                Ok(MetaOutcome::Done)
            }
            MetaCommand::CreateDatabase { record } => {
                if self.databases.contains_key(&record.name) {
                    return Err(MetaError::DatabaseExists(record.name.clone()));
                }
                let mut record = record.clone();
                for shard in &mut record.shards {
                    self.next_group_id = self.next_group_id.max(META_GROUP + 1);
                    shard.group_id = self.next_group_id;
                    self.next_group_id += 1;
                }
                self.databases.insert(record.name.clone(), record.clone());
                Ok(MetaOutcome::DatabaseCreated(record))
            }
            MetaCommand::DropDatabase { name } => match self.databases.remove(name) {
                Some(_) => Ok(MetaOutcome::Done),
                None => Err(MetaError::DatabaseNotFound(name.clone())),
            },
            MetaCommand::UpdateDatabase {
                name,
                replication_factor,
                replace_after_ms,
                placement,
                auto_rebalance,
            } => {
                let db = self
                    .databases
                    .get_mut(name)
                    .ok_or_else(|| MetaError::DatabaseNotFound(name.clone()))?;
                if let Some(rf) = replication_factor {
                    db.replication_factor = *rf;
                }
                if let Some(after) = replace_after_ms {
                    db.replace_after_ms = *after;
                }
                if let Some(p) = placement {
                    db.placement = p.clone();
                }
                if let Some(a) = auto_rebalance {
                    db.auto_rebalance = *a;
                }
                Ok(MetaOutcome::Done)
            }
            MetaCommand::CreateCollection {
                database,
                collection,
                shard_key,
            } => self.create_collection(database, collection, shard_key),
            MetaCommand::CreateIndex {
                database,
                collection,
                name,
                paths,
            } => self.create_index(database, collection, name, paths),
            MetaCommand::DropIndex {
                database,
                collection,
                name,
            } => self.drop_index(database, collection, name),
            MetaCommand::AssignLabels { id, labels } => {
                if !self.nodes.contains_key(id) {
                    return Err(MetaError::NodeNotMember(*id));
                }
                if labels.is_empty() {
                    self.assigned_labels.remove(id);
                } else {
                    self.assigned_labels.insert(*id, labels.clone());
                }
                Ok(MetaOutcome::Done)
            }
            MetaCommand::Auth(cmd) => {
                self.auth.apply(cmd)?;
                Ok(MetaOutcome::Done)
            }
            MetaCommand::RequestRebalance { requested } => {
                self.rebalance_requested = *requested;
                Ok(MetaOutcome::Done)
            }
            MetaCommand::SetReplicaState {
                group,
                node,
                state,
                replaces,
                at_ms,
                reason,
            } => {
                let (db_name, index, shard) = self.shard_mut(*group)?;
                let from = shard.state_of(*node).map(|s| s.name()).unwrap_or("absent");
                if !shard.replicas.contains(node) {
                    shard.replicas.push(*node);
                }
                match state {
                    ReplicaState::Member => shard.states.remove(node),
                    other => shard.states.insert(*node, *other),
                };
                if from != state.name() {
                    shard.since_ms.insert(*node, *at_ms);
                }
                if let Some(old) = replaces {
                    shard.replacement = Some(ReplicaMove {
                        old: *old,
                        new: *node,
                    });
                }
                if let Some(r) = self.retired.get_mut(group) {
                    r.remove(node);
                }
                let to = state.name();
                if from != to {
                    self.record(*at_ms, &db_name, index as u32, *node, from, to, reason);
                }
                Ok(MetaOutcome::Done)
            }
            MetaCommand::RemoveReplica {
                group,
                node,
                keep_files,
                at_ms,
                reason,
            } => {
                let (db_name, index, shard) = self.shard_mut(*group)?;
                let from = shard.state_of(*node).map(|s| s.name()).unwrap_or("absent");
                shard.replicas.retain(|n| n != node);
                shard.states.remove(node);
                shard.since_ms.remove(node);
                if shard
                    .replacement
                    .is_some_and(|m| m.old == *node || m.new == *node)
                {
                    shard.replacement = None;
                }
                if *keep_files {
                    self.retired.entry(*group).or_default().insert(*node);
                }
                self.record(
                    *at_ms,
                    &db_name,
                    index as u32,
                    *node,
                    from,
                    "removed",
                    reason,
                );
                Ok(MetaOutcome::Done)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        at_ms: u64,
        database: &str,
        shard: u32,
        node: NodeId,
        from: &str,
        to: &str,
        reason: &str,
    ) {
        self.next_event += 1;
        self.events.push_back(TopologyEvent {
            sequence: self.next_event,
            at_ms,
            database: database.to_string(),
            shard,
            node,
            from: from.to_string(),
            to: to.to_string(),
            reason: reason.to_string(),
        });
        while self.events.len() > MAX_EVENTS {
            self.events.pop_front();
        }
    }

    /// The database name, shard index and record of data group `group`.
    fn shard_mut(
        &mut self,
        group: GroupId,
    ) -> Result<(String, usize, &mut ShardRecord), MetaError> {
        let (db_name, index) = self
            .shard_by_group(group)
            .map(|(d, i)| (d.name.clone(), i))
            .ok_or(MetaError::GroupNotFound(group))?;
        let shard = self
            .databases
            .get_mut(&db_name)
            .and_then(|d| d.shards.get_mut(index))
            .ok_or(MetaError::GroupNotFound(group))?;
        Ok((db_name, index, shard))
    }

    /// A node's placement labels: those it was started with, overridden by assigned ones.
    pub fn labels_of(&self, node: NodeId) -> BTreeMap<String, String> {
        let mut l = self.labels.get(&node).cloned().unwrap_or_default();
        if let Some(a) = self.assigned_labels.get(&node) {
            l.extend(a.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        l
    }

    /// True when `node` keeps the files of a softly removed replica of `group`.
    pub fn is_retired(&self, group: GroupId, node: NodeId) -> bool {
        self.retired.get(&group).is_some_and(|n| n.contains(&node))
    }

    /// Every data group placed on `node`.
    pub fn groups_on(&self, node: NodeId) -> Vec<(GroupId, &ShardRecord)> {
        self.databases
            .values()
            .flat_map(|db| db.shards.iter())
            .filter(|s| s.replicas.contains(&node))
            .map(|s| (s.group_id, s))
            .collect()
    }

    /// The database and shard index a data group belongs to.
    pub fn shard_by_group(&self, group: GroupId) -> Option<(&DatabaseRecord, usize)> {
        self.databases.values().find_map(|db| {
            db.shards
                .iter()
                .position(|s| s.group_id == group)
                .map(|i| (db, i))
        })
    }

    /// How many data replicas each registered node holds.
    pub fn replica_load(&self) -> BTreeMap<NodeId, usize> {
        let mut load: BTreeMap<NodeId, usize> = self.nodes.keys().map(|n| (*n, 0)).collect();
        for db in self.databases.values() {
            for shard in &db.shards {
                for r in &shard.replicas {
                    *load.entry(*r).or_default() += 1;
                }
            }
        }
        load
    }
}

#[cfg(test)]
mod tests;
