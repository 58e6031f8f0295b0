//! A redb storage backend for power-loss tests (`--test-power-loss`, hidden): what redb writes
//! reaches the file only when redb syncs it. Until then it is kept in the process's memory
//! (where reads see it), so that a node killed with SIGKILL loses exactly what a power cut
//! would have lost with a disk that wrote nothing before the fsync: every write since the last
//! sync. A node that stops cleanly writes the rest out at close, as the page cache would.
//!
//! With it, `kill -9` of a node is its power loss; of every node at once, a data-centre power
//! cut.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// A file whose unsynced writes live in memory (see the module notes). Clones share the same
/// file and memory.
#[derive(Debug, Clone)]
pub struct PowerLossBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    file: FileBackend,
    unsynced: Mutex<Unsynced>,
}

/// What was written since the last sync.
#[derive(Debug, Default)]
struct Unsynced {
    /// The length set since the last sync.
    len: Option<u64>,
    /// The file's bytes from here on are no longer valid (a length set shorter meanwhile):
    /// they read as zeros unless written again.
    zero_from: Option<u64>,
    /// Written ranges by offset, never overlapping.
    writes: BTreeMap<u64, Vec<u8>>,
    /// After a simulated power loss: nothing reaches the file any more.
    off: bool,
}

impl Unsynced {
    /// Records `data` at `offset`, over whatever was written there before.
    fn write(&mut self, offset: u64, data: &[u8]) {
        let end = offset + data.len() as u64;
        let overlapping: Vec<u64> = self
            .writes
            .range(..end)
            .rev()
            .take_while(|(start, bytes)| *start + bytes.len() as u64 > offset)
            .map(|(start, _)| *start)
            .collect();
        for start in overlapping {
            let Some(old) = self.writes.remove(&start) else {
                continue;
            };
            let old_end = start + old.len() as u64;
            if start < offset {
                self.writes
                    .insert(start, old[..(offset - start) as usize].to_vec());
            }
            if old_end > end {
                self.writes
                    .insert(end, old[(end - start) as usize..].to_vec());
            }
        }
        self.writes.insert(offset, data.to_vec());
    }

    /// Drops what lies at or beyond `len`.
    fn truncate(&mut self, len: u64) {
        let beyond: Vec<u64> = self.writes.range(len..).map(|(s, _)| *s).collect();
        for s in beyond {
            self.writes.remove(&s);
        }
        if let Some((start, bytes)) = self.writes.range_mut(..len).next_back() {
            let keep = (len - *start) as usize;
            if bytes.len() > keep {
                bytes.truncate(keep);
            }
        }
    }

    /// Copies what was written into `out`, which holds the bytes from `offset` on.
    fn overlay(&self, offset: u64, out: &mut [u8]) {
        let end = offset + out.len() as u64;
        for (start, bytes) in self
            .writes
            .range(..end)
            .rev()
            .take_while(|(start, bytes)| *start + bytes.len() as u64 > offset)
        {
            let from = (*start).max(offset);
            let to = (*start + bytes.len() as u64).min(end);
            out[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&bytes[(from - start) as usize..(to - start) as usize]);
        }
    }
}

impl PowerLossBackend {
    /// Opens `file` (created or existing) for redb.
    pub fn new(file: File) -> io::Result<PowerLossBackend> {
        let file = FileBackend::new(file).map_err(io::Error::other)?;
        Ok(PowerLossBackend {
            inner: Arc::new(Inner {
                file,
                unsynced: Mutex::new(Unsynced::default()),
            }),
        })
    }

    fn unsynced(&self) -> MutexGuard<'_, Unsynced> {
        self.inner
            .unsynced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Loses every write since the last sync, as a power cut would, and every later one (tests
    /// in one process: the database is then dropped and opened again).
    pub fn lose_power(&self) {
        *self.unsynced() = Unsynced {
            off: true,
            ..Unsynced::default()
        };
    }

    /// Writes what is kept in memory to the file; with `sync`, makes it durable.
    fn write_out(&self, sync: bool) -> io::Result<()> {
        let mut u = self.unsynced();
        if u.off {
            *u = Unsynced {
                off: true,
                ..Unsynced::default()
            };
            return Ok(());
        }
        let file = &self.inner.file;
        if let Some(zero_from) = u.zero_from {
            file.set_len(zero_from)?;
        }
        if let Some(len) = u.len {
            file.set_len(len)?;
        }
        for (offset, bytes) in &u.writes {
            file.write(*offset, bytes)?;
        }
        if sync {
            file.sync_data()?;
        }
        *u = Unsynced::default();
        Ok(())
    }
}

impl StorageBackend for PowerLossBackend {
    fn len(&self) -> io::Result<u64> {
        match self.unsynced().len {
            Some(len) => Ok(len),
            None => self.inner.file.len(),
        }
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let u = self.unsynced();
        let file_len = self.inner.file.len()?;
        let len = u.len.unwrap_or(file_len);
        let end = offset + out.len() as u64;
        if end > len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read of {}..{end} beyond the length {len}", offset),
            ));
        }
        // The file's bytes, where they are still valid; zeros elsewhere.
        let valid = u.zero_from.unwrap_or(file_len).min(file_len);
        let from_file = valid.saturating_sub(offset).min(out.len() as u64) as usize;
        if from_file > 0 {
            self.inner.file.read(offset, &mut out[..from_file])?;
        }
        out[from_file..].fill(0);
        u.overlay(offset, out);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut u = self.unsynced();
        let current = match u.len {
            Some(l) => l,
            None => self.inner.file.len()?,
        };
        if len < current {
            u.truncate(len);
            let zero_from = u.zero_from.unwrap_or(u64::MAX).min(len);
            u.zero_from = Some(zero_from);
        }
        u.len = Some(len);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.write_out(true)
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.unsynced().write(offset, data);
        Ok(())
    }

    fn close(&self) -> io::Result<()> {
        self.write_out(false)?;
        self.inner.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.file.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{Database, Durability, ReadableDatabase, TableDefinition};

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");

    fn open(path: &std::path::Path) -> (Database, PowerLossBackend) {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .expect("file");
        let backend = PowerLossBackend::new(file).expect("backend");
        let db = Database::builder()
            .create_with_backend(backend.clone())
            .expect("database");
        (db, backend)
    }

    fn commit(db: &Database, key: u64, durability: Durability) {
        let mut txn = db.begin_write().expect("txn");
        txn.set_durability(durability).expect("durability");
        txn.open_table(T)
            .expect("table")
            .insert(key, key)
            .expect("insert");
        txn.commit().expect("commit");
    }

    fn keys(db: &Database) -> Vec<u64> {
        let txn = db.begin_read().expect("read");
        let Ok(t) = txn.open_table(T) else {
            return vec![];
        };
        redb::ReadableTable::iter(&t)
            .expect("iter")
            .map(|r| r.expect("row").0.value())
            .collect()
    }

    #[test]
    fn a_power_loss_keeps_what_was_synced_and_drops_the_rest() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let path = dir.path().join("p.redb");
        {
            let (db, backend) = open(&path);
            commit(&db, 1, Durability::Immediate);
            commit(&db, 2, Durability::None);
            assert_eq!(
                keys(&db),
                vec![1, 2],
                "an unsynced commit is visible at once"
            );
            backend.lose_power();
            drop(db);
        }
        let (db, _) = open(&path);
        assert_eq!(keys(&db), vec![1], "the unsynced commit was lost");
        commit(&db, 3, Durability::None);
        commit(&db, 4, Durability::Immediate);
        drop(db);
        // A clean close keeps everything, as the page cache would.
        let (db, _) = open(&path);
        assert_eq!(keys(&db), vec![1, 3, 4]);
    }

    #[test]
    fn overlapping_writes_read_back_as_last_written() {
        let mut u = Unsynced::default();
        u.write(10, &[1; 10]);
        u.write(15, &[2; 10]);
        u.write(0, &[3; 12]);
        let mut out = [0u8; 30];
        u.overlay(0, &mut out);
        let mut expected = [0u8; 30];
        expected[..12].fill(3);
        expected[12..15].fill(1);
        expected[15..25].fill(2);
        assert_eq!(out, expected);
        u.truncate(20);
        let mut out = [9u8; 30];
        u.overlay(0, &mut out);
        expected[20..].fill(9);
        expected[25..].fill(9);
        assert_eq!(out[..20], expected[..20]);
        assert!(
            out[20..].iter().all(|b| *b == 9),
            "nothing kept beyond the length"
        );
    }
}
