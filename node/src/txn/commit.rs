//! Committing a transaction that writes: on one shard in one Raft entry (`CommitOne`), else
//! in two phases (prepare on every shard, the decision in the record on the primary shard,
//! then the intents resolved), with the recovery of an intent left by a transaction whose
//! coordinator is gone met on the way.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::coordinator::{Committed, CommittedWrite, Coordinator, OpenTxn, timed_out};
use super::plan::Plan;
use super::resolve::{self, conflict};
use super::shards::{ShardAnswer, ShardCall, call_shard};
use crate::command::OpOutcome;
use crate::command::txn::{
    Conflict, Decision, KeyAccess, TxnCommand, TxnId, TxnMeta, TxnOutcome, TxnWrite,
};
use crate::config::TxnFailpoint;
use crate::error::{NodeError, NodeResult};

impl Coordinator {
    pub(super) async fn commit_one(&self, t: &OpenTxn, plan: &Plan) -> NodeResult<Committed> {
        let Some((shard, keys)) = plan.shards.iter().next() else {
            return Ok(Committed {
                writes: Vec::new(),
                shards: 0,
            });
        };
        let call = ShardCall::Propose(TxnCommand::CommitOne { keys: keys.clone() });
        for attempt in 0..2 {
            match call_shard(self.host(), &t.database, *shard, call.clone()).await? {
                ShardAnswer::Applied(TxnOutcome::Committed(outcomes)) => {
                    let written = keys.iter().filter(|k| k.write.is_some());
                    let writes = written
                        .zip(outcomes)
                        .map(|(k, o)| committed_write(k, *shard, o))
                        .collect();
                    return Ok(Committed { writes, shards: 1 });
                }
                ShardAnswer::Applied(TxnOutcome::Refused(c)) => {
                    // An intent left by a transaction whose coordinator is gone is resolved
                    // (once), then the commit is tried again.
                    if attempt == 0 && self.recover_blocker(&t.database, *shard, &c).await? {
                        continue;
                    }
                    return Err(refusal(c));
                }
                other => return Err(NodeError::Internal(format!("unexpected {other:?}"))),
            }
        }
        Err(conflict("the transaction met another one"))
    }

    /// When `c` is an intent of a decided or expired transaction, resolves it on `shard` and
    /// answers true.
    async fn recover_blocker(&self, database: &str, shard: u32, c: &Conflict) -> NodeResult<bool> {
        let Conflict::Intent { holder, .. } = c else {
            return Ok(false);
        };
        match resolve::decision_of(self.host(), database, *holder).await? {
            Some(d) => {
                resolve::resolve(self.host(), database, shard, *holder, d).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    pub(super) async fn commit_two_phase(
        &self,
        txn: TxnId,
        t: &OpenTxn,
        plan: &Plan,
    ) -> NodeResult<Committed> {
        let Some(primary) = plan.primary else {
            return Err(NodeError::Internal(
                "a writing plan names its primary".into(),
            ));
        };
        let meta = TxnMeta {
            id: txn,
            primary_shard: primary,
            started_ms: t.started_ms,
            timeout_ms: t.timeout.as_millis() as u64,
        };
        let db = t.database.as_str();
        // Prepare: every shard locks and checks its documents, at once.
        let prepares = plan.shards.iter().map(|(shard, keys)| async move {
            let mut result = self.prepare(db, *shard, meta, keys).await;
            if let Ok(Err(c)) = &result
                && self.recover_blocker(db, *shard, c).await.unwrap_or(false)
            {
                result = self.prepare(db, *shard, meta, keys).await;
            }
            (*shard, result)
        });
        let prepared = futures::future::join_all(prepares).await;
        let mut versions: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        let mut failure: Option<NodeError> = None;
        for (shard, result) in prepared {
            match result {
                Ok(Ok(v)) => {
                    versions.insert(shard, v);
                }
                Ok(Err(c)) => failure = failure.or(Some(refusal(c))),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        // With every write locked, no query may have a phantom: each shard answers what it
        // answered, and no other transaction holds a write that would change that.
        if failure.is_none()
            && !t.queries.is_empty()
            && let Err(e) = self.validate_queries(t, Some(txn)).await
        {
            failure = Some(e);
        }
        if failure.is_none() && t.started.elapsed() > t.timeout {
            failure = Some(timed_out(txn, t.timeout));
        }
        if failure.is_none() {
            self.failpoint(TxnFailpoint::AfterPrepare).await;
        }
        if let Some(e) = failure {
            // Nothing was decided: drop whatever intents were placed (an intent whose
            // prepare answered nothing is left to whoever meets it, after the timeout).
            self.release(
                db,
                meta,
                plan.shards.keys().copied(),
                Decision::Aborted,
                None,
            )
            .await;
            return Err(e);
        }
        // The decision, in the record on the primary shard (which resolves its intents too).
        // The decision time, which every shard's writes of the transaction take as their
        // commit time (a point-in-time restore never splits the transaction).
        let decided_ms = resolve::now_ms();
        let decide = ShardCall::Propose(TxnCommand::At {
            at_ms: decided_ms,
            step: Box::new(TxnCommand::Decide { txn, commit: true }),
        });
        let decision = match call_shard(self.host(), db, primary, decide).await {
            Ok(ShardAnswer::Applied(TxnOutcome::Decided(d))) => d,
            Ok(other) => return Err(NodeError::Internal(format!("unexpected {other:?}"))),
            Err(e) => {
                return Err(NodeError::OutcomeUnknown(format!(
                    "the commit decision of transaction {txn:032x} may or may not be recorded: {e}"
                )));
            }
        };
        self.failpoint(TxnFailpoint::AfterDecide).await;
        let others = plan.shards.keys().copied().filter(|s| *s != primary);
        if decision == Decision::Aborted {
            // Whoever met an intent after the timeout aborted it first.
            self.release(db, meta, others, Decision::Aborted, None)
                .await;
            return Err(timed_out(txn, t.timeout));
        }
        let resolved = self
            .release(db, meta, others, Decision::Committed, Some(decided_ms))
            .await;
        if resolved {
            let host = self.host().clone();
            let database = db.to_string();
            tokio::spawn(async move {
                let forget = ShardCall::Propose(TxnCommand::Forget { txn });
                let _ = call_shard(&host, &database, primary, forget).await;
            });
        }
        let mut writes = Vec::new();
        for (shard, keys) in &plan.shards {
            let v = versions.get(shard).cloned().unwrap_or_default();
            for (k, current) in keys.iter().zip(v) {
                let outcome = match &k.write {
                    Some(TxnWrite::Put { .. }) => OpOutcome::Put {
                        version: current + 1,
                    },
                    Some(TxnWrite::Delete) => OpOutcome::Delete {
                        existed: current > 0,
                    },
                    None => continue,
                };
                writes.push(committed_write(k, *shard, outcome));
            }
        }
        // In the order the transaction first wrote them.
        let order: HashMap<(&str, &str, u32), usize> = t
            .writes
            .iter()
            .enumerate()
            .map(|(i, w)| ((w.collection.as_str(), w.id.as_str(), w.shard), i))
            .collect();
        writes.sort_by_key(|w: &CommittedWrite| {
            order
                .get(&(w.collection.as_str(), w.id.as_str(), w.shard))
                .copied()
        });
        Ok(Committed {
            writes,
            shards: plan.shards.len() as u32,
        })
    }

    /// Stops here for a minute when the node was started with this failpoint (tests).
    async fn failpoint(&self, at: TxnFailpoint) {
        if self.host().config.txn_failpoint == Some(at) {
            tracing::warn!(?at, "transaction failpoint reached: stopping here");
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    }

    async fn prepare(
        &self,
        database: &str,
        shard: u32,
        meta: TxnMeta,
        keys: &[KeyAccess],
    ) -> NodeResult<Result<Vec<u64>, Conflict>> {
        let call = ShardCall::Propose(TxnCommand::Prepare {
            txn: meta,
            keys: keys.to_vec(),
        });
        match call_shard(self.host(), database, shard, call).await? {
            ShardAnswer::Applied(TxnOutcome::Prepared(v)) => Ok(Ok(v)),
            ShardAnswer::Applied(TxnOutcome::Refused(c)) => Ok(Err(c)),
            other => Err(NodeError::Internal(format!("unexpected {other:?}"))),
        }
    }

    /// Resolves the intents on `shards` by `decision`, at once; true when every one answered.
    async fn release(
        &self,
        database: &str,
        meta: TxnMeta,
        shards: impl Iterator<Item = u32>,
        decision: Decision,
        decided_ms: Option<u64>,
    ) -> bool {
        let calls = shards
            .map(|s| resolve::resolve_at(self.host(), database, s, meta, decision, decided_ms));
        let results = futures::future::join_all(calls).await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        if failed > 0 {
            tracing::warn!(txn = %format!("{:032x}", meta.id), failed, "intents left to be resolved by whoever meets them");
        }
        failed == 0
    }
}

fn committed_write(k: &KeyAccess, shard: u32, outcome: OpOutcome) -> CommittedWrite {
    let (version, deleted) = match outcome {
        OpOutcome::Put { version } => (version, false),
        OpOutcome::Delete { existed } => (0, existed),
    };
    CommittedWrite {
        collection: k.collection.clone(),
        id: k.id.clone(),
        shard,
        version,
        deleted,
    }
}

/// The error a refused prepare or commit ends the transaction with.
fn refusal(c: Conflict) -> NodeError {
    match c {
        Conflict::Version {
            collection,
            id,
            expected,
            current,
            if_version: true,
        } => NodeError::VersionMismatch(format!(
            "version mismatch on {collection}/{id}: expected {expected}, current {current}"
        )),
        Conflict::Version { collection, id, .. } => conflict(format!(
            "{collection}/{id} changed after the transaction read it"
        )),
        Conflict::Intent {
            collection,
            id,
            holder,
        } => conflict(format!(
            "{collection}/{id} is locked by transaction {:032x}",
            holder.id
        )),
    }
}
