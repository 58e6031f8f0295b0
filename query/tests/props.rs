//! Property tests: a query run the way the node runs it (planner, per-shard index or scan,
//! shard pages after a cursor, merge, page tokens) gives exactly a brute-force filter-and-sort
//! of the same documents; both forms of a predicate parse back to the same AST.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use flotilla_query::{
    Access, Candidate, Cursor, IndexDef, OrderKey, PageLimits, Path, Predicate, Query, SortKey,
    compare_opt, index_key, merge, parse_selector, parse_text, plan, shard_of_value, shard_page,
};
use proptest::prelude::*;
use serde_json::{Value, json};

const PATHS: &[&str] = &["/a", "/b/c", "/s", "/k", "/a/0"];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-4i64..4).prop_map(|i| json!(i)),
        (-8i32..8).prop_map(|i| json!(f64::from(i) / 2.0)),
        prop::sample::select(vec!["", "a", "ab", "abc", "b", "ba", "a\u{0}"])
            .prop_map(|s| json!(s)),
    ]
}

fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => scalar(),
        1 => prop::collection::vec(scalar(), 0..3).prop_map(Value::Array),
        1 => scalar().prop_map(|v| json!({"x": v})),
    ]
}

fn doc() -> impl Strategy<Value = Value> {
    (
        prop::option::of(field_value()),
        prop::option::of(field_value()),
        prop::option::of(field_value()),
        prop::sample::select(vec!["c1", "c2", "c3", "c4", "c5"]),
    )
        .prop_map(|(a, c, s, k)| {
            let mut m = serde_json::Map::new();
            if let Some(a) = a {
                m.insert("a".into(), a);
            }
            if let Some(c) = c {
                m.insert("b".into(), json!({ "c": c }));
            }
            if let Some(s) = s {
                m.insert("s".into(), s);
            }
            m.insert("k".into(), json!(k));
            Value::Object(m)
        })
}

fn path() -> impl Strategy<Value = Path> {
    prop::sample::select(PATHS).prop_map(|p| Path::parse(p).expect("a test path"))
}

fn range_literal() -> impl Strategy<Value = Value> {
    scalar().prop_filter("range literal", |v| !v.is_null())
}

fn leaf() -> impl Strategy<Value = Predicate> {
    prop_oneof![
        (path(), field_value()).prop_map(|(path, value)| Predicate::Cmp {
            path,
            op: flotilla_query::CmpOp::Eq,
            value
        }),
        (path(), field_value()).prop_map(|(path, value)| Predicate::Cmp {
            path,
            op: flotilla_query::CmpOp::Ne,
            value
        }),
        (
            path(),
            prop::sample::select(vec![
                flotilla_query::CmpOp::Lt,
                flotilla_query::CmpOp::Le,
                flotilla_query::CmpOp::Gt,
                flotilla_query::CmpOp::Ge
            ]),
            range_literal()
        )
            .prop_map(|(path, op, value)| Predicate::Cmp { path, op, value }),
        (path(), prop::collection::vec(scalar(), 0..4))
            .prop_map(|(path, values)| Predicate::In { path, values }),
        path().prop_map(|path| Predicate::Exists { path }),
        (path(), prop::sample::select(vec!["", "a", "ab", "b"])).prop_map(|(path, p)| {
            Predicate::Prefix {
                path,
                prefix: p.to_string(),
            }
        }),
        Just(Predicate::All),
    ]
}

fn predicate() -> impl Strategy<Value = Predicate> {
    leaf().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(Predicate::And),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Predicate::Or),
            inner.prop_map(Predicate::negate),
        ]
    })
}

fn indexes() -> impl Strategy<Value = Vec<IndexDef>> {
    prop::collection::vec(prop::collection::vec(path(), 1..3), 0..3).prop_map(|defs| {
        defs.into_iter()
            .enumerate()
            .map(|(i, paths)| IndexDef {
                name: format!("i{i}"),
                paths,
            })
            .collect()
    })
}

fn query() -> impl Strategy<Value = Query> {
    (
        predicate(),
        prop::collection::vec((path(), any::<bool>()), 0..3),
        prop::option::of(0u64..30),
    )
        .prop_map(|(filter, order, limit)| {
            let mut q = Query::new(filter);
            q.order_by = order
                .into_iter()
                .map(|(path, descending)| OrderKey { path, descending })
                .collect();
            q.limit = limit;
            q
        })
}

/// One shard as the node keeps it: documents by id and each index's (key, id) entries.
#[derive(Default)]
struct Shard {
    docs: BTreeMap<String, String>,
    index: BTreeMap<String, BTreeSet<(Vec<u8>, String)>>,
}

struct Store {
    shards: Vec<Shard>,
    indexes: Vec<IndexDef>,
    shard_key: Option<Path>,
}

impl Store {
    fn new(n: u32, indexes: Vec<IndexDef>, shard_key: Option<Path>) -> Store {
        Store {
            shards: (0..n).map(|_| Shard::default()).collect(),
            indexes,
            shard_key,
        }
    }

    fn put(&mut self, id: &str, doc: &Value) -> u32 {
        let n = self.shards.len() as u32;
        let shard = match &self.shard_key {
            Some(k) => shard_of_value(k.resolve(doc).expect("docs carry /k"), n),
            None => shard_of_value(&json!(id), n),
        };
        let s = &mut self.shards[shard as usize];
        for def in &self.indexes {
            s.index
                .entry(def.name.clone())
                .or_default()
                .insert((index_key(doc, &def.paths), id.to_string()));
        }
        s.docs.insert(id.to_string(), doc.to_string());
        shard
    }

    fn candidates(&self, shard: u32, access: &Access) -> Vec<Candidate> {
        let s = &self.shards[shard as usize];
        let cand = |id: &String| Candidate {
            id: id.clone(),
            version: 1,
            revision: 1,
            json: s.docs[id].clone(),
        };
        match access {
            Access::Scan => s.docs.keys().map(cand).collect(),
            Access::Index { index, ranges } => {
                let entries = s.index.get(index).cloned().unwrap_or_default();
                let mut out = Vec::new();
                for r in ranges {
                    for (key, id) in &entries {
                        if key >= &r.start && r.end.as_ref().is_none_or(|e| key < e) {
                            out.push(cand(id));
                        }
                    }
                }
                out
            }
        }
    }

    /// Every page of `q`, concatenated.
    fn run(&self, q: &Query, limits: PageLimits) -> Vec<(String, u32)> {
        let p = plan(
            &q.filter,
            &self.indexes,
            self.shard_key.as_ref(),
            self.shards.len() as u32,
        );
        let mut out = Vec::new();
        let mut cursor: Option<Cursor> = None;
        for _ in 0..10_000 {
            let pages = p
                .shards
                .iter()
                .map(|&s| {
                    shard_page(
                        q,
                        s,
                        cursor.as_ref().map(|c| &c.after),
                        self.candidates(s, &p.access),
                        limits,
                    )
                })
                .collect();
            let m = merge(q, pages, limits, cursor.as_ref().map_or(0, |c| c.returned));
            out.extend(m.hits.iter().map(|h| (h.key.id.clone(), h.key.shard)));
            match m.next {
                Some(c) => cursor = Some(Cursor::from_token(&c.to_token(), q).expect("own token")),
                None => return out,
            }
        }
        panic!("paging did not end");
    }
}

/// The brute force: every document, filtered and sorted by a comparator written here.
fn brute_force(docs: &[(String, Value, u32)], q: &Query) -> Vec<(String, u32)> {
    let mut hits: Vec<&(String, Value, u32)> = docs
        .iter()
        .filter(|(_, d, _)| q.filter.matches(d))
        .collect();
    hits.sort_by(|(ia, da, sa), (ib, db, sb)| {
        for k in &q.order_by {
            let o = compare_opt(k.path.resolve(da), k.path.resolve(db));
            let o = if k.descending { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        ia.cmp(ib).then(sa.cmp(sb))
    });
    hits.into_iter()
        .take(q.limit.map_or(usize::MAX, |l| l as usize))
        .map(|(id, _, s)| (id.clone(), *s))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn query_equals_brute_force(
        docs in prop::collection::vec(doc(), 0..40),
        q in query(),
        idx in indexes(),
        shards in prop::sample::select(vec![1u32, 4, 16]),
        by_key in any::<bool>(),
        max_items in 1usize..8,
        max_bytes in 1usize..200,
    ) {
        let shard_key = by_key.then(|| Path::parse("/k").expect("a path"));
        let mut store = Store::new(shards, idx, shard_key.clone());
        let mut placed = Vec::new();
        for (i, d) in docs.iter().enumerate() {
            let id = format!("d{:02}", (i * 7) % 41);
            let shard = store.put(&id, d);
            placed.retain(|(x, _, _): &(String, Value, u32)| x != &id);
            placed.push((id, d.clone(), shard));
        }
        let want = brute_force(&placed, &q);
        let got = store.run(&q, PageLimits { max_items, max_bytes });
        prop_assert_eq!(got, want, "plan {:?}", plan(&q.filter, &store.indexes, shard_key.as_ref(), shards));
    }

    #[test]
    fn counts_equal_brute_force(
        docs in prop::collection::vec(doc(), 0..40),
        filter in predicate(),
        idx in indexes(),
        shards in prop::sample::select(vec![1u32, 4, 16]),
    ) {
        let mut store = Store::new(shards, idx, None);
        for (i, d) in docs.iter().enumerate() {
            store.put(&format!("d{i}"), d);
        }
        let mut q = Query::new(filter.clone());
        q.count = true;
        let p = plan(&q.filter, &store.indexes, None, shards);
        let pages = p.shards.iter().map(|&s| shard_page(&q, s, None, store.candidates(s, &p.access), PageLimits { max_items: 1, max_bytes: 1 })).collect();
        let m = merge(&q, pages, PageLimits { max_items: 1, max_bytes: 1 }, 0);
        prop_assert_eq!(m.count as usize, docs.iter().filter(|d| filter.matches(d)).count());
    }

    #[test]
    fn both_forms_parse_back(p in predicate()) {
        prop_assert_eq!(&parse_selector(&p.to_selector()).expect("selector form"), &p);
        let text = p.to_string();
        let back = parse_text(&text).expect("text form");
        // The text form has no single-member and / or: compare by meaning on sample documents.
        for d in [json!({}), json!({"a": 1, "s": "ab", "k": "c1"}), json!({"a": [1], "b": {"c": null}, "s": ""})] {
            prop_assert_eq!(back.matches(&d), p.matches(&d), "{}", text);
        }
    }

    #[test]
    fn index_keys_follow_the_total_order(a in prop::option::of(field_value()), b in prop::option::of(field_value())) {
        let (mut ka, mut kb) = (Vec::new(), Vec::new());
        flotilla_query::order::encode_key_value(a.as_ref(), &mut ka);
        flotilla_query::order::encode_key_value(b.as_ref(), &mut kb);
        if compare_opt(a.as_ref(), b.as_ref()) == Ordering::Less {
            prop_assert!(ka <= kb);
        }
    }
}

#[test]
fn sort_key_of_a_token_round_trips() {
    let q = Query::new(parse_text("/a > 1").expect("parses"));
    let c = Cursor {
        after: SortKey {
            values: vec![],
            id: "x".into(),
            shard: 3,
        },
        returned: 2,
        query: q.fingerprint(),
    };
    assert_eq!(Cursor::from_token(&c.to_token(), &q).expect("own token"), c);
}
