//! Shard groups seen from anywhere in the cluster: their status (best from the shard leader) and
//! changes of their Raft membership, carried out by whichever node leads the shard.

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_proto::v1::{
    NodeInfo, ReplicaMove as PbReplicaMove, ReplicaState as PbReplicaState, ReplicaStatus,
    ShardMembershipRequest, ShardStatus, ShardStatusRequest, shard_membership_request,
};
use openraft::{ChangeMembers, Instant, ServerState};
use tonic::{Request, Status};

use crate::error::{NodeError, NodeResult};
use crate::grpc::forward::onward;
use crate::host::{GroupHandle, Host};
use crate::meta::{ReplicaState, ShardRecord};
use crate::types::{GroupId, NodeAddr, NodeId};

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
        let state = if !voters.contains(id) {
            PbReplicaState::Promotable
        } else if matches!(recorded, Some(ReplicaState::Rehab { .. })) || (is_leader && !alive) {
            PbReplicaState::Rehab
        } else {
            PbReplicaState::Member
        };
        replicas.push(ReplicaStatus {
            node_id: *id,
            client_addr: node.client_addr.clone(),
            state: state as i32,
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
        });
    }
    ShardStatus {
        shard,
        group_id: gid,
        leader_id: m.current_leader.unwrap_or(0),
        term: m.current_term,
        commit_index: m.local_committed.as_ref().map(|l| l.index).unwrap_or(0),
        replicas,
        replacement: record
            .as_ref()
            .and_then(|r| r.replacement)
            .map(|m| PbReplicaMove {
                old_node_id: m.old,
                new_node_id: m.new,
            }),
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
        let Some(addr) = host.client_addr_of(node) else {
            return Vec::new();
        };
        let Ok(mut client) = host.fwd.admin(&addr) else {
            return Vec::new();
        };
        let mut req = Request::new(flotilla_proto::v1::LedShardsRequest {});
        req.set_timeout(Duration::from_secs(3));
        match client.led_shards(req).await {
            Ok(r) => r.into_inner().shards,
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
    let mut client = host.fwd.admin(addr)?;
    let mut req = Request::new(ShardStatusRequest { group_id: gid });
    req.set_timeout(Duration::from_secs(3));
    Ok(client.shard_status(req).await?.into_inner())
}

/// The best view of a shard: from its leader when reachable.
pub async fn status(host: &Host, index: usize, record: &ShardRecord) -> ShardStatus {
    let gid = record.group_id;
    let mut best: Option<ShardStatus> = None;
    if let Some(group) = host.group(gid) {
        let local = local_status(host, gid, &group, index as u32, Some(record));
        if local.leader_id == host.id {
            return local;
        }
        best = Some(local);
    } else {
        for replica in &record.replicas {
            let Some(addr) = host.client_addr_of(*replica) else {
                continue;
            };
            if let Ok(s) = remote_status(host, &addr, gid).await {
                if s.leader_id == *replica {
                    return s;
                }
                best = Some(s);
                break;
            }
        }
    }
    if let Some(b) = &best
        && b.leader_id != 0
        && b.leader_id != host.id
        && let Some(addr) = host.client_addr_of(b.leader_id)
        && let Ok(s) = remote_status(host, &addr, gid).await
    {
        return s;
    }
    best.unwrap_or(ShardStatus {
        shard: index as u32,
        group_id: gid,
        leader_id: 0,
        term: 0,
        commit_index: 0,
        replicas: record
            .replicas
            .iter()
            .map(|id| ReplicaStatus {
                node_id: *id,
                client_addr: host.client_addr_of(*id).unwrap_or_default(),
                state: PbReplicaState::Rehab as i32,
                lag: 0,
                matched_index: 0,
                snapshot_bytes_sent: 0,
            })
            .collect(),
        replacement: record.replacement.map(|m| PbReplicaMove {
            old_node_id: m.old,
            new_node_id: m.new,
        }),
    })
}

/// A change of a shard group's Raft membership.
#[derive(Debug, Clone)]
pub enum MembershipChange {
    /// Add a learner (a Promotable) that the leader catches up.
    AddLearner(NodeId, NodeAddr),
    /// Make a caught-up learner a voter.
    Promote(NodeId),
    /// Take a replica out of the group.
    Remove(NodeId),
}

impl MembershipChange {
    pub fn to_proto(&self, group_id: GroupId) -> ShardMembershipRequest {
        let change = match self {
            MembershipChange::AddLearner(id, addr) => {
                shard_membership_request::Change::AddLearner(NodeInfo {
                    id: *id,
                    name: addr.name.clone(),
                    client_addr: addr.client_addr.clone(),
                    peer_addr: addr.peer_addr.clone(),
                })
            }
            MembershipChange::Promote(id) => shard_membership_request::Change::Promote(*id),
            MembershipChange::Remove(id) => shard_membership_request::Change::Remove(*id),
        };
        ShardMembershipRequest {
            group_id,
            change: Some(change),
        }
    }

    pub fn from_proto(req: &ShardMembershipRequest) -> NodeResult<MembershipChange> {
        match &req.change {
            Some(shard_membership_request::Change::AddLearner(n)) => {
                Ok(MembershipChange::AddLearner(
                    n.id,
                    NodeAddr {
                        name: n.name.clone(),
                        client_addr: n.client_addr.clone(),
                        peer_addr: n.peer_addr.clone(),
                    },
                ))
            }
            Some(shard_membership_request::Change::Promote(id)) => {
                Ok(MembershipChange::Promote(*id))
            }
            Some(shard_membership_request::Change::Remove(id)) => Ok(MembershipChange::Remove(*id)),
            None => Err(NodeError::InvalidArgument(
                "membership change without a change".into(),
            )),
        }
    }
}

/// Applies `change` to a group led by this node; `NotLeader` otherwise.
pub async fn change_here(
    host: &Host,
    group: &GroupHandle,
    change: &MembershipChange,
) -> NodeResult<()> {
    host.check_leading(group).await?;
    let membership = group.metrics().membership_config.membership().clone();
    let raft = &group.raft;
    let deadline = host.config.request_timeout;
    let result = match change {
        MembershipChange::AddLearner(id, addr) => {
            if membership.get_node(id).is_some() {
                return Ok(());
            }
            tokio::time::timeout(deadline, raft.add_learner(*id, addr.clone(), false)).await
        }
        MembershipChange::Promote(id) => {
            if membership.voter_ids().any(|v| v == *id) {
                return Ok(());
            }
            tokio::time::timeout(
                deadline,
                raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([*id])), true),
            )
            .await
        }
        MembershipChange::Remove(id) => {
            if membership.get_node(id).is_none() {
                return Ok(());
            }
            if membership.voter_ids().any(|v| v == *id) {
                let r = tokio::time::timeout(
                    deadline,
                    raft.change_membership(
                        ChangeMembers::RemoveVoters(BTreeSet::from([*id])),
                        false,
                    ),
                )
                .await;
                if !matches!(r, Ok(Ok(_))) {
                    return r
                        .map_err(|_| NodeError::DeadlineExceeded("membership change".into()))?
                        .map(|_| ())
                        .map_err(|e| host.map_write_error(e));
                }
            }
            tokio::time::timeout(
                deadline,
                raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([*id])), false),
            )
            .await
        }
    };
    result
        .map_err(|_| NodeError::DeadlineExceeded("membership change".into()))?
        .map(|_| ())
        .map_err(|e| host.map_write_error(e))
}

/// Applies `change` at the shard's leader, wherever it is.
pub async fn change(
    host: &Host,
    record: &ShardRecord,
    change: &MembershipChange,
) -> NodeResult<()> {
    let gid = record.group_id;
    let mut targets: Vec<String> = Vec::new();
    if let Some(group) = host.group(gid) {
        match change_here(host, &group, change).await {
            Err(NodeError::NotLeader { leader }) => {
                if let Some((_, addr)) = leader {
                    targets.push(addr);
                }
            }
            other => return other,
        }
    }
    for r in &record.replicas {
        if *r != host.id
            && let Some(a) = host.client_addr_of(*r)
            && !targets.contains(&a)
        {
            targets.push(a);
        }
    }
    let mut last = NodeError::Unavailable(format!("no leader of raft group {gid} reachable"));
    for addr in targets {
        let mut client = host
            .fwd
            .admin(&addr)
            .map_err(|s| NodeError::Internal(s.message().to_string()))?;
        match client
            .shard_membership(onward(change.to_proto(gid), 0, host.config.request_timeout))
            .await
        {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == tonic::Code::Unavailable => {
                last = NodeError::Unavailable(s.message().to_string())
            }
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                return Err(NodeError::FailedPrecondition(s.message().to_string()));
            }
            Err(s) => last = NodeError::Unavailable(s.message().to_string()),
        }
    }
    Err(last)
}
