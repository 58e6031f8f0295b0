//! Replica changes shared by the observer and by changes made by hand: recording a replica's
//! state in the meta state, adding a Promotable (mentored or not) and moving a shard's
//! leadership, each carried out wherever the shard's leader is.

use flotilla_proto::v1::{
    ShardRef as PbShardRef, TransferLeadershipRequest, transfer_leadership_request,
};

use super::membership::{self, MembershipChange};
use super::{mentor, status};
use crate::command::MetaCommand;
use crate::error::{NodeError, NodeResult};
use crate::host::Host;
use crate::meta::{ReplicaState, ShardRecord};
use crate::network::forward::onward;
use crate::topology::ShardRef;
use crate::types::NodeId;

/// Now, in unix milliseconds (how the meta state records when things happened).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn record_of(host: &Host, shard: &ShardRef) -> NodeResult<ShardRecord> {
    host.meta_state()
        .databases
        .get(&shard.database)
        .and_then(|db| db.shards.get(shard.index))
        .filter(|r| r.group_id == shard.group)
        .cloned()
        .ok_or_else(|| NodeError::NotFound(format!("shard {shard} no longer exists")))
}

async fn set_state(
    host: &Host,
    shard: &ShardRef,
    node: NodeId,
    state: ReplicaState,
    replaces: Option<NodeId>,
    reason: &str,
) -> NodeResult<()> {
    host.propose_meta(MetaCommand::SetReplicaState {
        group: shard.group,
        node,
        state,
        replaces,
        at_ms: now_ms(),
        reason: reason.to_string(),
    })
    .await
    .map(|_| ())
}

/// Adds `node` as a Promotable: recorded first (so the node opens the group), optionally
/// mentored with a snapshot from `mentor`, then added as a learner by the shard leader.
pub async fn add_promotable(
    host: &Host,
    shard: &ShardRef,
    node: NodeId,
    mentor: Option<NodeId>,
    replaces: Option<NodeId>,
    reason: &str,
) -> NodeResult<()> {
    let record = record_of(host, shard)?;
    let addr = host
        .meta_state()
        .nodes
        .get(&node)
        .cloned()
        .ok_or_else(|| NodeError::NotFound(format!("node {node} is not registered")))?;
    // Recorded already when the learner is added again after a failed attempt.
    let recorded = record.state_of(node) == Some(ReplicaState::Promotable);
    if !recorded {
        set_state(
            host,
            shard,
            node,
            ReplicaState::Promotable,
            replaces,
            reason,
        )
        .await?;
    }
    if let Some(m) = mentor {
        // The new replica opens the group when it applies the record; give it a moment.
        let mut last = None;
        for _ in 0..20 {
            match mentor::ask(host, m, shard.group, node, &addr).await {
                Ok(sent) => {
                    tracing::info!(%shard, node, mentor = m, bytes = sent.bytes, "mentor sent the initial snapshot");
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        if let Some(e) = last {
            tracing::warn!(%shard, node, mentor = m, error = %e, "mentoring failed; the leader sends its snapshot instead");
        }
    }
    membership::change(host, &record, &MembershipChange::AddLearner(node, addr)).await
}

/// Hands a shard's leadership to `to`, at the shard's current leader.
pub async fn transfer_shard(host: &Host, shard: &ShardRef, to: NodeId) -> NodeResult<()> {
    let record = record_of(host, shard)?;
    if let Some(group) = host.group(shard.group)
        && group.is_leader()
    {
        return host.transfer_leadership(&group, to).await.map(|_| ());
    }
    let status = status::status(host, shard.index, &record).await;
    let leader_addr = status
        .leader_id
        .and_then(|leader| host.peer_addr_of(leader))
        .ok_or_else(|| NodeError::Unavailable(format!("shard {shard} has no reachable leader")))?;
    let mut client = host
        .peers()
        .admin(&leader_addr)
        .map_err(|e| NodeError::Internal(e.to_string()))?;
    let req = TransferLeadershipRequest {
        group: Some(transfer_leadership_request::Group::Shard(PbShardRef {
            database: shard.database.clone(),
            shard: shard.index as u32,
        })),
        to_node_id: to,
    };
    client
        .transfer_leadership(onward(req, 0, host.config.request_timeout))
        .await
        .map(|_| ())
        .map_err(|s| NodeError::Unavailable(s.message().to_string()))
}
