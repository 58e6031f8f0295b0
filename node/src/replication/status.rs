//! The status of a shard's replicas seen from anywhere in the cluster: best from the shard
//! leader, asked over the peer port when it is elsewhere.

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_model::{ReplicaStatus, ShardStatus};
use flotilla_proto::peer::{LedShardsRequest, ShardStatusRequest};
use openraft::{Instant, ServerState};
use tonic::{Request, Status};

use crate::host::{GroupHandle, Host};
use crate::meta::{ReplicaState, ShardRecord};
use crate::network::beats::Stopped;
use crate::types::{GroupId, NodeId};

/// Why group `gid` is stopped on node `node`: known here for this node, and from its node
/// heartbeats for the others.
fn stopped_on(host: &Host, node: NodeId, gid: GroupId) -> Option<Stopped> {
    if node == host.id {
        let reason = host.stopped_groups().remove(&gid)?;
        let for_good = host.broken_groups().contains(&gid);
        return Some(Stopped { reason, for_good });
    }
    host.beats().stopped(node, gid)
}

/// How a group's members look from this node (complete when this node leads it). Replica
/// states recorded in the meta state (Promotable, Rehab) take precedence over the Raft view.
pub fn local_status(
    host: &Host,
    gid: GroupId,
    group: &GroupHandle,
    shard: u32,
    record: Option<&ShardRecord>,
) -> ShardStatus {
    let m = group.metrics();
    let membership = m.membership_config.membership().clone();
    let last = m.last_log_index.unwrap_or(0);
    let is_leader = m.state == ServerState::Leader;
    let stale_after = Duration::from_millis(host.config.election_timeout * 3);
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let mut replicas = Vec::new();
    for (id, node) in membership.nodes() {
        let matched = if *id == host.id {
            last
        } else {
            m.replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .map(|l| l.index)
                .unwrap_or(0)
        };
        // A hibernating group sends no heartbeats: a replica holding the whole log on a node
        // that is heard from is as alive as one that answered a heartbeat.
        let alive = *id == host.id
            || m.heartbeat
                .as_ref()
                .and_then(|h| h.get(id).cloned().flatten())
                .is_some_and(|t| t.elapsed() < stale_after)
            || (matched == last && host.beats().heard_within(*id, stale_after));
        let recorded = record.and_then(|r| r.state_of(*id));
        let stopped = stopped_on(host, *id, gid);
        let state = if !voters.contains(id) {
            ReplicaState::Promotable
        } else if recorded == Some(ReplicaState::Rehab) || (is_leader && !alive) {
            ReplicaState::Rehab
        } else {
            ReplicaState::Member
        };
        replicas.push(ReplicaStatus {
            node_id: *id,
            client_addr: node.client_addr.clone(),
            state,
            lag: if is_leader {
                last.saturating_sub(matched)
            } else {
                0
            },
            matched_index: if is_leader { matched } else { 0 },
            snapshot_bytes_sent: if is_leader {
                host.peers().snapshot_bytes_sent(gid, *id)
            } else {
                0
            },
            stopped: stopped.as_ref().map(|s| s.reason.clone()),
            broken: stopped.is_some_and(|s| s.for_good),
        });
    }
    ShardStatus {
        shard,
        group_id: gid,
        leader_id: m.current_leader,
        term: m.current_term,
        commit_index: m.local_committed.as_ref().map(|l| l.index).unwrap_or(0),
        replicas,
        replacement: record.as_ref().and_then(|r| r.replacement),
    }
}

/// The status of every data group this node leads.
pub fn led_here(host: &Host) -> Vec<ShardStatus> {
    let state = host.meta_state();
    host.groups()
        .into_iter()
        .filter(|(gid, group)| *gid != crate::types::META_GROUP && group.is_leader())
        .map(|(gid, group)| {
            let found = state.shard_by_group(gid);
            let index = found.map(|(_, i)| i as u32).unwrap_or(0);
            let record = found.map(|(db, i)| &db.shards[i]);
            local_status(host, gid, &group, index, record)
        })
        .collect()
}

/// The status of every data group led anywhere, one request per live node: what the meta
/// leader follows replication progress by. Shards without a reachable leader are missing.
pub async fn led_everywhere(host: &Host) -> Vec<ShardStatus> {
    let live = host.live_nodes();
    let asks = live.into_iter().map(|node| async move {
        if node == host.id {
            return led_here(host);
        }
        let Some(addr) = host.peer_addr_of(node) else {
            return Vec::new();
        };
        let Ok(mut client) = host.peers().peer(&addr) else {
            return Vec::new();
        };
        let mut req = Request::new(LedShardsRequest {});
        req.set_timeout(Duration::from_secs(3));
        match client.led_shards(req).await {
            Ok(r) => r
                .into_inner()
                .shards
                .into_iter()
                .filter_map(|s| ShardStatus::try_from(s).ok())
                .collect(),
            Err(s) => {
                tracing::debug!(node, error = %s, "asking which shards a node leads");
                Vec::new()
            }
        }
    });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn remote_status(host: &Host, addr: &str, gid: GroupId) -> Result<ShardStatus, Status> {
    let mut client = host.peers().peer(addr)?;
    let mut req = Request::new(ShardStatusRequest { group_id: gid });
    req.set_timeout(Duration::from_secs(3));
    client
        .shard_status(req)
        .await?
        .into_inner()
        .status
        .ok_or_else(|| Status::internal("a shard status answer without the status"))
        .and_then(|s| ShardStatus::try_from(s).map_err(|e| Status::internal(e.to_string())))
}

/// The best view of a shard: from its leader when reachable.
pub async fn status(host: &Host, index: usize, record: &ShardRecord) -> ShardStatus {
    let gid = record.group_id;
    let mut best: Option<ShardStatus> = None;
    if let Some(group) = host.group(gid) {
        let local = local_status(host, gid, &group, index as u32, Some(record));
        if local.leader_id == Some(host.id) {
            return local;
        }
        best = Some(local);
    } else {
        for replica in &record.replicas {
            let Some(addr) = host.peer_addr_of(*replica) else {
                continue;
            };
            if let Ok(s) = remote_status(host, &addr, gid).await {
                if s.leader_id == Some(*replica) {
                    return s;
                }
                best = Some(s);
                break;
            }
        }
    }
    if let Some(leader) = best.as_ref().and_then(|b| b.leader_id)
        && leader != host.id
        && let Some(addr) = host.peer_addr_of(leader)
        && let Ok(s) = remote_status(host, &addr, gid).await
    {
        return s;
    }
    best.unwrap_or(ShardStatus {
        shard: index as u32,
        group_id: gid,
        leader_id: None,
        term: 0,
        commit_index: 0,
        replicas: record
            .replicas
            .iter()
            .map(|id| {
                let stopped = stopped_on(host, *id, gid);
                ReplicaStatus {
                    node_id: *id,
                    client_addr: host.client_addr_of(*id).unwrap_or_default(),
                    state: ReplicaState::Rehab,
                    lag: 0,
                    matched_index: 0,
                    snapshot_bytes_sent: 0,
                    stopped: stopped.as_ref().map(|s| s.reason.clone()),
                    broken: stopped.is_some_and(|s| s.for_good),
                }
            })
            .collect(),
        replacement: record.replacement,
    })
}
