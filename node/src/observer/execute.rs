//! Carrying out the topology core's actions: membership changes at the group's leader (wherever
//! it is), then the record in the meta state (the commands `topology::meta_commands` gives, the
//! same the simulations record with), which also logs the transition as an event.

use std::collections::BTreeSet;

use openraft::ChangeMembers;

use crate::error::{NodeError, NodeResult};
use crate::host::Host;
use crate::replication::changes::{add_promotable, now_ms, record_of, transfer_shard};
use crate::replication::membership::{self, MembershipChange};
use crate::topology::{Action, Change, meta_commands};
use crate::types::{NodeAddr, NodeId};

async fn change_meta(host: &Host, change: ChangeMembers<NodeId, NodeAddr>) -> NodeResult<()> {
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

/// Records a carried-out action in the meta state.
async fn record(host: &Host, action: &Action) -> NodeResult<()> {
    for cmd in meta_commands(action, now_ms()) {
        host.propose_meta(cmd).await?;
    }
    Ok(())
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
            let shard_record = record_of(host, shard)?;
            membership::change(host, &shard_record, &MembershipChange::Promote(*node)).await?;
            record(host, action).await
        }
        Change::MarkRehab { .. } | Change::MarkMember { .. } => record(host, action).await,
        Change::RemoveReplica { shard, node } => {
            let shard_record = record_of(host, shard)?;
            membership::change(host, &shard_record, &MembershipChange::Remove(*node)).await?;
            record(host, action).await
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
