//! Commit times of a data group's change feed, its retention, and reading the feed for an
//! incremental backup.
//!
//! Table (state file): `change_times`: (group, revision) -> the revision's commit time, ms
//! since the Unix epoch (little-endian u64). The time comes with the entry (the leader's wall
//! clock when it proposed it, see `command::Stamped`), so every replica stores the same one.
//! A revision without a row (written before commit times were kept) has time 0: unknown. The
//! rows follow the feed's: pruned with it, cleared when a snapshot restarts it. A new table,
//! so data directories of this format written before it read unchanged.
//!
//! [`export_changes`] reads the feed in (after, to] in one read transaction, in revision
//! order, handed out in chunks so that the feed is never in memory whole; it refuses, before
//! sending anything, a range the feed no longer reaches back to.

use std::io;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::documents::{ChangeEvent, changes_floor};
use super::tables::CHANGES;
use super::{Storage, io_err};
use crate::codec::decode;
use crate::types::GroupId;

/// (group, revision) -> commit time of that revision.
pub(crate) const CHANGE_TIMES: TableDefinition<(u64, u64), u64> =
    TableDefinition::new("change_times");

/// How an apply keeps the change feed: the commit time of the entry being applied (0 when it
/// carries none) and how many revisions the group keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Feed {
    pub unix_ms: u64,
    pub retention: u64,
}

impl Feed {
    /// The new floor when the feed is to be pruned at `revision`: every `retention / 4`
    /// revisions (between 1 and 1024), once more than `retention` revisions were written.
    pub fn prune_floor(&self, revision: u64) -> Option<u64> {
        let retention = self.retention.max(1);
        let every = (retention / 4).clamp(1, 1024);
        (revision.is_multiple_of(every) && revision > retention).then(|| revision - retention)
    }
}

/// Creates the table (state file).
pub(crate) fn init(txn: &WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(CHANGE_TIMES)?;
    Ok(())
}

/// Records the commit time of `revision` (nothing for an unknown time). Times never go back
/// along a group's feed: a leader whose wall clock jumped back stamps the time of the revision
/// before, so that a restore to a point in time (which keeps the changes up to the first one
/// after it) still keeps a prefix of the feed in commit order.
pub(crate) fn record_time(
    txn: &WriteTransaction,
    gid: GroupId,
    revision: u64,
    unix_ms: u64,
) -> io::Result<()> {
    if unix_ms == 0 {
        return Ok(());
    }
    let mut times = txn.open_table(CHANGE_TIMES).map_err(io_err)?;
    let before = match times
        .range((gid, 0)..(gid, revision))
        .map_err(io_err)?
        .next_back()
    {
        Some(row) => row.map_err(io_err)?.1.value(),
        None => 0,
    };
    times
        .insert((gid, revision), unix_ms.max(before))
        .map_err(io_err)?;
    Ok(())
}

/// Drops the times of revisions below `floor`.
pub(crate) fn prune_times(txn: &WriteTransaction, gid: GroupId, floor: u64) -> io::Result<()> {
    let mut times = txn.open_table(CHANGE_TIMES).map_err(io_err)?;
    times
        .retain_in((gid, 0)..(gid, floor), |_, _| false)
        .map_err(io_err)?;
    Ok(())
}

/// One exported change: a put (with the new body) or a delete, at its revision and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedChange {
    pub revision: u64,
    /// Commit time, ms since the Unix epoch; 0 when unknown.
    pub unix_ms: u64,
    pub collection: String,
    pub id: String,
    /// The version written; 0 for a delete.
    pub version: u64,
    /// `None` for a delete.
    pub json: Option<String>,
}

/// Why [`export_changes`] answered nothing.
#[derive(Debug, thiserror::Error)]
pub enum ExportChangesError {
    /// The feed starts after `after + 1`: the changes right after `after` are gone (pruned,
    /// or older than the snapshot this replica was installed from).
    #[error("the change feed starts at revision {oldest}; revision {} is gone", .after + 1)]
    Compacted { after: u64, oldest: u64 },
    #[error("reading the change feed: {0}")]
    Io(#[from] io::Error),
}

/// Reads group `gid`'s changes of revisions in (`after`, `to`] in one read transaction,
/// calling `send` with at most `chunk` changes at a time, in revision order (a revision's
/// changes in the order it made them). Stops early, without error, when `send` returns
/// false. Refused, with nothing sent, when the feed does not reach back to `after + 1`.
/// Answers how many changes were sent. Blocking: run it off the async runtime.
pub fn export_changes(
    storage: &Storage,
    gid: GroupId,
    after: u64,
    to: u64,
    chunk: usize,
    mut send: impl FnMut(Vec<ExportedChange>) -> bool,
) -> Result<u64, ExportChangesError> {
    let txn = storage.state_db().begin_read().map_err(io_err)?;
    let oldest = changes_floor(&txn, gid)?;
    if oldest > after.saturating_add(1) {
        return Err(ExportChangesError::Compacted { after, oldest });
    }
    let changes = txn.open_table(CHANGES).map_err(io_err)?;
    let times = txn.open_table(CHANGE_TIMES).map_err(io_err)?;
    let mut out = Vec::with_capacity(chunk);
    let mut sent = 0u64;
    if to <= after {
        return Ok(0);
    }
    for row in changes
        .range((gid, after + 1)..=(gid, to))
        .map_err(io_err)?
    {
        let (key, value) = row.map_err(io_err)?;
        let revision = key.value().1;
        let unix_ms = times
            .get((gid, revision))
            .map_err(io_err)?
            .map_or(0, |t| t.value());
        let events: Vec<ChangeEvent> = decode(value.value()).map_err(io::Error::from)?;
        for e in events {
            out.push(ExportedChange {
                revision,
                unix_ms,
                collection: e.collection,
                id: e.id,
                version: e.version,
                json: e.json,
            });
            if out.len() >= chunk {
                sent += out.len() as u64;
                if !send(std::mem::take(&mut out)) {
                    return Ok(sent);
                }
            }
        }
    }
    if !out.is_empty() {
        sent += out.len() as u64;
        send(out);
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{DataCommand, WriteOp};
    use crate::store::documents::apply_many;

    const GID: GroupId = 7;

    fn put(id: &str, json: &str) -> DataCommand {
        DataCommand {
            ops: vec![WriteOp::Put {
                collection: "c".into(),
                id: id.into(),
                json: json.into(),
                if_version: None,
            }],
            request: None,
        }
    }

    fn delete(id: &str) -> DataCommand {
        DataCommand {
            ops: vec![WriteOp::Delete {
                collection: "c".into(),
                id: id.into(),
                if_version: None,
            }],
            request: None,
        }
    }

    /// Applies `cmd` as the entry at `revision` stamped `unix_ms`, keeping `retention`.
    fn apply(storage: &Storage, revision: u64, unix_ms: u64, retention: u64, cmd: DataCommand) {
        let txn = storage.state_db().begin_write().expect("write txn");
        let feed = Feed { unix_ms, retention };
        apply_many(&txn, GID, revision, feed, &[cmd]).expect("apply");
        txn.commit().expect("commit");
    }

    fn export(
        storage: &Storage,
        after: u64,
        to: u64,
    ) -> Result<Vec<ExportedChange>, ExportChangesError> {
        let mut out = Vec::new();
        export_changes(storage, GID, after, to, 2, |chunk| {
            assert!(chunk.len() <= 2);
            out.extend(chunk);
            true
        })?;
        Ok(out)
    }

    #[test]
    fn commit_times_never_go_back_when_the_leaders_clock_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(dir.path(), crate::store::StorageMetrics::unregistered())
            .expect("open storage");
        apply(&storage, 1, 5_000, 100, put("a", "1"));
        // The leader's wall clock jumped back an hour.
        apply(&storage, 2, 1_400, 100, put("a", "2"));
        apply(&storage, 3, 6_000, 100, put("b", "3"));
        let times: Vec<(u64, u64)> = export(&storage, 0, 3)
            .expect("export")
            .iter()
            .map(|c| (c.revision, c.unix_ms))
            .collect();
        assert_eq!(times, vec![(1, 5_000), (2, 5_000), (3, 6_000)]);
    }

    #[test]
    fn the_feed_exports_a_range_with_commit_times_and_refuses_a_compacted_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(dir.path(), crate::store::StorageMetrics::unregistered())
            .expect("open storage");
        apply(&storage, 1, 0, 100, put("a", "1"));
        apply(&storage, 2, 1_000, 100, put("a", "2"));
        apply(&storage, 3, 1_005, 100, put("b", "3"));
        apply(&storage, 4, 1_010, 100, delete("a"));
        let got = export(&storage, 1, 4).expect("export");
        let summary: Vec<_> = got
            .iter()
            .map(|c| {
                (
                    c.revision,
                    c.unix_ms,
                    c.id.as_str(),
                    c.version,
                    c.json.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (2, 1_000, "a", 2, Some("2")),
                (3, 1_005, "b", 1, Some("3")),
                (4, 1_010, "a", 0, None),
            ]
        );
        // Revision 1 carried no time (an entry written before times were kept): unknown.
        assert_eq!(export(&storage, 0, 1).expect("export")[0].unix_ms, 0);
        assert!(export(&storage, 3, 3).expect("empty").is_empty());
        // Keeping 2 revisions: pruned at revision 6, the feed starts at 4.
        apply(&storage, 5, 1_020, 2, put("c", "5"));
        apply(&storage, 6, 1_030, 2, put("c", "6"));
        assert!(matches!(
            export(&storage, 2, 6),
            Err(ExportChangesError::Compacted {
                after: 2,
                oldest: 4
            })
        ));
        let kept = export(&storage, 3, 6).expect("export from the floor");
        assert_eq!(
            kept.first().map(|c| (c.revision, c.unix_ms)),
            Some((4, 1_010))
        );
    }

    #[test]
    fn the_feed_is_pruned_every_quarter_retention_once_past_it() {
        let feed = Feed {
            unix_ms: 0,
            retention: 100_000,
        };
        assert_eq!(feed.prune_floor(1024), None);
        assert_eq!(feed.prune_floor(100_352), Some(352));
        assert_eq!(feed.prune_floor(100_353), None);
        let small = Feed {
            unix_ms: 0,
            retention: 8,
        };
        assert_eq!(small.prune_floor(8), None);
        assert_eq!(small.prune_floor(10), Some(2));
        assert_eq!(small.prune_floor(11), None);
        let one = Feed {
            unix_ms: 0,
            retention: 0,
        };
        assert_eq!(one.prune_floor(2), Some(1));
    }
}
