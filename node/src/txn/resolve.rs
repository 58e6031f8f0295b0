//! Meeting an intent: whoever meets one (a read at any consistency, a plain write, a
//! transaction, the sweep of a shard leader) finds its transaction's decision in the record on
//! the primary shard. A decided transaction's intents are resolved by that decision; an
//! undecided one past its timeout is aborted by writing the abort to its record first (the
//! record's first decision wins, so a coordinator committing at the same moment and the
//! recovery cannot both win); an undecided one within its timeout is left alone: a read sees
//! the document as it was before the transaction (the decision comes later than the read), a
//! write waits for it.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::time::Instant;

use super::shards::{ShardAnswer, ShardCall, call_shard};
use crate::command::txn::{Decision, Intent, TxnCommand, TxnId, TxnMeta, TxnOutcome};
use crate::command::{Command, DataCommand, Rejection, Response};
use crate::error::{NodeError, NodeResult, Refusal};
use crate::host::{GroupHandle, Host};
use crate::store::StoredDoc;
use crate::types::GroupId;
use flotilla_proto::v1::ErrorReason;

/// Milliseconds since the Unix epoch by this node's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The database and shard number of group `gid`.
pub fn locate(host: &Host, gid: GroupId) -> NodeResult<(String, u32)> {
    let meta = host.meta_state();
    for (name, db) in &meta.databases {
        if let Some(shard) = db.shards.iter().position(|s| s.group_id == gid) {
            return Ok((name.clone(), shard as u32));
        }
    }
    Err(NodeError::Unavailable(format!(
        "group {gid} belongs to no database"
    )))
}

/// The decision of transaction `holder`, recovering it when its coordinator let it outlive its
/// timeout (the abort is written to its record). `None`: undecided and within its timeout.
pub fn decision_of<'a>(
    host: &'a Arc<Host>,
    database: &'a str,
    holder: TxnMeta,
) -> BoxFuture<'a, NodeResult<Option<Decision>>> {
    async move {
        let record = call_shard(
            host,
            database,
            holder.primary_shard,
            ShardCall::Record { txn: holder.id },
        )
        .await?;
        match record {
            ShardAnswer::Record(Some(d)) => Ok(Some(d)),
            ShardAnswer::Record(None) if holder.expired(now_ms()) => {
                let decide = ShardCall::Propose(TxnCommand::Decide {
                    txn: holder.id,
                    commit: false,
                });
                match call_shard(host, database, holder.primary_shard, decide).await? {
                    ShardAnswer::Applied(TxnOutcome::Decided(d)) => {
                        host.metrics.txn.recovered(d == Decision::Committed);
                        tracing::info!(txn = %format!("{:032x}", holder.id), decision = ?d, "recovered a transaction whose coordinator let it expire");
                        Ok(Some(d))
                    }
                    other => Err(unexpected(&other)),
                }
            }
            ShardAnswer::Record(None) => Ok(None),
            other => Err(unexpected(&other)),
        }
    }
    .boxed()
}

fn unexpected(answer: &ShardAnswer) -> NodeError {
    NodeError::Internal(format!("unexpected shard answer {answer:?}"))
}

/// Resolves the intents of `holder` on `shard` by `decision`.
pub async fn resolve(
    host: &Arc<Host>,
    database: &str,
    shard: u32,
    holder: TxnMeta,
    decision: Decision,
) -> NodeResult<()> {
    resolve_at(host, database, shard, holder, decision, None).await
}

/// [`resolve`], with the transaction's decision time when the caller knows it (its
/// coordinator): the writes then take it as their commit time (see `TxnCommand::At`).
pub async fn resolve_at(
    host: &Arc<Host>,
    database: &str,
    shard: u32,
    holder: TxnMeta,
    decision: Decision,
    decided_ms: Option<u64>,
) -> NodeResult<()> {
    let step = TxnCommand::Resolve {
        txn: holder.id,
        commit: decision == Decision::Committed,
    };
    let call = ShardCall::Propose(match decided_ms {
        Some(at_ms) => TxnCommand::At {
            at_ms,
            step: Box::new(step),
        },
        None => step,
    });
    call_shard(host, database, shard, call).await.map(|_| ())
}

/// [`resolve`] in the background (a reader does not wait for it).
fn resolve_later(host: &Arc<Host>, database: String, shard: u32, holder: TxnMeta, d: Decision) {
    let host = host.clone();
    tokio::spawn(async move {
        if let Err(e) = resolve(&host, &database, shard, holder, d).await {
            tracing::debug!(error = %e, "resolving an intent met by a read failed; the next one tries again");
        }
    });
}

/// Longest a read that resolved a committed intent waits for this replica to apply the
/// resolution before it is refused (another replica serves it).
const RESOLVED_WAIT: Duration = Duration::from_secs(2);

/// A document of `group` as this replica stores it once it has applied the resolution of
/// transaction `txn`'s intent on it (committed at the shard's leader by the caller). The read
/// then answers the document's real revision, past the resolution: a session that sees the
/// transaction's write raises its floor past it, so no replica that serves the session later
/// still holds the intent (one that does may no longer find the record, forgotten once every
/// intent was resolved, and would show the document as it was before the transaction).
async fn once_resolved_here(
    group: &GroupHandle,
    collection: &str,
    id: &str,
    txn: TxnId,
) -> NodeResult<Option<StoredDoc>> {
    let state = group.sm.state();
    let mut applied = state.subscribe();
    let deadline = Instant::now() + RESOLVED_WAIT;
    loop {
        let (doc, intent) = {
            let read = group.sm.begin_read()?;
            crate::store::txn::doc_and_intent(&read, state.gid, collection, id)?
        };
        if intent.is_none_or(|i| i.txn.id != txn) {
            return Ok(doc);
        }
        match tokio::time::timeout_at(deadline, applied.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(NodeError::Unavailable("raft group stopped".into())),
            Err(_) => {
                return Err(NodeError::refused(
                    Refusal::Unavailable,
                    ErrorReason::ReplicaBehind,
                    format!(
                        "this replica has not applied the resolution of the committed \
                         transaction on {collection}/{id} yet: another replica serves the read"
                    ),
                ));
            }
        }
    }
}

/// What a read sees of document `collection`/`id` of this replica of `group`, stored as `doc`
/// with `intent`: its write when the transaction committed, the document as stored otherwise.
async fn seen(
    host: &Arc<Host>,
    group: &GroupHandle,
    (collection, id): (&str, &str),
    doc: Option<StoredDoc>,
    intent: Option<Intent>,
) -> NodeResult<Option<StoredDoc>> {
    seen_decided(host, group, (collection, id), doc, intent)
        .await
        .map(|(d, _)| d)
}

/// [`seen`], and the decision of the intent's transaction (`None`: no intent, or undecided).
/// An intent of a committed transaction is resolved first (see [`once_resolved_here`]).
/// Boxed: resolving the intent serves reads that may meet intents in turn.
pub(super) fn seen_decided<'a>(
    host: &'a Arc<Host>,
    group: &'a GroupHandle,
    (collection, id): (&'a str, &'a str),
    doc: Option<StoredDoc>,
    intent: Option<Intent>,
) -> BoxFuture<'a, NodeResult<(Option<StoredDoc>, Option<Decision>)>> {
    async move {
        let Some(Intent {
            txn: holder,
            write: Some(_),
        }) = intent
        else {
            return Ok((doc, None));
        };
        let (database, shard) = locate(host, group.sm.state().gid)?;
        match decision_of(host, &database, holder).await? {
            Some(Decision::Committed) => {
                resolve(host, &database, shard, holder, Decision::Committed).await?;
                let doc = once_resolved_here(group, collection, id, holder.id).await?;
                Ok((doc, Some(Decision::Committed)))
            }
            Some(Decision::Aborted) => {
                resolve_later(host, database, shard, holder, Decision::Aborted);
                Ok((doc, Some(Decision::Aborted)))
            }
            None => Ok((doc, None)),
        }
    }
    .boxed()
}

/// A document of this replica of `group` as a read sees it (the caller passed the read
/// barrier): never half a transaction.
pub async fn visible(
    host: &Arc<Host>,
    group: &GroupHandle,
    collection: &str,
    id: &str,
) -> NodeResult<Option<StoredDoc>> {
    let gid = group.sm.state().gid;
    let (doc, intent) = {
        let read = group.sm.begin_read()?;
        crate::store::txn::doc_and_intent(&read, gid, collection, id)?
    };
    seen(host, group, (collection, id), doc, intent).await
}

/// A page of a listing of this replica of `group` as a read sees it (see [`visible`]).
pub async fn list(
    host: &Arc<Host>,
    group: &GroupHandle,
    collection: &str,
    prefix: &str,
    after: &str,
    limit: usize,
) -> NodeResult<Vec<(String, StoredDoc)>> {
    let gid = group.sm.state().gid;
    let (mut rows, intents) = {
        let read = group.sm.begin_read()?;
        crate::store::txn::list_and_intents(&read, gid, collection, prefix, after, limit)?
    };
    if intents.is_empty() {
        return Ok(rows);
    }
    // Past a full page, a document the listing did not reach is left to the next page.
    let last = (rows.len() >= limit)
        .then(|| rows.last().map(|(id, _)| id.clone()))
        .flatten();
    for (id, intent) in intents {
        if last.as_ref().is_some_and(|l| &id > l) {
            continue;
        }
        let pos = rows.iter().position(|(i, _)| *i == id);
        let doc = pos.map(|p| rows[p].1.clone());
        match (
            seen(host, group, (collection, &id), doc, Some(intent)).await?,
            pos,
        ) {
            (Some(d), Some(p)) => rows[p].1 = d,
            (Some(d), None) => rows.push((id, d)),
            (None, Some(p)) => {
                rows.remove(p);
            }
            (None, None) => {}
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(rows)
}

/// The first intent on a document `cmd` writes, as this replica holds it.
fn intent_in_the_way(group: &GroupHandle, cmd: &DataCommand) -> NodeResult<Option<TxnMeta>> {
    let gid = group.sm.state().gid;
    let read = group.sm.begin_read()?;
    for op in &cmd.ops {
        if let Some(i) = crate::store::txn::intent(&read, gid, op.collection(), op.id())? {
            return Ok(Some(i.txn));
        }
    }
    Ok(None)
}

/// Proposes a plain atomic batch to the group led here. A document locked by a transaction
/// is resolved first when its transaction is decided (or expired); otherwise the write waits
/// for the transaction (which never waits for anything, so this cannot deadlock), up to the
/// request timeout, then fails with `ABORTED` / `TxnConflict`.
pub async fn write_through_intents(
    host: &Arc<Host>,
    group: &GroupHandle,
    gid: GroupId,
    cmd: DataCommand,
) -> NodeResult<(Response, u64)> {
    let deadline = Instant::now() + host.config.request_timeout;
    loop {
        let holder = match intent_in_the_way(group, &cmd)? {
            Some(holder) => Some(holder),
            None => {
                let (response, revision) =
                    host.write(group, gid, Command::Data(cmd.clone())).await?;
                match response {
                    Response::Data(Err(Rejection::Intent { holder, .. })) => Some(holder),
                    other => return Ok((other, revision)),
                }
            }
        };
        let Some(holder) = holder else { continue };
        let (database, shard) = locate(host, gid)?;
        if let Some(d) = decision_of(host, &database, holder).await? {
            resolve(host, &database, shard, holder, d).await?;
            continue;
        }
        if Instant::now() >= deadline {
            return Err(conflict(format!(
                "a document is locked by transaction {:032x}, still undecided",
                holder.id
            )));
        }
        // Anything applied to the group may be the resolution; look again then (or soon).
        let mut applied = group.sm.state().subscribe();
        let _ = tokio::time::timeout(Duration::from_millis(50), applied.changed()).await;
    }
}

/// A transaction conflict (`ABORTED`, `TxnConflict`).
pub fn conflict(message: impl Into<String>) -> NodeError {
    NodeError::refused(Refusal::Aborted, ErrorReason::TxnConflict, message)
}
