//! Recording what clients did: every operation on a document as an invocation and a completion
//! (ok, failed, or unknown), with monotonic times, so that the history can be checked for
//! linearizability afterwards ([`crate::linearizability`]).
//!
//! A write whose outcome the client cannot know (it timed out, lost its connection, or the
//! cluster answered "unavailable" after the request may have been forwarded) is recorded as
//! [`Outcome::Unknown`]: it may or may not have taken effect, at any time after its invocation.
//! A read that failed is recorded as [`Outcome::Failed`] and has no effect.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What one operation asked for. Values are unique per history (each put writes a value no
/// other put writes), so a read names exactly the write it observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    /// Put `value`; with `if_version`, only if the document's version is that (0: absent).
    Put { value: u64, if_version: Option<u64> },
    /// Delete the document; with `if_version`, only if its version is that.
    Delete { if_version: Option<u64> },
    /// Linearizable read.
    Get,
}

/// What an operation returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A put that was acknowledged with the document's new version.
    Put { version: u64 },
    /// An acknowledged delete; `existed` says whether there was a document.
    Deleted { existed: bool },
    /// A read: `None` when the document did not exist, else its value and version.
    Read(Option<(u64, u64)>),
    /// The operation certainly had no effect (a read that failed, a write refused before it
    /// could apply).
    Failed,
    /// A write that may or may not have taken effect.
    Unknown,
}

/// The request an operation was part of: one of its own, or one that touched several keys,
/// recorded as one operation per key with the request's invocation and completion times (each
/// key's part took effect, or was read, at one moment within them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Via {
    #[default]
    Single,
    /// An atomic batch of writes (all or none); the number tells batches apart.
    Batch(u32),
    /// A listing of the collection: a read of every document listed, and of the absence of
    /// every workload key not listed.
    List,
    /// A query matching every document the workload writes: read like a listing.
    Query,
}

/// One operation of one client on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// The logical client (a worker that saw an unknown outcome continues as a new client,
    /// since its earlier write may still be in flight).
    pub client: u32,
    pub key: String,
    pub call: Call,
    /// Time of the invocation since the history's start.
    pub invoked: Duration,
    /// Time of the completion, `None` while in flight or when the outcome is unknown.
    pub completed: Option<Duration>,
    pub outcome: Outcome,
    /// The error text of a failed or unknown operation, for reports.
    pub error: Option<String>,
    /// The request it was part of.
    pub via: Via,
}

impl Op {
    /// True for an acknowledged put or delete.
    pub fn is_acknowledged_write(&self) -> bool {
        matches!(self.outcome, Outcome::Put { .. } | Outcome::Deleted { .. })
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
        let end = self.completed.map(ms).unwrap_or_else(|| "?".into());
        let call = match self.call {
            Call::Put {
                value,
                if_version: None,
            } => format!("put({value})"),
            Call::Put {
                value,
                if_version: Some(v),
            } => format!("put({value}, if_version={v})"),
            Call::Delete { if_version: None } => "delete".into(),
            Call::Delete {
                if_version: Some(v),
            } => format!("delete(if_version={v})"),
            Call::Get => "get".into(),
        };
        let outcome = match self.outcome {
            Outcome::Put { version } => format!("ok version={version}"),
            Outcome::Deleted { existed } => format!("ok existed={existed}"),
            Outcome::Read(None) => "ok absent".into(),
            Outcome::Read(Some((value, version))) => format!("ok {value} version={version}"),
            Outcome::Failed => "failed".into(),
            Outcome::Unknown => "unknown".into(),
        };
        write!(
            f,
            "client {:>3} [{:>9} ms .. {:>9} ms] {:<28} -> {outcome}",
            self.client,
            ms(self.invoked),
            end,
            call
        )?;
        if let Some(error) = &self.error {
            write!(f, " ({error})")?;
        }
        match self.via {
            Via::Single => {}
            Via::Batch(n) => write!(f, " [batch {n}]")?,
            Via::List => write!(f, " [list]")?,
            Via::Query => write!(f, " [query]")?,
        }
        Ok(())
    }
}

/// Handle of an invoked operation, to complete it with [`History::complete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending(usize);

/// A shared, append-only record of operations. Cheap to clone; clones share the record.
#[derive(Debug, Clone)]
pub struct History {
    start: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
    values: Arc<AtomicU64>,
    clients: Arc<AtomicU32>,
    batches: Arc<AtomicU32>,
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

impl History {
    /// An empty history whose clock starts now.
    pub fn new() -> History {
        History {
            start: Instant::now(),
            ops: Arc::new(Mutex::new(Vec::new())),
            values: Arc::new(AtomicU64::new(1)),
            clients: Arc::new(AtomicU32::new(0)),
            batches: Arc::new(AtomicU32::new(0)),
        }
    }

    /// A value no put of this history has written yet.
    pub fn unique_value(&self) -> u64 {
        self.values.fetch_add(1, Ordering::Relaxed)
    }

    /// A logical client id not used yet in this history.
    pub fn new_client(&self) -> u32 {
        self.clients.fetch_add(1, Ordering::Relaxed)
    }

    /// A batch number not used yet in this history.
    pub fn new_batch(&self) -> u32 {
        self.batches.fetch_add(1, Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Op>> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The time since the history's start, on its clock.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Records the invocation of `call` on `key` by `client`, now.
    pub fn invoke(&self, client: u32, key: &str, call: Call) -> Pending {
        let pending = self.invoke_all(client, &[(key.to_string(), call)], Via::Single);
        pending[0]
    }

    /// Records the invocation of one request on several keys (`calls`, one per key) by
    /// `client`, now: one operation per key, all at the same time.
    pub fn invoke_all(&self, client: u32, calls: &[(String, Call)], via: Via) -> Vec<Pending> {
        let mut ops = self.lock();
        // The time is taken under the lock so that the record's order is the time order.
        let invoked = self.start.elapsed();
        calls
            .iter()
            .map(|(key, call)| {
                ops.push(Op {
                    client,
                    key: key.clone(),
                    call: *call,
                    invoked,
                    completed: None,
                    outcome: Outcome::Unknown,
                    error: None,
                    via,
                });
                Pending(ops.len() - 1)
            })
            .collect()
    }

    /// Records the completion of `pending`, now. An [`Outcome::Unknown`] keeps no completion
    /// time: the operation may take effect at any later time.
    pub fn complete(&self, pending: Pending, outcome: Outcome, error: Option<String>) {
        self.complete_all(&[(pending, outcome)], error);
    }

    /// Records the completion of one request's operations (see [`History::invoke_all`]), each
    /// with its outcome, now.
    pub fn complete_all(&self, outcomes: &[(Pending, Outcome)], error: Option<String>) {
        let mut ops = self.lock();
        let completed = self.start.elapsed();
        for (pending, outcome) in outcomes {
            if let Some(op) = ops.get_mut(pending.0) {
                op.completed = (*outcome != Outcome::Unknown).then_some(completed);
                op.outcome = *outcome;
                op.error = error.clone();
            }
        }
    }

    /// Every operation so far, in invocation order. Operations still in flight are unknown.
    pub fn ops(&self) -> Vec<Op> {
        self.lock().clone()
    }

    /// What the requests on several keys did: batches (acknowledged of all), and listings
    /// and queries (answered of all), as one line.
    pub fn many_keys_summary(&self) -> String {
        use std::collections::BTreeMap;
        let ops = self.lock();
        // Per request: whether it was answered. A request's operations share their
        // invocation time and client.
        let mut requests: BTreeMap<(&'static str, u32, Duration, u32), bool> = BTreeMap::new();
        for op in ops.iter() {
            let (kind, n) = match op.via {
                Via::Single => continue,
                Via::Batch(n) => ("batch", n),
                Via::List => ("list", 0),
                Via::Query => ("query", 0),
            };
            let answered = !matches!(op.outcome, Outcome::Failed | Outcome::Unknown);
            let entry = requests
                .entry((kind, n, op.invoked, op.client))
                .or_default();
            *entry |= answered;
        }
        let count = |kind: &str| {
            let of = requests.keys().filter(|k| k.0 == kind).count();
            let ok = requests
                .iter()
                .filter(|(k, ok)| k.0 == kind && **ok)
                .count();
            format!("{ok} of {of}")
        };
        format!(
            "requests on several keys: {} batches acknowledged, {} listings and {} queries \
             answered",
            count("batch"),
            count("list"),
            count("query")
        )
    }

    /// The most frequent reasons of unknown outcomes (digits masked so that addresses and
    /// ids group), with their counts, as one line per reason.
    pub fn unknown_causes(&self, most: usize) -> Vec<String> {
        let ops = self.lock();
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for op in ops.iter().filter(|o| o.outcome == Outcome::Unknown) {
            let text: String = op
                .error
                .as_deref()
                .unwrap_or("in flight at the end")
                .chars()
                .map(|c| if c.is_ascii_digit() { '#' } else { c })
                .take(140)
                .collect();
            *counts.entry(text).or_default() += 1;
        }
        let mut sorted: Vec<(String, usize)> = counts.into_iter().collect();
        sorted.sort_by_key(|s| std::cmp::Reverse(s.1));
        sorted
            .into_iter()
            .take(most)
            .map(|(text, n)| format!("{n:>5} unknown: {text}"))
            .collect()
    }

    /// Counts of (acknowledged, failed, unknown) operations.
    pub fn counts(&self) -> (usize, usize, usize) {
        let ops = self.lock();
        let failed = ops.iter().filter(|o| o.outcome == Outcome::Failed).count();
        let unknown = ops.iter().filter(|o| o.outcome == Outcome::Unknown).count();
        (ops.len() - failed - unknown, failed, unknown)
    }
}
