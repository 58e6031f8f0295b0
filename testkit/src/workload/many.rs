//! The workers' requests on several keys: atomic batches of writes, and listings and queries of
//! the whole collection, each recorded as one operation per key.

use flotilla_client::{BatchOp, Document, Field, ListOptions, Session};
use rand::Rng;
use rand::seq::SliceRandom;

use super::{Worker, Writes, read_outcome, write_failure};
use crate::history::{Call, Outcome, Via};
use crate::sessions::Seen;

impl Worker {
    /// An atomic batch of writes on 2 or 3 distinct keys (one of them unknown to a worker
    /// sending conditional writes: it reads that key instead).
    pub(super) async fn batch(&mut self, session: &Session) {
        let w = self.workload.clone();
        let mut keys = w.all_keys();
        keys.shuffle(&mut self.rng);
        keys.truncate(self.rng.random_range(2..=3).min(w.keys));
        let conditional = w.writes == Writes::Conditional;
        if conditional && let Some(unknown) = keys.iter().find(|k| !self.versions.contains_key(*k))
        {
            let unknown = unknown.clone();
            self.one(session, &unknown, Call::Get).await;
            return;
        }
        let mut calls: Vec<(String, Call)> = Vec::new();
        let mut ops = Vec::new();
        for key in keys {
            let seen = self.versions.get(&key).copied().unwrap_or(0);
            let condition = conditional || self.rng.random_range(0..100) < 20;
            let (call, op) = if self.rng.random_range(0..100) < 85 {
                let value = self.history.unique_value();
                let if_version = condition.then_some(seen);
                let op = BatchOp::Put {
                    collection: w.collection.clone(),
                    id: key.clone(),
                    json: format!("{{\"w\":{value}}}"),
                    if_version,
                };
                (Call::Put { value, if_version }, op)
            } else {
                let if_version = conditional.then_some(seen);
                let op = BatchOp::Delete {
                    collection: w.collection.clone(),
                    id: key.clone(),
                    if_version,
                };
                (Call::Delete { if_version }, op)
            };
            calls.push((key, call));
            ops.push(op);
        }
        let via = Via::Batch(self.history.new_batch());
        let pending = self.history.invoke_all(self.id, &calls, via);
        let (outcomes, error) = match session.batch(&w.database, ops).await {
            Ok(answer) if answer.results.len() == calls.len() => {
                let outcomes: Vec<Outcome> = calls
                    .iter()
                    .zip(&answer.results)
                    .map(|((_, call), result)| match call {
                        Call::Put { .. } => Outcome::Put {
                            version: result.version,
                        },
                        _ => Outcome::Deleted {
                            existed: result.deleted,
                        },
                    })
                    .collect();
                if answer.revision > 0 {
                    for (key, _) in &calls {
                        let seen = Seen::Wrote {
                            revision: answer.revision,
                        };
                        self.shared.sessions.record(self.session, key, seen);
                    }
                }
                (outcomes, None)
            }
            Ok(answer) => (
                vec![Outcome::Unknown; calls.len()],
                Some(format!(
                    "{} results for a batch of {} writes",
                    answer.results.len(),
                    calls.len()
                )),
            ),
            Err(e) => (vec![write_failure(&e); calls.len()], Some(e.to_string())),
        };
        let completed: Vec<_> = pending.into_iter().zip(outcomes.iter().copied()).collect();
        self.history.complete_all(&completed, error);
        if outcomes.contains(&Outcome::Unknown) {
            // Once: the worker goes on as one new logical client.
            self.settle(&calls[0].0, Outcome::Unknown);
            for (key, _) in &calls {
                self.versions.remove(key);
            }
            return;
        }
        for ((key, _), outcome) in calls.iter().zip(outcomes) {
            self.settle(key, outcome);
        }
    }

    /// A listing or a query of the whole collection: a read of every workload key, listed or
    /// absent. A result cut into pages says nothing of the keys it did not reach.
    pub(super) async fn listing(&mut self, session: &Session) {
        let w = self.workload.clone();
        let query = self.rng.random_bool(0.5);
        let keys = w.all_keys();
        let calls: Vec<(String, Call)> = keys.iter().map(|k| (k.clone(), Call::Get)).collect();
        let via = if query { Via::Query } else { Via::List };
        let pending = self.history.invoke_all(self.id, &calls, via);
        let room = (w.keys + 8) as u32;
        let answer: Result<(Vec<Document>, bool), _> = if query {
            let matching = Field::new("/w").map(|f| f.ge(0));
            match matching {
                // In the session, as its lists and gets: the checker holds every read of the
                // session to what it saw before.
                Ok(predicate) => session
                    .query(&w.database, &w.collection)
                    .filter(&predicate)
                    .consistency(w.reads)
                    .page_size(room, 0)
                    .page(None)
                    .await
                    .map(|page| (page.documents, page.next_page_token.is_none())),
                Err(e) => Err(flotilla_client::Error::InvalidArgument(e.to_string())),
            }
        } else {
            let options = ListOptions {
                limit: room,
                consistency: w.reads,
                ..ListOptions::default()
            };
            session
                .list(&w.database, &w.collection, &options)
                .await
                .map(|page| (page.documents, page.next_page_token.is_none()))
        };
        let (outcomes, error): (Vec<Outcome>, _) = match answer {
            Ok((documents, complete)) => {
                let outcomes = keys
                    .iter()
                    .map(|key| match documents.iter().find(|d| &d.id == key) {
                        Some(doc) => {
                            let seen = Seen::Read {
                                revision: doc.revision,
                                stale: false,
                            };
                            self.shared.sessions.record(self.session, key, seen);
                            read_outcome(Ok(Some(doc.clone()))).0
                        }
                        None if complete => Outcome::Read(None),
                        // Not reached by this page: no information, like a failed read.
                        None => Outcome::Failed,
                    })
                    .collect();
                (outcomes, None)
            }
            Err(e) => (vec![Outcome::Failed; keys.len()], Some(e.to_string())),
        };
        let completed: Vec<_> = pending.into_iter().zip(outcomes.iter().copied()).collect();
        self.history.complete_all(&completed, error);
        for (key, outcome) in keys.iter().zip(outcomes) {
            self.settle(key, outcome);
        }
    }
}
