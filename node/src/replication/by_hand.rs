//! Replicas changed by hand (RavenDB's topology actions): `db add-replica` adds a Promotable
//! (mentored by a chosen replica, or by the leader), `db remove-replica` takes one out, softly
//! (its files stay on the node) unless asked otherwise. Both run on the meta leader while the
//! observer waits, and both refuse what would break a shard's majority or placement.

use std::collections::BTreeSet;

use super::changes::{add_promotable, now_ms};
use super::membership::{self, MembershipChange};
use crate::command::MetaCommand;
use crate::error::{NodeError, NodeResult};
use crate::host::Host;
use crate::labels;
use crate::meta::{DatabaseRecord, MetaError, ReplicaState, ShardRecord};
use crate::topology::{ShardRef, labels_match, majority};
use crate::types::NodeId;

/// Voters of a shard: every replica but the Promotables.
fn voters(record: &ShardRecord) -> Vec<NodeId> {
    record
        .replicas
        .iter()
        .copied()
        .filter(|n| !matches!(record.state_of(*n), Some(ReplicaState::Promotable)))
        .collect()
}

/// True when `voters` without `leaving` still has a live majority.
pub fn keeps_majority(voters: &[NodeId], leaving: NodeId, live: &BTreeSet<NodeId>) -> bool {
    let rest: Vec<NodeId> = voters.iter().copied().filter(|v| *v != leaving).collect();
    let up = rest.iter().filter(|v| live.contains(v)).count();
    !rest.is_empty() && up >= majority(rest.len())
}

/// The replica a by-hand addition to a single shard takes the place of: a Rehab one first,
/// then the Member on the most loaded node (ties: the highest id), never the mentor.
fn replaced_by_move(
    record: &ShardRecord,
    load: &std::collections::BTreeMap<NodeId, usize>,
    mentor: Option<NodeId>,
) -> Option<NodeId> {
    voters(record)
        .into_iter()
        .filter(|n| Some(*n) != mentor)
        .max_by_key(|n| {
            let rehab = matches!(record.state_of(*n), Some(ReplicaState::Rehab));
            (rehab, load.get(n).copied().unwrap_or(0), *n)
        })
}

/// Sets a database's replication factor (and nothing else).
async fn set_replication_factor(host: &Host, database: &str, rf: u32) -> NodeResult<()> {
    host.propose_meta(MetaCommand::UpdateDatabase {
        name: database.to_string(),
        replication_factor: Some(rf),
        replace_after_ms: None,
        placement: None,
        auto_rebalance: None,
    })
    .await
    .map(|_| ())
}

fn shard_ref(db: &DatabaseRecord, index: usize) -> ShardRef {
    ShardRef {
        database: db.name.clone(),
        index,
        group: db.shards[index].group_id,
    }
}

/// Adds `node` as a Promotable of the selected shards. To every shard: the replication factor
/// rises by one. To one shard: a move, the new replica takes the place of another one.
pub async fn add_replica(
    host: &Host,
    database: &str,
    shard: Option<u32>,
    node: NodeId,
    mentor: Option<NodeId>,
) -> NodeResult<Vec<String>> {
    let _quiet = host.topology_lock.lock().await;
    let state = host.meta_state();
    let db = state
        .databases
        .get(database)
        .ok_or_else(|| NodeError::database_not_found(database))?;
    if !state.nodes.contains_key(&node) {
        return Err(MetaError::NodeNotMember(node).into());
    }
    if state.draining.contains(&node) {
        return Err(NodeError::FailedPrecondition(format!(
            "node {node} is draining (leaving the cluster)"
        )));
    }
    let node_labels = state.labels_of(node);
    if !labels_match(&db.placement, &node_labels) {
        return Err(NodeError::FailedPrecondition(format!(
            "node {node} (labels {}) does not carry the placement labels of {database} ({})",
            labels::display(&node_labels),
            labels::display(&db.placement)
        )));
    }
    let selected: Vec<usize> = (0..db.shards.len())
        .filter(|i| shard.is_none_or(|s| s as usize == *i))
        .collect();
    if selected.is_empty() {
        return Err(NodeError::InvalidArgument(format!(
            "database {database} has no shard {}",
            shard.unwrap_or_default()
        )));
    }
    if let Some(m) = mentor {
        for i in &selected {
            if !db.shards[*i].replicas.contains(&m) {
                return Err(NodeError::InvalidArgument(format!(
                    "mentor node {m} holds no replica of {database} shard {i}"
                )));
            }
        }
    }
    let mut steps = Vec::new();
    if shard.is_none() && db.shards.iter().any(|r| !r.replicas.contains(&node)) {
        let rf = db.replication_factor + 1;
        set_replication_factor(host, database, rf).await?;
        steps.push(format!("replication factor raised to {rf}"));
    }
    let load = state.replica_load();
    for i in selected {
        let record = &db.shards[i];
        if record.replicas.contains(&node) {
            steps.push(format!("shard {i}: node {node} already holds a replica"));
            continue;
        }
        let replaces = if shard.is_some() {
            if record.replacement.is_some() {
                return Err(NodeError::FailedPrecondition(format!(
                    "shard {i} of {database} already has a move in flight; wait for it to finish"
                )));
            }
            replaced_by_move(record, &load, mentor)
        } else {
            None
        };
        add_promotable(
            host,
            &shard_ref(db, i),
            node,
            mentor,
            replaces,
            "added by hand",
        )
        .await?;
        let from = mentor
            .map(|m| format!(" (initial snapshot from node {m})"))
            .unwrap_or_default();
        steps.push(match replaces {
            Some(old) => format!(
                "shard {i}: node {node} added as Promotable{from}; once it is a Member it takes the place of node {old}"
            ),
            None => format!(
                "shard {i}: node {node} added as Promotable{from}; it becomes a Member once caught up"
            ),
        });
    }
    Ok(steps)
}

/// Removes `node`'s replica from the selected shards, refusing what would break a majority.
/// From every shard: the replication factor drops by one, so no replica comes back.
pub async fn remove_replica(
    host: &Host,
    database: &str,
    shard: Option<u32>,
    node: NodeId,
    hard: bool,
) -> NodeResult<Vec<String>> {
    let _quiet = host.topology_lock.lock().await;
    let state = host.meta_state();
    let db = state
        .databases
        .get(database)
        .ok_or_else(|| NodeError::database_not_found(database))?;
    let live = host.live_nodes();
    let selected: Vec<(usize, &ShardRecord)> = db
        .shards
        .iter()
        .enumerate()
        .filter(|(i, r)| shard.is_none_or(|s| s as usize == *i) && r.replicas.contains(&node))
        .collect();
    if selected.is_empty() {
        return Err(NodeError::NotFound(format!(
            "node {node} holds no replica of {database} there"
        )));
    }
    for (i, record) in &selected {
        let voters = voters(record);
        if voters.contains(&node) && !keeps_majority(&voters, node, &live) {
            return Err(NodeError::FailedPrecondition(format!(
                "removing node {node} from shard {i} would leave it without a live majority"
            )));
        }
    }
    if shard.is_none() && db.replication_factor > 1 {
        // Lowered first, so the observer does not put a replica back meanwhile.
        set_replication_factor(host, database, db.replication_factor - 1).await?;
    }
    let mut steps = Vec::new();
    for (i, record) in selected {
        if let Err(e) = membership::change(host, record, &MembershipChange::Remove(node)).await {
            if shard.is_none() && steps.is_empty() && db.replication_factor > 1 {
                // Nothing was removed: put the replication factor back.
                let _ = set_replication_factor(host, database, db.replication_factor).await;
            }
            return Err(e);
        }
        host.propose_meta(MetaCommand::RemoveReplica {
            group: record.group_id,
            node,
            keep_files: !hard,
            at_ms: now_ms(),
            reason: "removed by hand".into(),
        })
        .await?;
        steps.push(format!(
            "shard {i}: node {node} removed{}",
            if hard {
                " and its files deleted"
            } else {
                "; its files are kept on the node"
            }
        ));
    }
    if shard.is_none() && db.replication_factor > 1 {
        steps.push(format!(
            "replication factor lowered to {}",
            db.replication_factor - 1
        ));
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn a_removal_keeps_a_live_majority_or_is_refused() {
        assert!(!keeps_majority(&[1, 2, 3], 1, &BTreeSet::from([1])));
        assert!(keeps_majority(&[1, 2, 3], 3, &BTreeSet::from([1, 2])));
        assert!(!keeps_majority(&[1, 2, 3], 3, &BTreeSet::from([1, 3])));
        assert!(!keeps_majority(&[1], 1, &BTreeSet::from([1])));
    }

    #[test]
    fn a_single_shard_move_replaces_rehab_first_then_the_most_loaded_member() {
        let mut record = ShardRecord::new(1, vec![1, 2, 3]);
        let load = BTreeMap::from([(1, 5), (2, 1), (3, 3)]);
        assert_eq!(replaced_by_move(&record, &load, None), Some(1));
        assert_eq!(replaced_by_move(&record, &load, Some(1)), Some(3));
        record.states.insert(2, ReplicaState::Rehab);
        assert_eq!(replaced_by_move(&record, &load, None), Some(2));
        record.states.insert(2, ReplicaState::Promotable);
        assert_eq!(replaced_by_move(&record, &load, None), Some(1));
    }
}
