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
mod tests {
    use super::*;

    /// A history written as lines `client start end call outcome`, times in milliseconds,
    /// `end` `-` for unknown: `1 0 10 put:5 v1`, `2 3 4 get 5@1`, `2 5 6 get none`,
    /// `3 0 - put:7 ?`, `1 0 2 del existed`, `1 0 2 put:5@0 v1` (conditional).
    fn history(text: &str) -> Vec<Op> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|line| {
                let w: Vec<&str> = line.split_whitespace().collect();
                let ms = |s: &str| Duration::from_millis(s.parse().expect("time"));
                let call = match w[3] {
                    "get" => Call::Get,
                    "del" => Call::Delete { if_version: None },
                    del if del.starts_with("del@") => Call::Delete {
                        if_version: Some(del[4..].parse().expect("version")),
                    },
                    put => {
                        let arg = put.strip_prefix("put:").expect("put:VALUE");
                        let (value, cond) = match arg.split_once('@') {
                            Some((v, c)) => (v, Some(c.parse().expect("version"))),
                            None => (arg, None),
                        };
                        Call::Put {
                            value: value.parse().expect("value"),
                            if_version: cond,
                        }
                    }
                };
                let outcome = match w[4] {
                    "?" => Outcome::Unknown,
                    "fail" => Outcome::Failed,
                    "none" => Outcome::Read(None),
                    "existed" => Outcome::Deleted { existed: true },
                    "absent" => Outcome::Deleted { existed: false },
                    v if v.starts_with('v') => Outcome::Put {
                        version: v[1..].parse().expect("version"),
                    },
                    read => {
                        let (value, version) = read.split_once('@').expect("VALUE@VERSION");
                        Outcome::Read(Some((
                            value.parse().expect("value"),
                            version.parse().expect("version"),
                        )))
                    }
                };
                Op {
                    client: w[0].parse().expect("client"),
                    key: "k".into(),
                    call,
                    invoked: ms(w[1]),
                    completed: (w[2] != "-").then(|| ms(w[2])),
                    outcome,
                    error: None,
                }
            })
            .collect()
    }

    fn verdict_with(text: &str, versions: Versions) -> Verdict {
        check_linearizable(&history(text), versions)
            .remove("k")
            .unwrap_or(Verdict::Linearizable)
    }

    fn verdict(text: &str) -> Verdict {
        verdict_with(text, Versions::Exact)
    }

    #[test]
    fn sequential_puts_reads_and_deletes_are_linearizable() {
        let v = verdict(
            "1 0 1 put:1 v1
             1 2 3 get 1@1
             1 4 5 put:2 v2
             2 6 7 get 2@2
             2 8 9 del existed
             1 10 11 get none
             1 12 13 del absent
             2 14 15 put:3 v1",
        );
        assert_eq!(v, Verdict::Linearizable);
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // The read overlaps both puts: it may see either; the later read sees the winner.
        let v = verdict(
            "1 0 10 put:1 v2
             2 0 10 put:2 v1
             3 5 6 get 2@1
             3 11 12 get 1@2",
        );
        assert_eq!(v, Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_is_a_violation() {
        let Verdict::Violation(sub) = verdict(
            "1 0 1 put:1 v1
             1 2 3 put:2 v2
             2 4 5 get 1@1
             2 6 7 get 2@2",
        ) else {
            panic!("a stale read must be found");
        };
        // The violation is complete once the stale read returned; the later read is trimmed.
        assert_eq!(sub.len(), 3, "{sub:#?}");
        assert!(
            sub.iter()
                .all(|op| op.completed <= Some(Duration::from_millis(5)))
        );
    }

    #[test]
    fn reads_that_go_back_in_time_are_a_violation() {
        let v = verdict(
            "1 0 100 put:1 v1
             2 10 20 get 1@1
             3 30 40 get none",
        );
        assert!(matches!(v, Verdict::Violation(_)), "{v:?}");
    }

    #[test]
    fn a_version_skipped_or_repeated_is_a_violation() {
        // The put applied twice (the version went up by two).
        let v = verdict(
            "1 0 1 put:1 v1
             1 2 3 put:2 v3",
        );
        assert!(matches!(v, Verdict::Violation(_)), "{v:?}");
        let v = verdict(
            "1 0 1 put:1 v1
             2 2 3 put:2 v1",
        );
        assert!(matches!(v, Verdict::Violation(_)), "{v:?}");
    }

    #[test]
    fn monotonic_versions_tolerate_a_write_applied_twice_within_its_interval() {
        // A put retried after its first attempt applied: acknowledged with version 3.
        let twice = "1 0 1 put:1 v1
                     2 2 30 put:2 v3
                     1 31 32 get 2@3
                     3 33 34 del existed";
        assert!(matches!(verdict(twice), Verdict::Violation(_)));
        assert_eq!(
            verdict_with(twice, Versions::Monotonic),
            Verdict::Linearizable
        );
        // A delete applied twice answers that nothing existed.
        let delete = "1 0 1 put:1 v1
                      2 2 30 del absent
                      1 31 32 get none";
        assert!(matches!(verdict(delete), Verdict::Violation(_)));
        assert_eq!(
            verdict_with(delete, Versions::Monotonic),
            Verdict::Linearizable
        );
        // Values still have to be linearizable, and versions may not go back.
        let stale = "1 0 1 put:1 v1
                     1 2 3 put:2 v2
                     2 4 5 get 1@1";
        assert!(matches!(
            verdict_with(stale, Versions::Monotonic),
            Verdict::Violation(_)
        ));
        let back = "1 0 1 put:1 v1
                    1 2 3 put:2 v5
                    2 4 5 get 2@4";
        assert!(matches!(
            verdict_with(back, Versions::Monotonic),
            Verdict::Violation(_)
        ));
    }

    #[test]
    fn an_unknown_write_may_or_may_not_have_happened() {
        // Seen by a later read...
        assert_eq!(
            verdict(
                "1 0 - put:1 ?
                 2 50 51 get 1@1"
            ),
            Verdict::Linearizable
        );
        // ...or never.
        assert_eq!(
            verdict(
                "1 0 - put:1 ?
                 2 50 51 get none
                 2 52 53 put:2 v1"
            ),
            Verdict::Linearizable
        );
        // But once seen it cannot be unseen.
        assert!(matches!(
            verdict(
                "1 0 - put:1 ?
                 2 50 51 get 1@1
                 2 52 53 get none"
            ),
            Verdict::Violation(_)
        ));
    }

    #[test]
    fn failed_writes_never_take_effect() {
        let v = verdict(
            "1 0 1 put:1 fail
             2 2 3 get 1@1",
        );
        assert!(matches!(v, Verdict::Violation(_)), "{v:?}");
    }

    #[test]
    fn conditional_puts_apply_only_at_their_version() {
        assert_eq!(
            verdict(
                "1 0 1 put:1@0 v1
                 1 2 3 put:2@1 v2
                 2 4 5 get 2@2"
            ),
            Verdict::Linearizable
        );
        // Acknowledged although the version it was conditioned on was gone.
        assert!(matches!(
            verdict(
                "1 0 1 put:1 v1
                 1 2 3 put:2 v2
                 2 4 5 put:3@1 v2"
            ),
            Verdict::Violation(_)
        ));
        // An unknown conditional put whose condition failed changes nothing.
        assert_eq!(
            verdict(
                "1 0 1 put:1 v1
                 2 2 - put:9@5 ?
                 1 4 5 get 1@1"
            ),
            Verdict::Linearizable
        );
    }

    #[test]
    fn conditional_deletes_apply_only_at_their_version() {
        assert_eq!(
            verdict(
                "1 0 1 put:1 v1
                 1 2 3 del@1 existed
                 1 4 5 get none"
            ),
            Verdict::Linearizable
        );
        assert!(matches!(
            verdict(
                "1 0 1 put:1 v1
                 1 2 3 put:2 v2
                 1 4 5 del@1 existed"
            ),
            Verdict::Violation(_)
        ));
        // Unknown and its condition gone: nothing deleted.
        assert_eq!(
            verdict(
                "1 0 1 put:1 v1
                 1 2 3 put:2 v2
                 2 4 - del@1 ?
                 1 6 7 get 2@2"
            ),
            Verdict::Linearizable
        );
    }

    #[test]
    fn a_delete_must_report_whether_the_document_existed() {
        assert!(matches!(
            verdict(
                "1 0 1 put:1 v1
                 1 2 3 del absent"
            ),
            Verdict::Violation(_)
        ));
    }

    #[test]
    fn the_shrunk_history_keeps_only_what_the_violation_needs() {
        let mut text = String::new();
        // Forty correct operations, then a stale read, then more noise.
        for i in 0..20u64 {
            let t = i * 10;
            text.push_str(&format!("1 {t} {} put:{} v{}\n", t + 1, i + 1, i + 1));
            text.push_str(&format!("2 {} {} get {}@{}\n", t + 2, t + 3, i + 1, i + 1));
        }
        text.push_str("3 300 301 get 5@5\n");
        text.push_str("1 400 401 put:99 v21\n");
        let Verdict::Violation(sub) = verdict(&text) else {
            panic!("the stale read must be found");
        };
        assert!(sub.len() < 25, "{} operations kept: {sub:#?}", sub.len());
        assert!(
            sub.iter()
                .any(|op| op.invoked == Duration::from_millis(300))
        );
        assert!(
            sub.iter()
                .all(|op| op.invoked <= Duration::from_millis(300))
        );
    }

    #[test]
    fn a_lost_acknowledged_write_is_reported() {
        let ops = history(
            "1 1 2 put:1 v1
             1 3 4 put:2 v2
             2 5 - put:3 ?",
        );
        // The final state is the first write: the second, acknowledged after it, was lost.
        let lost = lost_writes("k", &ops, Some((1, 1)));
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert_eq!(
            lost[0].write.call,
            Call::Put {
                value: 2,
                if_version: None
            }
        );
        // The unknown write may be the last one; so may the acknowledged one.
        assert!(lost_writes("k", &ops, Some((3, 3))).is_empty());
        assert!(lost_writes("k", &ops, Some((2, 2))).is_empty());
        // Nothing at all: every acknowledged write is lost.
        assert_eq!(lost_writes("k", &ops, None).len(), 2);
    }

    #[test]
    fn the_report_names_the_seed_and_the_offending_operations() {
        let ops = history(
            "1 1 2 put:1 v1
             2 3 4 get none",
        );
        let finals = BTreeMap::from([("k".to_string(), None)]);
        let report = check(42, Versions::Exact, &ops, &finals);
        assert!(!report.is_ok());
        let text = report.to_string();
        assert!(text.contains("FLOTILLA_SEED=42"), "{text}");
        assert!(text.contains("put(1)"), "{text}");
        assert!(text.contains("acknowledged write lost"), "{text}");
        let ok = check(
            7,
            Versions::Exact,
            &history("1 0 1 put:1 v1"),
            &BTreeMap::new(),
        );
        assert!(ok.is_ok(), "{ok}");
    }
}
