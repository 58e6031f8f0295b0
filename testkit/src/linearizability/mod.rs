//! Checking a recorded [`History`](crate::history::History): linearizability per key against a
//! versioned register (put / delete / get, with the document version every answer carries),
//! using porcupine's search (the WGL algorithm with a state cache, as etcd's robustness tests
//! use it), and a separate check that no acknowledged write is missing from the final state.
//!
//! Documents are independent, so each key's operations are checked on their own. When a key's
//! history is not linearizable the report gives the key and a minimal offending sub-history:
//! the shortest prefix of the key's history (by time) that is already not linearizable, with
//! the reads that are not needed for the violation removed.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use porcupine_rs::{CheckResult, Model, Operation};

use crate::history::{Call, Op, Outcome};

/// The state of one document: its value and version, or absent.
pub type Register = Option<(u64, u64)>;

/// How strictly versions are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Versions {
    /// Every applied write raises the version by exactly one and a delete says truly whether
    /// the document existed: a write applied twice is a violation.
    #[default]
    Exact,
    /// Values must be linearizable and versions only increase: tolerates a write applied more
    /// than once within its own interval (at-least-once delivery of retried writes).
    Monotonic,
}

/// The sequential specification of one document, for porcupine, with exact versions.
#[derive(Debug, Clone, Copy)]
pub struct DocumentModel;

/// The same document with [`Versions::Monotonic`].
#[derive(Debug, Clone, Copy)]
pub struct MonotonicDocumentModel;

/// What the model steps over: a call and what it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub call: Call,
    pub outcome: Outcome,
}

fn version(state: &Register) -> u64 {
    state.map(|(_, v)| v).unwrap_or(0)
}

/// One step of the register: whether `op` can happen in `state`, and the state after it.
pub fn step(state: &Register, op: &Step, versions: Versions) -> (bool, Register) {
    let current = version(state);
    let exact = versions == Versions::Exact;
    match (op.call, op.outcome) {
        (Call::Get, Outcome::Read(None)) => (state.is_none(), None),
        (Call::Get, Outcome::Read(Some((value, seen)))) if !exact => (
            matches!(state, Some((v, _)) if *v == value) && seen >= current,
            Some((value, seen)),
        ),
        (Call::Get, Outcome::Read(seen)) => (seen == *state, *state),
        (Call::Get, _) => (true, *state),
        (Call::Put { value, if_version }, Outcome::Put { version: new }) => {
            let ok = match if_version {
                Some(expected) => expected == current && new == current + 1,
                None if exact => new == current + 1,
                None => new > current,
            };
            (ok, Some((value, new)))
        }
        (Call::Put { value, if_version }, _) => {
            // Unknown: when it takes effect, it applies if its condition holds there.
            if if_version.is_none_or(|expected| expected == current) {
                (true, Some((value, current + 1)))
            } else {
                (true, *state)
            }
        }
        (Call::Delete { if_version }, Outcome::Deleted { existed }) => {
            let condition = if_version.is_none_or(|expected| expected == current);
            // A delete applied a second time finds nothing.
            let ok = existed == state.is_some() || (!exact && !existed);
            (condition && ok, None)
        }
        (Call::Delete { if_version }, _) => {
            if if_version.is_none_or(|expected| expected == current) {
                (true, None)
            } else {
                (true, *state)
            }
        }
    }
}

impl Model for DocumentModel {
    type State = Register;
    type Op = Step;
    type Metadata = ();

    fn init() -> Register {
        None
    }

    fn step(state: &Register, op: &Step) -> (bool, Register) {
        step(state, op, Versions::Exact)
    }
}

impl Model for MonotonicDocumentModel {
    type State = Register;
    type Op = Step;
    type Metadata = ();

    fn init() -> Register {
        None
    }

    fn step(state: &Register, op: &Step) -> (bool, Register) {
        step(state, op, Versions::Monotonic)
    }
}

/// The verdict on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// Not linearizable: the minimal offending sub-history.
    Violation(Vec<Op>),
    /// The search did not finish within its time budget.
    Undecided,
}

/// An acknowledged write that the final state does not reflect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostWrite {
    pub key: String,
    /// The acknowledged write that is missing.
    pub write: Op,
    /// What the final read returned.
    pub final_state: Register,
}

/// The result of checking a history.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Seed of the run, printed with every failure.
    pub seed: u64,
    pub keys: usize,
    pub operations: usize,
    pub violations: BTreeMap<String, Vec<Op>>,
    pub undecided: Vec<String>,
    pub lost: Vec<LostWrite>,
    pub elapsed: Duration,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty() && self.undecided.is_empty() && self.lost.is_empty()
    }

    /// Panics with the whole report unless the history passed every check.
    pub fn assert_ok(&self) {
        assert!(self.is_ok(), "{self}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_ok() {
            return write!(
                f,
                "history of seed {} is linearizable: {} operations on {} keys, checked in {:.2}s",
                self.seed,
                self.operations,
                self.keys,
                self.elapsed.as_secs_f64()
            );
        }
        writeln!(
            f,
            "history check FAILED (seed {}; replay with FLOTILLA_SEED={}): {} operations on {} keys",
            self.seed, self.seed, self.operations, self.keys
        )?;
        for (key, ops) in &self.violations {
            writeln!(
                f,
                "key {key:?} is not linearizable; minimal offending sub-history ({} operations):",
                ops.len()
            )?;
            for op in ops {
                writeln!(f, "  {op}")?;
            }
        }
        for key in &self.undecided {
            writeln!(f, "key {key:?}: the checker did not decide in time")?;
        }
        for lost in &self.lost {
            writeln!(
                f,
                "key {:?}: acknowledged write lost: {} (final state {:?})",
                lost.key, lost.write, lost.final_state
            )?;
        }
        Ok(())
    }
}

/// Time budget of the search on one key.
const KEY_TIMEOUT: Duration = Duration::from_secs(30);

/// Time budget of shrinking one violation.
const SHRINK_BUDGET: Duration = Duration::from_secs(20);

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX - 1)
}

/// The operations porcupine sees: failed ones left out (they had no effect), unknown ones
/// open until the end of time.
fn operations<M: Model<Op = Step>>(ops: &[Op]) -> Vec<Operation<M>> {
    ops.iter()
        .filter(|op| op.outcome != Outcome::Failed)
        .map(|op| Operation {
            client_id: Some(op.client),
            call_time: nanos(op.invoked),
            return_time: match (op.outcome, op.completed) {
                (Outcome::Unknown, _) | (_, None) => i64::MAX,
                (_, Some(t)) => nanos(t),
            },
            op: Step {
                call: op.call,
                outcome: op.outcome,
            },
            metadata: None,
        })
        .collect()
}

/// Checks one key's operations.
pub fn check_key(ops: &[Op], versions: Versions, timeout: Duration) -> CheckResult {
    match versions {
        Versions::Exact => porcupine_rs::check_operations_timeout::<DocumentModel>(
            &operations::<DocumentModel>(ops),
            timeout,
        ),
        Versions::Monotonic => porcupine_rs::check_operations_timeout::<MonotonicDocumentModel>(
            &operations::<MonotonicDocumentModel>(ops),
            timeout,
        ),
    }
}

/// The history as it stood at time `cut`: operations invoked by then, those not completed by
/// then still in flight (a write's effect unknown, a read dropped).
fn prefix(ops: &[Op], cut: Duration) -> Vec<Op> {
    ops.iter()
        .filter(|op| op.invoked <= cut)
        .filter_map(|op| match op.completed {
            Some(done) if done <= cut => Some(op.clone()),
            _ if op.call == Call::Get => None,
            _ => Some(Op {
                completed: None,
                outcome: if op.outcome == Outcome::Failed {
                    Outcome::Failed
                } else {
                    Outcome::Unknown
                },
                ..op.clone()
            }),
        })
        .collect()
}

/// A minimal offending sub-history of a key whose history is not linearizable: the shortest
/// time prefix that is not linearizable (linearizability is closed under prefixes, so a binary
/// search finds it), then without each read whose removal keeps it so. Writes are kept: taking
/// one away could make a read impossible and so invent a violation.
pub fn shrink(ops: &[Op], versions: Versions) -> Vec<Op> {
    let started = Instant::now();
    let illegal = |ops: &[Op]| check_key(ops, versions, KEY_TIMEOUT) == CheckResult::Illegal;
    let mut times: Vec<Duration> = ops
        .iter()
        .flat_map(|op| [Some(op.invoked), op.completed])
        .flatten()
        .collect();
    times.sort();
    times.dedup();
    let mut smallest = ops.to_vec();
    let (mut lo, mut hi) = (0usize, times.len());
    while lo < hi && started.elapsed() < SHRINK_BUDGET {
        let mid = (lo + hi) / 2;
        let candidate = prefix(ops, times[mid]);
        if illegal(&candidate) {
            smallest = candidate;
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let mut i = smallest.len();
    while i > 0 && started.elapsed() < SHRINK_BUDGET {
        i -= 1;
        if smallest[i].call != Call::Get {
            continue;
        }
        let mut without = smallest.clone();
        without.remove(i);
        if illegal(&without) {
            smallest = without;
        }
    }
    smallest.retain(|op| op.outcome != Outcome::Failed);
    smallest
}

/// The operations of each key, in invocation order.
pub fn by_key(ops: &[Op]) -> BTreeMap<String, Vec<Op>> {
    let mut keys: BTreeMap<String, Vec<Op>> = BTreeMap::new();
    for op in ops {
        keys.entry(op.key.clone()).or_default().push(op.clone());
    }
    for ops in keys.values_mut() {
        ops.sort_by_key(|op| op.invoked);
    }
    keys
}

/// Checks every key's history for linearizability with `versions`.
pub fn check_linearizable(ops: &[Op], versions: Versions) -> BTreeMap<String, Verdict> {
    by_key(ops)
        .into_iter()
        .map(|(key, ops)| {
            let verdict = match check_key(&ops, versions, KEY_TIMEOUT) {
                CheckResult::Ok => Verdict::Linearizable,
                CheckResult::Illegal => Verdict::Violation(shrink(&ops, versions)),
                CheckResult::Unknown => Verdict::Undecided,
            };
            (key, verdict)
        })
        .collect()
}

/// The acknowledged writes of `ops` (one key) that `final_state`, read after every operation
/// completed, does not reflect. The final state was written by some write X (or is the initial
/// absence); an acknowledged write W is lost when X certainly happened before W (X completed
/// before W was invoked), so that W should have replaced it.
pub fn lost_writes(key: &str, ops: &[Op], final_state: Register) -> Vec<LostWrite> {
    let writes: Vec<&Op> = ops
        .iter()
        .filter(|op| op.call != Call::Get && op.outcome != Outcome::Failed)
        .collect();
    // When each write that could have produced the final state completed (None: unknown, so
    // it may have been last); the initial absence "completed" at time zero.
    let producers: Vec<Option<Duration>> = match final_state {
        Some((value, _)) => writes
            .iter()
            .filter(|op| matches!(op.call, Call::Put { value: v, .. } if v == value))
            .map(|op| op.completed)
            .collect(),
        None => writes
            .iter()
            .filter(|op| matches!(op.call, Call::Delete { .. }))
            .map(|op| op.completed)
            .chain(std::iter::once(Some(Duration::ZERO)))
            .collect(),
    };
    // The latest a producer can be.
    let latest = producers
        .iter()
        .map(|c| c.unwrap_or(Duration::MAX))
        .max()
        .unwrap_or(Duration::ZERO);
    writes
        .into_iter()
        .filter(|w| w.is_acknowledged_write() && w.invoked > latest)
        .map(|w| LostWrite {
            key: key.to_string(),
            write: w.clone(),
            final_state,
        })
        .collect()
}

/// Checks a whole run: linearizability of every key and, when the final state of keys is
/// given (read after the faults healed), that no acknowledged write is missing from it.
pub fn check(
    seed: u64,
    versions: Versions,
    ops: &[Op],
    final_states: &BTreeMap<String, Register>,
) -> Report {
    let started = Instant::now();
    let keys = by_key(ops);
    let mut report = Report {
        seed,
        keys: keys.len(),
        operations: ops.len(),
        ..Report::default()
    };
    for (key, verdict) in check_linearizable(ops, versions) {
        match verdict {
            Verdict::Linearizable => {}
            Verdict::Violation(sub) => {
                report.violations.insert(key, sub);
            }
            Verdict::Undecided => report.undecided.push(key),
        }
    }
    for (key, state) in final_states {
        let ops = keys.get(key).map(Vec::as_slice).unwrap_or_default();
        report.lost.extend(lost_writes(key, ops, *state));
    }
    report.elapsed = started.elapsed();
    report
}

#[cfg(test)]
mod tests;
