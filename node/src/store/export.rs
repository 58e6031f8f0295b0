//! Reading one data group's documents at one point, for a backup: one redb read transaction
//! gives the applied revision, the pending transaction intents and records, and every
//! document as of that revision (writes applied meanwhile are not seen), handed out in chunks
//! so that a shard is never in memory whole.
//!
//! A read for a backup cut ([`open`] with a cut) is served only while the cut's fence is up
//! in that read: then no commit decision, commit resolution or forgotten record applied
//! between the fence and the read (see `crate::txn::fence`).

use std::io;

use redb::{ReadTransaction, ReadableDatabase};

use super::tables::{DOCS, KEY_APPLIED, SM_STATE};
use super::{Storage, StoredDoc, io_err};
use crate::codec::decode;
use crate::command::txn::{CutId, Decision, TxnId, TxnWrite};
use crate::consensus::LogId;
use crate::types::GroupId;

/// One exported document: collection, id, and the document as stored.
pub type ExportedDoc = (String, String, StoredDoc);

/// A transaction's write pending on a document (an intent that writes; read locks are left
/// out: they change nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedIntent {
    pub txn: TxnId,
    pub collection: String,
    pub id: String,
    pub write: TxnWrite,
    /// The version the document has once the write applies (0 after a delete).
    pub version: u64,
}

/// What an export gives before the documents: the read's revision, and the group's pending
/// intents and transaction records as of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportHead {
    pub revision: u64,
    pub intents: Vec<ExportedIntent>,
    pub records: Vec<(TxnId, Decision)>,
}

/// Why an export could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The cut's fence is not up in this read (lifted already): the cut cannot be read here.
    #[error("the fence of cut {0:016x} is not up on this shard any more (the cut was lifted)")]
    CutLifted(CutId),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Opens the read of group `gid` an export serves; with a cut, only while the cut's fence is
/// up in it.
pub fn open(
    storage: &Storage,
    gid: GroupId,
    cut: Option<CutId>,
) -> Result<ReadTransaction, ExportError> {
    let txn = storage.state_db().begin_read().map_err(io_err)?;
    if let Some(cut) = cut
        && !super::fence::fences(&txn, gid)?.contains_key(&cut)
    {
        return Err(ExportError::CutLifted(cut));
    }
    Ok(txn)
}

/// The head of an export of group `gid` from `txn`.
pub fn head(txn: &ReadTransaction, gid: GroupId) -> io::Result<ExportHead> {
    let revision = {
        let sm = txn.open_table(SM_STATE).map_err(io_err)?;
        match sm.get((gid, KEY_APPLIED)).map_err(io_err)? {
            Some(v) => decode::<LogId>(v.value())?.index,
            None => 0,
        }
    };
    let snap = super::txn::snapshot(txn, gid)?;
    let mut intents = Vec::new();
    for (collection, id, intent) in snap.intents {
        let Some(write) = intent.write else { continue };
        let version = match &write {
            TxnWrite::Put { .. } => {
                super::documents::get(txn, gid, &collection, &id)?.map_or(0, |d| d.version) + 1
            }
            TxnWrite::Delete => 0,
        };
        intents.push(ExportedIntent {
            txn: intent.txn.id,
            collection,
            id,
            write,
            version,
        });
    }
    Ok(ExportHead {
        revision,
        intents,
        records: snap.records,
    })
}

/// Reads group `gid`'s documents from `txn` (see [`head`] for the revision), calling
/// `send(chunk)` with at most `chunk_docs` documents at a time. Stops early, without error,
/// when `send` returns false (the receiver went away). Blocking: run it off the async runtime.
pub fn export_docs(
    txn: &ReadTransaction,
    gid: GroupId,
    chunk_docs: usize,
    mut send: impl FnMut(Vec<ExportedDoc>) -> bool,
) -> io::Result<()> {
    let docs = txn.open_table(DOCS).map_err(io_err)?;
    let mut chunk = Vec::with_capacity(chunk_docs);
    for entry in docs
        .range((gid, "", "")..(gid + 1, "", ""))
        .map_err(io_err)?
    {
        let (key, value) = entry.map_err(io_err)?;
        let (_, collection, id) = key.value();
        let doc = super::documents::read_doc(gid, collection, id, value.value())?;
        chunk.push((collection.to_string(), id.to_string(), doc));
        if chunk.len() >= chunk_docs && !send(std::mem::take(&mut chunk)) {
            return Ok(());
        }
    }
    if !chunk.is_empty() {
        send(chunk);
    }
    Ok(())
}
