//! Snapshots of a group, kept as files in the data directory's `snapshots/` (see
//! [`crate::snapshot_file`]) and named by a sealed record in the state file. A snapshot is
//! built by reading the group's state in one read transaction and writing it out a frame at a
//! time ([`format`]); it is sent in chunks read from its file, received into a file, and
//! installed from it a frame at a time. No step holds a whole shard in memory, and no
//! snapshot is bounded by the size of one stored value.
//!
//! The record and the file: the file is written and synced first, then the record naming it is
//! committed durably (which also makes every earlier apply durable, so the logs the snapshot
//! covers may be purged), then the file of the record it replaced is removed. Files no record
//! names (left by a crash between those steps) are removed when the node opens its data.

mod format;
pub(crate) mod legacy;

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use redb::{Database, ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use super::documents;
use super::integrity::{self, Corruption, Damage, Record};
use super::measure::Timer;
use super::tables::{KEY_APPLIED, KEY_MEMBERSHIP, KEY_META, SM_STATE, SNAPSHOT_FILES, SNAPSHOTS};
use super::{Storage, StoreError, io_err};
use crate::codec::{decode, encode};
use crate::consensus::{LogId, Snapshot, SnapshotMeta, StoredMembership};
use crate::meta::MetaState;
use crate::snapshot_file::{OnDamage, SnapshotFile, SnapshotWriter};
use crate::types::{GroupId, META_GROUP};
pub(crate) use format::check;
use format::{FrameWriter, Head};

/// The directory, in the data directory, that holds the snapshot files.
pub(crate) const DIR: &str = "snapshots";

/// What the state file keeps of a group's snapshot: its Raft metadata and its file.
#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotRecord {
    pub meta: SnapshotMeta,
    /// The file's name in the snapshot directory.
    pub file: String,
    pub len: u64,
    /// The CRC-32C of the whole file.
    pub checksum: u32,
}

impl Storage {
    /// A new, pending snapshot file of group `gid` (a build, or one being received).
    pub fn new_snapshot_file(&self, gid: GroupId) -> io::Result<SnapshotWriter> {
        SnapshotWriter::create(&self.snapshot_dir, &new_file_name(gid))
    }

    /// Reports a snapshot file of group `gid` whose content no longer matches its checksum:
    /// the group is corrupt on this node.
    fn on_snapshot_damage(self: &Arc<Self>, gid: GroupId) -> OnDamage {
        let storage: Weak<Storage> = Arc::downgrade(self);
        Arc::new(move |stored, computed| {
            if let Some(s) = storage.upgrade() {
                s.corrupted(Corruption {
                    gid,
                    record: Record::Snapshot,
                    damage: Damage::Checksum { stored, computed },
                });
            }
        })
    }

    /// The name of the snapshot file group `gid`'s record names, if it has one that reads.
    pub(super) fn snapshot_file_name(&self, gid: GroupId) -> io::Result<Option<String>> {
        let txn = self.state_db().begin_read().map_err(io_err)?;
        let t = txn.open_table(SNAPSHOT_FILES).map_err(io_err)?;
        let Some(v) = t.get(gid).map_err(io_err)? else {
            return Ok(None);
        };
        Ok(integrity::unseal::<SnapshotRecord>(v.value())
            .ok()
            .map(|r| r.file))
    }

    /// Takes snapshot `file` of group `gid` received from a peer once it reads whole (see
    /// [`check`]), a frame at a time. A snapshot of the form kept before snapshot files (from a
    /// node of an older version) is written out as a file first. Blocks: call it off the
    /// async threads.
    pub fn received_snapshot(&self, gid: GroupId, file: SnapshotFile) -> io::Result<SnapshotFile> {
        let mut magic = [0u8; 8];
        let whole_magic = file.len() >= 8 && {
            io::Read::read_exact(&mut file.reader(), &mut magic)?;
            &magic == format::MAGIC
        };
        let file = if whole_magic {
            file
        } else {
            let mut data = Vec::new();
            io::Read::read_to_end(&mut file.reader(), &mut data)?;
            drop(file);
            let out = legacy::convert(&data, self.new_snapshot_file(gid)?)?;
            out.finish(None)?
        };
        check(gid, file.reader())?;
        Ok(file)
    }

    /// Removes snapshot file `name` (its record was replaced or removed).
    pub(super) fn remove_snapshot_file(&self, name: &str) {
        let path = self.snapshot_dir.join(name);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(file = %path.display(), error = %e, "could not remove an old snapshot file");
        }
    }
}

/// Builds the snapshot of group `gid` from its state and stores it (see `build_snapshot`).
pub(super) async fn build(storage: &Arc<Storage>, gid: GroupId) -> io::Result<Snapshot> {
    let _timer = Timer::start(&storage.metrics().snapshot_build);
    let writing = storage.clone();
    let (meta, file) = tokio::task::spawn_blocking(move || write(&writing, gid))
        .await
        .map_err(io::Error::other)??;
    store_built(storage, gid, meta, file).await
}

/// Writes the state of group `gid`, read in one read transaction, to a new pending file.
pub(super) fn write(
    storage: &Arc<Storage>,
    gid: GroupId,
) -> io::Result<(SnapshotMeta, SnapshotFile)> {
    let txn = storage.state_db().begin_read().map_err(io_err)?;
    let sm = txn.open_table(SM_STATE).map_err(io_err)?;
    let last_log_id: Option<LogId> = match sm.get((gid, KEY_APPLIED)).map_err(io_err)? {
        Some(v) => Some(decode(v.value())?),
        None => None,
    };
    let last_membership: StoredMembership = match sm.get((gid, KEY_MEMBERSHIP)).map_err(io_err)? {
        Some(v) => decode(v.value())?,
        None => StoredMembership::default(),
    };
    let meta: Option<MetaState> = match sm.get((gid, KEY_META)).map_err(io_err)? {
        Some(v) => Some(decode(v.value())?),
        None => None,
    };
    drop(sm);
    let head = if gid == META_GROUP {
        Head {
            meta,
            ..Head::default()
        }
    } else {
        Head {
            meta: None,
            requests: super::dedup::export(&txn, gid)?,
            indexes: super::indexes::snapshot_defs(&txn, gid)?,
            txns: super::txn::snapshot(&txn, gid)?,
            loading: super::load::is_loading(&txn, gid)?,
            fences: super::fence::fences(&txn, gid)?,
        }
    };
    let mut out = FrameWriter::start(storage.new_snapshot_file(gid)?, head)?;
    if gid != META_GROUP {
        documents::each_doc(&txn, gid, |c, i, doc| out.doc(c, i, doc))?;
    }
    let file = out
        .finish()?
        .finish(Some(storage.on_snapshot_damage(gid)))?;
    Ok((
        SnapshotMeta {
            last_log_id,
            last_membership,
        },
        file,
    ))
}

/// Stores `file`, a snapshot built from the state read at `meta`, unless a newer one is stored
/// already: a snapshot installed from the leader while this one was being built (the build
/// reads the state, then writes, and an install may come in between). Answers the snapshot
/// that is stored.
pub(super) async fn store_built(
    storage: &Arc<Storage>,
    gid: GroupId,
    meta: SnapshotMeta,
    file: SnapshotFile,
) -> io::Result<Snapshot> {
    let record = integrity::seal(&record_of(&meta, &file)?)?;
    let newer: Arc<Mutex<Option<Snapshot>>> = Arc::default();
    let replaced: Arc<Mutex<Option<String>>> = Arc::default();
    let (found, old) = (newer.clone(), replaced.clone());
    let last = meta.last_log_id;
    let dir = storage.snapshot_dir.clone();
    let hook = storage.on_snapshot_damage(gid);
    file.set_kept(true);
    // Durable: this commit also makes every earlier (non-durable) apply durable, so the logs
    // the snapshot covers may be purged.
    let stored = storage
        .state_writer()
        .run(true, move |txn| {
            let mut t = txn.open_table(SNAPSHOT_FILES).map_err(io_err)?;
            let mut newer = None;
            let mut replaced = None;
            if let Some(v) = t.get(gid).map_err(io_err)? {
                let current: SnapshotRecord = integrity::read(gid, || Record::Snapshot, v.value())?;
                if current.meta.last_log_id > last {
                    // Opened here, before any later store can remove it.
                    let f = open_file(gid, &dir, &current, hook.clone())?;
                    newer = Some(Snapshot {
                        meta: current.meta,
                        snapshot: f,
                    });
                } else {
                    replaced = Some(current.file);
                }
            }
            let keep = newer.is_none();
            *found.lock().unwrap_or_else(|p| p.into_inner()) = newer;
            *old.lock().unwrap_or_else(|p| p.into_inner()) = replaced;
            if keep {
                t.insert(gid, record.as_slice()).map_err(io_err)?;
            }
            Ok(())
        })
        .await;
    if let Err(e) = stored {
        file.set_kept(false);
        return Err(storage.note(e));
    }
    if let Some(current) = newer.lock().unwrap_or_else(|p| p.into_inner()).take() {
        file.set_kept(false);
        tracing::info!(
            group = gid,
            built = ?meta.last_log_id,
            kept = ?current.meta.last_log_id,
            "snapshot built, but a newer one was installed meanwhile; the newer one is kept"
        );
        return Ok(current);
    }
    if let Some(name) = replaced.lock().unwrap_or_else(|p| p.into_inner()).take() {
        storage.remove_snapshot_file(&name);
    }
    tracing::info!(group = gid, last = ?meta.last_log_id, bytes = file.len(), "snapshot built");
    Ok(Snapshot {
        meta,
        snapshot: file,
    })
}

/// Installs snapshot `file` taken at `meta` into group `gid`, replacing its whole state, and
/// keeps it as the group's snapshot. A file from outside the snapshot directory is copied in
/// first. Answers the installed meta state (meta group only).
pub(super) async fn install(
    storage: &Arc<Storage>,
    gid: GroupId,
    meta: &SnapshotMeta,
    file: SnapshotFile,
) -> io::Result<Option<MetaState>> {
    let _timer = Timer::start(&storage.metrics().snapshot_install);
    let file = if file.path().parent() == Some(storage.snapshot_dir.as_path()) {
        file
    } else {
        let copying = storage.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = copying.new_snapshot_file(gid)?;
            io::copy(&mut file.reader(), &mut out)?;
            out.finish(None)
        })
        .await
        .map_err(io::Error::other)??
    };
    let record = integrity::seal(&record_of(meta, &file)?)?;
    let applied = meta.last_log_id;
    let membership = meta.last_membership.clone();
    let floor = applied.as_ref().map(|l| l.index + 1).unwrap_or(0);
    let installed: Arc<Mutex<(Option<MetaState>, Option<String>)>> = Arc::default();
    let out = installed.clone();
    let reading = file.clone();
    file.set_kept(true);
    let done = storage
        .state_writer()
        .run(true, move |txn| {
            let (head, docs) = format::open(reading.reader())?;
            if head.meta.is_some() != (gid == META_GROUP) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("not a snapshot of group {gid}"),
                ));
            }
            documents::replace_all(txn, gid, docs, floor)?;
            super::dedup::replace(txn, gid, &head.requests)?;
            super::indexes::replace_all(txn, gid, &head.indexes)?;
            super::txn::install(txn, gid, &head.txns)?;
            super::load::set_loading(txn, gid, head.loading)?;
            super::fence::set(txn, gid, &head.fences)?;
            let mut sm = txn.open_table(SM_STATE).map_err(io_err)?;
            if let Some(a) = &applied {
                sm.insert((gid, KEY_APPLIED), encode(a)?.as_slice())
                    .map_err(io_err)?;
            }
            sm.insert((gid, KEY_MEMBERSHIP), encode(&membership)?.as_slice())
                .map_err(io_err)?;
            if let Some(ms) = &head.meta {
                sm.insert((gid, KEY_META), encode(ms)?.as_slice())
                    .map_err(io_err)?;
            }
            let mut t = txn.open_table(SNAPSHOT_FILES).map_err(io_err)?;
            let replaced = t
                .get(gid)
                .map_err(io_err)?
                .and_then(|v| integrity::unseal::<SnapshotRecord>(v.value()).ok())
                .map(|r| r.file);
            t.insert(gid, record.as_slice()).map_err(io_err)?;
            *out.lock().unwrap_or_else(|p| p.into_inner()) = (head.meta, replaced);
            Ok(())
        })
        .await;
    if let Err(e) = done {
        file.set_kept(false);
        return Err(storage.note(e));
    }
    let (meta_state, replaced) =
        std::mem::take(&mut *installed.lock().unwrap_or_else(|p| p.into_inner()));
    if let Some(name) = replaced.filter(|n| Some(n.as_str()) != file_name(&file)) {
        storage.remove_snapshot_file(&name);
    }
    tracing::info!(group = gid, last = ?meta.last_log_id, bytes = file.len(), "snapshot installed");
    Ok(meta_state)
}

/// The stored snapshot of group `gid`, opened. A record that fails its check, or names a file
/// that is missing or not whole, makes the group corrupt here.
pub(super) fn current(storage: &Arc<Storage>, gid: GroupId) -> io::Result<Option<Snapshot>> {
    // A store may replace the record and remove its file between the read and the open: the
    // record is then read again.
    for attempt in 0.. {
        let txn = storage.state_db().begin_read().map_err(io_err)?;
        let t = txn.open_table(SNAPSHOT_FILES).map_err(io_err)?;
        let Some(v) = t.get(gid).map_err(io_err)? else {
            return Ok(None);
        };
        let record: SnapshotRecord = integrity::read(gid, || Record::Snapshot, v.value())
            .map_err(|c| storage.corrupted(c))?;
        drop(v);
        drop(t);
        drop(txn);
        match open_file(
            gid,
            &storage.snapshot_dir,
            &record,
            storage.on_snapshot_damage(gid),
        ) {
            Ok(file) => {
                return Ok(Some(Snapshot {
                    meta: record.meta,
                    snapshot: file,
                }));
            }
            Err(e) if attempt < 3 && Corruption::of(&e).is_some() => continue,
            Err(e) => return Err(storage.note(e)),
        }
    }
    Ok(None)
}

/// Opens the file `record` names in `dir`: missing, or of another length, it is damage.
fn open_file(
    gid: GroupId,
    dir: &Path,
    record: &SnapshotRecord,
    hook: OnDamage,
) -> io::Result<SnapshotFile> {
    let missing = |what: String| -> io::Error {
        Corruption {
            gid,
            record: Record::Snapshot,
            damage: Damage::Missing(what),
        }
        .into()
    };
    let path = dir.join(&record.file);
    let file = match SnapshotFile::open_kept(&path, record.checksum, Some(hook)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(missing(format!("file {} not found", path.display())));
        }
        Err(e) => return Err(e),
    };
    if file.len() != record.len {
        return Err(missing(format!(
            "file {} holds {} bytes, {} were written",
            path.display(),
            file.len(),
            record.len
        )));
    }
    Ok(file)
}

/// A name no snapshot file of group `gid` has yet.
fn new_file_name(gid: GroupId) -> String {
    format!("{gid}-{:016x}.snap", rand::random::<u64>())
}

fn file_name(file: &SnapshotFile) -> Option<&str> {
    file.path().file_name().and_then(|n| n.to_str())
}

fn record_of(meta: &SnapshotMeta, file: &SnapshotFile) -> io::Result<SnapshotRecord> {
    let name = file_name(file)
        .ok_or_else(|| io::Error::other("a snapshot file without a name"))?
        .to_string();
    Ok(SnapshotRecord {
        meta: meta.clone(),
        file: name,
        len: file.len(),
        checksum: file.checksum(),
    })
}

/// Opens the node's snapshot directory under `data_dir`: snapshots stored the older way (one
/// value each) are written out as files, and files no record names are removed. Answers the
/// directory.
pub(super) fn open_dir(
    state: &Database,
    data_dir: &Path,
) -> Result<std::path::PathBuf, StoreError> {
    let dir = data_dir.join(DIR);
    std::fs::create_dir_all(&dir)?;
    let txn = state.begin_write()?;
    {
        let mut old = txn.open_table(SNAPSHOTS)?;
        let mut files = txn.open_table(SNAPSHOT_FILES)?;
        let gids: Vec<GroupId> = old
            .iter()?
            .map(|row| row.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()?;
        for gid in gids {
            let Some(v) = old.remove(gid)? else {
                continue;
            };
            let stored: legacy::StoredSnapshot = match integrity::unseal(v.value()) {
                Ok(s) => s,
                Err(damage) => {
                    tracing::error!(group = gid, %damage, "a stored snapshot fails its check and is dropped; the group builds or receives a new one");
                    continue;
                }
            };
            drop(v);
            let name = new_file_name(gid);
            let out = legacy::convert(&stored.data, SnapshotWriter::create(&dir, &name)?)?;
            let file = out.finish(None)?;
            let record = integrity::seal(&record_of(&stored.meta, &file)?)?;
            files.insert(gid, record.as_slice())?;
            file.set_kept(true);
            tracing::info!(
                group = gid,
                file = name,
                "a stored snapshot written out as a file"
            );
        }
    }
    txn.commit()?;
    // Files no record names: left by a crash between writing a file and storing its record,
    // or between replacing a record and removing the file it named.
    let txn = state.begin_read()?;
    let files = txn.open_table(SNAPSHOT_FILES)?;
    let mut named = std::collections::BTreeSet::new();
    for row in files.iter()? {
        let (_, v) = row?;
        if let Ok(r) = integrity::unseal::<SnapshotRecord>(v.value()) {
            named.insert(r.file);
        }
    }
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".snap") && !named.contains(&name) {
            std::fs::remove_file(entry.path())?;
            tracing::info!(file = name, "removed a snapshot file no record names");
        }
    }
    Ok(dir)
}

/// The snapshot file of a data group holding about `bytes` bytes of documents, as bytes.
#[cfg(test)]
pub(crate) fn test_file(bytes: usize) -> Vec<u8> {
    legacy::convert(&legacy::test_body(bytes), Vec::new()).unwrap_or_default()
}
