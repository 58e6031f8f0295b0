//! The state machine of one Raft group: the meta state for the meta group, documents for a data
//! group. Applies commit without fsync (they record `last_applied` in the same transaction, and
//! after a crash openraft re-applies from it); snapshots (see `super::snapshot`) are stored
//! durably, which also makes every earlier apply durable before logs may be purged. A record
//! of the group that fails its check makes the read fail with the group's
//! [`Corruption`](super::Corruption), recorded in [`Storage`].

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use redb::{ReadableDatabase, WriteTransaction};
use tokio::sync::watch;

use super::changes_export::Feed;
use super::checks::{CheckDigest, CheckDigests};
use super::dedup;
use super::documents::{self, ChangeEvent, StoredDoc};
use super::indexes;
use super::tables::{KEY_APPLIED, KEY_MEMBERSHIP, KEY_META, SM_STATE};
use super::{Storage, StoreError, io_err};
use crate::codec::{decode, encode};
use crate::command::{Command, Response};
use crate::consensus::{LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::meta::{MetaError, MetaState};
use crate::snapshot_file::SnapshotFile;
use crate::types::{GroupId, META_GROUP};

/// The changes of one revision of a group.
pub type Revision = (u64, Vec<ChangeEvent>);

/// What a group's state machine holds in memory, shared with readers.
pub struct GroupState {
    pub gid: GroupId,
    applied: Mutex<(Option<LogId>, StoredMembership)>,
    /// The meta state (meta group only), shared with readers without copying.
    meta: Option<RwLock<Arc<MetaState>>>,
    /// Last applied log index; watchers and the topology reconciler wait on it.
    applied_tx: watch::Sender<u64>,
    /// Bytes of documents applied since the last snapshot (see `compaction`).
    written: AtomicU64,
    /// Digests taken at consistency check entries (see `super::checks`).
    checks: CheckDigests,
}

impl GroupState {
    pub fn applied_index(&self) -> u64 {
        *self.applied_tx.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied_tx.subscribe()
    }

    /// The meta state as last applied (empty for a data group).
    pub fn meta(&self) -> Arc<MetaState> {
        match &self.meta {
            Some(m) => m.read().unwrap_or_else(|p| p.into_inner()).clone(),
            None => Arc::default(),
        }
    }

    /// The digests taken at the latest consistency check entries.
    pub(super) fn checks(&self) -> &CheckDigests {
        &self.checks
    }

    /// This replica's digest at consistency check entry `index`, as far as it is known.
    pub fn check_digest(&self, index: u64) -> CheckDigest {
        self.checks.at(index, self.applied_index())
    }

    /// Bytes of documents applied since the last snapshot.
    pub fn written_since_snapshot(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// True, and starts counting again, when at least `limit` bytes of documents were applied
    /// since the last snapshot.
    pub fn take_written_over(&self, limit: u64) -> bool {
        self.written
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                (w >= limit).then_some(0)
            })
            .is_ok()
    }

    fn set_applied(&self, applied: Option<LogId>, membership: StoredMembership) {
        let index = applied.as_ref().map(|l| l.index).unwrap_or(0);
        *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = (applied, membership);
        self.applied_tx.send_replace(index);
    }

    fn set_meta(&self, state: MetaState) {
        if let Some(m) = &self.meta {
            *m.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(state);
        }
    }
}

/// Checks that `input` is a whole snapshot of group `gid` (every frame whole and decoding, the
/// meta state there exactly when `gid` is the meta group) before it is handed to Raft: a
/// snapshot that cannot be installed would fail inside Raft and stop the group.
pub fn check_snapshot(gid: GroupId, input: impl io::Read) -> Result<(), String> {
    super::snapshot::check(gid, input).map_err(|e| e.to_string())
}

/// The state machine of one group.
#[derive(Clone)]
pub struct StateMachine {
    gid: GroupId,
    storage: Arc<Storage>,
    state: Arc<GroupState>,
}

impl StateMachine {
    pub fn open(storage: Arc<Storage>, gid: GroupId) -> Result<StateMachine, StoreError> {
        let txn = storage.state_db().begin_read()?;
        let sm = txn.open_table(SM_STATE)?;
        let applied: Option<LogId> = match sm.get((gid, KEY_APPLIED))? {
            Some(v) => Some(decode(v.value())?),
            None => None,
        };
        let membership: StoredMembership = match sm.get((gid, KEY_MEMBERSHIP))? {
            Some(v) => decode(v.value())?,
            None => StoredMembership::default(),
        };
        let meta = if gid == META_GROUP {
            let state = match sm.get((gid, KEY_META))? {
                Some(v) => decode(v.value())?,
                None => MetaState::default(),
            };
            Some(RwLock::new(Arc::new(state)))
        } else {
            None
        };
        let index = applied.as_ref().map(|l| l.index).unwrap_or(0);
        drop(sm);
        drop(txn);
        // A replica found diverged stays stopped until its records are deleted.
        if let Some(c) = storage.divergence(gid)? {
            return Err(StoreError::Io(storage.corrupted(c)));
        }
        if gid != META_GROUP {
            // Resume the builds a restart interrupted.
            storage.kick_index_build(gid);
        }
        let (applied_tx, _) = watch::channel(index);
        let state = Arc::new(GroupState {
            gid,
            applied: Mutex::new((applied, membership)),
            written: AtomicU64::new(0),
            meta,
            applied_tx,
            checks: CheckDigests::default(),
        });
        Ok(StateMachine {
            gid,
            storage,
            state,
        })
    }

    pub fn state(&self) -> &Arc<GroupState> {
        &self.state
    }

    pub(crate) fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    pub(crate) fn gid(&self) -> GroupId {
        self.gid
    }

    /// A read transaction on the state file (for the readers in `super::txn`).
    pub(crate) fn begin_read(&self) -> io::Result<redb::ReadTransaction> {
        self.storage.state_db().begin_read().map_err(io_err)
    }

    pub fn get(&self, collection: &str, id: &str) -> io::Result<Option<StoredDoc>> {
        let txn = self.storage.state_db().begin_read().map_err(io_err)?;
        documents::get(&txn, self.gid, collection, id).map_err(|e| self.storage.note(e))
    }

    pub fn list(
        &self,
        collection: &str,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> io::Result<Vec<(String, StoredDoc)>> {
        let txn = self.storage.state_db().begin_read().map_err(io_err)?;
        documents::list(&txn, self.gid, collection, prefix, after, limit)
            .map_err(|e| self.storage.note(e))
    }

    /// Changes from revision `from` on, and the oldest revision still kept.
    pub fn changes(&self, from: u64, limit: usize) -> io::Result<(Vec<Revision>, u64)> {
        let txn = self.storage.state_db().begin_read().map_err(io_err)?;
        let floor = documents::changes_floor(&txn, self.gid)?;
        Ok((
            documents::changes(&txn, self.gid, from.max(floor), limit)?,
            floor,
        ))
    }
}

fn put_sm(txn: &WriteTransaction, gid: GroupId, key: &str, bytes: &[u8]) -> io::Result<()> {
    let mut t = txn.open_table(SM_STATE).map_err(io_err)?;
    t.insert((gid, key), bytes).map_err(io_err)?;
    Ok(())
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        self.state.written.store(0, Ordering::Relaxed);
        super::snapshot::build(&self.storage, self.gid).await
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let applied = self.state.applied.lock().unwrap_or_else(|p| p.into_inner());
        Ok(applied.clone())
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut batch = Vec::new();
        while let Some(item) = entries.try_next().await? {
            batch.push(item);
        }
        // A consistency check entry ends a commit of its own, after which the replica is
        // digested as the entry left it (see `super::checks`).
        let mut rest = batch.into_iter();
        loop {
            let mut part = Vec::new();
            let mut check = None;
            for item in rest.by_ref() {
                let is_check = matches!(item.0.payload, EntryPayload::Normal(Command::Check(_)));
                let index = item.0.log_id.index;
                part.push(item);
                if is_check {
                    check = Some(index);
                    break;
                }
            }
            if part.is_empty() {
                return Ok(());
            }
            self.apply_part(part).await?;
            if let Some(index) = check {
                self.start_digest(index);
            }
        }
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        let gid = self.gid;
        let meta_state = super::snapshot::install(&self.storage, gid, meta, snapshot).await?;
        if let Some(ms) = meta_state {
            self.state.set_meta(ms);
        }
        if gid != META_GROUP {
            self.storage.kick_index_build(gid);
        }
        self.state
            .set_applied(meta.last_log_id, meta.last_membership.clone());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        super::snapshot::current(&self.storage, self.gid)
    }
}

/// Applies one command of entry `index` (a stamped command's inner one, with its time in
/// `feed`). `meta` is the meta state when this is the meta group.
fn apply_command(
    txn: &WriteTransaction,
    gid: GroupId,
    index: u64,
    feed: Feed,
    cmd: &Command,
    meta: Option<&mut MetaState>,
) -> io::Result<Response> {
    Ok(match cmd {
        Command::Data(cmd) => {
            super::load::ordinary_write(txn, gid)?;
            let cmds = std::slice::from_ref(cmd);
            dedup::apply_once(txn, gid, index, cmds, false, |cmds| {
                documents::apply_many(txn, gid, index, feed, cmds)
            })?
        }
        Command::DataMany(cmds) => {
            super::load::ordinary_write(txn, gid)?;
            dedup::apply_once(txn, gid, index, cmds, true, |cmds| {
                documents::apply_many(txn, gid, index, feed, cmds)
            })?
        }
        Command::Index(cmd) => Response::Index(indexes::apply_command(txn, gid, index, cmd)?),
        Command::Txn(cmd) => {
            if cmd.may_write_documents() {
                super::load::ordinary_write(txn, gid)?;
            }
            Response::Txn(super::txn::apply(txn, gid, index, feed, cmd)?)
        }
        Command::Load(cmd) => Response::Load(super::load::apply(txn, gid, index, cmd)?),
        // Digested once committed (see `StateMachine::apply`).
        Command::Check(_) => Response::Empty,
        Command::Meta(cmd) => match meta {
            Some(m) => Response::Meta(m.apply(cmd)),
            None => Response::Meta(Err(MetaError::NotMetaGroup)),
        },
        // Stamped once by the proposer; a nested stamp keeps the outer time.
        Command::Stamped(inner) => apply_command(txn, gid, index, feed, &inner.command, meta)?,
    })
}

impl StateMachine {
    /// Applies `batch` in one commit of the state file.
    async fn apply_part(
        &mut self,
        batch: Vec<EntryResponder<TypeConfig>>,
    ) -> Result<(), io::Error> {
        let gid = self.gid;
        let state = self.state.clone();
        let (applied0, membership0) = state
            .applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let meta0 = state.meta.as_ref().map(|_| state.meta());
        let written: usize = batch
            .iter()
            .map(|(entry, _)| match &entry.payload {
                EntryPayload::Normal(cmd) => cmd.body_bytes(),
                _ => 0,
            })
            .sum();
        let index_changed = batch
            .iter()
            .any(|(e, _)| matches!(e.payload, EntryPayload::Normal(Command::Index(_))));
        let (batch, responders): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        // The work may run again from the same start (see `writer`): it leaves its results here.
        let out = Arc::new(Mutex::new(None));
        let result = out.clone();
        let fault = self.storage.test_faults().apply_trigger(gid);
        let diverge = self.storage.test_faults().diverge_trigger(gid);
        let retention = self.storage.change_retention();
        let work = move |txn: &WriteTransaction| -> io::Result<()> {
            super::faults::check(fault.as_deref())?;
            let skip_writes = super::faults::armed(diverge.as_deref());
            let (mut applied, mut membership) = (applied0, membership0.clone());
            let mut meta = meta0.as_deref().cloned();
            let mut responses = Vec::with_capacity(batch.len());
            for entry in &batch {
                let index = entry.log_id.index;
                let response = match &entry.payload {
                    EntryPayload::Blank => Response::Empty,
                    EntryPayload::Normal(cmd) => {
                        let (unix_ms, cmd) = match cmd {
                            Command::Stamped(s) => (s.unix_ms, &*s.command),
                            cmd => (0, cmd),
                        };
                        let feed = Feed { unix_ms, retention };
                        if skip_writes && matches!(cmd, Command::Data(_) | Command::DataMany(_)) {
                            Response::Empty
                        } else {
                            apply_command(txn, gid, index, feed, cmd, meta.as_mut())?
                        }
                    }
                    EntryPayload::Membership(m) => {
                        membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        put_sm(txn, gid, KEY_MEMBERSHIP, &encode(&membership)?)?;
                        Response::Empty
                    }
                };
                applied = Some(entry.log_id);
                responses.push(response);
            }
            if let Some(a) = &applied {
                put_sm(txn, gid, KEY_APPLIED, &encode(a)?)?;
            }
            if let Some(m) = &meta {
                put_sm(txn, gid, KEY_META, &encode(m)?)?;
            }
            *result.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((responses, applied, membership, meta));
            Ok(())
        };
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        self.storage.state_writer().submit(false, work, move |r| {
            let _ = done_tx.send(r);
        });
        done_rx
            .await
            .map_err(|_| io::Error::other("storage writer stopped"))
            .and_then(|r| r)
            .map_err(|e| {
                let e = self.storage.note(e);
                self.storage.apply_failed(gid, &e);
                e
            })?;
        let (responses, applied, membership, meta) = out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| io::Error::other("apply produced no result"))?;
        if let Some(m) = meta {
            self.state.set_meta(m);
        }
        if index_changed {
            self.storage.kick_index_build(gid);
        }
        self.state.set_applied(applied, membership);
        self.state
            .written
            .fetch_add(written as u64, Ordering::Relaxed);
        for (responder, response) in responders.into_iter().zip(responses) {
            if let Some(r) = responder {
                r.send(response);
            }
        }
        Ok(())
    }
}
