//! Transactions in a data group's state: intents (locks with the write they will make) and
//! transaction records (decisions), applied by [`TxnCommand`]s, kept in the group's snapshots so
//! that they move with the shard, and read by whoever meets an intent.
//!
//! Tables (state file, keyed by group first like every other):
//! - `txn_intents`: (group, collection, id) -> the [`Intent`] on that document;
//! - `txn_intent_keys`: (group, txn, collection, id) -> nothing: the intents of a transaction;
//! - `txn_records`: (group, txn) -> its [`Decision`] (on the transaction's primary shard).
//!
//! A plain write that meets an intent is refused in apply ([`blocked`]) and retried by the
//! node once the intent is resolved; a read decides what it sees from the record (see
//! `crate::txn::visible`). Nothing here reads a clock: apply decides from the stored state.

use std::io;

use redb::{
    ReadTransaction, ReadableTable, ReadableTableMetadata, Table, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use super::changes_export::Feed;
use super::documents::{self, StoredDoc};
use super::io_err;
use super::tables::DOCS;
use crate::codec::{decode, encode};
use crate::command::txn::{
    Decision, Intent, KeyAccess, KeyState, TxnCommand, TxnId, TxnOutcome, TxnWrite, check_key,
};
use crate::command::{DataCommand, Rejection, WriteOp};
use crate::types::GroupId;

pub(crate) const INTENTS: TableDefinition<(u64, &str, &str), &[u8]> =
    TableDefinition::new("txn_intents");
pub(crate) const INTENT_KEYS: TableDefinition<(u64, u128, &str, &str), &[u8]> =
    TableDefinition::new("txn_intent_keys");
pub(crate) const RECORDS: TableDefinition<(u64, u128), &[u8]> = TableDefinition::new("txn_records");

type IntentTable<'t> = Table<'t, (u64, &'static str, &'static str), &'static [u8]>;

/// The transaction part of a data group's snapshot.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TxnSnapshot {
    pub intents: Vec<(String, String, Intent)>,
    pub records: Vec<(TxnId, Decision)>,
}

/// Creates the tables (state file).
pub(crate) fn init(txn: &WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(INTENTS)?;
    txn.open_table(INTENT_KEYS)?;
    txn.open_table(RECORDS)?;
    Ok(())
}

/// The first document of `cmd` another transaction holds an intent on: the batch must wait.
pub(crate) fn blocked(
    intents: &IntentTable<'_>,
    gid: GroupId,
    cmd: &DataCommand,
) -> io::Result<Option<Rejection>> {
    if intents.is_empty().map_err(io_err)? {
        return Ok(None);
    }
    for op in &cmd.ops {
        if let Some(v) = intents
            .get((gid, op.collection(), op.id()))
            .map_err(io_err)?
        {
            let intent: Intent = decode(v.value())?;
            return Ok(Some(Rejection::Intent {
                collection: op.collection().to_string(),
                id: op.id().to_string(),
                holder: intent.txn,
            }));
        }
    }
    Ok(None)
}

/// Opens the intents table for [`blocked`].
pub(crate) fn open_intents(txn: &WriteTransaction) -> io::Result<IntentTable<'_>> {
    txn.open_table(INTENTS).map_err(io_err)
}

/// Applies one transaction command at `revision`.
pub(crate) fn apply(
    txn: &WriteTransaction,
    gid: GroupId,
    revision: u64,
    feed: Feed,
    cmd: &TxnCommand,
) -> io::Result<TxnOutcome> {
    if let Some(outcome) = super::fence::apply(txn, gid, revision, cmd)? {
        return Ok(outcome);
    }
    if let Some(cut) = fenced_by(txn, gid, cmd)? {
        return Ok(TxnOutcome::Fenced { cut });
    }
    match cmd {
        TxnCommand::Prepare { txn: meta, keys } => {
            let versions = match check_all(txn, gid, Some(meta.id), keys)? {
                Ok(versions) => versions,
                Err(conflict) => return Ok(TxnOutcome::Refused(conflict)),
            };
            let mut intents = txn.open_table(INTENTS).map_err(io_err)?;
            let mut by_txn = txn.open_table(INTENT_KEYS).map_err(io_err)?;
            for key in keys {
                let intent = Intent {
                    txn: *meta,
                    write: key.write.clone(),
                };
                let (c, i) = (key.collection.as_str(), key.id.as_str());
                intents
                    .insert((gid, c, i), encode(&intent)?.as_slice())
                    .map_err(io_err)?;
                by_txn
                    .insert((gid, meta.id, c, i), [].as_slice())
                    .map_err(io_err)?;
            }
            Ok(TxnOutcome::Prepared(versions))
        }
        TxnCommand::CommitOne { keys } => {
            if let Err(conflict) = check_all(txn, gid, None, keys)? {
                return Ok(TxnOutcome::Refused(conflict));
            }
            let ops: Vec<WriteOp> = keys
                .iter()
                .filter_map(|k| write_op(&k.collection, &k.id, k.write.as_ref()?))
                .collect();
            write_docs(txn, gid, revision, feed, ops).map(TxnOutcome::Committed)
        }
        TxnCommand::Decide { txn: id, commit } => {
            let decision = {
                let mut records = txn.open_table(RECORDS).map_err(io_err)?;
                let existing = match records.get((gid, *id)).map_err(io_err)? {
                    Some(v) => Some(decode::<Decision>(v.value())?),
                    None => None,
                };
                match existing {
                    Some(d) => d,
                    None => {
                        let d = if *commit {
                            Decision::Committed
                        } else {
                            Decision::Aborted
                        };
                        records
                            .insert((gid, *id), encode(&d)?.as_slice())
                            .map_err(io_err)?;
                        d
                    }
                }
            };
            resolve(
                txn,
                gid,
                revision,
                feed,
                *id,
                decision == Decision::Committed,
            )?;
            Ok(TxnOutcome::Decided(decision))
        }
        TxnCommand::Resolve { txn: id, commit } => {
            resolve(txn, gid, revision, feed, *id, *commit).map(TxnOutcome::Resolved)
        }
        TxnCommand::At { at_ms, step } => {
            let feed = Feed {
                unix_ms: *at_ms,
                ..feed
            };
            apply(txn, gid, revision, feed, step)
        }
        TxnCommand::Settle { request, outcomes } => {
            super::dedup::settle(txn, gid, *request, outcomes).map(TxnOutcome::Settled)
        }
        TxnCommand::Forget { txn: id } => {
            let mut records = txn.open_table(RECORDS).map_err(io_err)?;
            records.remove((gid, *id)).map_err(io_err)?;
            Ok(TxnOutcome::Forgotten)
        }
        TxnCommand::Fence { .. } | TxnCommand::Unfence { .. } => Err(io::Error::other(
            "a fence command reached the transaction apply",
        )),
    }
}

/// The cut whose fence makes this shard refuse `cmd` now, if any (see `super::fence`).
fn fenced_by(txn: &WriteTransaction, gid: GroupId, cmd: &TxnCommand) -> io::Result<Option<u64>> {
    let fences = super::fence::fences_now(txn, gid)?;
    let Some(cut) = fences.keys().next().copied() else {
        return Ok(None);
    };
    let recorded = match cmd {
        TxnCommand::Decide { txn: id, .. } => {
            let records = txn.open_table(RECORDS).map_err(io_err)?;
            match records.get((gid, *id)).map_err(io_err)? {
                Some(v) => Some(decode::<Decision>(v.value())?),
                None => None,
            }
        }
        _ => None,
    };
    Ok(super::fence::holds_back(cmd, recorded).then_some(cut))
}

fn write_op(collection: &str, id: &str, write: &TxnWrite) -> Option<WriteOp> {
    Some(match write {
        TxnWrite::Put { json } => WriteOp::Put {
            collection: collection.to_string(),
            id: id.to_string(),
            json: json.clone(),
            if_version: None,
        },
        TxnWrite::Delete => WriteOp::Delete {
            collection: collection.to_string(),
            id: id.to_string(),
            if_version: None,
        },
    })
}

/// Applies `ops` as one batch at `revision` (one change set), once nothing locks them.
fn write_docs(
    txn: &WriteTransaction,
    gid: GroupId,
    revision: u64,
    feed: Feed,
    ops: Vec<WriteOp>,
) -> io::Result<Vec<crate::command::OpOutcome>> {
    if ops.is_empty() {
        return Ok(Vec::new());
    }
    let cmd = DataCommand { ops, request: None };
    let outcome =
        documents::apply_many(txn, gid, revision, feed, std::slice::from_ref(&cmd))?.pop();
    match outcome.unwrap_or(Ok(Vec::new())) {
        Ok(outcomes) => Ok(outcomes),
        // Checked before, with no condition left in the ops: cannot happen.
        Err(rejection) => Err(io::Error::other(format!(
            "a checked transaction was refused in apply: {rejection}"
        ))),
    }
}

/// Checks every key of a prepare or one-entry commit against the stored documents and intents;
/// answers each key's version.
fn check_all(
    txn: &WriteTransaction,
    gid: GroupId,
    me: Option<TxnId>,
    keys: &[KeyAccess],
) -> io::Result<Result<Vec<u64>, crate::command::txn::Conflict>> {
    let mut versions = Vec::with_capacity(keys.len());
    let docs = txn.open_table(DOCS).map_err(io_err)?;
    let intents = txn.open_table(INTENTS).map_err(io_err)?;
    for key in keys {
        let (c, i) = (key.collection.as_str(), key.id.as_str());
        let version = match docs.get((gid, c, i)).map_err(io_err)? {
            Some(v) => documents::read_doc(gid, c, i, v.value())?.version,
            None => 0,
        };
        let intent = match intents.get((gid, c, i)).map_err(io_err)? {
            Some(v) => Some(decode::<Intent>(v.value())?),
            None => None,
        };
        let state = KeyState {
            version,
            intent: intent.as_ref(),
        };
        if let Err(conflict) = check_key(me, key, state) {
            return Ok(Err(conflict));
        }
        versions.push(version);
    }
    Ok(Ok(versions))
}

/// Takes this shard's intents of `id` away, applying their writes at `revision` on commit.
/// Returns how many there were.
fn resolve(
    txn: &WriteTransaction,
    gid: GroupId,
    revision: u64,
    feed: Feed,
    id: TxnId,
    commit: bool,
) -> io::Result<usize> {
    let mut ops = Vec::new();
    let mut count = 0;
    {
        let mut intents = txn.open_table(INTENTS).map_err(io_err)?;
        let mut by_txn = txn.open_table(INTENT_KEYS).map_err(io_err)?;
        let mut keys = Vec::new();
        for row in by_txn.range((gid, id, "", "")..).map_err(io_err)? {
            let (k, _) = row.map_err(io_err)?;
            let (g, t, c, i) = k.value();
            if g != gid || t != id {
                break;
            }
            keys.push((c.to_string(), i.to_string()));
        }
        for (c, i) in keys {
            by_txn
                .remove((gid, id, c.as_str(), i.as_str()))
                .map_err(io_err)?;
            let intent = match intents.get((gid, c.as_str(), i.as_str())).map_err(io_err)? {
                Some(v) => Some(decode::<Intent>(v.value())?),
                None => None,
            };
            let Some(intent) = intent.filter(|x| x.txn.id == id) else {
                continue;
            };
            intents
                .remove((gid, c.as_str(), i.as_str()))
                .map_err(io_err)?;
            count += 1;
            if commit && let Some(op) = intent.write.as_ref().and_then(|w| write_op(&c, &i, w)) {
                ops.push(op);
            }
        }
    }
    write_docs(txn, gid, revision, feed, ops)?;
    Ok(count)
}

/// The intent on one document, if any.
pub(crate) fn intent(
    txn: &ReadTransaction,
    gid: GroupId,
    collection: &str,
    id: &str,
) -> io::Result<Option<Intent>> {
    let intents = txn.open_table(INTENTS).map_err(io_err)?;
    match intents.get((gid, collection, id)).map_err(io_err)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

/// Intents on documents of `collection` whose id starts with `prefix`.
pub(crate) fn intents_with_prefix(
    txn: &ReadTransaction,
    gid: GroupId,
    collection: &str,
    prefix: &str,
) -> io::Result<Vec<(String, Intent)>> {
    let intents = txn.open_table(INTENTS).map_err(io_err)?;
    let mut out = Vec::new();
    for row in intents.range((gid, collection, prefix)..).map_err(io_err)? {
        let (k, v) = row.map_err(io_err)?;
        let (g, c, i) = k.value();
        if g != gid || c != collection || !i.starts_with(prefix) {
            break;
        }
        out.push((i.to_string(), decode(v.value())?));
    }
    Ok(out)
}

/// The decision recorded for `id` in this group, if any.
pub(crate) fn record(
    txn: &ReadTransaction,
    gid: GroupId,
    id: TxnId,
) -> io::Result<Option<Decision>> {
    let records = txn.open_table(RECORDS).map_err(io_err)?;
    match records.get((gid, id)).map_err(io_err)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

/// Every intent and record of the group (snapshots, listings).
pub(crate) fn snapshot(txn: &ReadTransaction, gid: GroupId) -> io::Result<TxnSnapshot> {
    let mut out = TxnSnapshot::default();
    let intents = txn.open_table(INTENTS).map_err(io_err)?;
    for row in intents.range((gid, "", "")..).map_err(io_err)? {
        let (k, v) = row.map_err(io_err)?;
        let (g, c, i) = k.value();
        if g != gid {
            break;
        }
        out.intents
            .push((c.to_string(), i.to_string(), decode(v.value())?));
    }
    out.records = records(txn, gid)?;
    Ok(out)
}

/// Replaces the group's intents and records with a snapshot's.
pub(crate) fn install(txn: &WriteTransaction, gid: GroupId, snap: &TxnSnapshot) -> io::Result<()> {
    delete_group(txn, gid)?;
    let mut intents = txn.open_table(INTENTS).map_err(io_err)?;
    let mut by_txn = txn.open_table(INTENT_KEYS).map_err(io_err)?;
    for (c, i, intent) in &snap.intents {
        intents
            .insert((gid, c.as_str(), i.as_str()), encode(intent)?.as_slice())
            .map_err(io_err)?;
        by_txn
            .insert((gid, intent.txn.id, c.as_str(), i.as_str()), [].as_slice())
            .map_err(io_err)?;
    }
    let mut records = txn.open_table(RECORDS).map_err(io_err)?;
    for (id, d) in &snap.records {
        records
            .insert((gid, *id), encode(d)?.as_slice())
            .map_err(io_err)?;
    }
    Ok(())
}

/// Removes every intent and record of the group.
pub(crate) fn delete_group(txn: &WriteTransaction, gid: GroupId) -> io::Result<()> {
    let mut intents = txn.open_table(INTENTS).map_err(io_err)?;
    intents
        .retain_in((gid, "", "")..(gid + 1, "", ""), |_, _| false)
        .map_err(io_err)?;
    let mut by_txn = txn.open_table(INTENT_KEYS).map_err(io_err)?;
    by_txn
        .retain_in((gid, 0, "", "")..(gid + 1, 0, "", ""), |_, _| false)
        .map_err(io_err)?;
    let mut records = txn.open_table(RECORDS).map_err(io_err)?;
    records
        .retain_in((gid, 0)..=(gid, u128::MAX), |_, _| false)
        .map_err(io_err)?;
    Ok(())
}

/// The transaction part that follows the rest of a snapshot body in `data` (empty for a
/// snapshot made before transactions existed, which ends with the body).
pub(crate) fn snapshot_tail<'a, T: Deserialize<'a>>(data: &'a [u8]) -> io::Result<TxnSnapshot> {
    let (_, rest) = postcard::take_from_bytes::<T>(data)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if rest.is_empty() {
        return Ok(TxnSnapshot::default());
    }
    Ok(decode(rest)?)
}

/// A document and the intent on it, read at one moment (a resolution cannot fall between).
pub(crate) fn doc_and_intent(
    txn: &ReadTransaction,
    gid: GroupId,
    collection: &str,
    id: &str,
) -> io::Result<(Option<StoredDoc>, Option<Intent>)> {
    Ok((
        documents::get(txn, gid, collection, id)?,
        intent(txn, gid, collection, id)?,
    ))
}

/// Documents of a page (id, document) and write intents on documents it may hold (id, intent).
pub(crate) type PageAndIntents = (Vec<(String, StoredDoc)>, Vec<(String, Intent)>);

/// A page of a listing (as `documents::list`) and the intents on documents it may hold, read
/// at one moment.
pub(crate) fn list_and_intents(
    txn: &ReadTransaction,
    gid: GroupId,
    collection: &str,
    prefix: &str,
    after: &str,
    limit: usize,
) -> io::Result<PageAndIntents> {
    let rows = documents::list(txn, gid, collection, prefix, after, limit)?;
    let mut intents = intents_with_prefix(txn, gid, collection, prefix)?;
    intents.retain(|(id, i)| i.write.is_some() && id.as_str() > after);
    Ok((rows, intents))
}

/// What a transaction's query reads of one shard: the documents of a collection a predicate
/// matches (id, document), and every write intent on the collection's documents.
pub(crate) type MatchesAndIntents = (Vec<(String, StoredDoc)>, Vec<(String, Intent)>);

/// The documents of `collection` that `filter` matches (scanning the collection) and the
/// write intents on its documents, read at one moment; `None` when more than `max` match.
pub(crate) fn matching_and_intents(
    txn: &ReadTransaction,
    gid: GroupId,
    collection: &str,
    filter: &flotilla_query::Predicate,
    max: usize,
) -> io::Result<Option<MatchesAndIntents>> {
    let docs = txn.open_table(DOCS).map_err(io_err)?;
    let mut found = Vec::new();
    for row in docs.range((gid, collection, "")..).map_err(io_err)? {
        let (k, v) = row.map_err(io_err)?;
        let (g, c, id) = k.value();
        if g != gid || c != collection {
            break;
        }
        let doc = documents::read_doc(gid, c, id, v.value())?;
        let Ok(body) = serde_json::from_str::<serde_json::Value>(&doc.json) else {
            continue;
        };
        if filter.matches(&body) {
            if found.len() == max {
                return Ok(None);
            }
            found.push((id.to_string(), doc));
        }
    }
    let mut intents = intents_with_prefix(txn, gid, collection, "")?;
    intents.retain(|(_, i)| i.write.is_some());
    Ok(Some((found, intents)))
}

/// True when this group holds an intent of transaction `id`.
pub(crate) fn holds_intents(txn: &ReadTransaction, gid: GroupId, id: TxnId) -> io::Result<bool> {
    let by_txn = txn.open_table(INTENT_KEYS).map_err(io_err)?;
    let mut rows = by_txn.range((gid, id, "", "")..).map_err(io_err)?;
    match rows.next() {
        Some(row) => {
            let (k, _) = row.map_err(io_err)?;
            let (g, t, _, _) = k.value();
            Ok(g == gid && t == id)
        }
        None => Ok(false),
    }
}

/// The records of the group: each transaction decided here, with its decision.
pub(crate) fn records(txn: &ReadTransaction, gid: GroupId) -> io::Result<Vec<(TxnId, Decision)>> {
    let records = txn.open_table(RECORDS).map_err(io_err)?;
    let mut out = Vec::new();
    for row in records.range((gid, 0)..=(gid, u128::MAX)).map_err(io_err)? {
        let (k, v) = row.map_err(io_err)?;
        out.push((k.value().1, decode(v.value())?));
    }
    Ok(out)
}
