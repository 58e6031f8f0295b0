//! Concurrent clients that put, delete and read documents at random and record every operation
//! in a [`History`], and the final read of every key once the faults are over.
//!
//! Each worker has its own client over every node (in its own order, so that workers enter the
//! cluster through different nodes) and its own random generator derived from the run's seed.
//! Every put writes a value no other put of the history writes (several workloads may share one
//! history). A worker whose write ended with an unknown
//! outcome goes on as a new logical client: its old write may still be in flight. A write
//! that certainly did not apply (see `write_failure`) is recorded as failed.
//!
//! Besides single puts, deletes and reads, workers may send atomic batches of writes on several
//! keys and list or query the whole collection ([`Workload::batches`], [`Workload::lists`]);
//! such a request is recorded as one operation per key ([`crate::history::Via`]). Workers may
//! share a client ([`Workload::workers_per_client`]), whose calls then travel together in
//! Multi requests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use flotilla_client::{Client, ClientOptions, Consistency, Error as ClientError, Session};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::history::{Call, History, Outcome};

mod many;
use crate::linearizability::Register;
use crate::sessions::{Seen, SessionLog};

/// Which writes the workers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writes {
    /// Every put and delete carries `if_version` (the version the worker last saw), so that a
    /// write delivered twice cannot apply twice: the second copy fails its condition.
    Conditional,
    /// Mostly unconditional puts and deletes, some conditional puts.
    Mixed,
}

/// What the workers do.
#[derive(Debug, Clone)]
pub struct Workload {
    pub database: String,
    pub collection: String,
    /// Number of documents the workers share (few keys: more contention per key).
    pub keys: usize,
    /// Concurrent workers.
    pub workers: usize,
    /// Pause between two operations of one worker.
    pub pace: Duration,
    pub writes: Writes,
    /// How the workers read (linearizable, or under the leader's lease: both must be
    /// linearizable).
    pub reads: Consistency,
    /// Options of every worker's client: short timeouts, so that a worker stuck on an
    /// unreachable node moves on.
    pub client_options: ClientOptions,
    /// Share of the operations (percent) that are stale reads through the worker's session,
    /// recorded in [`Running::sessions`] rather than in the history (a stale read is not
    /// linearizable; a session's reads must still never go back in time).
    pub stale_reads: u32,
    /// Share of the operations (percent) that are atomic batches of writes on 2 or 3 keys.
    pub batches: u32,
    /// Share of the operations (percent) that list the collection or query it (half each).
    pub lists: u32,
    /// Workers that share one client (1: a client each). Calls of workers sharing a client
    /// are coalesced into Multi requests.
    pub workers_per_client: usize,
}

impl Workload {
    /// `workers` workers on `keys` documents of `database`.
    pub fn new(database: &str, keys: usize, workers: usize) -> Workload {
        Workload {
            database: database.to_string(),
            collection: "registers".into(),
            keys,
            workers,
            pace: Duration::from_millis(5),
            writes: Writes::Conditional,
            reads: Consistency::Linearizable,
            stale_reads: 0,
            batches: 0,
            lists: 0,
            workers_per_client: 1,
            client_options: ClientOptions {
                total_timeout: Duration::from_secs(3),
                request_timeout: Duration::from_millis(1500),
                connect_timeout: Duration::from_millis(500),
                backoff_base: Duration::from_millis(20),
                backoff_max: Duration::from_millis(300),
                ..ClientOptions::default()
            },
        }
    }

    pub fn key(&self, i: usize) -> String {
        format!("k{i:03}")
    }

    pub fn all_keys(&self) -> Vec<String> {
        (0..self.keys).map(|i| self.key(i)).collect()
    }

    /// Starts the workers against `endpoints`; they run until [`Running::stop`].
    pub fn start(&self, endpoints: &[String], history: &History, seed: u64) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            acknowledged: AtomicU64::new(0),
            sessions: SessionLog::default(),
        });
        let per_client = self.workers_per_client.max(1);
        let mut clients = Vec::new();
        let tasks = (0..self.workers)
            .map(|w| {
                let mut rng = StdRng::seed_from_u64(seed.wrapping_add(w as u64 * 0x9E37_79B9));
                if w % per_client == 0 {
                    let mut order = endpoints.to_vec();
                    order.shuffle(&mut rng);
                    clients.push(Client::with_options(order, self.client_options.clone()));
                }
                let worker = Worker {
                    client: clients[w / per_client].clone(),
                    id: history.new_client(),
                    rng,
                    workload: self.clone(),
                    history: history.clone(),
                    shared: shared.clone(),
                    versions: BTreeMap::new(),
                    session: w as u32,
                };
                let stop = stop.clone();
                tokio::spawn(worker.run(stop))
            })
            .collect();
        Running {
            stop,
            shared,
            tasks,
        }
    }

    /// Reads every key linearizably through a patient client, retrying until `timeout`, and
    /// records the reads in `history`. Returns each key's final state.
    pub async fn final_reads(
        &self,
        endpoints: &[String],
        history: &History,
        timeout: Duration,
    ) -> Result<BTreeMap<String, Register>, String> {
        let client = Client::with_options(
            endpoints.to_vec(),
            ClientOptions {
                total_timeout: Duration::from_secs(10),
                ..ClientOptions::default()
            },
        )
        .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + timeout;
        let reader = u32::MAX - 1;
        let mut finals = BTreeMap::new();
        for key in self.all_keys() {
            loop {
                let pending = history.invoke(reader, &key, Call::Get);
                let read = client
                    .get(
                        &self.database,
                        &self.collection,
                        &key,
                        Consistency::Linearizable,
                    )
                    .await;
                let (outcome, error) = read_outcome(read);
                history.complete(pending, outcome, error.clone());
                if let Outcome::Read(state) = outcome {
                    finals.insert(key.clone(), state);
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "final read of {key}: {}",
                        error.unwrap_or_default()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(finals)
    }
}

struct Shared {
    acknowledged: AtomicU64,
    sessions: SessionLog,
}

/// Workers at work.
pub struct Running {
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// What the workers' sessions saw (see [`crate::sessions`]).
    pub fn sessions(&self) -> SessionLog {
        self.shared.sessions.clone()
    }

    /// Acknowledged writes so far (to wait for progress).
    pub fn acknowledged_writes(&self) -> u64 {
        self.shared.acknowledged.load(Ordering::Relaxed)
    }

    /// Waits until `more` writes beyond those acknowledged now are acknowledged, at most
    /// `timeout`; returns how long it took.
    pub async fn wait_for_writes(&self, more: u64, timeout: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        let target = self.acknowledged_writes() + more;
        while self.acknowledged_writes() < target {
            if start.elapsed() >= timeout {
                return Err(format!(
                    "only {} of {more} more writes acknowledged within {timeout:?}",
                    more + self.acknowledged_writes() - target
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(start.elapsed())
    }

    /// Stops the workers and waits for their last operations to end.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

struct Worker {
    client: Result<Client, ClientError>,
    id: u32,
    rng: StdRng,
    workload: Workload,
    history: History,
    shared: Arc<Shared>,
    /// The version this worker last saw of each key (for conditional puts).
    versions: BTreeMap<String, u64>,
    /// The worker's session, as the session log names it.
    session: u32,
}

impl Worker {
    async fn run(mut self, stop: Arc<AtomicBool>) {
        let client = match &self.client {
            Ok(c) => c.session(),
            Err(e) => {
                eprintln!("worker {}: no client: {e}", self.id);
                return;
            }
        };
        while !stop.load(Ordering::Relaxed) {
            let key = self
                .workload
                .key(self.rng.random_range(0..self.workload.keys));
            if self.rng.random_range(0..100) < self.workload.stale_reads {
                self.stale_read(&client, &key).await;
                tokio::time::sleep(self.workload.pace).await;
                continue;
            }
            let many = self.rng.random_range(0..100);
            if many < self.workload.batches {
                self.batch(&client).await;
                tokio::time::sleep(self.workload.pace).await;
                continue;
            }
            if many < self.workload.batches + self.workload.lists {
                self.listing(&client).await;
                tokio::time::sleep(self.workload.pace).await;
                continue;
            }
            let roll = self.rng.random_range(0..100);
            let seen = self.versions.get(&key).copied().unwrap_or(0);
            let conditional = self.workload.writes == Writes::Conditional;
            let call = match roll {
                // A conditional write needs a version seen first.
                _ if conditional && !self.versions.contains_key(&key) => Call::Get,
                0..45 => Call::Get,
                45..85 => Call::Put {
                    value: self.history.unique_value(),
                    if_version: conditional.then_some(seen),
                },
                85..93 => Call::Put {
                    value: self.history.unique_value(),
                    if_version: Some(seen),
                },
                _ => Call::Delete {
                    if_version: conditional.then_some(seen),
                },
            };
            self.one(&client, &key, call).await;
            tokio::time::sleep(self.workload.pace).await;
        }
    }

    /// A stale read through the session, recorded in the session log only.
    async fn stale_read(&mut self, session: &Session, key: &str) {
        let w = &self.workload;
        let floors = session.floors(&w.database);
        let read = session
            .get(&w.database, &w.collection, key, Consistency::Stale)
            .await;
        if let Ok(Some(doc)) = read {
            let seen = Seen::Read {
                revision: doc.revision,
                stale: true,
            };
            let sent = floors
                .iter()
                .find(|(s, _)| *s == doc.shard)
                .map(|(_, f)| *f);
            self.shared.sessions.record_with_floor(
                self.session,
                key,
                seen,
                Some(sent.unwrap_or(0)),
            );
        }
    }

    async fn one(&mut self, client: &Session, key: &str, call: Call) {
        let w = &self.workload;
        let (db, coll) = (w.database.as_str(), w.collection.as_str());
        let pending = self.history.invoke(self.id, key, call);
        let (outcome, error) = match call {
            Call::Get => {
                let read = client.get(db, coll, key, w.reads).await;
                if let Ok(Some(doc)) = &read {
                    let seen = Seen::Read {
                        revision: doc.revision,
                        stale: false,
                    };
                    self.shared.sessions.record(self.session, key, seen);
                }
                read_outcome(read)
            }
            Call::Put { value, if_version } => {
                let json = format!("{{\"w\":{value}}}");
                match client.put(db, coll, key, &json, if_version).await {
                    Ok(r) => {
                        let seen = Seen::Wrote {
                            revision: r.revision,
                        };
                        self.shared.sessions.record(self.session, key, seen);
                        (Outcome::Put { version: r.version }, None)
                    }
                    Err(e) => (write_failure(&e), Some(e.to_string())),
                }
            }
            Call::Delete { if_version } => match client.delete(db, coll, key, if_version).await {
                Ok(r) => {
                    let seen = Seen::Wrote {
                        revision: r.revision,
                    };
                    self.shared.sessions.record(self.session, key, seen);
                    (Outcome::Deleted { existed: r.deleted }, None)
                }
                Err(e) => (write_failure(&e), Some(e.to_string())),
            },
        };
        self.history.complete(pending, outcome, error);
        self.settle(key, outcome);
    }

    /// What the worker knows after an operation on `key` ended with `outcome`.
    fn settle(&mut self, key: &str, outcome: Outcome) {
        match outcome {
            Outcome::Put { version } => {
                self.versions.insert(key.to_string(), version);
                self.shared.acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Deleted { .. } => {
                self.versions.insert(key.to_string(), 0);
                self.shared.acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Read(state) => {
                self.versions
                    .insert(key.to_string(), state.map(|(_, v)| v).unwrap_or(0));
            }
            // The worker goes on as a new logical client, and reads before its next
            // conditional write.
            Outcome::Unknown => {
                self.id = self.history.new_client();
                self.versions.remove(key);
            }
            Outcome::Failed => {}
        }
    }
}

/// What a failed write did. Every write of the client carries a request id, so that a shard
/// answers a retry with the first outcome: a version mismatch is the write's one outcome (not
/// a retry's answer after the first attempt applied), and the client answers `Unavailable`
/// only when no attempt may have applied (it says `OutcomeUnknown` otherwise). Anything else
/// may or may not have applied.
fn write_failure(error: &ClientError) -> Outcome {
    match error {
        ClientError::VersionMismatch(_)
        | ClientError::Unavailable(_)
        | ClientError::StorageFull(_)
        | ClientError::TxnConflict(_) => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}

/// A read's outcome: the document's value and version, absent, or failed.
fn read_outcome(
    read: Result<Option<flotilla_client::Document>, ClientError>,
) -> (Outcome, Option<String>) {
    match read {
        Ok(None) => (Outcome::Read(None), None),
        Ok(Some(doc)) => match parse_value(&doc.json) {
            Some(value) => (Outcome::Read(Some((value, doc.version))), None),
            // A body no put wrote: recorded as a read of an impossible value.
            None => (
                Outcome::Read(Some((u64::MAX, doc.version))),
                Some(format!("unexpected body {:?}", doc.json)),
            ),
        },
        Err(e) => (Outcome::Failed, Some(e.to_string())),
    }
}

/// The `w` of a `{"w":N}` body.
pub(crate) fn parse_value(json: &str) -> Option<u64> {
    let inner = json.trim().strip_prefix('{')?.strip_suffix('}')?;
    let (name, value) = inner.split_once(':')?;
    (name.trim() == "\"w\"")
        .then(|| value.trim().parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_parsed_from_the_bodies_puts_write() {
        assert_eq!(parse_value("{\"w\":42}"), Some(42));
        assert_eq!(parse_value(" { \"w\" : 7 } "), Some(7));
        assert_eq!(parse_value("{\"x\":1}"), None);
        assert_eq!(parse_value("[]"), None);
    }
}
