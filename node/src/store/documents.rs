//! Documents of a data group: applying an atomic batch (with per-document version checks),
//! the change feed kept for watches, and reads. Documents are stored sealed with their checksum
//! and checked on every read (see `integrity`).

use std::collections::HashMap;
use std::io;

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::changes_export::Feed;
use super::integrity::{self, Record};
use super::io_err;
use super::tables::{CHANGES, DOCS, KEY_CHANGES_FLOOR, KEY_DOCUMENTS, SM_STATE};
use crate::codec::{decode, encode};
use crate::command::{DataCommand, OpOutcome, Rejection, WriteOp};
use crate::types::GroupId;

/// A document as stored: its body and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDoc {
    pub version: u64,
    /// Revision (log index) of the write that produced this version.
    pub revision: u64,
    pub json: String,
}

/// One change in the feed: a put (with the new body) or a delete, with the body it replaced
/// (so that a watcher can tell whether the document left a query's result without keeping
/// the result itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEvent {
    pub collection: String,
    pub id: String,
    pub version: u64,
    /// `None` for a delete.
    pub json: Option<String>,
    /// The body before the change; `None` when the document did not exist.
    pub prev: Option<String>,
}

/// The stored form of `doc`: sealed with its checksum.
pub(crate) fn stored_bytes(doc: &StoredDoc) -> io::Result<Vec<u8>> {
    Ok(integrity::seal(doc)?)
}

/// Document `collection`/`id` of group `gid` read back from its stored `bytes`, its checksum
/// checked; a failed check is the group's [`Corruption`](super::Corruption).
pub(crate) fn read_doc(
    gid: GroupId,
    collection: &str,
    id: &str,
    bytes: &[u8],
) -> io::Result<StoredDoc> {
    integrity::read(
        gid,
        || Record::Document {
            collection: collection.to_string(),
            id: id.to_string(),
        },
        bytes,
    )
    .map_err(Into::into)
}

/// How many revisions of changes a group keeps for watchers and incremental backups unless
/// the node is told otherwise (`--change-retention`).
pub const CHANGE_RETENTION: u64 = 100_000;

/// Documents changed so far in one entry: `None` for a deleted one.
type Overlay<'a> = HashMap<(&'a str, &'a str), Option<StoredDoc>>;

/// Applies the independent batches `cmds` at `revision`, in order: each is atomic on its own
/// (a version mismatch rejects that batch only) and sees the effect of those applied before it.
/// One outcome per batch.
pub(crate) fn apply_many(
    txn: &WriteTransaction,
    gid: GroupId,
    revision: u64,
    feed: Feed,
    cmds: &[DataCommand],
) -> io::Result<Vec<Result<Vec<OpOutcome>, Rejection>>> {
    let intents = super::txn::open_intents(txn)?;
    let mut docs = txn.open_table(DOCS).map_err(io_err)?;
    let mut applied: Overlay = HashMap::new();
    let mut events = Vec::new();
    let mut results = Vec::with_capacity(cmds.len());
    for cmd in cmds {
        // A document locked by a transaction waits for it (see `super::txn`).
        if let Some(rejection) = super::txn::blocked(&intents, gid, cmd)? {
            results.push(Err(rejection));
            continue;
        }
        let mut staged: Overlay = HashMap::new();
        match stage(
            &docs,
            gid,
            revision,
            cmd,
            &applied,
            &mut staged,
            &mut events,
        )? {
            Ok(outcomes) => {
                applied.extend(staged);
                results.push(Ok(outcomes));
            }
            Err(rejection) => results.push(Err(rejection)),
        }
    }
    let indexes = super::indexes::Maintainer::open(txn, gid)?;
    let (wrote, mut added) = (!applied.is_empty(), 0_i64);
    for ((collection, id), doc) in applied {
        let old = match &doc {
            Some(doc) => docs
                .insert((gid, collection, id), stored_bytes(doc)?.as_slice())
                .map_err(io_err)?,
            None => docs.remove((gid, collection, id)).map_err(io_err)?,
        };
        added += i64::from(doc.is_some()) - i64::from(old.is_some());
        indexes.on_write(
            txn,
            gid,
            collection,
            id,
            old.as_ref().map(|v| v.value()),
            doc.as_ref(),
        )?;
    }
    if wrote {
        add_to_count(txn, gid, &docs, added)?;
    }
    if !events.is_empty() {
        let mut changes = txn.open_table(CHANGES).map_err(io_err)?;
        changes
            .insert((gid, revision), encode(&events)?.as_slice())
            .map_err(io_err)?;
        super::changes_export::record_time(txn, gid, revision, feed.unix_ms)?;
        if let Some(floor) = feed.prune_floor(revision) {
            changes
                .retain_in((gid, 0)..(gid, floor), |_, _| false)
                .map_err(io_err)?;
            super::changes_export::prune_times(txn, gid, floor)?;
            set_changes_floor(txn, gid, floor)?;
        }
    }
    Ok(results)
}

/// Works out the effect of one atomic batch over what the entry `applied` before it (and the
/// stored documents), into `staged` and `events`; writes nothing. On a rejection the events
/// it added are taken back.
fn stage<'a>(
    docs: &redb::Table<'_, (GroupId, &'static str, &'static str), &'static [u8]>,
    gid: GroupId,
    revision: u64,
    cmd: &'a DataCommand,
    applied: &Overlay<'a>,
    staged: &mut Overlay<'a>,
    events: &mut Vec<ChangeEvent>,
) -> io::Result<Result<Vec<OpOutcome>, Rejection>> {
    let events_before = events.len();
    let mut outcomes = Vec::with_capacity(cmd.ops.len());
    for op in &cmd.ops {
        let key = (op.collection(), op.id());
        // Later ops of the batch see the effect of earlier ones, and of earlier batches.
        let current = match staged.get(&key).or_else(|| applied.get(&key)) {
            Some(c) => c.clone(),
            None => match docs.get((gid, key.0, key.1)).map_err(io_err)? {
                Some(v) => Some(read_doc(gid, key.0, key.1, v.value())?),
                None => None,
            },
        };
        let current_version = current.as_ref().map(|d| d.version).unwrap_or(0);
        let expected = match op {
            WriteOp::Put { if_version, .. } | WriteOp::Delete { if_version, .. } => *if_version,
        };
        if let Some(expected) = expected
            && expected != current_version
        {
            events.truncate(events_before);
            return Ok(Err(Rejection::VersionMismatch {
                collection: key.0.to_string(),
                id: key.1.to_string(),
                expected,
                current: current_version,
            }));
        }
        match op {
            WriteOp::Put { json, .. } => {
                let version = current_version + 1;
                staged.insert(
                    key,
                    Some(StoredDoc {
                        version,
                        revision,
                        json: json.clone(),
                    }),
                );
                outcomes.push(OpOutcome::Put { version });
                events.push(ChangeEvent {
                    collection: key.0.to_string(),
                    id: key.1.to_string(),
                    version,
                    json: Some(json.clone()),
                    prev: current.map(|d| d.json),
                });
            }
            WriteOp::Delete { .. } => {
                let existed = current.is_some();
                staged.insert(key, None);
                outcomes.push(OpOutcome::Delete { existed });
                if let Some(current) = current {
                    events.push(ChangeEvent {
                        collection: key.0.to_string(),
                        id: key.1.to_string(),
                        version: 0,
                        json: None,
                        prev: Some(current.json),
                    });
                }
            }
        }
    }
    Ok(Ok(outcomes))
}

pub(crate) fn set_changes_floor(
    txn: &WriteTransaction,
    gid: GroupId,
    floor: u64,
) -> io::Result<()> {
    let mut sm = txn.open_table(SM_STATE).map_err(io_err)?;
    sm.insert((gid, KEY_CHANGES_FLOOR), floor.to_le_bytes().as_slice())
        .map_err(io_err)?;
    Ok(())
}

/// Replaces every document of the group (snapshot install) and restarts its change feed.
pub(crate) fn replace_all(
    txn: &WriteTransaction,
    gid: GroupId,
    batches: impl IntoIterator<Item = io::Result<Vec<(String, String, StoredDoc)>>>,
    floor: u64,
) -> io::Result<()> {
    let mut docs = txn.open_table(DOCS).map_err(io_err)?;
    docs.retain_in((gid, "", "")..(gid + 1, "", ""), |_, _| false)
        .map_err(io_err)?;
    let mut count = 0u64;
    for batch in batches {
        for (collection, id, doc) in batch? {
            docs.insert(
                (gid, collection.as_str(), id.as_str()),
                stored_bytes(&doc)?.as_slice(),
            )
            .map_err(io_err)?;
            count += 1;
        }
    }
    drop(docs);
    set_count(txn, gid, count)?;
    let mut changes = txn.open_table(CHANGES).map_err(io_err)?;
    changes
        .retain_in((gid, 0)..=(gid, u64::MAX), |_, _| false)
        .map_err(io_err)?;
    super::changes_export::prune_times(txn, gid, u64::MAX)?;
    set_changes_floor(txn, gid, floor)
}

/// How many documents group `gid` holds: kept by every write, so reading it costs one lookup.
/// `None` for a group not written since it was stored by a version that kept no count.
pub(crate) fn count(txn: &ReadTransaction, gid: GroupId) -> io::Result<Option<u64>> {
    let sm = txn.open_table(SM_STATE).map_err(io_err)?;
    Ok(sm
        .get((gid, KEY_DOCUMENTS))
        .map_err(io_err)?
        .and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes)))
}

/// Adds `added` (negative for deletes) to the group's count, in the transaction that wrote
/// the documents. A group without a count yet (stored before counts were kept) is counted
/// once, after the writes of `docs` it already holds.
fn add_to_count(
    txn: &WriteTransaction,
    gid: GroupId,
    docs: &redb::Table<'_, (u64, &'static str, &'static str), &'static [u8]>,
    added: i64,
) -> io::Result<()> {
    let stored = {
        let sm = txn.open_table(SM_STATE).map_err(io_err)?;
        sm.get((gid, KEY_DOCUMENTS))
            .map_err(io_err)?
            .and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes))
    };
    let count = match stored {
        Some(n) => n.saturating_add_signed(added),
        None => docs
            .range((gid, "", "")..(gid + 1, "", ""))
            .map_err(io_err)?
            .count() as u64,
    };
    set_count(txn, gid, count)
}

pub(super) fn set_count(txn: &WriteTransaction, gid: GroupId, count: u64) -> io::Result<()> {
    let mut sm = txn.open_table(SM_STATE).map_err(io_err)?;
    sm.insert((gid, KEY_DOCUMENTS), count.to_le_bytes().as_slice())
        .map_err(io_err)?;
    Ok(())
}

/// Every document of the group (for a snapshot).
/// Hands every document of group `gid` to `f`, in key order, one at a time.
pub(crate) fn each_doc(
    txn: &ReadTransaction,
    gid: GroupId,
    mut f: impl FnMut(&str, &str, StoredDoc) -> io::Result<()>,
) -> io::Result<()> {
    let docs = txn.open_table(DOCS).map_err(io_err)?;
    for row in docs
        .range((gid, "", "")..(gid + 1, "", ""))
        .map_err(io_err)?
    {
        let (k, v) = row.map_err(io_err)?;
        let (_, c, i) = k.value();
        f(c, i, read_doc(gid, c, i, v.value())?)?;
    }
    Ok(())
}

pub(crate) fn get(
    txn: &ReadTransaction,
    gid: GroupId,
    collection: &str,
    id: &str,
) -> io::Result<Option<StoredDoc>> {
    let docs = txn.open_table(DOCS).map_err(io_err)?;
    match docs.get((gid, collection, id)).map_err(io_err)? {
        Some(v) => Ok(Some(read_doc(gid, collection, id, v.value())?)),
        None => Ok(None),
    }
}

/// Documents of `collection` whose id starts with `prefix` and sorts after `after`, in id order.
pub(crate) fn list(
    txn: &ReadTransaction,
    gid: GroupId,
    collection: &str,
    prefix: &str,
    after: &str,
    limit: usize,
) -> io::Result<Vec<(String, StoredDoc)>> {
    let docs = txn.open_table(DOCS).map_err(io_err)?;
    let start = if after > prefix { after } else { prefix };
    let mut out = Vec::new();
    for row in docs
        .range((gid, collection, start)..(gid + 1, "", ""))
        .map_err(io_err)?
    {
        let (k, v) = row.map_err(io_err)?;
        let (_, c, id) = k.value();
        if c != collection || !id.starts_with(prefix) {
            break;
        }
        if id == after {
            continue;
        }
        out.push((id.to_string(), read_doc(gid, c, id, v.value())?));
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// Change feed of the group from `from` (inclusive), at most `limit` revisions.
pub(crate) fn changes(
    txn: &ReadTransaction,
    gid: GroupId,
    from: u64,
    limit: usize,
) -> io::Result<Vec<(u64, Vec<ChangeEvent>)>> {
    let changes = txn.open_table(CHANGES).map_err(io_err)?;
    let mut out = Vec::new();
    for row in changes
        .range((gid, from)..=(gid, u64::MAX))
        .map_err(io_err)?
    {
        let (k, v) = row.map_err(io_err)?;
        out.push((k.value().1, decode(v.value())?));
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// Oldest revision still in the change feed.
pub(crate) fn changes_floor(txn: &ReadTransaction, gid: GroupId) -> io::Result<u64> {
    let sm = txn.open_table(SM_STATE).map_err(io_err)?;
    match sm.get((gid, KEY_CHANGES_FLOOR)).map_err(io_err)? {
        Some(v) => Ok(v.value().try_into().map(u64::from_le_bytes).unwrap_or(0)),
        None => Ok(0),
    }
}
