//! Restore loads: documents written into a shard of a database being restored, each with the
//! version it had in the backup (the ordinary write path always counts versions from the
//! stored one, so it cannot restore them).
//!
//! A load is a replicated command ([`LoadCommand`]) decided in apply from the stored state
//! only, so every replica decides the same. It is accepted only while the shard is *loading*:
//! it holds no document, or the loads before it marked it as loading and neither a `finish`
//! load nor an ordinary write (a data command or a transaction's commit) ended that. A load naming a document the shard holds already is refused whole. The restore
//! ends with a `finish` load on every shard: from then on a load is refused unless the shard
//! is empty again. The mark travels with the shard's snapshots, so a replica that catches up
//! by snapshot in the middle of a restore decides as the others do. A load writes no change
//! events (a restore is not a change of the data); the secondary indexes of the collection
//! are maintained as by any write. Each document's revision is the load entry's log index
//! (revisions are positions in this cluster's log; the backup keeps the source's).

use std::io;

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::documents::{StoredDoc, set_count};
use super::io_err;
use super::tables::{DOCS, KEY_DOCUMENTS, SM_STATE};
use crate::types::GroupId;

/// Marks a shard that accepted a load and has applied no ordinary write since.
const KEY_LOADING: &str = "loading";

/// One document of a load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadDoc {
    pub collection: String,
    pub id: String,
    pub version: u64,
    pub json: String,
}

/// Documents loaded into a shard of a database being restored (all or none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadCommand {
    pub docs: Vec<LoadDoc>,
    /// The last load of the restore: the shard is no longer loading after it.
    pub finish: bool,
}

/// What applying a [`LoadCommand`] answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoadOutcome {
    Loaded(u64),
    Refused(LoadRefusal),
}

/// Why a load was refused (nothing of it was applied).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum LoadRefusal {
    #[error(
        "the shard holds documents and is not being restored: only a new database can be loaded"
    )]
    NotLoading,
    #[error("document {collection}/{id} exists already (with another version or body)")]
    Exists { collection: String, id: String },
    #[error("document {collection}/{id} has version 0 (versions start at 1)")]
    BadVersion { collection: String, id: String },
}

impl LoadCommand {
    pub fn body_bytes(&self) -> usize {
        self.docs.iter().map(|d| d.json.len()).sum()
    }
}

fn u64_of(v: Option<redb::AccessGuard<'_, &'static [u8]>>) -> Option<u64> {
    v.and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes))
}

/// Whether group `gid` is marked as loading.
pub(crate) fn is_loading(txn: &redb::ReadTransaction, gid: GroupId) -> io::Result<bool> {
    let sm = txn.open_table(SM_STATE).map_err(io_err)?;
    Ok(sm.get((gid, KEY_LOADING)).map_err(io_err)?.is_some())
}

/// Sets or clears the loading mark of `gid` (a snapshot install).
pub(crate) fn set_loading(txn: &WriteTransaction, gid: GroupId, on: bool) -> io::Result<()> {
    let mut sm = txn.open_table(SM_STATE).map_err(io_err)?;
    if on {
        sm.insert((gid, KEY_LOADING), [1u8].as_slice())
            .map_err(io_err)?;
    } else {
        sm.remove((gid, KEY_LOADING)).map_err(io_err)?;
    }
    Ok(())
}

/// An ordinary write (a data command or a transaction's commit) is being applied to `gid`:
/// the shard is no longer loading, so a later load is refused unless the shard is empty
/// again. A restore interrupted after its database took writes cannot be resumed into it.
pub(crate) fn ordinary_write(txn: &WriteTransaction, gid: GroupId) -> io::Result<()> {
    set_loading(txn, gid, false)
}

/// Whether group `gid` may be loaded: marked as loading, or holding no document.
fn loading(txn: &WriteTransaction, gid: GroupId) -> io::Result<bool> {
    {
        let sm = txn.open_table(SM_STATE).map_err(io_err)?;
        if sm.get((gid, KEY_LOADING)).map_err(io_err)?.is_some() {
            return Ok(true);
        }
    }
    let docs = txn.open_table(DOCS).map_err(io_err)?;
    Ok(docs
        .range((gid, "", "")..(gid + 1, "", ""))
        .map_err(io_err)?
        .next()
        .is_none())
}

/// Applies a load at log position `revision` (see the module doc for when it is accepted).
pub(crate) fn apply(
    txn: &WriteTransaction,
    gid: GroupId,
    revision: u64,
    cmd: &LoadCommand,
) -> io::Result<LoadOutcome> {
    if !loading(txn, gid)? {
        return Ok(LoadOutcome::Refused(LoadRefusal::NotLoading));
    }
    let mut docs = txn.open_table(DOCS).map_err(io_err)?;
    let mut seen = std::collections::HashSet::new();
    // Documents loaded already with the same version and body (a load repeated after its
    // outcome was lost) are skipped, so a restore may repeat a load safely.
    let mut fresh = Vec::with_capacity(cmd.docs.len());
    for d in &cmd.docs {
        let key = (d.collection.as_str(), d.id.as_str());
        let refused = |why: fn(String, String) -> LoadRefusal| {
            Ok(LoadOutcome::Refused(why(
                d.collection.clone(),
                d.id.clone(),
            )))
        };
        if d.version == 0 {
            return refused(|collection, id| LoadRefusal::BadVersion { collection, id });
        }
        if !seen.insert(key) {
            return refused(|collection, id| LoadRefusal::Exists { collection, id });
        }
        match docs.get((gid, key.0, key.1)).map_err(io_err)? {
            None => fresh.push(d),
            Some(v) => {
                let stored = super::documents::read_doc(gid, key.0, key.1, v.value())?;
                if stored.version != d.version || stored.json != d.json {
                    return refused(|collection, id| LoadRefusal::Exists { collection, id });
                }
            }
        }
    }
    let indexes = super::indexes::Maintainer::open(txn, gid)?;
    for d in &fresh {
        let doc = StoredDoc {
            version: d.version,
            revision,
            json: d.json.clone(),
        };
        docs.insert(
            (gid, d.collection.as_str(), d.id.as_str()),
            super::documents::stored_bytes(&doc)?.as_slice(),
        )
        .map_err(io_err)?;
        indexes.on_write(txn, gid, &d.collection, &d.id, None, Some(&doc))?;
    }
    let count = {
        let sm = txn.open_table(SM_STATE).map_err(io_err)?;
        u64_of(sm.get((gid, KEY_DOCUMENTS)).map_err(io_err)?).unwrap_or(0)
    };
    set_count(txn, gid, count + fresh.len() as u64)?;
    set_loading(txn, gid, !cmd.finish)?;
    Ok(LoadOutcome::Loaded(cmd.docs.len() as u64))
}

/// The loading mark a snapshot carries after its body (`B`) and its transactions: false when
/// it has none (a shard not being restored, or a snapshot made before marks existed).
pub(crate) fn snapshot_tail<'a, B: Deserialize<'a>>(data: &'a [u8]) -> io::Result<bool> {
    let bad = |e: postcard::Error| io::Error::new(io::ErrorKind::InvalidData, e);
    let (_, rest) = postcard::take_from_bytes::<B>(data).map_err(bad)?;
    if rest.is_empty() {
        return Ok(false);
    }
    let (_, rest) = postcard::take_from_bytes::<super::txn::TxnSnapshot>(rest).map_err(bad)?;
    if rest.is_empty() {
        return Ok(false);
    }
    Ok(crate::codec::decode(rest)?)
}
