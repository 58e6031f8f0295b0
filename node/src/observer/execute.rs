//! Carrying out the topology core's actions: membership changes at the group's leader (wherever
//! it is), then the record in the meta state, which also logs the transition as an event.

use std::collections::BTreeSet;

use flotilla_proto::v1::{
    ShardRef as PbShardRef, TransferLeadershipRequest, transfer_leadership_request,
};
use openraft::ChangeMembers;

use crate::command::MetaCommand;
use crate::error::{NodeError, NodeResult};
use crate::grpc::forward::onward;
use crate::host::Host;
use crate::meta::{ReplicaState, ShardRecord};
use crate::shards::{self, MembershipChange};
use crate::topology::{Action, Change, ShardRef};
use crate::types::NodeId;

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn record_of(host: &Host, shard: &ShardRef) -> NodeResult<ShardRecord> {
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
            match crate::mentor::ask(host, m, shard.group, node, &addr).await {
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
    shards::change(host, &record, &MembershipChange::AddLearner(node, addr)).await
}

/// Hands a shard's leadership to `to`, at the shard's current leader.
async fn transfer_shard(host: &Host, shard: &ShardRef, to: NodeId) -> NodeResult<()> {
    let record = record_of(host, shard)?;
    if let Some(group) = host.group(shard.group)
        && group.is_leader()
    {
        return host.transfer_leadership(&group, to).await.map(|_| ());
    }
    let status = shards::status(host, shard.index, &record).await;
    let leader_addr = host
        .client_addr_of(status.leader_id)
        .ok_or_else(|| NodeError::Unavailable(format!("shard {shard} has no reachable leader")))?;
    let mut client = host
        .fwd
        .admin(&leader_addr)
        .map_err(|s| NodeError::Unavailable(s.message().to_string()))?;
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

async fn change_meta(
    host: &Host,
    change: ChangeMembers<NodeId, crate::types::NodeAddr>,
) -> NodeResult<()> {
    let meta = host.meta();
    tokio::time::timeout(
        host.config.request_timeout,
        meta.raft.change_membership(change, true),
    )
    .await
    .map_err(|_| NodeError::DeadlineExceeded("meta membership change".into()))?
    .map(|_| ())
    .map_err(|e| host.map_write_error(e))
}

/// Carries out one action.
pub async fn execute(host: &Host, action: &Action) -> NodeResult<()> {
    let reason = action.reason.as_str();
    match &action.change {
        Change::AddPromotable {
            shard,
            node,
            mentor,
            replaces,
        } => add_promotable(host, shard, *node, *mentor, *replaces, reason).await,
        Change::Promote { shard, node } => {
            let record = record_of(host, shard)?;
            shards::change(host, &record, &MembershipChange::Promote(*node)).await?;
            set_state(host, shard, *node, ReplicaState::Member, None, reason).await
        }
        Change::MarkRehab { shard, node } => {
            let state = ReplicaState::Rehab { since_ms: now_ms() };
            set_state(host, shard, *node, state, None, reason).await
        }
        Change::MarkMember { shard, node } => {
            set_state(host, shard, *node, ReplicaState::Member, None, reason).await
        }
        Change::RemoveReplica { shard, node } => {
            let record = record_of(host, shard)?;
            shards::change(host, &record, &MembershipChange::Remove(*node)).await?;
            host.propose_meta(MetaCommand::RemoveReplica {
                group: shard.group,
                node: *node,
                keep_files: true,
                at_ms: now_ms(),
                reason: reason.to_string(),
            })
            .await
            .map(|_| ())
        }
        Change::TransferLeadership { shard, to } => transfer_shard(host, shard, *to).await,
        Change::AddMetaVoter { node } => {
            change_meta(host, ChangeMembers::AddVoterIds(BTreeSet::from([*node]))).await
        }
        Change::RemoveMetaVoter { node } => {
            change_meta(host, ChangeMembers::RemoveVoters(BTreeSet::from([*node]))).await
        }
        Change::TransferMetaLeadership { to } => host
            .transfer_leadership(&host.meta(), *to)
            .await
            .map(|_| ()),
        Change::RetireNode { node } => host.remove_node(*node).await.map(|_| ()),
    }
}
