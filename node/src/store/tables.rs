//! Table layout of the node's two redb files. Every key starts with the Raft group id.
//!
//! The log file holds what Raft needs durable before it acknowledges anything (logs, votes) and
//! the node id; the state file holds what applying the logs produced (state machines, change
//! feeds, snapshots), made durable in the background and by every snapshot.

use std::io;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::{StoreError, io_err};
use crate::types::{GroupId, NodeId};

/// (group, index) -> encoded log entry.
pub(crate) const LOGS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("raft_log");
/// (group, key) -> vote / committed / purged.
pub(crate) const RAFT_STATE: TableDefinition<(u64, &str), &[u8]> =
    TableDefinition::new("raft_state");
/// (group, key) -> applied / membership / meta state / changes floor.
pub(crate) const SM_STATE: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("sm_state");
/// (group, collection, id) -> stored document.
pub(crate) const DOCS: TableDefinition<(u64, &str, &str), &[u8]> =
    TableDefinition::new("documents");
/// (group, revision) -> change events of that revision (the watch feed).
pub(crate) const CHANGES: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("changes");
/// group -> the group's current snapshot (meta and data), as kept before snapshot files: only
/// read to carry them over (see `snapshot::migrate`).
pub(crate) const SNAPSHOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshots");
/// group -> the group's current snapshot: its metadata and the file holding it (see
/// `snapshot`).
pub(crate) const SNAPSHOT_FILES: TableDefinition<u64, &[u8]> =
    TableDefinition::new("snapshot_files");
/// (group, collection, index name) -> index definition and build progress (see `indexes`).
pub(crate) const INDEX_DEFS: TableDefinition<(u64, &str, &str), &[u8]> =
    TableDefinition::new("index_defs");
/// (group, index id, key, document id) -> () : the entries of secondary indexes.
pub(crate) const INDEX_ENTRIES: TableDefinition<(u64, u64, &[u8], &str), ()> =
    TableDefinition::new("index_entries");
/// Node-level facts (its id).
pub(crate) const NODE: TableDefinition<&str, &[u8]> = TableDefinition::new("node");

pub(crate) const KEY_VOTE: &str = "vote";
pub(crate) const KEY_COMMITTED: &str = "committed";
pub(crate) const KEY_PURGED: &str = "purged";
pub(crate) const KEY_APPLIED: &str = "applied";
pub(crate) const KEY_MEMBERSHIP: &str = "membership";
pub(crate) const KEY_META: &str = "meta";
pub(crate) const KEY_CHANGES_FLOOR: &str = "changes_floor";
/// How many documents the group holds, kept in the transaction of every write to them.
pub(crate) const KEY_DOCUMENTS: &str = "documents";

/// The format of the data files this build reads and writes. It changes with any change of
/// how something stored is encoded; a node refuses a data directory of another format rather
/// than misread it. Format 1: directories written before the format was recorded. Format 3:
/// log entries, snapshots and documents stored with checksums (see `integrity`); a directory
/// of format 2 is taken over as it is (its records without checksums still read, and are
/// checked from when they are written again) and recorded as format 3, which an older build
/// refuses. Format 4: snapshots kept in files (see `snapshot`); a directory of format 2 or 3
/// is taken over, its stored snapshots written out as files when the node opens it.
pub const DATA_FORMAT: u32 = 4;
/// The older formats this build reads and takes over (see [`DATA_FORMAT`]).
const UPGRADES_FROM: [u32; 2] = [2, 3];
const KEY_FORMAT: &str = "format";

/// Reads the node id from the log file, generating and storing one (with the data format) on
/// first open; refuses a data directory of another format, changing nothing in it.
pub(crate) fn init_node_id(db: &Database) -> Result<NodeId, StoreError> {
    let txn = db.begin_write()?;
    let id = {
        let mut table = txn.open_table(NODE)?;
        let existing = table
            .get("node_id")?
            .map(|v| v.value().try_into().map(u64::from_le_bytes));
        let format = table
            .get(KEY_FORMAT)?
            .map(|v| v.value().try_into().map(u32::from_le_bytes));
        if existing.is_some() {
            let found = match format {
                None => 1,
                Some(Ok(found)) => found,
                Some(Err(_)) => 0,
            };
            if UPGRADES_FROM.contains(&found) {
                table.insert(KEY_FORMAT, DATA_FORMAT.to_le_bytes().as_slice())?;
                tracing::info!(
                    from = found,
                    to = DATA_FORMAT,
                    "data directory taken over: records are checksummed and snapshots kept in \
                     files from now on"
                );
            } else if found != DATA_FORMAT {
                return Err(StoreError::Format {
                    found,
                    expected: DATA_FORMAT,
                });
            }
        }
        match existing {
            Some(Ok(id)) => id,
            Some(Err(_)) => {
                return Err(StoreError::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "stored node id is corrupt",
                )));
            }
            None => {
                let id = loop {
                    // Keep ids within JSON's exact integer range for tooling that reads them.
                    let id = rand::random::<u64>() >> 12;
                    if id != 0 {
                        break id;
                    }
                };
                table.insert("node_id", id.to_le_bytes().as_slice())?;
                table.insert(KEY_FORMAT, DATA_FORMAT.to_le_bytes().as_slice())?;
                id
            }
        }
    };
    // Create every table so readers never see a missing one.
    txn.open_table(LOGS)?;
    txn.open_table(RAFT_STATE)?;
    txn.commit()?;
    Ok(id)
}

/// Creates the tables of the state file defined here (the request ids' and transactions'
/// own tables are created beside, by `Store::open`).
pub(crate) fn init_state(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(SM_STATE)?;
    txn.open_table(DOCS)?;
    txn.open_table(CHANGES)?;
    txn.open_table(SNAPSHOTS)?;
    txn.open_table(SNAPSHOT_FILES)?;
    txn.open_table(INDEX_DEFS)?;
    txn.open_table(INDEX_ENTRIES)?;
    Ok(())
}

/// Moves the state tables of a log file written when one file held everything into the state
/// file, in two durable steps: copied (the state file's transaction), then removed from the log
/// file. Interrupted between the two, the next open copies again over the same rows. Returns
/// the rows moved.
pub(crate) fn migrate_state(log: &Database, state: &Database) -> Result<u64, StoreError> {
    let read = log.begin_read()?;
    let mut moved = 0;
    {
        let txn = state.begin_write()?;
        moved += copy_table(&read, &txn, SM_STATE)?;
        moved += copy_table(&read, &txn, DOCS)?;
        moved += copy_table(&read, &txn, CHANGES)?;
        moved += copy_table(&read, &txn, SNAPSHOTS)?;
        txn.commit()?;
    }
    drop(read);
    if moved > 0 {
        let txn = log.begin_write()?;
        txn.delete_table(SM_STATE)?;
        txn.delete_table(DOCS)?;
        txn.delete_table(CHANGES)?;
        txn.delete_table(SNAPSHOTS)?;
        txn.commit()?;
    }
    Ok(moved)
}

fn copy_table<K: redb::Key + 'static>(
    from: &redb::ReadTransaction,
    to: &WriteTransaction,
    table: TableDefinition<K, &[u8]>,
) -> Result<u64, StoreError> {
    let source = match from.open_table(table) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut target = to.open_table(table)?;
    let mut n = 0;
    for row in source.iter()? {
        let (k, v) = row?;
        target.insert(k.value(), v.value())?;
        n += 1;
    }
    Ok(n)
}

/// Removes every record of `gid` from the log file.
pub(crate) fn delete_group_log(txn: &WriteTransaction, gid: GroupId) -> io::Result<()> {
    let mut logs = txn.open_table(LOGS).map_err(io_err)?;
    logs.retain_in((gid, 0)..=(gid, u64::MAX), |_, _| false)
        .map_err(io_err)?;
    let mut raft = txn.open_table(RAFT_STATE).map_err(io_err)?;
    raft.retain_in((gid, "")..(gid + 1, ""), |_, _| false)
        .map_err(io_err)?;
    Ok(())
}

/// Removes the records of `gid` in the state file's tables defined here (`Store::delete_group`
/// removes the rest).
pub(crate) fn delete_group_state(txn: &WriteTransaction, gid: GroupId) -> io::Result<()> {
    let mut changes = txn.open_table(CHANGES).map_err(io_err)?;
    changes
        .retain_in((gid, 0)..=(gid, u64::MAX), |_, _| false)
        .map_err(io_err)?;
    let mut docs = txn.open_table(DOCS).map_err(io_err)?;
    docs.retain_in((gid, "", "")..(gid + 1, "", ""), |_, _| false)
        .map_err(io_err)?;
    let mut sm = txn.open_table(SM_STATE).map_err(io_err)?;
    sm.retain_in((gid, "")..(gid + 1, ""), |_, _| false)
        .map_err(io_err)?;
    let mut snaps = txn.open_table(SNAPSHOTS).map_err(io_err)?;
    snaps.remove(gid).map_err(io_err)?;
    let mut files = txn.open_table(SNAPSHOT_FILES).map_err(io_err)?;
    files.remove(gid).map_err(io_err)?;
    Ok(())
}
