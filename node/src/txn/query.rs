//! Queries inside a transaction: every document of a collection a selector matches, as the
//! transaction sees it (its own writes included), and the validation at commit that keeps
//! them serializable, phantoms included.
//!
//! A query asks each shard the planner names (one when the selector pins the shard key) for
//! its matches at one moment ([`scan`]); what each shard answered (id and version of each
//! match) is kept with the selector. The matches become reads of the transaction (locked at
//! prepare at the version seen, like a `get`). At commit, once every write of the transaction
//! is locked (after its prepare), each shard is asked again: the answer must be the same, and
//! no other transaction may hold an undecided write on a document that matches before or
//! after that write; otherwise the transaction aborts with `TxnConflict`. Of two transactions
//! that each query a predicate and then insert a document matching the other's, the second
//! to validate finds the first's intent (or its committed document): at most one commits.
//! A read-only transaction validates the same answers, ordered before any transaction still
//! undecided (as its `get`s are).

use std::collections::BTreeMap;

use flotilla_proto::v1::ErrorReason;
use flotilla_query::Predicate;
use serde::{Deserialize, Serialize};

use super::Coordinator;
use super::coordinator::check_room;
use super::resolve::{conflict, seen_decided};
use super::shards::{ShardAnswer, ShardCall, call_shard};
use crate::command::txn::{TxnId, TxnWrite};
use crate::error::{NodeError, NodeResult, Refusal};
use crate::host::{GroupHandle, Host};
use crate::store::StoredDoc;

/// Most documents one query of a transaction may answer (on each shard, and in all).
pub const MAX_RESULTS: usize = 1_000;
/// Longest selector, as for a plain query.
const MAX_SELECTOR_BYTES: usize = 64 << 10;

/// What one query of a transaction read, for its validation at commit.
#[derive(Debug, Clone)]
pub struct QueryRead {
    pub collection: String,
    pub selector: String,
    /// Each shard asked: the version of each match it answered, by id.
    pub answers: BTreeMap<u32, BTreeMap<String, u64>>,
}

/// One shard's answer to a transaction's query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanAnswer {
    /// The matching documents as reads see them (never half a transaction), by id.
    pub docs: Vec<(String, StoredDoc)>,
    /// Documents another transaction, still undecided, holds a write on that matches before
    /// or after it: (id, that transaction).
    pub locked: Vec<(String, TxnId)>,
}

fn invalid_query(message: String) -> NodeError {
    NodeError::refused(Refusal::InvalidArgument, ErrorReason::InvalidQuery, message)
}

fn too_many() -> NodeError {
    NodeError::refused(
        Refusal::ResourceExhausted,
        ErrorReason::LimitExceeded,
        format!("a query in a transaction answers at most {MAX_RESULTS} documents: narrow it"),
    )
}

/// The predicate of a selector (empty: every document).
pub fn parse(selector: &str) -> NodeResult<Predicate> {
    if selector.len() > MAX_SELECTOR_BYTES {
        return Err(invalid_query(format!(
            "selector is over {MAX_SELECTOR_BYTES} bytes"
        )));
    }
    if selector.trim().is_empty() {
        return Ok(Predicate::All);
    }
    flotilla_query::parse_selector_str(selector).map_err(|e| invalid_query(e.to_string()))
}

fn matches(filter: &Predicate, json: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(json).is_ok_and(|v| filter.matches(&v))
}

/// Serves a transaction's query on this replica of `group` (the caller passed the read
/// barrier): the matches and the undecided writes of transactions other than `me` on
/// documents that match before or after them.
pub async fn scan(
    host: &std::sync::Arc<Host>,
    group: &GroupHandle,
    collection: &str,
    selector: &str,
    me: Option<TxnId>,
) -> NodeResult<ScanAnswer> {
    let filter = parse(selector)?;
    let state = group.sm.state();
    let gid = state.gid;
    let read = group.sm.begin_read()?;
    let Some((docs, intents)) =
        crate::store::txn::matching_and_intents(&read, gid, collection, &filter, MAX_RESULTS)?
    else {
        return Err(too_many());
    };
    // Each intent with the document it is on, from the same read.
    let mut met = Vec::with_capacity(intents.len());
    for (id, intent) in intents {
        let before = crate::store::txn::doc_and_intent(&read, gid, collection, &id)?.0;
        met.push((id, intent, before));
    }
    drop(read);
    let mut found: BTreeMap<String, StoredDoc> = docs.into_iter().collect();
    let mut locked = Vec::new();
    for (id, intent, before) in met {
        let holder = intent.txn.id;
        if Some(holder) == me {
            // The transaction's own write: what it read is what the query answered.
            continue;
        }
        let writes_match = match &intent.write {
            Some(TxnWrite::Put { json }) => matches(&filter, json),
            _ => false,
        };
        let matched_before = before.as_ref().is_some_and(|d| matches(&filter, &d.json));
        let (after, decision) =
            seen_decided(host, group, (collection, &id), before, Some(intent)).await?;
        if decision.is_none() && (writes_match || matched_before) {
            locked.push((id.clone(), holder));
        }
        match after.filter(|d| matches(&filter, &d.json)) {
            Some(d) => {
                found.insert(id, d);
            }
            None => {
                found.remove(&id);
            }
        }
    }
    if found.len() > MAX_RESULTS {
        return Err(too_many());
    }
    Ok(ScanAnswer {
        docs: found.into_iter().collect(),
        locked,
    })
}

impl Coordinator {
    /// Every document of `collection` that `selector` matches, as transaction `txn` sees it:
    /// (id, shard, document), by id then shard.
    pub async fn query(
        &self,
        txn: TxnId,
        collection: &str,
        selector: &str,
    ) -> NodeResult<Vec<(String, u32, StoredDoc)>> {
        crate::validate::collection(collection)?;
        let filter = parse(selector)?;
        let mut t = self.enter(txn).await?;
        self.check_size(&t)?;
        let shards = {
            let meta = self.host().meta_state();
            let db = meta
                .databases
                .get(&t.database)
                .ok_or_else(|| NodeError::database_not_found(&t.database))?;
            let plan = flotilla_query::plan(
                &filter,
                &[],
                db.shard_key(collection).as_ref(),
                db.shards.len() as u32,
            );
            plan.shards
        };
        let answers = self
            .ask(&t.database, collection, selector, &shards, None)
            .await?;
        let mut read = QueryRead {
            collection: collection.to_string(),
            selector: selector.to_string(),
            answers: BTreeMap::new(),
        };
        let mut found: BTreeMap<(String, u32), StoredDoc> = BTreeMap::new();
        let mut new_reads = Vec::new();
        for (shard, answer) in answers {
            let seen = read.answers.entry(shard).or_default();
            for (id, doc) in answer.docs {
                seen.insert(id.clone(), doc.version);
                let key = (collection.to_string(), id.clone(), shard);
                // What the transaction read before must be what the query finds now; if not,
                // it cannot commit: it ends here, as a conflict at commit would end it.
                match t.reads.get(&key) {
                    Some(before) if before.as_ref().map_or(0, |d| d.version) != doc.version => {
                        self.close(txn);
                        self.host().metrics.txn.aborted("conflict");
                        return Err(conflict(format!(
                            "{collection}/{id} changed while the transaction ran, which was aborted"
                        )));
                    }
                    Some(_) => {}
                    None if t.writes.iter().any(|w| w.is(collection, &id, shard)) => {}
                    None => new_reads.push((key, Some(doc.clone()))),
                }
                found.insert((id, shard), doc);
            }
        }
        // The matches become reads: refused (and the transaction left as it was) when they
        // would make it touch too many documents.
        check_room(t.reads.len() + t.writes.len(), new_reads.len())?;
        t.reads.extend(new_reads);
        // The transaction's own writes, over what the shards answered.
        for w in t.writes.iter().filter(|w| w.collection == collection) {
            let key = (w.id.clone(), w.shard);
            let base = found.remove(&key).or_else(|| {
                t.reads
                    .get(&(w.collection.clone(), w.id.clone(), w.shard))
                    .cloned()
                    .flatten()
            });
            if let TxnWrite::Put { json } = &w.write
                && matches(&filter, json)
            {
                let doc = StoredDoc {
                    version: base.as_ref().map_or(0, |d| d.version) + 1,
                    revision: 0,
                    json: json.clone(),
                };
                found.insert(key, doc);
            }
        }
        if found.len() > MAX_RESULTS {
            return Err(too_many());
        }
        t.queries.push(read);
        Ok(found
            .into_iter()
            .map(|((id, shard), doc)| (id, shard, doc))
            .collect())
    }

    /// Asks `shards` for their matches at once.
    async fn ask(
        &self,
        database: &str,
        collection: &str,
        selector: &str,
        shards: &[u32],
        me: Option<TxnId>,
    ) -> NodeResult<Vec<(u32, ScanAnswer)>> {
        let asks = shards.iter().map(|&shard| async move {
            let call = ShardCall::Scan {
                collection: collection.to_string(),
                selector: selector.to_string(),
                me,
            };
            (shard, call_shard(self.host(), database, shard, call).await)
        });
        let mut out = Vec::with_capacity(shards.len());
        for (shard, answer) in futures::future::join_all(asks).await {
            match answer? {
                ShardAnswer::Scan(a) => out.push((shard, a)),
                other => return Err(NodeError::Internal(format!("unexpected {other:?}"))),
            }
        }
        Ok(out)
    }

    /// Checks that every query of the transaction would answer what it answered. `me`: the
    /// transaction, once its writes are locked (a writing transaction); then an undecided
    /// write of another transaction on a matching document is a conflict too.
    pub(super) async fn validate_queries(
        &self,
        t: &super::coordinator::OpenTxn,
        me: Option<TxnId>,
    ) -> NodeResult<()> {
        for q in &t.queries {
            let shards: Vec<u32> = q.answers.keys().copied().collect();
            let answers = self
                .ask(&t.database, &q.collection, &q.selector, &shards, me)
                .await?;
            for (shard, answer) in answers {
                if me.is_some()
                    && let Some((id, holder)) = answer.locked.first()
                {
                    return Err(conflict(format!(
                        "{}/{id}, which a query of the transaction covers, is being written by transaction {holder:032x}",
                        q.collection
                    )));
                }
                let now: BTreeMap<String, u64> = answer
                    .docs
                    .into_iter()
                    .map(|(id, d)| (id, d.version))
                    .collect();
                if q.answers.get(&shard) != Some(&now) {
                    return Err(conflict(format!(
                        "a query of the transaction over {} answers differently now (a document \
                         matching it was written by another transaction)",
                        q.collection
                    )));
                }
            }
        }
        Ok(())
    }
}
