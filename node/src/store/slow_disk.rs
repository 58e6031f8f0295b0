//! A slow disk for tests (with `--test-storage-faults`, hidden): while the data directory
//! holds the file [`SLOW_SYNC`] naming a number of milliseconds, every sync of the node's
//! database files (redb's fsync at a durable commit: Raft log appends and votes, snapshots,
//! the state file's periodic sync) takes that much longer, as on a disk whose flushes stall.
//! Reads and unsynced writes are not slowed. Removing the file (or writing 0) ends it.

use std::io;
use std::ops::Bound;
use std::path::PathBuf;
use std::time::Duration;

use redb::{BackendError, StorageBackend};

/// The file that slows the node's syncs: its content is the delay per sync in milliseconds.
pub const SLOW_SYNC: &str = "slow-sync";

/// The longest delay a trigger may ask for (a typo must not stall a test for an hour).
const MOST: Duration = Duration::from_secs(10);

/// A backend whose syncs wait first while the trigger file asks them to.
#[derive(Debug)]
pub struct SlowSyncBackend<B> {
    inner: B,
    trigger: PathBuf,
}

impl<B: StorageBackend> SlowSyncBackend<B> {
    /// `inner`, slowed by the trigger file `trigger`.
    pub fn new(inner: B, trigger: PathBuf) -> Self {
        Self { inner, trigger }
    }
}

/// The delay a trigger file's text asks for: whole milliseconds, at most [`MOST`]; none when
/// it is not a number.
pub fn delay_of(text: &str) -> Option<Duration> {
    let ms: u64 = text.trim().parse().ok()?;
    (ms > 0).then(|| Duration::from_millis(ms).min(MOST))
}

impl<B: StorageBackend> StorageBackend for SlowSyncBackend<B> {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        // Called on the storage writer's own thread: sleeping holds up that writer only, as a
        // stalled fsync would.
        if let Some(wait) = std::fs::read_to_string(&self.trigger)
            .ok()
            .and_then(|t| delay_of(&t))
        {
            std::thread::sleep(wait);
        }
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.inner.write(offset, data)
    }

    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use redb::backends::InMemoryBackend;
    use redb::{Database, Durability, TableDefinition};

    use super::*;

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");

    #[test]
    fn the_trigger_is_whole_milliseconds_and_bounded() {
        assert_eq!(delay_of("250\n"), Some(Duration::from_millis(250)));
        assert_eq!(delay_of("0"), None);
        assert_eq!(delay_of("slow"), None);
        assert_eq!(delay_of("-5"), None);
        assert_eq!(delay_of("3600000"), Some(MOST));
    }

    #[test]
    fn durable_commits_wait_while_the_trigger_is_there_and_no_longer_after() {
        let dir = tempfile::tempdir().unwrap();
        let trigger = dir.path().join(SLOW_SYNC);
        let backend = SlowSyncBackend::new(InMemoryBackend::new(), trigger.clone());
        let db = Database::builder().create_with_backend(backend).unwrap();
        let commit = |n: u64, durability| {
            let mut txn = db.begin_write().unwrap();
            txn.set_durability(durability).unwrap();
            txn.open_table(T).unwrap().insert(n, n).unwrap();
            let started = Instant::now();
            txn.commit().unwrap();
            started.elapsed()
        };
        // Two seconds: far above what a commit to memory takes, even on a busy machine.
        let slow = Duration::from_secs(2);
        std::fs::write(&trigger, "2000").unwrap();
        assert!(commit(1, Durability::Immediate) >= slow);
        // A commit without fsync is not slowed: it never syncs.
        assert!(commit(2, Durability::None) < slow);
        std::fs::remove_file(&trigger).unwrap();
        assert!(commit(3, Durability::Immediate) < slow);
    }
}
