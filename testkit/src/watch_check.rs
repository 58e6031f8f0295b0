//! Watch streams checked against a workload's history: a watcher follows every change of the
//! workload's collection while the faults run, resuming after each error where its stream
//! stopped (shard by shard), and at the end its record is checked ([`check`]):
//!
//! - every change is delivered once: a resumed stream repeats at most the revision it stopped
//!   in (a revision may hold several changes), and those repeats are dropped as a client does;
//! - in order: each shard's revisions never go back;
//! - with no gap: along each document, every put's version is the one before plus one (1 after
//!   a delete, or for its first write), so a change missing from the stream breaks the chain;
//! - as committed: a put's value is one some put of the history wrote (never one of a write
//!   that certainly failed), with the version its acknowledgement named; every acknowledged
//!   put is delivered; the last change of each document is its final state;
//! - atomically: the puts of one batch are delivered all or none, and those on one shard at
//!   one revision.
//!
//! A stream that ends with `REVISION_COMPACTED` (its changes are gone from the replica) is the
//! explicit error a watch may give instead: it is counted, the watcher starts over with new
//! changes only, and the chains and the completeness check (which need the whole stream) are
//! not asserted for that run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_client::{ChangeKind, Client, ClientOptions, Error as ClientError};
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::history::{Call, Op, Outcome, Via};
use crate::linearizability::Register;
use crate::workload::{Workload, parse_value};

/// One change as the watch delivered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A put of `value` (`u64::MAX`: a body no put of the workload writes) at `version`.
    Put {
        value: u64,
        version: u64,
    },
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub shard: u32,
    pub revision: u64,
    pub key: String,
    pub change: Change,
}

/// What a watcher saw.
#[derive(Debug, Clone, Default)]
pub struct WatchLog {
    /// Every change, repeats after a resume dropped.
    pub events: Vec<Seen>,
    /// Streams that ended with an error and were resumed.
    pub resumed: usize,
    /// Repeats dropped after resumes.
    pub repeats: usize,
    /// Streams that ended with `REVISION_COMPACTED`, with the error.
    pub compacted: Vec<String>,
    /// Where in `events` the watcher last started over with new changes only (after
    /// `REVISION_COMPACTED`).
    pub started_over_at: Option<usize>,
    /// Changes delivered twice within one stream, or a revision going back in one shard's
    /// stream (violations the watcher saw as they came).
    pub violations: Vec<String>,
}

impl WatchLog {
    /// The state each document's last change left, for the documents changed since the
    /// watcher last started over (every document when it never did).
    pub fn last_states(&self) -> BTreeMap<String, Register> {
        let mut out = BTreeMap::new();
        for e in &self.events[self.started_over_at.unwrap_or(0)..] {
            let state = match e.change {
                Change::Put { value, version } => Some((value, version)),
                Change::Delete => None,
            };
            out.insert(e.key.clone(), state);
        }
        out
    }

    /// Whether the last change of every document known since the last start over is its
    /// state in `finals` (and, when the watcher never started over, every document's).
    pub fn settled(&self, finals: &BTreeMap<String, Register>) -> bool {
        self.final_mismatches(finals).is_empty()
    }

    fn final_mismatches(&self, finals: &BTreeMap<String, Register>) -> Vec<String> {
        let states = self.last_states();
        finals
            .iter()
            .filter(|(key, _)| self.started_over_at.is_none() || states.contains_key(*key))
            .filter_map(|(key, state)| {
                let seen = states.get(key).copied().flatten();
                (seen != *state).then(|| {
                    format!(
                        "{key}: the last change delivered leaves {seen:?}, the final read is \
                         {state:?}"
                    )
                })
            })
            .collect()
    }
}

/// Per shard: the last revision delivered, and the changes of it delivered so far. One
/// revision may change a document more than once: a shard leader applies the independent
/// writes of one Multi request in one log entry, at one revision, in order.
#[derive(Default)]
struct Cursor {
    revision: u64,
    at_revision: Vec<(String, Change)>,
}

struct State {
    log: WatchLog,
    cursors: BTreeMap<u32, Cursor>,
}

impl State {
    /// Records one delivered change; `resumed_shards` are the shards whose stream resumed in
    /// the revision it stopped in and has not gone past it yet (a repeat there is expected).
    fn record(&mut self, seen: Seen, resumed_shards: &mut BTreeSet<u32>) {
        let cursor = self.cursors.entry(seen.shard).or_default();
        let repeat_allowed = resumed_shards.contains(&seen.shard);
        if seen.revision < cursor.revision {
            self.log.violations.push(format!(
                "shard {}: revision {} delivered after {}",
                seen.shard, seen.revision, cursor.revision
            ));
            return;
        }
        let change = (seen.key.clone(), seen.change);
        if seen.revision == cursor.revision && cursor.at_revision.contains(&change) {
            if repeat_allowed {
                self.log.repeats += 1;
            } else {
                self.log.violations.push(format!(
                    "shard {}: the change of {} at revision {} delivered twice",
                    seen.shard, seen.key, seen.revision
                ));
            }
            return;
        }
        if seen.revision > cursor.revision {
            cursor.revision = seen.revision;
            cursor.at_revision.clear();
            resumed_shards.remove(&seen.shard);
        }
        cursor.at_revision.push(change);
        self.log.events.push(seen);
    }

    /// Where a resumed stream starts: after the revision before each shard's last one (the
    /// last one may not have been delivered whole).
    fn resume_after(&self) -> Vec<(u32, u64)> {
        self.cursors
            .iter()
            .map(|(shard, c)| (*shard, c.revision.saturating_sub(1)))
            .collect()
    }
}

/// A watcher at work.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Watcher {
    /// Follows every change of `workload`'s collection from the first revision of each of
    /// the database's `shards`, through `endpoints`.
    pub fn start(endpoints: &[String], workload: &Workload, shards: u32) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let cursors = (0..shards).map(|s| (s, Cursor::default())).collect();
        let state = Arc::new(Mutex::new(State {
            log: WatchLog::default(),
            cursors,
        }));
        let task = tokio::spawn(watch(
            endpoints.to_vec(),
            workload.clone(),
            stop.clone(),
            state.clone(),
        ));
        Watcher { stop, state, task }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits (at most `timeout`) until the last change seen of every document is its final
    /// state (`finals`, read once the workload stopped), then stops and returns the log.
    pub async fn finish(self, finals: &BTreeMap<String, Register>, timeout: Duration) -> WatchLog {
        let deadline = Instant::now() + timeout;
        loop {
            let caught_up = self.lock().log.settled(finals);
            if caught_up || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.stop.store(true, Ordering::SeqCst);
        let log = self.lock().log.clone();
        let _ = self.task.await;
        log
    }
}

async fn watch(
    endpoints: Vec<String>,
    workload: Workload,
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<State>>,
) {
    let options = ClientOptions {
        total_timeout: Duration::from_secs(5),
        ..workload.client_options.clone()
    };
    let Ok(client) = Client::with_options(endpoints, options) else {
        return;
    };
    let lock = || state.lock().unwrap_or_else(|p| p.into_inner());
    let mut first = true;
    while !stop.load(Ordering::SeqCst) {
        let after = lock().resume_after();
        let opened = client
            .watch_after(&workload.database, Some(&workload.collection), &after)
            .await;
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut resumed_shards: BTreeSet<u32> = if first {
            BTreeSet::new()
        } else {
            after.iter().map(|(s, _)| *s).collect()
        };
        first = false;
        loop {
            let next = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
            if stop.load(Ordering::SeqCst) {
                return;
            }
            match next {
                Err(_) => continue,
                Ok(None) => break,
                Ok(Some(Ok(event))) => {
                    let change = match event.kind {
                        ChangeKind::Put => Change::Put {
                            value: parse_value(&event.document.json).unwrap_or(u64::MAX),
                            version: event.document.version,
                        },
                        ChangeKind::Delete => Change::Delete,
                    };
                    let seen = Seen {
                        shard: event.document.shard,
                        revision: event.document.revision,
                        key: event.document.id.clone(),
                        change,
                    };
                    lock().record(seen, &mut resumed_shards);
                }
                Ok(Some(Err(ClientError::RevisionCompacted { message, .. }))) => {
                    let mut s = lock();
                    s.log.compacted.push(message);
                    // Start over with new changes only.
                    s.cursors.clear();
                    s.log.started_over_at = Some(s.log.events.len());
                    break;
                }
                Ok(Some(Err(_))) => {
                    lock().log.resumed += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    break;
                }
            }
        }
    }
}

/// Checks `log` against the history's operations and each document's final state (see the
/// module notes). Returns a one-line summary, or every violation found.
pub fn check(
    log: &WatchLog,
    ops: &[Op],
    finals: &BTreeMap<String, Register>,
) -> Result<String, Vec<String>> {
    let mut violations = log.violations.clone();
    let whole = log.compacted.is_empty();
    // What each put of the history wrote, and what its acknowledgement said.
    let mut written: HashMap<u64, (&str, &Outcome)> = HashMap::new();
    for op in ops {
        if let Call::Put { value, .. } = op.call {
            written.insert(value, (op.key.as_str(), &op.outcome));
        }
    }
    let mut delivered: HashMap<u64, u64> = HashMap::new();
    let mut last: HashMap<&str, Option<u64>> = HashMap::new();
    for e in &log.events {
        let Change::Put { value, version } = e.change else {
            last.insert(&e.key, None);
            continue;
        };
        match written.get(&value) {
            None => violations.push(format!(
                "{} version {version} at revision {}: value {value} was never written",
                e.key, e.revision
            )),
            Some((key, _)) if *key != e.key => {
                violations.push(format!("{}: value {value} was written to {key}", e.key))
            }
            Some((_, Outcome::Failed)) => violations.push(format!(
                "{}: value {value} of a write that failed was delivered",
                e.key
            )),
            Some((_, Outcome::Put { version: acked })) if *acked != version => {
                violations.push(format!(
                    "{}: value {value} delivered at version {version}, acknowledged at {acked}",
                    e.key
                ))
            }
            Some(_) => {}
        }
        if delivered.insert(value, version).is_some() {
            violations.push(format!("{}: value {value} delivered twice", e.key));
        }
        if whole {
            let expected = match last.get(e.key.as_str()) {
                Some(Some(previous)) => previous + 1,
                Some(None) | None => 1,
            };
            if version != expected {
                violations.push(format!(
                    "{}: version {version} at revision {} follows {:?}: a change is missing",
                    e.key,
                    e.revision,
                    last.get(e.key.as_str()).copied().flatten()
                ));
            }
        }
        last.insert(&e.key, Some(version));
    }
    let mut missing = 0;
    if whole {
        for op in ops {
            if let (Call::Put { value, .. }, Outcome::Put { .. }) = (op.call, op.outcome)
                && !delivered.contains_key(&value)
            {
                missing += 1;
                if missing <= 10 {
                    violations.push(format!(
                        "{}: acknowledged put of {value} never delivered",
                        op.key
                    ));
                }
            }
        }
    }
    if whole {
        violations.extend(batch_violations(log, ops));
    }
    violations.extend(log.final_mismatches(finals));
    if violations.is_empty() {
        Ok(format!(
            "watch: {} changes delivered in order, each once, none missing ({} streams resumed, \
             {} repeats dropped, {} ended with REVISION_COMPACTED)",
            log.events.len(),
            log.resumed,
            log.repeats,
            log.compacted.len()
        ))
    } else {
        Err(violations)
    }
}

/// Batches whose puts were delivered in part, or on one shard at several revisions.
fn batch_violations(log: &WatchLog, ops: &[Op]) -> Vec<String> {
    // Each batch's put values, and where each value was delivered.
    let mut batches: BTreeMap<u32, Vec<(&str, u64)>> = BTreeMap::new();
    for op in ops {
        if let (Via::Batch(n), Call::Put { value, .. }) = (op.via, op.call) {
            batches.entry(n).or_default().push((&op.key, value));
        }
    }
    let at: HashMap<u64, (u32, u64)> = log
        .events
        .iter()
        .filter_map(|e| match e.change {
            Change::Put { value, .. } => Some((value, (e.shard, e.revision))),
            Change::Delete => None,
        })
        .collect();
    let mut violations = Vec::new();
    for (n, puts) in batches {
        let delivered: Vec<_> = puts.iter().filter(|(_, v)| at.contains_key(v)).collect();
        if !delivered.is_empty() && delivered.len() < puts.len() {
            violations.push(format!(
                "batch {n} applied in part: of its puts {puts:?}, only {delivered:?} delivered"
            ));
        }
        let mut revisions: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
        for (_, value) in &delivered {
            if let Some((shard, revision)) = at.get(value) {
                revisions.entry(*shard).or_default().insert(*revision);
            }
        }
        for (shard, revisions) in revisions {
            if revisions.len() > 1 {
                violations.push(format!(
                    "batch {n}: its puts on shard {shard} delivered at revisions {revisions:?}"
                ));
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests;
