//! Consistency checks, the replica's side. A shard leader proposes a check entry
//! ([`crate::command::ConsistencyCheck`]); every replica commits the entries before it on their
//! own and digests its content as that entry leaves it (a read transaction taken right after
//! the commit, read off the apply path), so that replicas at the same log index are compared.
//! The last few digests are kept in memory for the leader to ask for.
//!
//! A replica found to differ from its peers is marked diverged: the mark is stored durably with
//! the group's state and makes the group corrupt on this node (now, and each time it is opened
//! again) until its records are deleted, when the replica is replaced.

use std::collections::VecDeque;
use std::io;
use std::sync::Mutex;

use redb::ReadableDatabase;

use super::digest::{ReplicaDigest, digest_in};
use super::integrity::{self, Corruption, Damage, Divergence, Record};
use super::tables::SM_STATE;
use super::{StateMachine, Storage, io_err};
use crate::types::GroupId;

/// The state key of a replica's divergence mark.
const KEY_DIVERGED: &str = "diverged";

/// How many digests a replica keeps (the leader asks for the latest soon after proposing it).
const KEPT: usize = 8;

/// This replica's digest at a check entry, as far as it is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckDigest {
    /// The entry is not applied here yet.
    NotApplied,
    /// Applied; the digest is being computed.
    Computing,
    Done(ReplicaDigest),
    /// Computing it failed.
    Failed(String),
    /// Applied, but no digest was taken here at that entry: it came with a snapshot, or before
    /// a restart, or it is too old to be kept.
    Unknown,
}

/// A check entry's index and its digest (`None` while it is computed).
type Taken = (u64, Option<Result<ReplicaDigest, String>>);

/// The digests taken at the latest check entries, oldest first.
#[derive(Debug, Default)]
pub struct CheckDigests(Mutex<VecDeque<Taken>>);

impl CheckDigests {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Taken>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start(&self, index: u64) {
        let mut all = self.lock();
        all.retain(|(i, _)| *i != index);
        all.push_back((index, None));
        while all.len() > KEPT {
            all.pop_front();
        }
    }

    fn finish(&self, index: u64, digest: Result<ReplicaDigest, String>) {
        if let Some(entry) = self.lock().iter_mut().find(|(i, _)| *i == index) {
            entry.1 = Some(digest);
        }
    }

    /// The digest at check entry `index`, with `applied` the replica's last applied index.
    pub fn at(&self, index: u64, applied: u64) -> CheckDigest {
        if applied < index {
            return CheckDigest::NotApplied;
        }
        match self.lock().iter().find(|(i, _)| *i == index) {
            None => CheckDigest::Unknown,
            Some((_, None)) => CheckDigest::Computing,
            Some((_, Some(Ok(d)))) => CheckDigest::Done(d.clone()),
            Some((_, Some(Err(e)))) => CheckDigest::Failed(e.clone()),
        }
    }
}

impl StateMachine {
    /// Digests the replica as it is now, right after the check entry `index` was committed,
    /// off the apply path: the read transaction is taken here, the reading runs on a blocking
    /// thread.
    pub(super) fn start_digest(&self, index: u64) {
        let checks = self.state().clone();
        checks.checks().start(index);
        let txn = match self.begin_read() {
            Ok(txn) => txn,
            Err(e) => {
                checks.checks().finish(index, Err(e.to_string()));
                return;
            }
        };
        let (gid, storage) = (self.gid(), self.storage().clone());
        tokio::task::spawn_blocking(move || {
            let digest = digest_in(&txn, gid).map_err(|e| storage.note(e).to_string());
            // The files are let go before the digest is published: whoever waits for it may
            // close the storage.
            drop(txn);
            drop(storage);
            if let Err(e) = &digest {
                tracing::warn!(group = gid, index, error = %e, "digesting the replica for a consistency check failed");
            }
            checks.checks().finish(index, digest);
        });
    }
}

impl Storage {
    /// Marks group `gid`'s replica here as diverged, durably, and records it as corrupt: the
    /// group stops serving on this node and is not opened again (see the module notes).
    pub async fn mark_diverged(&self, gid: GroupId, divergence: Divergence) -> io::Result<()> {
        let sealed = integrity::seal(&divergence).map_err(io::Error::other)?;
        self.state_writer()
            .run(true, move |txn| {
                let mut t = txn.open_table(SM_STATE).map_err(io_err)?;
                t.insert((gid, KEY_DIVERGED), sealed.as_slice())
                    .map_err(io_err)?;
                Ok(())
            })
            .await?;
        self.corrupted(diverged(gid, divergence));
        Ok(())
    }

    /// The divergence mark of group `gid`, if its replica here was marked diverged.
    pub(super) fn divergence(&self, gid: GroupId) -> io::Result<Option<Corruption>> {
        let txn = self.state_db().begin_read().map_err(io_err)?;
        let t = txn.open_table(SM_STATE).map_err(io_err)?;
        let Some(v) = t.get((gid, KEY_DIVERGED)).map_err(io_err)? else {
            return Ok(None);
        };
        let divergence: Divergence = integrity::read(gid, || Record::Replica, v.value())?;
        Ok(Some(diverged(gid, divergence)))
    }
}

fn diverged(gid: GroupId, divergence: Divergence) -> Corruption {
    Corruption {
        gid,
        record: Record::Replica,
        damage: Damage::Diverged(Box::new(divergence)),
    }
}
