//! A serializability checker for list-append histories, after Jepsen's Elle: every
//! transaction appends unique values to keys and reads whole lists. From the reads it infers
//! each key's version order (every read must be a prefix of the longest), then builds the
//! dependency graph between committed transactions:
//!
//! - `ww`: T1 appended a value and T2 the next one of the same key;
//! - `wr`: T2 read a list whose last value (not its own) T1 appended;
//! - `rw`: T1 read a list and T2 appended the value that follows its end.
//!
//! A cycle means no serial order explains what was seen: all `ww` is G0, `ww`/`wr` is G1c,
//! with `rw` edges G-single (one) or G2 (several). A read of a value an aborted transaction
//! appended is G1a; reads that disagree on a key's order are an incompatible order. A
//! transaction whose outcome is unknown counts as committed when any read saw its writes, and
//! is left out otherwise.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// One operation inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MicroOp {
    Append {
        key: String,
        value: u64,
    },
    /// The list read (`None` while the transaction has not run).
    Read {
        key: String,
        list: Option<Vec<u64>>,
    },
}

/// How a transaction ended, as its client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Committed,
    Aborted,
    /// No answer came (the commit may or may not have applied).
    Unknown,
}

/// One transaction of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    pub ops: Vec<MicroOp>,
    pub outcome: Outcome,
}

/// A dependency between two transactions (indexes into the history).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dep {
    WW,
    WR,
    RW,
}

/// What the checker found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anomaly {
    /// A dependency cycle: (from, kind, to) steps, and its name (G0, G1c, G-single, G2).
    Cycle {
        name: &'static str,
        steps: Vec<(usize, Dep, usize)>,
    },
    /// Transaction `reader` read `value` of `key`, appended by aborted transaction `writer`.
    AbortedRead {
        key: String,
        value: u64,
        reader: usize,
        writer: usize,
    },
    /// Two reads of `key` that are not prefixes of each other.
    IncompatibleOrder {
        key: String,
        a: Vec<u64>,
        b: Vec<u64>,
    },
    /// A value read that nobody appended, or appended twice.
    Garbage { key: String, value: u64 },
}

impl Anomaly {
    pub fn name(&self) -> &'static str {
        match self {
            Anomaly::Cycle { name, .. } => name,
            Anomaly::AbortedRead { .. } => "G1a",
            Anomaly::IncompatibleOrder { .. } => "incompatible-order",
            Anomaly::Garbage { .. } => "garbage",
        }
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Anomaly::Cycle { name, steps } => {
                write!(f, "{name} cycle:")?;
                for (from, dep, to) in steps {
                    write!(f, " T{from} -{dep:?}-> T{to};")?;
                }
                Ok(())
            }
            Anomaly::AbortedRead {
                key,
                value,
                reader,
                writer,
            } => write!(
                f,
                "G1a: T{reader} read {key}={value}, appended by aborted T{writer}"
            ),
            Anomaly::IncompatibleOrder { key, a, b } => {
                write!(f, "incompatible order of {key}: {a:?} vs {b:?}")
            }
            Anomaly::Garbage { key, value } => {
                write!(f, "{key}={value} read but appended by no one (or twice)")
            }
        }
    }
}

/// A history that failed the check, with the seed that produced it (to replay).
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub anomaly: Anomaly,
    pub txns: Vec<(usize, Txn)>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "not serializable (seed {}): {}", self.seed, self.anomaly)?;
        for (i, t) in &self.txns {
            writeln!(f, "  T{i} {:?}: {:?}", t.outcome, t.ops)?;
        }
        Ok(())
    }
}

/// Checks `history`; a failure names the anomaly, the transactions in it and `seed`.
pub fn check(history: &[Txn], seed: u64) -> Result<(), Failure> {
    check_anomaly(history).map_err(|anomaly| {
        let involved: BTreeSet<usize> = match &anomaly {
            Anomaly::Cycle { steps, .. } => steps.iter().map(|s| s.0).collect(),
            Anomaly::AbortedRead { reader, writer, .. } => [*reader, *writer].into(),
            _ => BTreeSet::new(),
        };
        Failure {
            seed,
            txns: involved
                .into_iter()
                .map(|i| (i, history[i].clone()))
                .collect(),
            anomaly,
        }
    })
}

fn check_anomaly(history: &[Txn]) -> Result<(), Anomaly> {
    // Who appended each value.
    let mut writer: HashMap<(&str, u64), usize> = HashMap::new();
    for (i, t) in history.iter().enumerate() {
        for op in &t.ops {
            if let MicroOp::Append { key, value } = op
                && writer.insert((key.as_str(), *value), i).is_some()
            {
                return Err(Anomaly::Garbage {
                    key: key.clone(),
                    value: *value,
                });
            }
        }
    }
    // Which transactions count: committed ones, and unknown ones whose writes were seen.
    let mut seen_writers = BTreeSet::new();
    for (i, t) in history.iter().enumerate() {
        if t.outcome != Outcome::Committed {
            continue;
        }
        for op in &t.ops {
            if let MicroOp::Read {
                key,
                list: Some(list),
            } = op
            {
                for v in list {
                    match writer.get(&(key.as_str(), *v)) {
                        None => {
                            return Err(Anomaly::Garbage {
                                key: key.clone(),
                                value: *v,
                            });
                        }
                        Some(w) if history[*w].outcome == Outcome::Aborted => {
                            return Err(Anomaly::AbortedRead {
                                key: key.clone(),
                                value: *v,
                                reader: i,
                                writer: *w,
                            });
                        }
                        Some(w) => {
                            seen_writers.insert(*w);
                        }
                    }
                }
            }
        }
    }
    let counts = |i: usize| {
        history[i].outcome == Outcome::Committed
            || (history[i].outcome == Outcome::Unknown && seen_writers.contains(&i))
    };
    // Each key's order: the longest read, every other read a prefix of it.
    let mut longest: BTreeMap<&str, &Vec<u64>> = BTreeMap::new();
    for (i, t) in history.iter().enumerate() {
        if !counts(i) {
            continue;
        }
        for op in &t.ops {
            if let MicroOp::Read {
                key,
                list: Some(list),
            } = op
            {
                let entry = longest.entry(key.as_str()).or_insert(list);
                let (short, long) = if list.len() <= entry.len() {
                    (list, *entry)
                } else {
                    (*entry, list)
                };
                if long[..short.len()] != short[..] {
                    return Err(Anomaly::IncompatibleOrder {
                        key: key.clone(),
                        a: short.clone(),
                        b: long.clone(),
                    });
                }
                *entry = long;
            }
        }
    }
    // The order of each key: what was read, then the one value appended but never read when
    // there is exactly one (several unread ones have no known order).
    let mut order: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut appended: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for ((key, value), w) in &writer {
        if counts(*w) {
            appended.entry(key).or_default().push(*value);
        }
    }
    for (key, values) in &appended {
        let mut o = longest.get(key).map(|l| (*l).clone()).unwrap_or_default();
        let unread: Vec<u64> = values.iter().copied().filter(|v| !o.contains(v)).collect();
        if unread.len() == 1 {
            o.push(unread[0]);
        }
        order.insert(key, o);
    }
    // The graph.
    let mut edges: BTreeMap<usize, BTreeMap<usize, Dep>> = BTreeMap::new();
    let mut add = |from: usize, dep: Dep, to: usize| {
        if from != to {
            let e = edges.entry(from).or_default().entry(to).or_insert(dep);
            // Keep the strongest explanation: ww < wr < rw for naming.
            if dep < *e {
                *e = dep;
            }
        }
    };
    for (key, o) in &order {
        for pair in o.windows(2) {
            let (a, b) = (writer[&(*key, pair[0])], writer[&(*key, pair[1])]);
            add(a, Dep::WW, b);
        }
    }
    for (i, t) in history.iter().enumerate() {
        if !counts(i) {
            continue;
        }
        for op in &t.ops {
            let MicroOp::Read {
                key,
                list: Some(list),
            } = op
            else {
                continue;
            };
            let Some(o) = order.get(key.as_str()) else {
                continue;
            };
            // Ignore the transaction's own appends at the end of what it read.
            let others: Vec<u64> = list
                .iter()
                .copied()
                .filter(|v| writer.get(&(key.as_str(), *v)) != Some(&i))
                .collect();
            if let Some(last) = others.last() {
                add(writer[&(key.as_str(), *last)], Dep::WR, i);
            }
            let next = o
                .iter()
                .skip(others.len())
                .find(|v| writer.get(&(key.as_str(), **v)) != Some(&i));
            if let Some(next) = next {
                add(i, Dep::RW, writer[&(key.as_str(), *next)]);
            }
        }
    }
    match find_cycle(&edges) {
        None => Ok(()),
        Some(steps) => {
            let rw = steps.iter().filter(|s| s.1 == Dep::RW).count();
            let wr = steps.iter().any(|s| s.1 == Dep::WR);
            let name = match (rw, wr) {
                (0, false) => "G0",
                (0, true) => "G1c",
                (1, _) => "G-single",
                _ => "G2",
            };
            Err(Anomaly::Cycle { name, steps })
        }
    }
}

/// A cycle of the graph, if any, as (from, dep, to) steps.
fn find_cycle(edges: &BTreeMap<usize, BTreeMap<usize, Dep>>) -> Option<Vec<(usize, Dep, usize)>> {
    // Iterative depth-first search with colours; a grey successor closes a cycle.
    let mut colour: HashMap<usize, u8> = HashMap::new();
    for &start in edges.keys() {
        if colour.get(&start).copied().unwrap_or(0) != 0 {
            continue;
        }
        let mut stack: Vec<(usize, Vec<usize>)> =
            vec![(start, edges[&start].keys().copied().collect())];
        colour.insert(start, 1);
        while let Some((node, next)) = stack.last_mut() {
            let node = *node;
            match next.pop() {
                Some(succ) => match colour.get(&succ).copied().unwrap_or(0) {
                    0 => {
                        colour.insert(succ, 1);
                        let succs = edges
                            .get(&succ)
                            .map(|m| m.keys().copied().collect())
                            .unwrap_or_default();
                        stack.push((succ, succs));
                    }
                    1 => {
                        let path: Vec<usize> = stack.iter().map(|(n, _)| *n).collect();
                        let from = path.iter().position(|n| *n == succ).unwrap_or(0);
                        let mut cycle: Vec<usize> = path[from..].to_vec();
                        cycle.push(succ);
                        let _ = node;
                        return Some(
                            cycle
                                .windows(2)
                                .map(|w| (w[0], edges[&w[0]][&w[1]], w[1]))
                                .collect(),
                        );
                    }
                    _ => {}
                },
                None => {
                    colour.insert(node, 2);
                    stack.pop();
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(key: &str, value: u64) -> MicroOp {
        MicroOp::Append {
            key: key.into(),
            value,
        }
    }

    fn read(key: &str, list: &[u64]) -> MicroOp {
        MicroOp::Read {
            key: key.into(),
            list: Some(list.to_vec()),
        }
    }

    fn ok(ops: Vec<MicroOp>) -> Txn {
        Txn {
            ops,
            outcome: Outcome::Committed,
        }
    }

    #[test]
    fn a_serial_history_passes() {
        let h = vec![
            ok(vec![append("x", 1), append("y", 1)]),
            ok(vec![read("x", &[1]), append("x", 2)]),
            ok(vec![read("x", &[1, 2]), read("y", &[1])]),
        ];
        assert_eq!(check(&h, 1).map_err(|f| f.to_string()), Ok(()));
    }

    #[test]
    fn write_cycles_are_g0() {
        // x's order says T0 before T1, y's says T1 before T0.
        let h = vec![
            ok(vec![append("x", 1), append("y", 2)]),
            ok(vec![append("x", 2), append("y", 1)]),
            ok(vec![read("x", &[1, 2]), read("y", &[1, 2])]),
        ];
        let f = check(&h, 7).unwrap_err();
        assert_eq!(f.anomaly.name(), "G0", "{f}");
        assert!(f.to_string().contains("seed 7"));
    }

    #[test]
    fn a_read_of_a_later_write_with_a_write_back_is_g1c() {
        // T0 read T1's append of x, and T1's append of y follows T0's.
        let h = vec![
            ok(vec![read("x", &[2]), append("y", 1)]),
            ok(vec![append("x", 2), append("y", 2)]),
            ok(vec![read("y", &[1, 2])]),
        ];
        let f = check(&h, 3).unwrap_err();
        assert_eq!(f.anomaly.name(), "G1c", "{f}");
    }

    #[test]
    fn write_skew_is_g2() {
        // Each read both keys empty and appended to one: no serial order allows both.
        let h = vec![
            ok(vec![read("x", &[]), read("y", &[]), append("x", 1)]),
            ok(vec![read("x", &[]), read("y", &[]), append("y", 1)]),
            ok(vec![read("x", &[1]), read("y", &[1])]),
        ];
        let f = check(&h, 5).unwrap_err();
        assert_eq!(f.anomaly.name(), "G2", "{f}");
    }

    #[test]
    fn a_read_of_an_aborted_append_is_g1a_and_disagreeing_reads_are_caught() {
        let h = vec![
            Txn {
                ops: vec![append("x", 1)],
                outcome: Outcome::Aborted,
            },
            ok(vec![read("x", &[1])]),
        ];
        assert_eq!(check(&h, 0).unwrap_err().anomaly.name(), "G1a");
        let h = vec![
            ok(vec![append("x", 1)]),
            ok(vec![append("x", 2)]),
            ok(vec![read("x", &[1, 2])]),
            ok(vec![read("x", &[2, 1])]),
        ];
        assert_eq!(
            check(&h, 0).unwrap_err().anomaly.name(),
            "incompatible-order"
        );
    }

    #[test]
    fn an_unknown_transaction_counts_only_when_its_writes_were_seen() {
        let h = vec![
            Txn {
                ops: vec![append("x", 1)],
                outcome: Outcome::Unknown,
            },
            Txn {
                ops: vec![append("x", 2)],
                outcome: Outcome::Unknown,
            },
            ok(vec![read("x", &[2])]),
        ];
        assert_eq!(check(&h, 0).map_err(|f| f.to_string()), Ok(()));
    }
}
