//! Reading one data group's documents at one point, for a backup: one redb read transaction
//! gives the applied revision and every document as of that revision (writes applied meanwhile
//! are not seen), handed out in chunks so that a shard is never in memory whole.

use std::io;

use redb::ReadableDatabase;

use super::tables::{DOCS, KEY_APPLIED, SM_STATE};
use super::{Storage, StoredDoc, io_err};
use crate::codec::decode;
use crate::consensus::LogId;
use crate::types::GroupId;

/// One exported document: collection, id, and the document as stored.
pub type ExportedDoc = (String, String, StoredDoc);

/// Reads group `gid`'s applied revision and documents in one read transaction, calling
/// `send(revision, chunk)` with at most `chunk_docs` documents at a time (at least once, so an
/// empty group still names its revision). Stops early, without error, when `send` returns false
/// (the receiver went away). Returns the revision. Blocking: run it off the async runtime.
pub fn export_group(
    storage: &Storage,
    gid: GroupId,
    chunk_docs: usize,
    mut send: impl FnMut(u64, Vec<ExportedDoc>) -> bool,
) -> io::Result<u64> {
    let txn = storage.state_db().begin_read().map_err(io_err)?;
    let revision = {
        let sm = txn.open_table(SM_STATE).map_err(io_err)?;
        match sm.get((gid, KEY_APPLIED)).map_err(io_err)? {
            Some(v) => decode::<LogId>(v.value())?.index,
            None => 0,
        }
    };
    let docs = txn.open_table(DOCS).map_err(io_err)?;
    let mut chunk = Vec::with_capacity(chunk_docs);
    let mut sent = false;
    for entry in docs
        .range((gid, "", "")..(gid + 1, "", ""))
        .map_err(io_err)?
    {
        let (key, value) = entry.map_err(io_err)?;
        let (_, collection, id) = key.value();
        let doc: StoredDoc = decode(value.value())?;
        chunk.push((collection.to_string(), id.to_string(), doc));
        if chunk.len() >= chunk_docs {
            sent = true;
            if !send(revision, std::mem::take(&mut chunk)) {
                return Ok(revision);
            }
        }
    }
    if !chunk.is_empty() || !sent {
        send(revision, chunk);
    }
    Ok(revision)
}
