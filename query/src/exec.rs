//! Running a query: the query itself, what one shard answers (filter, sort, cut to a page
//! after the cursor), the merge of the shards' answers in order, page tokens and projection.
//!
//! Results are ordered by the `order_by` paths (a missing value first, in the total order of
//! [`crate::order`]), then by document id, then by shard: the same order on every shard and in
//! the merge, so that a page token (the sort key of the last result) resumes exactly where the
//! previous page ended.

use std::cmp::Ordering;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{QueryError, Reason};
use crate::order::compare_opt;
use crate::path::Path;
use crate::predicate::Predicate;

/// One sort key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderKey {
    pub path: Path,
    #[serde(default)]
    pub descending: bool,
}

/// A query over one collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Query {
    #[serde(default = "all")]
    pub filter: Predicate,
    #[serde(default)]
    pub order_by: Vec<OrderKey>,
    /// Most results over all pages.
    #[serde(default)]
    pub limit: Option<u64>,
    /// Paths kept in each result (all of the document when empty).
    #[serde(default)]
    pub projection: Vec<Path>,
    /// Count the matches instead of returning them.
    #[serde(default)]
    pub count: bool,
}

fn all() -> Predicate {
    Predicate::All
}

impl Query {
    pub fn new(filter: Predicate) -> Query {
        Query {
            filter,
            order_by: Vec::new(),
            limit: None,
            projection: Vec::new(),
            count: false,
        }
    }

    /// The sort values of `doc`.
    pub fn sort_values(&self, doc: &Value) -> Vec<Option<Value>> {
        self.order_by
            .iter()
            .map(|k| k.path.resolve(doc).cloned())
            .collect()
    }

    /// Compares two results' positions in the query's order.
    pub fn compare(&self, a: &SortKey, b: &SortKey) -> Ordering {
        for (i, k) in self.order_by.iter().enumerate() {
            let o = compare_opt(
                a.values.get(i).and_then(Option::as_ref),
                b.values.get(i).and_then(Option::as_ref),
            );
            let o = if k.descending { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        a.id.cmp(&b.id).then(a.shard.cmp(&b.shard))
    }

    /// A fingerprint of what decides the results and their order, carried in page tokens so
    /// that a token is not resumed under another query.
    pub fn fingerprint(&self) -> u64 {
        let text = serde_json::json!({
            "f": self.filter.to_selector(),
            "o": self.order_by,
            "l": self.limit,
            "p": self.projection,
        })
        .to_string();
        xxhash_rust::xxh3::xxh3_64(text.as_bytes())
    }
}

/// Where a result sits in the query's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SortKey {
    /// One per sort path; `None` for a missing field (kept apart from `null` on the wire).
    #[serde(with = "missing_apart")]
    pub values: Vec<Option<Value>>,
    pub id: String,
    pub shard: u32,
}

/// Sort values on the wire: a missing field as `[]`, a value `v` as `[v]`, so that a missing
/// field and `null` stay apart.
mod missing_apart {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;

    pub fn serialize<S: Serializer>(values: &[Option<Value>], s: S) -> Result<S::Ok, S::Error> {
        let wire: Vec<Vec<&Value>> = values.iter().map(|v| v.iter().collect()).collect();
        wire.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Option<Value>>, D::Error> {
        let wire: Vec<Vec<Value>> = Vec::deserialize(d)?;
        wire.into_iter()
            .map(|mut v| match v.len() {
                0 => Ok(None),
                1 => Ok(v.pop()),
                _ => Err(serde::de::Error::custom(
                    "a sort value holds at most one value",
                )),
            })
            .collect()
    }
}

/// One result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub key: SortKey,
    pub version: u64,
    /// Revision (shard log position) of the write that produced this version.
    pub revision: u64,
    /// The document (projected when the query asks), as JSON text.
    pub json: String,
}

/// Where the next page starts: after `after`, with `returned` results given so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    pub after: SortKey,
    pub returned: u64,
    pub query: u64,
}

impl Cursor {
    /// The opaque page token.
    pub fn to_token(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    /// Reads a page token given back for `query`.
    pub fn from_token(token: &str, query: &Query) -> Result<Cursor, QueryError> {
        let bad = |why: &str| QueryError::field("page_token", Reason::InvalidPageToken(why.into()));
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| bad("not a token this service gave"))?;
        let cursor: Cursor =
            serde_json::from_slice(&bytes).map_err(|_| bad("not a token this service gave"))?;
        if cursor.query != query.fingerprint() || cursor.after.values.len() != query.order_by.len()
        {
            return Err(bad("the token belongs to another query"));
        }
        Ok(cursor)
    }
}

/// One candidate document of a shard.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub version: u64,
    /// Revision (shard log position) of the write that produced this version.
    pub revision: u64,
    pub json: String,
}

/// What one shard answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardPage {
    /// Matches after the cursor, in order.
    pub hits: Vec<Hit>,
    /// True when no match of this shard follows the last hit.
    pub complete: bool,
    /// Documents read and checked.
    pub examined: u64,
    /// Matches counted (a count query).
    pub count: u64,
}

/// Limits of one page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimits {
    pub max_items: usize,
    /// Most bytes of document bodies; a page always holds at least one result.
    pub max_bytes: usize,
}

/// Filters, orders and cuts one shard's candidates (in any order, each at most once) to the
/// page after `after`. A document that is not valid JSON is skipped (writes refuse them).
pub fn shard_page(
    query: &Query,
    shard: u32,
    after: Option<&SortKey>,
    candidates: impl IntoIterator<Item = Candidate>,
    limits: PageLimits,
) -> ShardPage {
    let mut page = ShardPage::default();
    let max_items = limits.max_items.max(1);
    let mut kept: Vec<(SortKey, Candidate, Value)> = Vec::new();
    let mut truncated = false;
    let by_key = |a: &(SortKey, Candidate, Value), b: &(SortKey, Candidate, Value)| {
        query.compare(&a.0, &b.0)
    };
    for c in candidates {
        page.examined += 1;
        let Ok(doc) = serde_json::from_str::<Value>(&c.json) else {
            continue;
        };
        if !query.filter.matches(&doc) {
            continue;
        }
        if query.count {
            page.count += 1;
            continue;
        }
        let key = SortKey {
            values: query.sort_values(&doc),
            id: c.id.clone(),
            shard,
        };
        if after.is_some_and(|a| query.compare(&key, a) != Ordering::Greater) {
            continue;
        }
        kept.push((key, c, doc));
        // Only the first `max_items` can be on this page: bound the memory held.
        if kept.len() >= 2 * max_items {
            kept.sort_by(by_key);
            kept.truncate(max_items);
            truncated = true;
        }
    }
    if query.count {
        page.complete = true;
        return page;
    }
    kept.sort_by(by_key);
    let mut bytes = 0;
    let total = kept.len();
    for (key, c, doc) in kept {
        let json = if query.projection.is_empty() {
            c.json
        } else {
            project(&doc, &query.projection).to_string()
        };
        if page.hits.len() >= max_items
            || (!page.hits.is_empty() && bytes + json.len() > limits.max_bytes)
        {
            break;
        }
        bytes += json.len();
        page.hits.push(Hit {
            key,
            version: c.version,
            revision: c.revision,
            json,
        });
    }
    page.complete = !truncated && page.hits.len() == total;
    page
}

/// A merged page: results in order, and the cursor of the next page (`None` at the end).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Merged {
    pub hits: Vec<Hit>,
    pub next: Option<Cursor>,
    pub count: u64,
    pub examined: u64,
}

/// Merges the shards' pages in the query's order into one page of at most `limits`, never
/// past the last hit of a shard that has more (a result beyond it might be missing).
/// `returned` is how many results earlier pages gave.
pub fn merge(query: &Query, pages: Vec<ShardPage>, limits: PageLimits, returned: u64) -> Merged {
    let mut merged = Merged {
        count: pages.iter().map(|p| p.count).sum(),
        examined: pages.iter().map(|p| p.examined).sum(),
        ..Merged::default()
    };
    if query.count {
        return merged;
    }
    let bound: Option<SortKey> = pages
        .iter()
        .filter(|p| !p.complete)
        .filter_map(|p| p.hits.last().map(|h| h.key.clone()))
        .min_by(|a, b| query.compare(a, b));
    let mut hits: Vec<Hit> = pages.into_iter().flat_map(|p| p.hits).collect();
    hits.sort_by(|a, b| query.compare(&a.key, &b.key));
    let remaining = query.limit.map_or(u64::MAX, |l| l.saturating_sub(returned));
    let max_items = (limits.max_items.max(1) as u64).min(remaining) as usize;
    let total = hits.len();
    let mut bytes = 0;
    for h in hits {
        if merged.hits.len() >= max_items
            || bound
                .as_ref()
                .is_some_and(|b| query.compare(&h.key, b) == Ordering::Greater)
            || (!merged.hits.is_empty() && bytes + h.json.len() > limits.max_bytes)
        {
            break;
        }
        bytes += h.json.len();
        merged.hits.push(h);
    }
    let given = returned + merged.hits.len() as u64;
    let more = merged.hits.len() < total || bound.is_some();
    if more
        && query.limit.is_none_or(|l| given < l)
        && let Some(last) = merged.hits.last()
    {
        merged.next = Some(Cursor {
            after: last.key.clone(),
            returned: given,
            query: query.fingerprint(),
        });
    }
    merged
}

/// The fields of `doc` at `paths`, nested as in the document (array elements named by a path
/// become object members named by their index).
pub fn project(doc: &Value, paths: &[Path]) -> Value {
    let mut out = Value::Object(Default::default());
    for p in paths {
        let Some(v) = p.resolve(doc) else { continue };
        let mut cur = &mut out;
        let segs = p.segments();
        for (i, seg) in segs.iter().enumerate() {
            let Value::Object(map) = cur else { break };
            if i + 1 == segs.len() {
                map.insert(seg.clone(), v.clone());
                break;
            }
            cur = map
                .entry(seg.clone())
                .or_insert_with(|| Value::Object(Default::default()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_text;
    use serde_json::json;

    fn cand(id: &str, doc: Value) -> Candidate {
        Candidate {
            id: id.into(),
            version: 1,
            revision: 1,
            json: doc.to_string(),
        }
    }

    #[test]
    fn projection_keeps_named_fields() {
        let doc = json!({"a": {"b": 1, "c": 2}, "d": [5, 6], "e": 3});
        let paths: Vec<Path> = ["/a/b", "/e", "/d/1", "/zz"]
            .iter()
            .map(|p| Path::parse(p).unwrap())
            .collect();
        assert_eq!(
            project(&doc, &paths),
            json!({"a": {"b": 1}, "e": 3, "d": {"1": 6}})
        );
    }

    #[test]
    fn pages_bounded_by_bytes_resume_with_a_token() {
        let mut q = Query::new(parse_text("/n >= 0").unwrap());
        q.order_by = vec![OrderKey {
            path: Path::parse("/n").unwrap(),
            descending: true,
        }];
        let docs: Vec<Candidate> = (0..10)
            .map(|i| cand(&format!("d{i}"), json!({"n": i, "pad": "x".repeat(100)})))
            .collect();
        let limits = PageLimits {
            max_items: 100,
            max_bytes: 250,
        };
        let mut after: Option<Cursor> = None;
        let mut seen = Vec::new();
        loop {
            let page = shard_page(
                &q,
                0,
                after.as_ref().map(|c| &c.after),
                docs.clone(),
                limits,
            );
            let m = merge(
                &q,
                vec![page],
                limits,
                after.as_ref().map_or(0, |c| c.returned),
            );
            assert!(m.hits.len() <= 2, "bounded by bytes");
            seen.extend(m.hits.iter().map(|h| h.key.id.clone()));
            match m.next {
                Some(c) => after = Some(Cursor::from_token(&c.to_token(), &q).unwrap()),
                None => break,
            }
        }
        let expected: Vec<String> = (0..10).rev().map(|i| format!("d{i}")).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_token_of_another_query_is_refused() {
        let q = Query::new(parse_text("/n >= 0").unwrap());
        let c = Cursor {
            after: SortKey {
                values: vec![],
                id: "a".into(),
                shard: 0,
            },
            returned: 1,
            query: q.fingerprint(),
        };
        let other = Query::new(parse_text("/n >= 1").unwrap());
        assert!(Cursor::from_token(&c.to_token(), &other).is_err());
        assert!(Cursor::from_token("!!", &q).is_err());
        assert!(Cursor::from_token(&c.to_token(), &q).is_ok());
    }
}
