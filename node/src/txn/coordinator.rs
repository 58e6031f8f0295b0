//! The coordinator: the node that answered `Begin` runs the transaction. It keeps the
//! transaction's reads (with the versions seen) and buffers its writes; at commit it asks each
//! shard to lock and check what the transaction touched (prepare: intents through the
//! shard's Raft log), writes the decision to the record on the primary shard, and resolves the
//! intents. A transaction on one shard commits in one Raft entry; one that only reads checks
//! that nothing it read has changed.
//!
//! Serializable: a writing transaction holds intents on everything it read or writes, each
//! checked at the version it read, at the moment of its decision (two-phase locking at commit
//! time, with no waiting: a transaction that meets another's intent aborts with `TxnConflict`,
//! so no deadlock can form). A read-only transaction's reads all happened before its
//! validation, and each document kept the value read from its read to its validation, so all
//! held together at one moment between the last read and the first validation.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_proto::v1::ErrorReason;
use tokio::time::Instant;

use super::plan::{DocKey, PendingWrite, Plan, plan};
use super::query::QueryRead;
use super::resolve::{conflict, now_ms};
use super::shards::{ShardAnswer, ShardCall, call_shard};
use crate::command::txn::{TxnId, TxnWrite, new_txn_id};
use crate::error::{NodeError, NodeResult, Refusal};
use crate::host::Host;
use crate::store::StoredDoc;

/// The longest timeout a transaction may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// Most documents one transaction may read and write.
pub const MAX_KEYS: usize = 10_000;

/// A transaction in progress on this node.
#[derive(Debug)]
pub struct OpenTxn {
    pub database: String,
    pub(super) started: Instant,
    pub(super) started_ms: u64,
    pub(super) timeout: Duration,
    /// Documents read, as read.
    pub(super) reads: BTreeMap<DocKey, Option<StoredDoc>>,
    pub(super) writes: Vec<PendingWrite>,
    /// Queries run, with what each shard answered (validated at commit).
    pub(super) queries: Vec<QueryRead>,
}

/// A written document's outcome in a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedWrite {
    pub collection: String,
    pub id: String,
    pub shard: u32,
    /// The new version (0 after a delete).
    pub version: u64,
    pub deleted: bool,
}

/// What a commit answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub writes: Vec<CommittedWrite>,
    pub shards: u32,
}

/// One open transaction, as listed.
#[derive(Debug, Clone)]
pub struct OpenInfo {
    pub txn: TxnId,
    pub database: String,
    pub age: Duration,
    pub reads: usize,
    pub writes: usize,
}

type Slot = Arc<tokio::sync::Mutex<OpenTxn>>;

/// Where a document of a transaction lives: found in a put's body, or named by the shard key
/// value a get or delete gives (JSON text; ignored in a collection without a shard key).
#[derive(Debug, Clone, Copy)]
pub enum Place<'a> {
    Body(&'a str),
    Named(&'a str),
}

/// The transactions this node coordinates.
pub struct Coordinator {
    host: Arc<Host>,
    open: Mutex<HashMap<TxnId, Slot>>,
}

fn not_found(txn: TxnId) -> NodeError {
    NodeError::refused(
        Refusal::NotFound,
        ErrorReason::TxnNotFound,
        format!(
            "transaction {txn:032x} is not open on this node (finished, expired, or its coordinator restarted)"
        ),
    )
}

pub(super) fn timed_out(txn: TxnId, timeout: Duration) -> NodeError {
    NodeError::refused(
        Refusal::Aborted,
        ErrorReason::TxnTimeout,
        format!("transaction {txn:032x} outlived its timeout of {timeout:?} and was aborted"),
    )
}

impl Coordinator {
    pub fn new(host: Arc<Host>) -> Coordinator {
        Coordinator {
            host,
            open: Mutex::default(),
        }
    }

    pub fn host(&self) -> &Arc<Host> {
        &self.host
    }

    pub(super) fn slot(&self, txn: TxnId) -> NodeResult<Slot> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&txn).cloned().ok_or_else(|| not_found(txn))
    }

    pub(super) fn close(&self, txn: TxnId) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&txn);
    }

    /// Starts a transaction on `database`; `timeout` None: the node's `--txn-timeout`.
    pub fn begin(&self, database: &str, timeout: Option<Duration>) -> NodeResult<TxnId> {
        crate::validate::database(database)?;
        if !self.host.meta_state().databases.contains_key(database) {
            return Err(NodeError::database_not_found(database));
        }
        let timeout = timeout
            .unwrap_or(self.host.config.txn_timeout)
            .min(MAX_TIMEOUT);
        let txn = new_txn_id(self.host.id);
        let open = OpenTxn {
            database: database.to_string(),
            started: Instant::now(),
            started_ms: now_ms(),
            timeout,
            reads: BTreeMap::new(),
            writes: Vec::new(),
            queries: Vec::new(),
        };
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(txn, Arc::new(tokio::sync::Mutex::new(open)));
        Ok(txn)
    }

    /// Locks the open transaction for one call; aborts it when past its timeout.
    pub(super) async fn enter(
        &self,
        txn: TxnId,
    ) -> NodeResult<tokio::sync::OwnedMutexGuard<OpenTxn>> {
        let guard = self.slot(txn)?.lock_owned().await;
        if guard.started.elapsed() > guard.timeout {
            self.close(txn);
            self.host.metrics.txn.aborted("timeout");
            return Err(timed_out(txn, guard.timeout));
        }
        Ok(guard)
    }

    /// A document as the transaction sees it (its own writes included). In a collection with
    /// a shard key, `shard_key` names the document's value (JSON text), as a plain get does.
    pub async fn get(
        &self,
        txn: TxnId,
        collection: &str,
        id: &str,
        shard_key: &str,
    ) -> NodeResult<(Option<StoredDoc>, u32)> {
        crate::validate::collection(collection)?;
        crate::validate::document_id(id)?;
        let mut t = self.enter(txn).await?;
        let shard = self.place(
            &t.database,
            collection,
            id,
            Place::Named(shard_key),
            "reading",
        )?;
        let key = (collection.to_string(), id.to_string(), shard);
        if let Some(w) = t.writes.iter().find(|w| w.is(collection, id, shard)) {
            let base = t.reads.get(&key).cloned().flatten();
            return Ok((
                match &w.write {
                    TxnWrite::Put { json } => Some(StoredDoc {
                        version: base.as_ref().map_or(0, |d| d.version) + 1,
                        revision: 0,
                        json: json.clone(),
                    }),
                    TxnWrite::Delete => None,
                },
                shard,
            ));
        }
        if let Some(doc) = t.reads.get(&key) {
            return Ok((doc.clone(), shard));
        }
        self.check_size(&t)?;
        let read = ShardCall::Read {
            collection: collection.to_string(),
            id: id.to_string(),
        };
        let doc = match call_shard(&self.host, &t.database, shard, read).await? {
            ShardAnswer::Doc(doc) => doc,
            other => return Err(NodeError::Internal(format!("unexpected {other:?}"))),
        };
        t.reads.insert(key, doc.clone());
        Ok((doc, shard))
    }

    /// The shard of a document, placed as plain calls place it (`crate::placement`): by id,
    /// or in a collection with a shard key by its value, which a get or delete must name
    /// (`what` says which, in the refusal).
    fn place(
        &self,
        database: &str,
        collection: &str,
        id: &str,
        at: Place<'_>,
        what: &str,
    ) -> NodeResult<u32> {
        let meta = self.host.meta_state();
        let db = meta
            .databases
            .get(database)
            .ok_or_else(|| NodeError::database_not_found(database))?;
        let shard = match at {
            Place::Body(json) => crate::placement::shard_of_put(db, collection, id, json)?,
            Place::Named(key) => {
                crate::placement::shard_of_named_required(db, collection, id, key, what)?
            }
        };
        Ok(shard as u32)
    }

    /// Refuses a transaction that could not touch one more document.
    pub(super) fn check_size(&self, t: &OpenTxn) -> NodeResult<()> {
        check_room(t.reads.len() + t.writes.len(), 1)
    }

    /// Buffers a write (a put with `Some(json)`, else a delete) and answers the document's
    /// shard. A put is placed by its body; a delete in a collection with a shard key names its
    /// value in `shard_key`.
    pub async fn write(
        &self,
        txn: TxnId,
        collection: &str,
        id: &str,
        json: Option<String>,
        shard_key: &str,
        if_version: Option<u64>,
    ) -> NodeResult<u32> {
        crate::validate::collection(collection)?;
        crate::validate::document_id(id)?;
        if let Some(json) = &json {
            crate::validate::body(json, &self.host.config)?;
        }
        let mut t = self.enter(txn).await?;
        let at = match &json {
            Some(json) => Place::Body(json),
            None => Place::Named(shard_key),
        };
        let shard = self.place(&t.database, collection, id, at, "deleting")?;
        let key = (collection.to_string(), id.to_string(), shard);
        // Against what the transaction read, the condition can be checked at once.
        if let (Some(expected), Some(read)) = (if_version, t.reads.get(&key)) {
            let current = read.as_ref().map_or(0, |d| d.version);
            if expected != current {
                return Err(NodeError::VersionMismatch(format!(
                    "version mismatch on {collection}/{id}: expected {expected}, current {current}"
                )));
            }
        }
        let write = match json {
            Some(json) => TxnWrite::Put { json },
            None => TxnWrite::Delete,
        };
        match t.writes.iter_mut().find(|w| w.is(collection, id, shard)) {
            Some(w) => {
                w.write = write;
                w.if_version = if_version.or(w.if_version);
            }
            None => {
                self.check_size(&t)?;
                t.writes.push(PendingWrite {
                    collection: collection.to_string(),
                    id: id.to_string(),
                    shard,
                    write,
                    if_version,
                });
            }
        }
        Ok(shard)
    }

    /// Ends the transaction without applying anything (nothing was written to any shard).
    pub async fn rollback(&self, txn: TxnId) -> NodeResult<()> {
        let _t = self.slot(txn)?.lock_owned().await;
        self.close(txn);
        self.host.metrics.txn.aborted("rollback");
        Ok(())
    }

    /// Commits the transaction, or aborts it and says why.
    pub async fn commit(&self, txn: TxnId) -> NodeResult<Committed> {
        let t = self.enter(txn).await?;
        self.close(txn);
        let started = Instant::now();
        let reads: BTreeMap<DocKey, u64> = t
            .reads
            .iter()
            .map(|(k, d)| (k.clone(), d.as_ref().map_or(0, |d| d.version)))
            .collect();
        let plan = plan(&reads, &t.writes);
        let (path, result) = if plan.read_only() {
            ("read_only", self.validate_reads(&t, &plan).await)
        } else if plan.shards.len() == 1 && t.queries.is_empty() {
            ("one_shard", self.commit_one(&t, &plan).await)
        } else {
            ("two_phase", self.commit_two_phase(txn, &t, &plan).await)
        };
        let m = &self.host.metrics.txn;
        match &result {
            Ok(_) => m.committed(path, started.elapsed().as_secs_f64()),
            Err(NodeError::Refused { reason, .. }) if *reason == ErrorReason::TxnConflict => {
                m.aborted("conflict")
            }
            Err(NodeError::Refused { reason, .. }) if *reason == ErrorReason::TxnTimeout => {
                m.aborted("timeout")
            }
            Err(NodeError::VersionMismatch(_)) => m.aborted("version_mismatch"),
            Err(_) => m.aborted("error"),
        }
        result
    }

    async fn validate_reads(&self, t: &OpenTxn, plan: &Plan) -> NodeResult<Committed> {
        // One document read alone was a linearizable read: nothing to check.
        if t.reads.len() > 1 || !t.queries.is_empty() {
            let checks = plan.shards.iter().map(|(shard, keys)| {
                let keys = keys
                    .iter()
                    .map(|k| (k.collection.clone(), k.id.clone(), k.expect.unwrap_or(0)))
                    .collect();
                call_shard(
                    &self.host,
                    &t.database,
                    *shard,
                    ShardCall::Validate { keys },
                )
            });
            for answer in futures::future::join_all(checks).await {
                match answer? {
                    ShardAnswer::Valid(true) => {}
                    ShardAnswer::Valid(false) => {
                        return Err(conflict(
                            "a document the transaction read changed before it committed",
                        ));
                    }
                    other => return Err(NodeError::Internal(format!("unexpected {other:?}"))),
                }
            }
            // Each query's answer must still be what it was (a read-only transaction is
            // ordered before any transaction still undecided).
            self.validate_queries(t, None).await?;
        }
        Ok(Committed {
            writes: Vec::new(),
            shards: 0,
        })
    }

    /// The transactions open here (of `database`, or all).
    pub fn list(&self, database: Option<&str>) -> Vec<OpenInfo> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (txn, slot) in open.iter() {
            // A transaction busy with a call is listed from the next listing on.
            let Ok(t) = slot.try_lock() else { continue };
            if database.is_some_and(|d| d != t.database) {
                continue;
            }
            out.push(OpenInfo {
                txn: *txn,
                database: t.database.clone(),
                age: t.started.elapsed(),
                reads: t.reads.len(),
                writes: t.writes.len(),
            });
        }
        out.sort_by_key(|i| i.txn);
        out
    }

    /// Drops open transactions past their timeout (their clients went away).
    pub fn sweep(&self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let before = open.len();
        open.retain(|_, slot| match slot.try_lock() {
            Ok(t) => t.started.elapsed() <= t.timeout,
            Err(_) => true,
        });
        for _ in open.len()..before {
            self.host.metrics.txn.aborted("timeout");
        }
    }
}

/// Refuses `adding` more documents to a transaction that touches `held` when that makes
/// more than [`MAX_KEYS`].
pub(super) fn check_room(held: usize, adding: usize) -> NodeResult<()> {
    if held.saturating_add(adding) > MAX_KEYS {
        return Err(NodeError::ResourceExhausted(format!(
            "a transaction touches at most {MAX_KEYS} documents"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_touches_at_most_max_keys_documents() {
        assert!(check_room(0, MAX_KEYS).is_ok());
        assert!(check_room(MAX_KEYS - 1, 1).is_ok());
        assert!(matches!(
            check_room(MAX_KEYS, 1),
            Err(NodeError::ResourceExhausted(_))
        ));
        // A query adding many reads at once is counted whole.
        assert!(check_room(MAX_KEYS - 1_000, 1_000).is_ok());
        assert!(matches!(
            check_room(MAX_KEYS - 999, 1_000),
            Err(NodeError::ResourceExhausted(_))
        ));
    }
}
