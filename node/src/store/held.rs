//! Reads held open across the pages of one query: a redb read transaction kept under a number,
//! so that every page of a shard's part of a result is read from one revision (a live query's
//! initial result, larger than a page, is consistent with the revisions its `current` event
//! names). A held read pins the pages of the state file it sees (they are not reused until it
//! is let go), so each expires after [`HELD_READ_IDLE`] without use, and a node holds at most
//! [`MAX_HELD_READS`]. Reads are numbered at random (64 bits): a page forwarded to another
//! node after a leader change names a number that node has almost surely never given out, so
//! it answers "gone" (the query starts again) rather than serving another query's read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::ReadTransaction;

use crate::types::GroupId;

/// How long a held read lives after its last page.
pub const HELD_READ_IDLE: Duration = Duration::from_secs(30);
/// Most reads a node holds at once.
pub const MAX_HELD_READS: usize = 256;

/// A read transaction of one group, at one revision.
#[derive(Clone)]
pub(crate) struct HeldRead {
    pub txn: Arc<ReadTransaction>,
    pub revision: u64,
}

struct Entry {
    gid: GroupId,
    read: HeldRead,
    used: Instant,
}

/// The node's held reads.
#[derive(Default)]
pub struct HeldReads {
    held: Mutex<HashMap<u64, Entry>>,
}

/// The node holds [`MAX_HELD_READS`] reads already.
#[derive(Debug, thiserror::Error)]
#[error("this node holds {MAX_HELD_READS} paged reads already")]
pub struct TooManyHeldReads;

impl HeldReads {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets go of the reads unused for [`HELD_READ_IDLE`].
    pub fn expire(&self, now: Instant) {
        self.lock()
            .retain(|_, e| now.duration_since(e.used) < HELD_READ_IDLE);
    }

    /// Keeps `read` of group `gid`; its number (never 0).
    pub(crate) fn hold(&self, gid: GroupId, read: HeldRead) -> Result<u64, TooManyHeldReads> {
        let now = Instant::now();
        self.expire(now);
        let mut held = self.lock();
        if held.len() >= MAX_HELD_READS {
            return Err(TooManyHeldReads);
        }
        let id = loop {
            let id: u64 = rand::random();
            if id != 0 && !held.contains_key(&id) {
                break id;
            }
        };
        held.insert(
            id,
            Entry {
                gid,
                read,
                used: now,
            },
        );
        Ok(id)
    }

    /// The read held under `id` for group `gid`, if it is still held.
    pub(crate) fn get(&self, gid: GroupId, id: u64) -> Option<HeldRead> {
        let mut held = self.lock();
        let entry = held.get_mut(&id).filter(|e| e.gid == gid)?;
        entry.used = Instant::now();
        Some(entry.read.clone())
    }

    /// Lets go of the read held under `id`.
    pub(crate) fn release(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// How many reads are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(db: &redb::Database) -> HeldRead {
        HeldRead {
            txn: Arc::new(redb::ReadableDatabase::begin_read(db).unwrap()),
            revision: 7,
        }
    }

    #[test]
    fn held_reads_get_random_distinct_numbers_belong_to_their_group_and_are_bounded() {
        let db = redb::Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .unwrap();
        let reads = HeldReads::default();
        let ids: Vec<u64> = (0..MAX_HELD_READS)
            .map(|_| reads.hold(1, read(&db)).unwrap())
            .collect();
        let distinct: std::collections::BTreeSet<u64> = ids.iter().copied().collect();
        assert_eq!(distinct.len(), ids.len());
        assert!(!distinct.contains(&0));
        // Not handed out in sequence: another node's numbers do not meet these.
        assert!(
            ids.windows(2).filter(|w| w[1] == w[0] + 1).count() < 3,
            "{ids:?}"
        );
        assert!(
            reads.hold(1, read(&db)).is_err(),
            "at most {MAX_HELD_READS}"
        );
        assert_eq!(reads.get(1, ids[0]).map(|r| r.revision), Some(7));
        assert!(reads.get(2, ids[0]).is_none(), "another group's read");
        reads.release(ids[0]);
        assert!(reads.get(1, ids[0]).is_none());
        assert_eq!(reads.len(), MAX_HELD_READS - 1);
    }
}
