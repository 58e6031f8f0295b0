//! A transaction's calls on one shard (propose a [`TxnCommand`], read a document as
//! transactions see it, read a record, validate reads, scan for a query, look for intents),
//! served by the shard's leader: here
//! when this node leads it, otherwise over the peer port (`TxnShards`) to the leader, found
//! from this node's view of the group and the shard's replicas, retried across an election
//! until the request timeout.

use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::v1::{ShardCallRequest, ShardCallResponse};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tonic::Code;

use crate::codec::{decode, encode};
use crate::command::txn::{Decision, TxnCommand, TxnId, TxnOutcome};
use crate::command::{Command, Response};
use crate::error::{NodeError, NodeResult};
use crate::host::{Host, ReadConsistency};
use crate::network::forward::{is_lost_in_flight, is_unreachable};
use crate::store::StoredDoc;
use crate::types::NodeId;

/// The first pause before a proposal a backup fence refused is made again (growing to five
/// times this): a fence is up for as long as a backup takes to open its reads.
const FENCE_PAUSE: Duration = Duration::from_millis(20);

/// A call on one shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShardCall {
    /// Proposes the command to the shard's Raft log and answers what applying it answered.
    Propose(TxnCommand),
    /// A document as a transaction sees it (linearizable; an intent met is resolved).
    Read { collection: String, id: String },
    /// The decision recorded for a transaction on this (its primary) shard.
    Record { txn: TxnId },
    /// True when every document still has the version given (as read: 0 = absent).
    Validate { keys: Vec<(String, String, u64)> },
    /// The documents of a collection a selector matches, as reads see them, and the
    /// undecided writes of transactions other than `me` that would change that
    /// (linearizable).
    Scan {
        collection: String,
        selector: String,
        me: Option<TxnId>,
    },
    /// True when the shard holds an intent of the transaction (linearizable).
    Holds { txn: TxnId },
}

impl ShardCall {
    /// True when doing the call twice does what doing it once does: a call whose outcome is
    /// unknown may then be sent again.
    fn repeatable(&self) -> bool {
        !matches!(self, ShardCall::Propose(TxnCommand::CommitOne { .. }))
    }
}

/// What a [`ShardCall`] answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShardAnswer {
    Applied(TxnOutcome),
    Doc(Option<StoredDoc>),
    Record(Option<Decision>),
    Valid(bool),
    Scan(super::query::ScanAnswer),
    Holds(bool),
}

/// Calls `call` on shard `shard` of `database` at its leader, wherever that is, retrying
/// until the request timeout. A proposal a backup fence refuses (`TxnOutcome::Fenced`) is
/// proposed again after a short pause until the fence is lifted or the time is up (then
/// `Unavailable`, and nothing of it applied): callers never see that answer.
pub async fn call_shard(
    host: &Arc<Host>,
    database: &str,
    shard: u32,
    call: ShardCall,
) -> NodeResult<ShardAnswer> {
    call_shard_within(host, database, shard, call, host.config.request_timeout).await
}

/// [`call_shard`], giving up after `within` (a call that waits for nothing but the answer).
pub async fn call_shard_within(
    host: &Arc<Host>,
    database: &str,
    shard: u32,
    call: ShardCall,
    within: Duration,
) -> NodeResult<ShardAnswer> {
    let deadline = Instant::now() + within;
    let mut hint: Option<NodeId> = None;
    let mut uncertain = false;
    let mut last = NodeError::Unavailable(format!("no leader known for shard {shard}"));
    let mut round = 0u32;
    let mut fenced_rounds = 0u32;
    while Instant::now() < deadline {
        let meta = host.meta_state();
        let db = meta
            .databases
            .get(database)
            .ok_or_else(|| NodeError::database_not_found(database))?;
        let record = db.shards.get(shard as usize).ok_or_else(|| {
            NodeError::InvalidArgument(format!("database {database} has no shard {shard}"))
        })?;
        let gid = record.group_id;
        // The leader first (as heard last, or as this node's replica knows it), then each
        // replica, which names the leader it knows.
        let mut targets: Vec<NodeId> = Vec::new();
        if let Some(h) = hint.take() {
            targets.push(h);
        }
        if let Some(group) = host.group(gid)
            && let Some((leader, _)) = host.leader_of(&group)
        {
            targets.push(leader);
        }
        targets.extend(record.replicas.iter().copied());
        let mut tried = Vec::new();
        let mut fenced = None;
        for target in targets {
            if tried.contains(&target) {
                continue;
            }
            tried.push(target);
            let left = deadline.saturating_duration_since(Instant::now());
            let result = if target == host.id && matches!(call, ShardCall::Propose(_)) {
                // A proposal is bounded by the write path (cut short, its outcome would be
                // unknown).
                serve_here(host, gid, call.clone()).await
            } else if target == host.id {
                match tokio::time::timeout(left, serve_here(host, gid, call.clone())).await {
                    Ok(result) => result,
                    Err(_) => Err(NodeError::DeadlineExceeded(format!(
                        "shard {shard} did not answer within {within:?}"
                    ))),
                }
            } else {
                call_peer(host, target, database, shard, &call, within).await
            };
            match result {
                // Refused whole by a backup fence: proposed again after a pause (below).
                Ok(ShardAnswer::Applied(TxnOutcome::Fenced { cut })) => {
                    fenced = Some(cut);
                    break;
                }
                Ok(answer) => return Ok(answer),
                Err(NodeError::NotLeader { leader }) => {
                    if let Some((id, _)) = leader
                        && !tried.contains(&id)
                    {
                        hint = Some(id);
                        break;
                    }
                }
                Err(NodeError::OutcomeUnknown(m)) if !call.repeatable() => {
                    return Err(NodeError::OutcomeUnknown(m));
                }
                Err(NodeError::OutcomeUnknown(m)) => {
                    uncertain = true;
                    last = NodeError::OutcomeUnknown(m);
                }
                Err(e @ (NodeError::Unavailable(_) | NodeError::DeadlineExceeded(_))) => last = e,
                Err(e) => return Err(e),
            }
        }
        if let Some(cut) = fenced {
            fenced_rounds += 1;
            last = NodeError::Unavailable(format!(
                "shard {shard} of {database} is fenced by backup cut {cut:016x} (a backup is \
                 opening its reads); try again"
            ));
            let pause = FENCE_PAUSE * fenced_rounds.min(5);
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            continue;
        }
        if hint.is_none() {
            round += 1;
            // An election takes about an election timeout; look again a few times meanwhile.
            let pause = Duration::from_millis((20 * u64::from(round)).min(200));
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }
    if uncertain && !matches!(last, NodeError::OutcomeUnknown(_)) {
        return Err(NodeError::OutcomeUnknown(last.to_string()));
    }
    Err(last)
}

/// Serves `call` on group `gid` if this node leads it.
pub async fn serve_here(
    host: &Arc<Host>,
    gid: crate::types::GroupId,
    call: ShardCall,
) -> NodeResult<ShardAnswer> {
    let Some(group) = host.group(gid) else {
        return Err(NodeError::NotLeader { leader: None });
    };
    match call {
        ShardCall::Propose(cmd) => match host.write(&group, gid, Command::Txn(cmd)).await? {
            (Response::Txn(outcome), _) => Ok(ShardAnswer::Applied(outcome)),
            (other, _) => Err(NodeError::Internal(format!(
                "unexpected response {other:?}"
            ))),
        },
        ShardCall::Read { collection, id } => {
            host.read_barrier(&group, ReadConsistency::Linearizable)
                .await?;
            let doc = super::resolve::visible(host, &group, &collection, &id).await?;
            Ok(ShardAnswer::Doc(doc))
        }
        ShardCall::Record { txn } => {
            host.read_barrier(&group, ReadConsistency::Linearizable)
                .await?;
            let read = group.sm.begin_read()?;
            Ok(ShardAnswer::Record(crate::store::txn::record(
                &read, gid, txn,
            )?))
        }
        ShardCall::Validate { keys } => {
            host.read_barrier(&group, ReadConsistency::Linearizable)
                .await?;
            for (collection, id, version) in keys {
                let doc = super::resolve::visible(host, &group, &collection, &id).await?;
                if doc.map_or(0, |d| d.version) != version {
                    return Ok(ShardAnswer::Valid(false));
                }
            }
            Ok(ShardAnswer::Valid(true))
        }
        ShardCall::Scan {
            collection,
            selector,
            me,
        } => {
            host.read_barrier(&group, ReadConsistency::Linearizable)
                .await?;
            let answer = super::query::scan(host, &group, &collection, &selector, me).await?;
            Ok(ShardAnswer::Scan(answer))
        }
        ShardCall::Holds { txn } => {
            host.read_barrier(&group, ReadConsistency::Linearizable)
                .await?;
            let read = group.sm.begin_read()?;
            let holds = crate::store::txn::holds_intents(&read, gid, txn)?;
            Ok(ShardAnswer::Holds(holds))
        }
    }
}

/// Sends `call` to node `target`'s peer port.
async fn call_peer(
    host: &Arc<Host>,
    target: NodeId,
    database: &str,
    shard: u32,
    call: &ShardCall,
    timeout: Duration,
) -> NodeResult<ShardAnswer> {
    let Some(addr) = host.peer_addr_of(target) else {
        return Err(NodeError::Unavailable(format!(
            "node {target} has no address"
        )));
    };
    let mut client = host
        .peers()
        .txn_shards(&addr)
        .map_err(|e| NodeError::Unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(ShardCallRequest {
        database: database.to_string(),
        shard,
        call: encode(call).map_err(|e| NodeError::Internal(e.to_string()))?,
    });
    request.set_timeout(timeout);
    match client.call(request).await {
        Ok(r) => {
            let r = r.into_inner();
            if let Some(leader) = r.leader {
                let leader = (leader != 0).then(|| (leader, String::new()));
                return Err(NodeError::NotLeader { leader });
            }
            decode(&r.answer).map_err(|e| NodeError::Internal(e.to_string()))
        }
        Err(s) if is_unreachable(&s) => Err(NodeError::Unavailable(s.message().to_string())),
        Err(s) if is_lost_in_flight(&s) => Err(NodeError::OutcomeUnknown(format!(
            "the call to node {target} was lost: {}",
            s.message()
        ))),
        Err(s) => Err(from_status(s)),
    }
}

/// A node's answer back to the error it was made from, as far as the caller acts on it.
fn from_status(s: tonic::Status) -> NodeError {
    let message = s.message().to_string();
    match s.code() {
        Code::Unavailable => NodeError::Unavailable(message),
        Code::DeadlineExceeded => NodeError::DeadlineExceeded(message),
        Code::Aborted => NodeError::OutcomeUnknown(message),
        Code::NotFound => NodeError::NotFound(message),
        Code::InvalidArgument => NodeError::InvalidArgument(message),
        _ => NodeError::Internal(message),
    }
}

/// Serves a `TxnShards` call that arrived on the peer port.
pub async fn serve_peer_call(
    host: &Arc<Host>,
    request: ShardCallRequest,
) -> NodeResult<ShardCallResponse> {
    let call: ShardCall =
        decode(&request.call).map_err(|e| NodeError::InvalidArgument(e.to_string()))?;
    let meta = host.meta_state();
    let db = meta
        .databases
        .get(&request.database)
        .ok_or_else(|| NodeError::database_not_found(&request.database))?;
    let gid = db
        .shards
        .get(request.shard as usize)
        .ok_or_else(|| NodeError::InvalidArgument(format!("no shard {}", request.shard)))?
        .group_id;
    match serve_here(host, gid, call).await {
        Ok(answer) => Ok(ShardCallResponse {
            leader: None,
            answer: encode(&answer).map_err(|e| NodeError::Internal(e.to_string()))?,
        }),
        Err(NodeError::NotLeader { leader }) => Ok(ShardCallResponse {
            leader: Some(leader.map_or(0, |(id, _)| id)),
            answer: Vec::new(),
        }),
        Err(e) => Err(e),
    }
}
