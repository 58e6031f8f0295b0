//! The planner: given a predicate, the collection's indexes and its shard key, which index
//! (and which key ranges of it) or a scan serves the query on each shard, and which shards can
//! hold matches at all.
//!
//! The ranges an index plan yields are a superset of the matches (bounds are inclusive and
//! numbers share keys beyond 2^53): every candidate is checked against the whole predicate.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::order::{
    Bracket, bracket_bounds, encode_key_value, encode_string_prefix, prefix_successor,
};
use crate::path::Path;
use crate::predicate::{CmpOp, Predicate};

/// A secondary index of a collection: its name and the paths of its (compound) key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexDef {
    pub name: String,
    pub paths: Vec<Path>,
}

/// Keys from `start` (inclusive) to `end` (exclusive; `None`: to the index's end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
}

/// How one shard finds its candidates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    /// Every document of the collection.
    Scan,
    /// The documents whose key in `index` lies in one of `ranges` (in key order, disjoint).
    Index {
        index: String,
        ranges: Vec<KeyRange>,
    },
}

/// The planner's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub access: Access,
    /// The shards that can hold matches, in order.
    pub shards: Vec<u32>,
    /// True when the predicate pins the shard key (the shards are those of its values).
    pub pinned: bool,
}

impl Plan {
    pub fn index_name(&self) -> Option<&str> {
        match &self.access {
            Access::Scan => None,
            Access::Index { index, .. } => Some(index),
        }
    }
}

/// Most key ranges an `in` list may expand into before the planner stops at that column.
pub const MAX_RANGES: usize = 256;

/// The shard of a document placed by its id (in a collection without a shard key): the xxh3
/// hash of the id, modulo the shard count.
pub fn shard_of_id(id: &str, shards: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(id.as_bytes()) % u64::from(shards.max(1))) as u32
}

/// The shard of a document whose shard key holds `v`: the xxh3 hash of the value's key
/// encoding (so `1` and `1.0` land together), modulo the shard count.
pub fn shard_of_value(v: &Value, shards: u32) -> u32 {
    let mut key = Vec::new();
    encode_key_value(Some(v), &mut key);
    (xxhash_rust::xxh3::xxh3_64(&key) % u64::from(shards.max(1))) as u32
}

/// True when `v` may be a shard key value (a string, number or boolean).
pub fn is_shard_key_value(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

/// True when a value of an indexed path can be looked up through the index.
fn is_indexable(v: &Value) -> bool {
    matches!(
        v,
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_)
    )
}

/// What the top-level conjuncts say about one path.
#[derive(Debug, Default)]
struct Constraints<'a> {
    eq: Option<&'a Value>,
    in_list: Option<&'a [Value]>,
    ranges: Vec<(CmpOp, &'a Value)>,
    prefixes: Vec<&'a str>,
}

fn conjuncts<'a>(p: &'a Predicate, out: &mut Vec<&'a Predicate>) {
    match p {
        Predicate::And(ps) => ps.iter().for_each(|q| conjuncts(q, out)),
        other => out.push(other),
    }
}

fn constraints(filter: &Predicate) -> BTreeMap<&Path, Constraints<'_>> {
    let mut parts = Vec::new();
    conjuncts(filter, &mut parts);
    let mut by_path: BTreeMap<&Path, Constraints> = BTreeMap::new();
    for p in parts {
        match p {
            Predicate::Cmp {
                path,
                op: CmpOp::Eq,
                value,
            } if is_indexable(value) => {
                by_path.entry(path).or_default().eq = Some(value);
            }
            Predicate::Cmp { path, op, value } if op.is_range() => {
                by_path.entry(path).or_default().ranges.push((*op, value));
            }
            Predicate::In { path, values } if values.iter().all(is_indexable) => {
                let c = by_path.entry(path).or_default();
                if c.in_list.is_none_or(|l| l.len() > values.len()) {
                    c.in_list = Some(values);
                }
            }
            Predicate::Prefix { path, prefix } => {
                by_path.entry(path).or_default().prefixes.push(prefix);
            }
            _ => {}
        }
    }
    by_path
}

/// Decides how to run `filter` on a collection with `indexes`, whose documents are placed by
/// `shard_key` (by id when `None`) over `shard_count` shards.
pub fn plan(
    filter: &Predicate,
    indexes: &[IndexDef],
    shard_key: Option<&Path>,
    shard_count: u32,
) -> Plan {
    let by_path = constraints(filter);
    let all: Vec<u32> = (0..shard_count.max(1)).collect();
    let (shards, pinned) = match shard_key.and_then(|k| by_path.get(k)) {
        Some(Constraints { eq: Some(v), .. }) => (
            if is_shard_key_value(v) {
                vec![shard_of_value(v, shard_count)]
            } else {
                vec![]
            },
            true,
        ),
        Some(Constraints {
            in_list: Some(values),
            ..
        }) => {
            let set: BTreeSet<u32> = values
                .iter()
                .filter(|v| is_shard_key_value(v))
                .map(|v| shard_of_value(v, shard_count))
                .collect();
            (set.into_iter().collect(), true)
        }
        _ => (all, false),
    };
    let mut best: Option<(u32, &IndexDef, Vec<KeyRange>)> = None;
    for index in indexes {
        if let Some((score, ranges)) = index_ranges(index, &by_path)
            && best.as_ref().is_none_or(|(s, b, _)| {
                score > *s || (score == *s && index.paths.len() < b.paths.len())
            })
        {
            best = Some((score, index, ranges));
        }
    }
    let access = match best {
        Some((_, index, ranges)) => Access::Index {
            index: index.name.clone(),
            ranges,
        },
        None => Access::Scan,
    };
    Plan {
        access,
        shards,
        pinned,
    }
}

/// The key ranges of `index` that hold every match, and how selective they are (higher is
/// better); `None` when the predicate does not constrain the index's first path.
fn index_ranges(
    index: &IndexDef,
    by_path: &BTreeMap<&Path, Constraints>,
) -> Option<(u32, Vec<KeyRange>)> {
    let mut prefixes: Vec<Vec<u8>> = vec![Vec::new()];
    let mut score = 0;
    for path in &index.paths {
        let Some(c) = by_path.get(path) else {
            break;
        };
        if let Some(v) = c.eq {
            prefixes
                .iter_mut()
                .for_each(|p| encode_key_value(Some(v), p));
            score += 10;
            continue;
        }
        if let Some(values) = c.in_list
            && prefixes.len() * values.len().max(1) <= MAX_RANGES
        {
            let mut keys: Vec<Vec<u8>> = values
                .iter()
                .map(|v| {
                    let mut k = Vec::new();
                    encode_key_value(Some(v), &mut k);
                    k
                })
                .collect();
            keys.sort();
            keys.dedup();
            prefixes = prefixes
                .iter()
                .flat_map(|p| keys.iter().map(move |k| [p.as_slice(), k].concat()))
                .collect();
            score += 8;
            continue;
        }
        if c.ranges.is_empty() && c.prefixes.is_empty() {
            break;
        }
        // A range on this column, then stop.
        let (lo, hi) = column_interval(c);
        score += 5;
        let ranges = match (lo, hi) {
            (Some(lo), hi) if hi.as_ref().is_none_or(|h| lo < *h) => prefixes
                .iter()
                .map(|p| KeyRange {
                    start: [p.as_slice(), &lo].concat(),
                    end: match &hi {
                        Some(h) => Some([p.as_slice(), h].concat()),
                        None => prefix_successor(p),
                    },
                })
                .collect(),
            _ => Vec::new(),
        };
        return Some((score, ranges));
    }
    if score == 0 {
        return None;
    }
    let ranges = prefixes
        .into_iter()
        .map(|p| KeyRange {
            end: prefix_successor(&p),
            start: p,
        })
        .collect();
    Some((score, ranges))
}

/// The interval of one column's encodings that the range and prefix constraints allow:
/// `(Some(lo), hi)`, or `(None, _)` when nothing can match.
fn column_interval(c: &Constraints) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let bracket = match (c.ranges.first(), c.prefixes.first()) {
        (Some((_, v)), _) => Bracket::of(Some(v)),
        (None, Some(_)) => Bracket::String,
        (None, None) => return (None, None),
    };
    let (mut lo, mut hi) = bracket_bounds(bracket);
    for (op, v) in &c.ranges {
        if Bracket::of(Some(v)) != bracket {
            return (None, None);
        }
        let mut k = Vec::new();
        encode_key_value(Some(v), &mut k);
        match op {
            CmpOp::Gt | CmpOp::Ge => lo = lo.max(k),
            _ => {
                if let Some(s) = prefix_successor(&k) {
                    hi = hi.min(s);
                }
            }
        }
    }
    for p in &c.prefixes {
        if bracket != Bracket::String {
            return (None, None);
        }
        let mut k = Vec::new();
        encode_string_prefix(p, &mut k);
        if let Some(s) = prefix_successor(&k) {
            hi = hi.min(s);
        }
        lo = lo.max(k);
    }
    (Some(lo), Some(hi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_text;

    fn idx(name: &str, paths: &[&str]) -> IndexDef {
        IndexDef {
            name: name.into(),
            paths: paths.iter().map(|p| Path::parse(p).unwrap()).collect(),
        }
    }

    #[test]
    fn picks_the_most_selective_index() {
        let indexes = [idx("status", &["/status"]), idx("cust_date", &["/c", "/d"])];
        let p = plan(
            &parse_text(r#"/c = 1 and /d > 5 and /status = "open""#).unwrap(),
            &indexes,
            None,
            4,
        );
        assert_eq!(p.index_name(), Some("cust_date"));
        let p = plan(
            &parse_text(r#"/status = "open""#).unwrap(),
            &indexes,
            None,
            4,
        );
        assert_eq!(p.index_name(), Some("status"));
        let p = plan(&parse_text(r#"/d = 1"#).unwrap(), &indexes, None, 4);
        assert_eq!(p.access, Access::Scan);
        let p = plan(
            &parse_text(r#"/status = "a" or /c = 1"#).unwrap(),
            &indexes,
            None,
            4,
        );
        assert_eq!(p.access, Access::Scan);
        assert_eq!(p.shards, vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_pinned_shard_key_asks_one_shard() {
        let key = Path::parse("/customerId").unwrap();
        let p = plan(
            &parse_text(r#"/customerId = "c7" and /x > 1"#).unwrap(),
            &[],
            Some(&key),
            16,
        );
        assert!(p.pinned);
        assert_eq!(p.shards, vec![shard_of_value(&serde_json::json!("c7"), 16)]);
        let p = plan(
            &parse_text(r#"/customerId in ["a", "b", "a"]"#).unwrap(),
            &[],
            Some(&key),
            16,
        );
        assert!(p.shards.len() <= 2 && !p.shards.is_empty());
        let p = plan(&parse_text(r#"/x = 1"#).unwrap(), &[], Some(&key), 16);
        assert_eq!(p.shards.len(), 16);
    }

    #[test]
    fn contradictory_ranges_yield_no_ranges() {
        let p = plan(
            &parse_text(r#"/a > 5 and /a < 3"#).unwrap(),
            &[idx("a", &["/a"])],
            None,
            1,
        );
        assert_eq!(
            p.access,
            Access::Index {
                index: "a".into(),
                ranges: vec![]
            }
        );
        let p = plan(
            &parse_text(r#"/a > 5 and /a < "x""#).unwrap(),
            &[idx("a", &["/a"])],
            None,
            1,
        );
        assert_eq!(
            p.access,
            Access::Index {
                index: "a".into(),
                ranges: vec![]
            }
        );
    }
}
