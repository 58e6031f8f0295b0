//! What the Admin service answers with, built from the host's state, and the parsing of what
//! requests give: database info, the cluster status, placement labels, replacement delays.

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_proto::v1::{
    ClusterStatusResponse, DatabaseInfo, Health, MetaRole, NodeInfo, NodeStatus,
    RemoveNodeProgress, RemoveNodeResponse,
};
use openraft::Instant;
use openraft::ServerState;
use tonic::Status;

use crate::host::{Host, Removal};
use crate::meta::DatabaseRecord;
use crate::types::{NodeAddr, NodeId};

/// The cluster's nodes, roles and health as this node sees them (complete on the meta leader).
pub(super) fn cluster_status(host: &Host) -> ClusterStatusResponse {
    let meta = host.meta();
    let m = meta.metrics();
    let state = host.meta_state();
    let membership = m.membership_config.membership().clone();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let mut ids: BTreeSet<NodeId> = state.nodes.keys().copied().collect();
    ids.extend(membership.nodes().map(|(id, _)| *id));
    let is_leader = m.state == ServerState::Leader;
    let last = m.last_log_index.unwrap_or(0);
    let stale_after = Duration::from_millis(host.config.election_timeout * 3);
    let load = state.replica_load();
    let nodes = ids
        .into_iter()
        .map(|id| {
            let addr: NodeAddr = state
                .nodes
                .get(&id)
                .cloned()
                .or_else(|| membership.get_node(&id).cloned())
                .unwrap_or_default();
            let role = if m.current_leader == Some(id) {
                MetaRole::Leader
            } else if voters.contains(&id) {
                MetaRole::Follower
            } else if membership.get_node(&id).is_some() {
                MetaRole::Learner
            } else {
                MetaRole::None
            };
            let health = if id == host.id {
                Health::Healthy
            } else if is_leader {
                let alive = m
                    .heartbeat
                    .as_ref()
                    .and_then(|h| h.get(&id).cloned().flatten())
                    .is_some_and(|t| t.elapsed() < stale_after);
                if alive {
                    Health::Healthy
                } else {
                    Health::Unreachable
                }
            } else {
                Health::Unspecified
            };
            let lag = if is_leader && id != host.id {
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map(|l| l.index)
                    .unwrap_or(0);
                last.saturating_sub(matched)
            } else {
                0
            };
            NodeStatus {
                node: Some(NodeInfo {
                    id,
                    name: addr.name,
                    client_addr: addr.client_addr,
                    peer_addr: addr.peer_addr,
                }),
                meta_role: role as i32,
                health: health as i32,
                lag,
                labels: state.labels_of(id).into_iter().collect(),
                draining: state.draining.contains(&id),
                replicas: load.get(&id).copied().unwrap_or(0) as u32,
            }
        })
        .collect();
    ClusterStatusResponse {
        cluster_id: state.cluster_id.clone().unwrap_or_default(),
        meta_leader_id: m.current_leader.unwrap_or(0),
        meta_term: m.current_term,
        nodes,
        answered_by: host.id,
        rebalancing: state.rebalance_requested,
        auth_enabled: state.auth.enabled,
    }
}

pub(super) fn info(db: &DatabaseRecord) -> DatabaseInfo {
    DatabaseInfo {
        name: db.name.clone(),
        shards: db.shards.len() as u32,
        replication_factor: db.replication_factor,
        replace_after: match db.replace_after_ms {
            Some(ms) => {
                humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
            }
            None => "off".into(),
        },
        placement: db.placement.clone().into_iter().collect(),
        auto_rebalance: db.auto_rebalance,
    }
}

/// Checks placement labels from a request.
pub(super) fn placement(
    labels: &std::collections::HashMap<String, String>,
) -> Result<crate::labels::Labels, Status> {
    crate::labels::check_all(labels)
        .map_err(|e| Status::invalid_argument(format!("invalid placement: {e}")))?;
    Ok(labels.clone().into_iter().collect())
}

/// Parses a replacement delay: a duration such as `30s` or `15m`, or `off`.
pub(super) fn parse_replace_after(text: &str) -> Result<Option<u64>, Status> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    humantime::parse_duration(text.trim())
        .map(|d| Some(d.as_millis() as u64))
        .map_err(|e| {
            Status::invalid_argument(format!(
                "invalid replace-after {text:?} (e.g. 30s, 15m or off): {e}"
            ))
        })
}

/// The answer to one RemoveNode call: how far the removal of `node` has come.
pub(super) fn removal(node: NodeId, removal: Removal) -> RemoveNodeResponse {
    match removal {
        Removal::Draining { remaining } => RemoveNodeResponse {
            steps: vec![format!(
                "draining node {node}: {remaining} replica(s) still to move off it"
            )],
            progress: RemoveNodeProgress::Draining as i32,
            replicas_remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            successor_id: 0,
        },
        Removal::HandedOver { successor } => RemoveNodeResponse {
            steps: vec![format!(
                "node {node} led the meta group and handed it to node {successor}"
            )],
            progress: RemoveNodeProgress::HandedOver as i32,
            replicas_remaining: 0,
            successor_id: successor,
        },
        Removal::Removed { steps } => RemoveNodeResponse {
            steps,
            progress: RemoveNodeProgress::Removed as i32,
            replicas_remaining: 0,
            successor_id: 0,
        },
    }
}
