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

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Op>> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The time since the history's start, on its clock.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Records the invocation of `call` on `key` by `client`, now.
    pub fn invoke(&self, client: u32, key: &str, call: Call) -> Pending {
        let mut ops = self.lock();
        // The time is taken under the lock so that the record's order is the time order.
        let invoked = self.start.elapsed();
        ops.push(Op {
            client,
            key: key.to_string(),
            call,
            invoked,
            completed: None,
            outcome: Outcome::Unknown,
            error: None,
        });
        Pending(ops.len() - 1)
    }

    /// Records the completion of `pending`, now. An [`Outcome::Unknown`] keeps no completion
    /// time: the operation may take effect at any later time.
    pub fn complete(&self, pending: Pending, outcome: Outcome, error: Option<String>) {
        let mut ops = self.lock();
        let completed = self.start.elapsed();
        if let Some(op) = ops.get_mut(pending.0) {
            op.completed = (outcome != Outcome::Unknown).then_some(completed);
            op.outcome = outcome;
            op.error = error;
        }
    }

    /// Every operation so far, in invocation order. Operations still in flight are unknown.
    pub fn ops(&self) -> Vec<Op> {
        self.lock().clone()
    }

    /// Counts of (acknowledged, failed, unknown) operations.
    pub fn counts(&self) -> (usize, usize, usize) {
        let ops = self.lock();
        let failed = ops.iter().filter(|o| o.outcome == Outcome::Failed).count();
        let unknown = ops.iter().filter(|o| o.outcome == Outcome::Unknown).count();
        (ops.len() - failed - unknown, failed, unknown)
    }
}
