//! The Raft log and vote of one group, stored in the node's shared log file. Appended entries
//! are readable at once (kept in memory until their batch is committed) and acknowledged to
//! openraft only after the writer's durable commit. Every entry is stored sealed with its
//! checksum and checked whenever it is read (see `integrity`): a corrupt entry is reported as
//! the group's [`Corruption`](super::Corruption), never handed to Raft.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use redb::ReadableDatabase;

use super::integrity::{self, Record};
use super::tables::{KEY_COMMITTED, KEY_PURGED, KEY_VOTE, LOGS, RAFT_STATE};
use super::{Storage, StoreError, io_err};
use crate::codec::{decode, encode};
use crate::consensus::{Entry, LogId, TypeConfig, Vote};
use crate::types::GroupId;

#[derive(Default)]
struct LogMemory {
    /// Appended entries whose commit is not finished yet.
    pending: BTreeMap<u64, (LogId, Entry)>,
    vote: Option<Vote>,
    last_purged: Option<LogId>,
}

/// The log store of one Raft group.
#[derive(Clone)]
pub struct LogStore {
    gid: GroupId,
    storage: Arc<Storage>,
    mem: Arc<Mutex<LogMemory>>,
}

impl LogStore {
    pub fn open(storage: Arc<Storage>, gid: GroupId) -> Result<LogStore, StoreError> {
        let txn = storage.log_db().begin_read()?;
        let table = txn.open_table(RAFT_STATE)?;
        let vote = match table.get((gid, KEY_VOTE))? {
            Some(v) => Some(decode::<Vote>(v.value())?),
            None => None,
        };
        let last_purged = match table.get((gid, KEY_PURGED))? {
            Some(v) => Some(decode::<LogId>(v.value())?),
            None => None,
        };
        Ok(LogStore {
            gid,
            storage,
            mem: Arc::new(Mutex::new(LogMemory {
                pending: BTreeMap::new(),
                vote,
                last_purged,
            })),
        })
    }

    fn mem(&self) -> MutexGuard<'_, LogMemory> {
        // A poisoned lock only means another task panicked mid-update of plain data.
        self.mem.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the stored entry `index` from `bytes`, checking its checksum.
    fn read_entry(&self, index: u64, bytes: &[u8]) -> io::Result<Entry> {
        integrity::read(self.gid, || Record::LogEntry { index }, bytes)
            .map_err(|c| self.storage.corrupted(c))
    }

    fn last_stored(&self) -> io::Result<Option<LogId>> {
        let txn = self.storage.log_db().begin_read().map_err(io_err)?;
        let table = txn.open_table(LOGS).map_err(io_err)?;
        let mut range = table
            .range((self.gid, 0)..=(self.gid, u64::MAX))
            .map_err(io_err)?;
        match range.next_back() {
            Some(row) => {
                let (k, v) = row.map_err(io_err)?;
                let entry = self.read_entry(k.value().1, v.value())?;
                Ok(Some(entry.log_id))
            }
            None => Ok(None),
        }
    }

    async fn put_state(&self, key: &'static str, bytes: Vec<u8>, durable: bool) -> io::Result<()> {
        let gid = self.gid;
        self.storage
            .log_writer()
            .run(durable, move |txn| {
                let mut t = txn.open_table(RAFT_STATE).map_err(io_err)?;
                t.insert((gid, key), bytes.as_slice()).map_err(io_err)?;
                Ok(())
            })
            .await
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => e.saturating_add(1),
        Bound::Excluded(e) => *e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

/// The bytes of stored entries one replication message carries at most (at least one entry,
/// whatever its size): a follower far behind on a log of large entries is sent a few at a
/// time, not `max_payload_entries` of them in one message held whole in memory on both sides
/// (and maybe over the peer message limit).
pub const REPLICATION_BATCH_BYTES: usize = 2 << 20;

impl LogStore {
    /// The entries in `[start, end)`, stopping after the one that brings the stored bytes read to
    /// `budget`.
    pub fn read_range(&self, start: u64, end: u64, budget: usize) -> io::Result<Vec<Entry>> {
        if start >= end {
            return Ok(vec![]);
        }
        // Pending entries first: an entry leaves `pending` only after it is committed, so
        // anything missing from this copy is visible to the read below.
        let mut out: BTreeMap<u64, Entry> = self
            .mem()
            .pending
            .range(start..end)
            .map(|(i, (_, e))| (*i, e.clone()))
            .collect();
        let txn = self.storage.log_db().begin_read().map_err(io_err)?;
        let table = txn.open_table(LOGS).map_err(io_err)?;
        let mut read = 0usize;
        let mut limit = end;
        for row in table
            .range((self.gid, start)..(self.gid, end))
            .map_err(io_err)?
        {
            let (k, v) = row.map_err(io_err)?;
            let index = k.value().1;
            if let std::collections::btree_map::Entry::Vacant(e) = out.entry(index) {
                read += v.value().len();
                e.insert(self.read_entry(index, v.value())?);
            }
            if read >= budget {
                limit = index + 1;
                break;
            }
        }
        Ok(out
            .into_iter()
            .take_while(|(i, _)| *i < limit)
            .map(|(_, e)| e)
            .collect())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = bounds(&range);
        self.read_range(start, end, usize::MAX)
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        self.read_range(start, end, REPLICATION_BATCH_BYTES)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.mem().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let (pending_last, last_purged) = {
            let mem = self.mem();
            (
                mem.pending.values().next_back().map(|(id, _)| *id),
                mem.last_purged,
            )
        };
        let last = match pending_last {
            Some(id) => Some(id),
            None => self.last_stored()?.or(last_purged),
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.put_state(KEY_VOTE, encode(vote)?, true).await?;
        self.mem().vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        if let Some(c) = committed {
            self.put_state(KEY_COMMITTED, encode(&c)?, false).await?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        let txn = self.storage.log_db().begin_read().map_err(io_err)?;
        let table = txn.open_table(RAFT_STATE).map_err(io_err)?;
        match table.get((self.gid, KEY_COMMITTED)).map_err(io_err)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows: Vec<(u64, LogId, Vec<u8>)> = Vec::new();
        {
            let mut mem = self.mem();
            for entry in entries {
                let id = entry.log_id;
                let bytes = integrity::seal(&entry)?;
                mem.pending.insert(id.index, (id, entry));
                rows.push((id.index, id, bytes));
            }
        }
        if rows.is_empty() {
            callback.io_completed(Ok(()));
            return Ok(());
        }
        let gid = self.gid;
        let written: Vec<(u64, LogId)> = rows.iter().map(|(i, id, _)| (*i, *id)).collect();
        let mem = self.mem.clone();
        self.storage.log_writer().submit(
            true,
            move |txn| {
                let mut t = txn.open_table(LOGS).map_err(io_err)?;
                for (index, _, bytes) in &rows {
                    t.insert((gid, *index), bytes.as_slice()).map_err(io_err)?;
                }
                Ok(())
            },
            move |result| {
                if result.is_ok() {
                    let mut mem = mem.lock().unwrap_or_else(|p| p.into_inner());
                    for (index, id) in written {
                        if mem.pending.get(&index).is_some_and(|(p, _)| *p == id) {
                            mem.pending.remove(&index);
                        }
                    }
                }
                callback.io_completed(result);
            },
        );
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|l| l.index + 1).unwrap_or(0);
        self.mem().pending.split_off(&from);
        let gid = self.gid;
        self.storage
            .log_writer()
            .run(true, move |txn| {
                let mut t = txn.open_table(LOGS).map_err(io_err)?;
                t.retain_in((gid, from)..=(gid, u64::MAX), |_, _| false)
                    .map_err(io_err)?;
                Ok(())
            })
            .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let storage = self.storage.clone();
        let _timer = super::measure::Timer::start(&storage.metrics().log_compaction);
        let upto = log_id.index;
        {
            let mut mem = self.mem();
            let keep = mem.pending.split_off(&(upto + 1));
            mem.pending = keep;
        }
        let gid = self.gid;
        let bytes = encode(&log_id)?;
        self.storage
            .log_writer()
            .run(true, move |txn| {
                let mut t = txn.open_table(LOGS).map_err(io_err)?;
                t.retain_in((gid, 0)..=(gid, upto), |_, _| false)
                    .map_err(io_err)?;
                let mut s = txn.open_table(RAFT_STATE).map_err(io_err)?;
                s.insert((gid, KEY_PURGED), bytes.as_slice())
                    .map_err(io_err)?;
                Ok(())
            })
            .await?;
        self.mem().last_purged = Some(log_id);
        Ok(())
    }
}
