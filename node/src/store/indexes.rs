//! Secondary indexes of a data group's documents.
//!
//! An index is declared on a collection by a replicated command ([`IndexCommand`]), so that
//! every replica of the shard creates (or drops) it at the same log position; its id is that
//! position. Its entries, `(group, index id, key, document id)` with the order-preserving key
//! of [`flotilla_query::index_key`], live in the state file beside the documents:
//!
//! - every apply that writes a document updates the entries of the collection's indexes in the
//!   same write transaction ([`Maintainer`]), so an index never disagrees with its shard;
//! - a new index is filled by a background builder ([`Builds`]) in batches, in id order, each
//!   batch a job of the state file's one writer: batches and applies are serialized, and since
//!   applies maintain the entries of every document (built or not) and a batch indexes each
//!   document as it is at that moment, no write made during the build is lost. Progress (the
//!   last id indexed, documents done) is stored with the definition: a restart resumes it;
//! - a snapshot carries the definitions only: installing one replaces them, removes every entry
//!   of the group and builds each index again from the installed documents;
//! - dropping an index removes its entries (redb reuses the pages).
//!
//! Until its build is done, an index is not used: queries on that replica scan.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use flotilla_query::{KeyRange, Path};
use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::documents::StoredDoc;
use super::io_err;
use super::tables::{DOCS, INDEX_DEFS, INDEX_ENTRIES};
use super::writer::Writer;
use crate::codec::{decode, encode};
use crate::types::GroupId;

/// A change to the indexes of a shard, replicated through its log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IndexCommand {
    Create {
        collection: String,
        name: String,
        paths: Vec<String>,
    },
    Drop {
        collection: String,
        name: String,
    },
}

/// What applying an [`IndexCommand`] answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IndexOutcome {
    /// Created (or already there with the same paths).
    Created {
        existed: bool,
    },
    Dropped {
        existed: bool,
    },
    /// An index of that name exists on other paths, or a path is malformed.
    Refused(String),
}

/// A stored index definition, with this replica's build progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct IndexRecord {
    pub(super) id: u64,
    pub(super) paths: Vec<String>,
    /// `None` once built.
    pub(super) build: Option<BuildProgress>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct BuildProgress {
    /// Last document id indexed.
    after: Option<String>,
    done: u64,
}

/// An index definition as a snapshot carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotIndex {
    pub collection: String,
    pub name: String,
    pub id: u64,
    pub paths: Vec<String>,
}

/// An index of a shard as this replica holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexStatus {
    pub collection: String,
    pub name: String,
    pub paths: Vec<String>,
    pub ready: bool,
    /// Documents indexed so far by the build (all of them once ready).
    pub done: u64,
}

/// Documents indexed per builder batch.
const BUILD_BATCH: usize = 256;

pub(super) fn parse_paths(paths: &[String]) -> Result<Vec<Path>, String> {
    paths
        .iter()
        .map(|p| Path::parse(p).map_err(|e| format!("path {p:?}: {e}")))
        .collect()
}

/// Applies an index command at log position `revision`.
pub(crate) fn apply_command(
    txn: &WriteTransaction,
    gid: GroupId,
    revision: u64,
    cmd: &IndexCommand,
) -> io::Result<IndexOutcome> {
    let mut defs = txn.open_table(INDEX_DEFS).map_err(io_err)?;
    match cmd {
        IndexCommand::Create {
            collection,
            name,
            paths,
        } => {
            if let Err(why) = parse_paths(paths) {
                return Ok(IndexOutcome::Refused(why));
            }
            if let Some(existing) = defs
                .get((gid, collection.as_str(), name.as_str()))
                .map_err(io_err)?
            {
                let existing: IndexRecord = decode(existing.value())?;
                return Ok(if &existing.paths == paths {
                    IndexOutcome::Created { existed: true }
                } else {
                    IndexOutcome::Refused(format!(
                        "index {name} exists on {} already",
                        existing.paths.join(",")
                    ))
                });
            }
            let record = IndexRecord {
                id: revision,
                paths: paths.clone(),
                build: Some(BuildProgress::default()),
            };
            defs.insert(
                (gid, collection.as_str(), name.as_str()),
                encode(&record)?.as_slice(),
            )
            .map_err(io_err)?;
            Ok(IndexOutcome::Created { existed: false })
        }
        IndexCommand::Drop { collection, name } => {
            let removed = defs
                .remove((gid, collection.as_str(), name.as_str()))
                .map_err(io_err)?
                .map(|v| decode::<IndexRecord>(v.value()))
                .transpose()?;
            if let Some(record) = &removed {
                remove_entries(txn, gid, record.id)?;
            }
            Ok(IndexOutcome::Dropped {
                existed: removed.is_some(),
            })
        }
    }
}

fn remove_entries(txn: &WriteTransaction, gid: GroupId, id: u64) -> io::Result<()> {
    let mut entries = txn.open_table(INDEX_ENTRIES).map_err(io_err)?;
    entries
        .retain_in(
            (gid, id, [].as_slice(), "")..(gid, id + 1, [].as_slice(), ""),
            |_, _| false,
        )
        .map_err(io_err)?;
    Ok(())
}

pub(super) fn load_defs(
    table: &impl ReadableTable<(u64, &'static str, &'static str), &'static [u8]>,
    gid: GroupId,
) -> io::Result<Vec<(String, String, IndexRecord)>> {
    let mut out = Vec::new();
    for row in table
        .range((gid, "", "")..(gid + 1, "", ""))
        .map_err(io_err)?
    {
        let (k, v) = row.map_err(io_err)?;
        let (_, c, n) = k.value();
        out.push((c.to_string(), n.to_string(), decode(v.value())?));
    }
    Ok(out)
}

/// Keeps the indexes of a group in step with the documents one apply writes.
pub(crate) struct Maintainer {
    /// collection -> (index id, paths) of its indexes (built or building).
    by_collection: HashMap<String, Vec<(u64, Vec<Path>)>>,
}

impl Maintainer {
    pub(crate) fn open(txn: &WriteTransaction, gid: GroupId) -> io::Result<Maintainer> {
        let defs = txn.open_table(INDEX_DEFS).map_err(io_err)?;
        let mut by_collection: HashMap<String, Vec<(u64, Vec<Path>)>> = HashMap::new();
        for (collection, _, record) in load_defs(&defs, gid)? {
            // Paths were checked when the index was created.
            if let Ok(paths) = parse_paths(&record.paths) {
                by_collection
                    .entry(collection)
                    .or_default()
                    .push((record.id, paths));
            }
        }
        Ok(Maintainer { by_collection })
    }

    /// Updates the entries of `collection`'s indexes for document `id`, whose stored form was
    /// `old` (encoded [`StoredDoc`]) and is now `new`.
    pub(crate) fn on_write(
        &self,
        txn: &WriteTransaction,
        gid: GroupId,
        collection: &str,
        id: &str,
        old: Option<&[u8]>,
        new: Option<&StoredDoc>,
    ) -> io::Result<()> {
        let Some(indexes) = self.by_collection.get(collection) else {
            return Ok(());
        };
        let old_doc = match old {
            Some(bytes) => {
                parse_json(&super::documents::read_doc(gid, collection, id, bytes)?.json)
            }
            None => None,
        };
        let new_doc = new.and_then(|d| parse_json(&d.json));
        let mut entries = txn.open_table(INDEX_ENTRIES).map_err(io_err)?;
        for (ix, paths) in indexes {
            let old_key = old_doc
                .as_ref()
                .map(|d| flotilla_query::index_key(d, paths));
            let new_key = new_doc
                .as_ref()
                .map(|d| flotilla_query::index_key(d, paths));
            if old_key == new_key {
                continue;
            }
            if let Some(k) = &old_key {
                entries
                    .remove((gid, *ix, k.as_slice(), id))
                    .map_err(io_err)?;
            }
            if let Some(k) = &new_key {
                entries
                    .insert((gid, *ix, k.as_slice(), id), ())
                    .map_err(io_err)?;
            }
        }
        Ok(())
    }
}

pub(super) fn parse_json(json: &str) -> Option<Value> {
    serde_json::from_str(json).ok()
}

/// Indexes the next batch of documents of the first index of `gid` still building. Returns
/// true while any build of the group has work left.
pub(crate) fn build_step(txn: &WriteTransaction, gid: GroupId) -> io::Result<bool> {
    let mut defs = txn.open_table(INDEX_DEFS).map_err(io_err)?;
    let all = load_defs(&defs, gid)?;
    let Some((collection, name, mut record)) = all.into_iter().find(|(_, _, r)| r.build.is_some())
    else {
        return Ok(false);
    };
    let Ok(paths) = parse_paths(&record.paths) else {
        // Refused at creation; never reached. Mark it built rather than loop on it.
        record.build = None;
        defs.insert(
            (gid, collection.as_str(), name.as_str()),
            encode(&record)?.as_slice(),
        )
        .map_err(io_err)?;
        return Ok(true);
    };
    let mut progress = record.build.clone().unwrap_or_default();
    let docs = txn.open_table(DOCS).map_err(io_err)?;
    let mut entries = txn.open_table(INDEX_ENTRIES).map_err(io_err)?;
    let start = progress.after.clone().unwrap_or_default();
    let mut n = 0;
    let mut last = None;
    for row in docs
        .range((gid, collection.as_str(), start.as_str())..(gid + 1, "", ""))
        .map_err(io_err)?
    {
        let (k, v) = row.map_err(io_err)?;
        let (_, c, id) = k.value();
        if c != collection {
            break;
        }
        if progress.after.as_deref() == Some(id) {
            continue;
        }
        if n == BUILD_BATCH {
            break;
        }
        let doc = super::documents::read_doc(gid, c, id, v.value())?;
        if let Some(json) = parse_json(&doc.json) {
            let key = flotilla_query::index_key(&json, &paths);
            entries
                .insert((gid, record.id, key.as_slice(), id), ())
                .map_err(io_err)?;
        }
        n += 1;
        last = Some(id.to_string());
    }
    progress.done += n as u64;
    if n < BUILD_BATCH {
        record.build = None;
        tracing::info!(
            group = gid,
            collection,
            index = name,
            documents = progress.done,
            "index built"
        );
    } else {
        progress.after = last;
        record.build = Some(progress.clone());
    }
    defs.insert(
        (gid, collection.as_str(), name.as_str()),
        encode(&record)?.as_slice(),
    )
    .map_err(io_err)?;
    Ok(true)
}

/// Replaces the group's index definitions with a snapshot's and removes every entry: each
/// index is built again from the installed documents.
pub(crate) fn replace_all(
    txn: &WriteTransaction,
    gid: GroupId,
    defs_in: &[SnapshotIndex],
) -> io::Result<()> {
    delete_group(txn, gid)?;
    let mut defs = txn.open_table(INDEX_DEFS).map_err(io_err)?;
    for d in defs_in {
        let record = IndexRecord {
            id: d.id,
            paths: d.paths.clone(),
            build: Some(BuildProgress::default()),
        };
        defs.insert(
            (gid, d.collection.as_str(), d.name.as_str()),
            encode(&record)?.as_slice(),
        )
        .map_err(io_err)?;
    }
    Ok(())
}

/// Removes every index definition and entry of a group.
pub(crate) fn delete_group(txn: &WriteTransaction, gid: GroupId) -> io::Result<()> {
    let mut defs = txn.open_table(INDEX_DEFS).map_err(io_err)?;
    defs.retain_in((gid, "", "")..(gid + 1, "", ""), |_, _| false)
        .map_err(io_err)?;
    let mut entries = txn.open_table(INDEX_ENTRIES).map_err(io_err)?;
    entries
        .retain_in(
            (gid, 0, [].as_slice(), "")..(gid + 1, 0, [].as_slice(), ""),
            |_, _| false,
        )
        .map_err(io_err)?;
    Ok(())
}

/// The definitions a snapshot of the group carries.
pub(crate) fn snapshot_defs(txn: &ReadTransaction, gid: GroupId) -> io::Result<Vec<SnapshotIndex>> {
    let defs = txn.open_table(INDEX_DEFS).map_err(io_err)?;
    Ok(load_defs(&defs, gid)?
        .into_iter()
        .map(|(collection, name, r)| SnapshotIndex {
            collection,
            name,
            id: r.id,
            paths: r.paths,
        })
        .collect())
}

/// The group's indexes and their build state.
pub(crate) fn status(txn: &ReadTransaction, gid: GroupId) -> io::Result<Vec<IndexStatus>> {
    let defs = txn.open_table(INDEX_DEFS).map_err(io_err)?;
    let entries = txn.open_table(INDEX_ENTRIES).map_err(io_err)?;
    let mut out = Vec::new();
    for (collection, name, r) in load_defs(&defs, gid)? {
        let done = match &r.build {
            Some(b) => b.done,
            None => entries
                .range((gid, r.id, [].as_slice(), "")..(gid, r.id + 1, [].as_slice(), ""))
                .map_err(io_err)?
                .count() as u64,
        };
        out.push(IndexStatus {
            collection,
            name,
            paths: r.paths,
            ready: r.build.is_none(),
            done,
        });
    }
    Ok(out)
}

/// Ids of the documents whose key in index `name` of `collection` lies in `ranges`, in key
/// order; `None` when this replica has no such index built.
pub(crate) fn lookup(
    txn: &ReadTransaction,
    gid: GroupId,
    collection: &str,
    name: &str,
    ranges: &[KeyRange],
) -> io::Result<Option<Vec<String>>> {
    let defs = txn.open_table(INDEX_DEFS).map_err(io_err)?;
    let record: IndexRecord = match defs.get((gid, collection, name)).map_err(io_err)? {
        Some(v) => decode(v.value())?,
        None => return Ok(None),
    };
    if record.build.is_some() {
        return Ok(None);
    }
    let entries = txn.open_table(INDEX_ENTRIES).map_err(io_err)?;
    let mut ids = Vec::new();
    for r in ranges {
        let start = (gid, record.id, r.start.as_slice(), "");
        let rows = match &r.end {
            Some(end) => entries.range(start..(gid, record.id, end.as_slice(), "")),
            None => entries.range(start..(gid, record.id + 1, [].as_slice(), "")),
        }
        .map_err(io_err)?;
        for row in rows {
            let (k, _) = row.map_err(io_err)?;
            ids.push(k.value().3.to_string());
        }
    }
    Ok(Some(ids))
}

/// The index builds running on a node, one task per group at most.
#[derive(Default)]
pub struct Builds {
    /// group -> whether more work was announced while its task ran.
    running: Mutex<HashMap<GroupId, bool>>,
}

impl Builds {
    /// Makes sure a builder works on `gid`'s indexes still building (after a create, a
    /// snapshot install, or a restart). Without a Tokio runtime it does nothing.
    pub(crate) fn kick(self: &Arc<Self>, writer: &Writer, gid: GroupId) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(again) = running.get_mut(&gid) {
                *again = true;
                return;
            }
            running.insert(gid, false);
        }
        let (builds, writer) = (self.clone(), writer.clone());
        rt.spawn(async move {
            loop {
                // The step may run again from the same start (see `writer`): the last run's
                // answer counts.
                let out = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let result = out.clone();
                let work = writer.run(false, move |txn| {
                    let more = build_step(txn, gid)?;
                    result.store(more, std::sync::atomic::Ordering::SeqCst);
                    Ok(())
                });
                let more = match work.await {
                    Ok(()) => out.load(std::sync::atomic::Ordering::SeqCst),
                    Err(e) => {
                        tracing::warn!(group = gid, error = %e, "index build stopped");
                        false
                    }
                };
                if more {
                    tokio::task::yield_now().await;
                    continue;
                }
                let mut running = builds.running.lock().unwrap_or_else(|p| p.into_inner());
                match running.get_mut(&gid) {
                    Some(again) if *again => *again = false,
                    _ => {
                        running.remove(&gid);
                        return;
                    }
                }
            }
        });
    }
}
