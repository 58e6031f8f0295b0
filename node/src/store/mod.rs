//! Durable state of a node: two redb files shared by every Raft group on the node, keyed by
//! group id, each written by its own group-commit writer thread.
//!
//! - The log file (`flotilla.redb`): Raft logs, votes and the node id. Appends are fsynced
//!   before Raft counts them, in batches across all groups.
//! - The state file (`state.redb`): state machines, change feeds and snapshots. Applies commit
//!   without fsync (each records its `last_applied` in the same transaction); the file is made
//!   durable every 2 s while applies arrive, by every snapshot (before the logs it covers may be
//!   purged) and when the node stops. After a crash it is consistent as of its last durable
//!   commit, and openraft applies the rest again from the logs.
//!
//! Kept apart, an fsync of the logs writes only the few pages the appends touched, not every
//! page the applies since the last one dirtied across the documents of all groups.

pub mod changes_export;
mod checks;
mod dedup;
mod digest;
mod documents;
pub mod export;
pub mod faults;
pub mod fence;
mod files;
pub mod held;
mod index_check;
pub mod indexes;
pub mod integrity;
pub mod load;
mod log_store;
pub mod measure;
pub mod power_loss;
mod query;
pub mod slow_disk;
mod snapshot;
pub mod space;
mod state_machine;
mod tables;
pub use tables::DATA_FORMAT;
pub(crate) mod txn;
mod writer;

#[cfg(test)]
mod checks_tests;
#[cfg(test)]
mod digest_tests;
#[cfg(test)]
mod fence_tests;
#[cfg(test)]
mod integrity_tests;
#[cfg(test)]
mod load_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod txn_tests;

/// Records for tests elsewhere in the node.
#[cfg(test)]
pub(crate) mod tests_support {
    /// The snapshot file of a data group holding about `bytes` bytes of documents.
    pub(crate) fn data_snapshot(bytes: usize) -> Vec<u8> {
        super::snapshot::test_file(bytes)
    }

    /// The same, as a node kept and sent it before snapshot files: one encoded body.
    pub(crate) fn legacy_snapshot(bytes: usize) -> Vec<u8> {
        super::snapshot::legacy::test_body(bytes)
    }
}

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable};

pub use checks::CheckDigest;
pub use digest::ReplicaDigest;
pub use documents::{CHANGE_RETENTION, ChangeEvent, StoredDoc};
pub use files::TestModes;
use files::{CLEAN_STOP, create, open_file};
pub use integrity::{Corruption, Damage, Divergence, Record};
pub use log_store::LogStore;
pub use measure::StorageMetrics;
pub use query::{PageError, ReadAt, ShardAnswer};
pub use state_machine::{GroupState, StateMachine, check_snapshot};
use writer::Sync;
pub use writer::Writer;

use crate::types::{GroupId, NodeId};

/// Decodes `data` as every record the store keeps (documents, request records, index
/// definitions, transaction state, snapshots, log entries and votes); each value that decodes
/// must encode again, and that encoding must read back to the same bytes. For the fuzz targets
/// (`crate::fuzzing`): a record read from disk or a peer never panics the node.
pub(crate) fn check_record_codecs(data: &[u8]) {
    use crate::codec::{decode, encode};
    fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(data: &[u8]) {
        let Ok(value) = decode::<T>(data) else {
            return;
        };
        let Ok(once) = encode(&value) else {
            panic!("a decoded {} does not encode", std::any::type_name::<T>());
        };
        let again = match decode::<T>(&once) {
            Ok(v) => encode(&v).ok(),
            Err(e) => panic!(
                "{} re-encoded does not decode: {e}",
                std::any::type_name::<T>()
            ),
        };
        assert_eq!(
            again.as_deref(),
            Some(once.as_slice()),
            "{} does not encode the same twice",
            std::any::type_name::<T>()
        );
    }
    round_trip::<StoredDoc>(data);
    round_trip::<dedup::ClientRecord>(data);
    round_trip::<dedup::Requests>(data);
    round_trip::<indexes::IndexRecord>(data);
    round_trip::<txn::TxnSnapshot>(data);
    round_trip::<snapshot::legacy::Body>(data);
    round_trip::<snapshot::legacy::StoredSnapshot>(data);
    round_trip::<snapshot::SnapshotRecord>(data);
    round_trip::<crate::consensus::Entry>(data);
    round_trip::<crate::consensus::Vote>(data);
    round_trip::<crate::consensus::LogId>(data);
    round_trip::<crate::meta::MetaState>(data);
    let _ = check_snapshot(crate::types::META_GROUP, data);
    let _ = check_snapshot(7, data);
}

/// The node's storage could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Redb(#[from] redb::Error),
    #[error("storage: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Codec(#[from] crate::codec::CodecError),
    /// A stored record of a group failed its checksum: the group is not served here.
    #[error(transparent)]
    Corrupt(#[from] Corruption),
    /// The data directory was written in another format than this build reads (see
    /// [`DATA_FORMAT`]); nothing in it was changed.
    #[error(
        "the data directory holds data of format {found}, and this Flotilla reads format \
         {expected} only; it was left as it was. Start the node on an empty data directory (it \
         joins the cluster and copies its replicas from the other nodes), or restore a backup \
         into a new cluster"
    )]
    Format { found: u32, expected: u32 },
    /// After an unclean stop, a data file failed redb's integrity check and could not be
    /// repaired; the node does not start on it.
    #[error(
        "{file} failed its integrity check after an unclean stop ({error}); the node does not \
         start on it. Its files were left as they were: start the node on an empty data \
         directory (it joins as a new node and copies its replicas from the others, and \
         `flotilla cluster rebuild-node` removes the old one), or restore a backup"
    )]
    Integrity { file: String, error: String },
}

impl From<redb::DatabaseError> for StoreError {
    fn from(e: redb::DatabaseError) -> Self {
        StoreError::Redb(e.into())
    }
}
impl From<redb::TransactionError> for StoreError {
    fn from(e: redb::TransactionError) -> Self {
        StoreError::Redb(e.into())
    }
}
impl From<redb::TableError> for StoreError {
    fn from(e: redb::TableError) -> Self {
        StoreError::Redb(e.into())
    }
}
impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        StoreError::Redb(e.into())
    }
}
impl From<redb::CommitError> for StoreError {
    fn from(e: redb::CommitError) -> Self {
        StoreError::Redb(e.into())
    }
}

impl From<StoreError> for io::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Io(e) => e,
            StoreError::Corrupt(c) => c.into(),
            other => io::Error::other(other.to_string()),
        }
    }
}

/// Turns any redb error into the `io::Error` openraft's storage traits use.
pub(crate) fn io_err(e: impl Into<redb::Error>) -> io::Error {
    io::Error::other(e.into().to_string())
}

/// How often the state file is made durable while applies arrive. Each sync holds up the
/// applies that arrive while it runs and has a cost of its own besides the pages it writes,
/// so it is rare;
/// what a crash undoes (at most this much of applying) openraft redoes from the logs, which
/// are kept until a snapshot has made the state durable.
const STATE_SYNC_EVERY: Duration = Duration::from_millis(2000);

/// The node's two database files and their writers.
pub struct Storage {
    log: Arc<Database>,
    state: Arc<Database>,
    log_writer: Writer,
    state_writer: Writer,
    writer_threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
    node_id: NodeId,
    fresh: bool,
    /// Faults injected by tests (see `faults`); none unless enabled.
    test_faults: faults::TestFaults,
    /// Background builds of secondary indexes.
    index_builds: Arc<indexes::Builds>,
    /// Reads held across the pages of a query (see `held`).
    held_reads: held::HeldReads,
    /// Revisions of change feed each group keeps (`--change-retention`).
    change_retention: std::sync::atomic::AtomicU64,
    metrics: StorageMetrics,
    /// Groups with a stored record that failed its check (see `integrity`), and a counter
    /// that moves each time one is added.
    corrupt: std::sync::Mutex<std::collections::BTreeMap<GroupId, Corruption>>,
    corrupt_seen: tokio::sync::watch::Sender<u64>,
    /// Per group, the error its last failed apply met (see [`Storage::apply_failed`]).
    apply_failures: std::sync::Mutex<std::collections::BTreeMap<GroupId, String>>,
    /// Where the snapshot files are (see `snapshot`).
    snapshot_dir: std::path::PathBuf,
    /// The data directory.
    dir: std::path::PathBuf,
}

impl Drop for Storage {
    /// Lets the writers finish what is queued and release the files before the handle goes
    /// away.
    fn drop(&mut self) {
        let _ = self.stop_writers();
    }
}

/// The log file (and, in data directories written before the split, every table).
const LOG_FILE: &str = "flotilla.redb";
const STATE_FILE: &str = "state.redb";

/// Page cache of the log file. Appends are written once and read back rarely (by a lagging
/// follower's replication), so a small cache serves; redb's default (1 GiB per file) let a
/// busy node's memory grow with the log kept between snapshots.
const LOG_CACHE_BYTES: usize = 32 * 1024 * 1024;
/// Page cache of the state file: the documents read and written (`--state-cache-bytes`).
pub const STATE_CACHE_BYTES: usize = 128 * 1024 * 1024;

impl Storage {
    /// Opens (or creates) the database files in `dir`. A new log file gets a newly generated
    /// node id: a node that lost its data directory comes back as a new node.
    pub fn open(dir: &Path, metrics: StorageMetrics) -> Result<Arc<Storage>, StoreError> {
        Storage::open_with(dir, metrics, TestModes::default(), STATE_CACHE_BYTES)
    }

    /// [`Storage::open`] in the test modes `test` (see [`TestModes`]), with a page cache of
    /// `state_cache_bytes` for the state file (the documents read and written).
    pub fn open_with(
        dir: &Path,
        metrics: StorageMetrics,
        test: TestModes,
        state_cache_bytes: usize,
    ) -> Result<Arc<Storage>, StoreError> {
        std::fs::create_dir_all(dir)?;
        let log_path = dir.join(LOG_FILE);
        let fresh = !log_path.exists();
        // A node that did not stop cleanly (killed, or its machine lost power) may have left a
        // file redb repairs on open, or one damaged under it: both files are checked whole.
        let marker = dir.join(CLEAN_STOP);
        let check = !fresh && !marker.exists();
        let mut log = create(
            Database::builder().set_cache_size(LOG_CACHE_BYTES),
            &log_path,
            test,
        )?;
        // The format first: a directory of another format is left as it was, unchecked.
        let node_id = tables::init_node_id(&log)?;
        if check {
            drop(log);
            log = open_file(
                Database::builder().set_cache_size(LOG_CACHE_BYTES),
                &log_path,
                test,
                true,
            )?;
        }
        let log = Arc::new(log);
        let state = Arc::new(open_file(
            Database::builder().set_cache_size(state_cache_bytes),
            &dir.join(STATE_FILE),
            test,
            check,
        )?);
        if marker.exists() {
            std::fs::remove_file(&marker)?;
            std::fs::File::open(dir)?.sync_all()?;
        }
        {
            let txn = state.begin_write()?;
            tables::init_state(&txn)?;
            dedup::init(&txn)?;
            self::txn::init(&txn)?;
            changes_export::init(&txn)?;
            txn.commit()?;
        }
        let moved = tables::migrate_state(&log, &state)?;
        if moved > 0 {
            tracing::info!(rows = moved, "moved the state machines into their own file");
        }
        let snapshot_dir = snapshot::open_dir(&state, dir)?;
        let (log_writer, log_thread) = Writer::start(
            "flotilla-log-writer",
            log.clone(),
            Sync::OnRequest,
            Some(metrics.log_commit.clone()),
            Some(metrics.log_fsync.clone()),
        )?;
        let (state_writer, state_thread) = Writer::start(
            "flotilla-state-writer",
            state.clone(),
            Sync::AtLeastEvery(STATE_SYNC_EVERY),
            None,
            Some(metrics.state_fsync.clone()),
        )?;
        Ok(Arc::new(Storage {
            log,
            state,
            log_writer,
            state_writer,
            writer_threads: std::sync::Mutex::new(vec![log_thread, state_thread]),
            node_id,
            fresh,
            test_faults: faults::TestFaults::default(),
            index_builds: Arc::default(),
            held_reads: held::HeldReads::default(),
            change_retention: std::sync::atomic::AtomicU64::new(documents::CHANGE_RETENTION),
            metrics,
            corrupt: std::sync::Mutex::default(),
            corrupt_seen: tokio::sync::watch::Sender::new(0),
            apply_failures: Default::default(),
            snapshot_dir,
            dir: dir.to_path_buf(),
        }))
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// True when this process created the data file (no earlier state existed).
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// The log file: Raft logs and votes.
    pub fn log_db(&self) -> &Arc<Database> {
        &self.log
    }

    /// The state file: state machines, change feeds and snapshots.
    pub fn state_db(&self) -> &Arc<Database> {
        &self.state
    }

    /// Reads held across the pages of a query.
    pub fn held_reads(&self) -> &held::HeldReads {
        &self.held_reads
    }

    /// How many revisions of change feed each group keeps from now on (at least 1): older
    /// changes are pruned as writes apply, so watches and incremental backups that need them
    /// are refused as compacted.
    pub fn set_change_retention(&self, revisions: u64) {
        self.change_retention
            .store(revisions.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// Revisions of change feed each group keeps (see [`Storage::set_change_retention`]).
    pub fn change_retention(&self) -> u64 {
        self.change_retention
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Faults injected by tests (`--test-storage-faults`).
    pub fn test_faults(&self) -> &faults::TestFaults {
        &self.test_faults
    }

    pub fn log_writer(&self) -> &Writer {
        &self.log_writer
    }

    pub fn state_writer(&self) -> &Writer {
        &self.state_writer
    }

    /// How many documents each of `groups` holds (one lookup per group; a group missing from
    /// the answer has not been written since it was stored without a count).
    pub fn document_counts(&self, groups: &[GroupId]) -> io::Result<Vec<(GroupId, u64)>> {
        let txn = self.state.begin_read().map_err(io_err)?;
        let mut counts = Vec::with_capacity(groups.len());
        for gid in groups {
            if let Some(n) = documents::count(&txn, *gid)? {
                counts.push((*gid, n));
            }
        }
        Ok(counts)
    }

    /// Records that a stored record of a group failed its check (the first one found for the
    /// group is kept) and returns the error the read that found it fails with.
    pub fn corrupted(&self, c: Corruption) -> io::Error {
        let gid = c.gid;
        let new = {
            let mut all = self.corrupt.lock().unwrap_or_else(|p| p.into_inner());
            let new = !all.contains_key(&gid);
            all.entry(gid).or_insert_with(|| c.clone());
            new
        };
        if new {
            tracing::error!(group = gid, error = %c, "corrupt record found; the group stops serving on this node");
            self.corrupt_seen.send_modify(|n| *n += 1);
        }
        c.into()
    }

    /// Records the corruption `e` carries, if any (see [`Storage::corrupted`]); returns `e`.
    pub fn note(&self, e: io::Error) -> io::Error {
        match Corruption::of(&e) {
            Some(c) => self.corrupted(c.clone()),
            None => e,
        }
    }

    /// Records that an apply of group `gid` failed with `e`. Raft stops the group, but the
    /// reason it gives may be a later consequence (its core finding the state machine gone),
    /// so the supervisor asks for this cause (see [`Storage::take_apply_failure`]).
    pub(crate) fn apply_failed(&self, gid: GroupId, e: &io::Error) {
        self.apply_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(gid, e.to_string());
    }

    /// The error group `gid`'s last failed apply met, once.
    pub fn take_apply_failure(&self, gid: GroupId) -> Option<String> {
        self.apply_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&gid)
    }

    /// The corrupt record found in group `gid`, if one was.
    pub fn corruption(&self, gid: GroupId) -> Option<Corruption> {
        self.corrupt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&gid)
            .cloned()
    }

    /// Changes each time a group is found corrupt.
    pub fn watch_corruption(&self) -> tokio::sync::watch::Receiver<u64> {
        self.corrupt_seen.subscribe()
    }

    /// The histograms storage work is timed into.
    pub fn metrics(&self) -> &StorageMetrics {
        &self.metrics
    }

    /// Starts (or nudges) the background build of `gid`'s indexes still building.
    pub(crate) fn kick_index_build(&self, gid: GroupId) {
        self.index_builds.kick(&self.state_writer, gid);
    }

    /// Group ids that have any Raft state stored on this node.
    pub fn stored_groups(&self) -> Result<Vec<GroupId>, StoreError> {
        let txn = self.log.begin_read()?;
        let table = match txn.open_table(tables::RAFT_STATE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![]),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, _) = row?;
            let gid = k.value().0;
            if out.last() != Some(&gid) {
                out.push(gid);
            }
        }
        out.dedup();
        Ok(out)
    }

    /// Lets the writers finish what is queued and exit, and waits for them (once: later calls
    /// find none to wait for).
    fn stop_writers(&self) -> io::Result<()> {
        self.log_writer.stop();
        self.state_writer.stop();
        let handles = std::mem::take(
            &mut *self
                .writer_threads
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let mut panicked = false;
        for h in handles {
            panicked |= h.join().is_err();
        }
        match panicked {
            true => Err(io::Error::other("a storage writer panicked")),
            false => Ok(()),
        }
    }

    /// Stops the node's storage cleanly: every write made durable, the writers stopped, and
    /// the data directory marked so that the next start trusts its files without checking them
    /// whole. Later writes fail. Blocks until the writers have exited.
    pub fn stop_cleanly(&self) -> io::Result<()> {
        self.stop_writers()?;
        let durable = |db: &Database| -> io::Result<()> {
            let txn = db.begin_write().map_err(io_err)?;
            txn.commit().map_err(io_err)
        };
        durable(&self.state)?;
        durable(&self.log)?;
        let marker = self.dir.join(CLEAN_STOP);
        std::fs::write(&marker, b"stopped cleanly\n")?;
        std::fs::File::open(&marker)?.sync_all()?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        Ok(())
    }

    /// Deletes every record of a group (its database was dropped or the replica removed).
    ///
    /// The log file goes first: once its Raft state is gone the group is no longer stored here
    /// (`stored_groups`), so a crash before the state file's turn leaves only unreachable rows.
    pub async fn delete_group(&self, gid: GroupId) -> io::Result<()> {
        let snapshot = self.snapshot_file_name(gid)?;
        self.log_writer
            .run(true, move |txn| tables::delete_group_log(txn, gid))
            .await?;
        self.state_writer
            .run(true, move |txn| {
                tables::delete_group_state(txn, gid)?;
                dedup::delete_group(txn, gid)?;
                indexes::delete_group(txn, gid)?;
                self::txn::delete_group(txn, gid)
            })
            .await?;
        if let Some(name) = snapshot {
            self.remove_snapshot_file(&name);
        }
        // Its records are gone, and with them whatever was corrupt.
        self.corrupt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&gid);
        Ok(())
    }
}

#[cfg(test)]
mod index_tests;
