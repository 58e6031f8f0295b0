//! Live queries with real node processes: the initial result equals a brute-force filter of
//! the documents written, and the events that follow are exactly the changes a brute-force
//! diff of the result before and after each write predicts (per document, in order), across
//! shards; a live query resumed after the revisions it had reached delivers exactly the
//! changes made since, and none before; an initial result of many pages, written to while it
//! is read, comes in once and then catches up with exactly the changes after it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use flotilla_client::{Client, Consistency, LiveEvent, LiveStream};
use flotilla_query::{Predicate, parse_text};
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const DB: &str = "live";
const COLL: &str = "items";

/// The ids matching `predicate` among `docs`.
fn result(docs: &BTreeMap<String, Value>, predicate: &Predicate) -> BTreeSet<String> {
    docs.iter()
        .filter(|(_, d)| predicate.matches(d))
        .map(|(id, _)| id.clone())
        .collect()
}

/// The event a write of `id` from `before` to `after` should cause: the brute-force diff of
/// the whole result before and after it.
fn expected(
    docs_before: &BTreeMap<String, Value>,
    docs_after: &BTreeMap<String, Value>,
    predicate: &Predicate,
    id: &str,
) -> Option<&'static str> {
    let (was, is) = (
        result(docs_before, predicate),
        result(docs_after, predicate),
    );
    let changed: Vec<&String> = was.symmetric_difference(&is).collect();
    assert!(
        changed.len() <= 1,
        "one write moves at most its own document"
    );
    match (was.contains(id), is.contains(id)) {
        (false, true) => Some("enter"),
        (true, false) => Some("leave"),
        (true, true) => Some("change"),
        (false, false) => None,
    }
}

fn kind(event: &LiveEvent) -> &'static str {
    match event {
        LiveEvent::Initial(_) => "initial",
        LiveEvent::Current { .. } => "current",
        LiveEvent::Enter(_) => "enter",
        LiveEvent::Change(_) => "change",
        LiveEvent::Leave(_) => "leave",
    }
}

/// Takes events until `count` changes (per document: kind and version) have arrived.
async fn changes(
    stream: &mut LiveStream,
    count: usize,
    seed: u64,
    positions: &mut BTreeMap<u32, u64>,
) -> BTreeMap<String, Vec<(&'static str, u64)>> {
    let mut got: BTreeMap<String, Vec<(&'static str, u64)>> = BTreeMap::new();
    let mut n = 0;
    let collect = async {
        while n < count {
            let event = match stream.next().await {
                Some(Ok(event)) => event,
                Some(Err(e)) => panic!("seed {seed}: live query failed: {e}"),
                None => panic!("seed {seed}: live query ended"),
            };
            let Some(d) = event.document() else {
                panic!("seed {seed}: {event:?} after the initial result");
            };
            positions.insert(d.shard, d.revision);
            got.entry(d.id.clone())
                .or_default()
                .push((kind(&event), d.version));
            n += 1;
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), collect)
        .await
        .is_err()
    {
        panic!("seed {seed}: {n} of {count} changes arrived: {got:?}");
    }
    got
}

/// `writes` random writes (puts of random bodies, deletes) of ids d00..d39, one after the
/// other, applied to `docs`; the events they should cause, per document.
async fn write_randomly(
    client: &Client,
    rng: &mut rand::rngs::StdRng,
    docs: &mut BTreeMap<String, Value>,
    predicate: &Predicate,
    writes: usize,
) -> BTreeMap<String, Vec<(&'static str, u64)>> {
    let mut want: BTreeMap<String, Vec<(&'static str, u64)>> = BTreeMap::new();
    for _ in 0..writes {
        let id = format!("d{:02}", rng.random_range(0..40));
        let before = docs.clone();
        let version = if rng.random_bool(0.2) {
            client
                .delete(DB, COLL, &id, None)
                .await
                .unwrap_or_else(|e| panic!("delete {id}: {e}"));
            docs.remove(&id);
            0
        } else {
            let body = json!({"n": rng.random_range(0..10), "tag": rng.random_range(0..3)});
            let put = client
                .put(DB, COLL, &id, &body.to_string(), None)
                .await
                .unwrap_or_else(|e| panic!("put {id}: {e}"));
            docs.insert(id.clone(), body);
            put.version
        };
        if let Some(kind) = expected(&before, docs, predicate, &id) {
            want.entry(id).or_default().push((kind, version));
        }
    }
    want
}

/// Three nodes, and the database of four shards the tests use.
async fn start() -> (Cluster, Client) {
    let cluster = Cluster::start(3, ClusterOptions::default()).await;
    let client = cluster.client();
    client
        .create_database(DB, Some(3), Some(4))
        .await
        .unwrap_or_else(|e| panic!("create: {e}"));
    client
        .wait_for_database(DB, Duration::from_secs(30), |_| {})
        .await
        .unwrap_or_else(|e| panic!("database not ready: {e}"));
    (cluster, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_query_delivers_exactly_the_changes_a_brute_force_diff_predicts() {
    let seed = flotilla_testkit::schedule::seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_cluster, client) = start().await;
    let predicate = parse_text("/n >= 5 and /tag != 2").unwrap_or(Predicate::All);
    let mut docs = BTreeMap::new();
    write_randomly(&client, &mut rng, &mut docs, &predicate, 40).await;

    // The initial result, then the point it was read at.
    let mut live = client
        .live_query(DB, COLL, Some(&predicate), Consistency::Linearizable, &[])
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: live query: {e}"));
    let mut initial = BTreeSet::new();
    let current = loop {
        match live.next().await {
            Some(Ok(LiveEvent::Initial(d))) => {
                initial.insert(d.id);
            }
            Some(Ok(LiveEvent::Current { shards })) => break shards,
            other => panic!("seed {seed}: {other:?} before the result was current"),
        }
    };
    assert_eq!(
        initial,
        result(&docs, &predicate),
        "seed {seed}: initial result"
    );
    assert_eq!(current.len(), 4, "one revision per shard");

    // Changes while it runs.
    let mut positions: BTreeMap<u32, u64> = current.into_iter().collect();
    let want = write_randomly(&client, &mut rng, &mut docs, &predicate, 120).await;
    let count = want.values().map(Vec::len).sum();
    let got = changes(&mut live, count, seed, &mut positions).await;
    assert_eq!(got, want, "seed {seed}: the live events, per document");
    drop(live);

    // Resumed after where it stood: exactly the changes made since.
    let after: Vec<(u32, u64)> = positions.iter().map(|(s, r)| (*s, *r)).collect();
    let want = write_randomly(&client, &mut rng, &mut docs, &predicate, 60).await;
    let mut resumed = client
        .live_query(
            DB,
            COLL,
            Some(&predicate),
            Consistency::Linearizable,
            &after,
        )
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: resumed live query: {e}"));
    let count = want.values().map(Vec::len).sum();
    let got = changes(&mut resumed, count, seed, &mut positions).await;
    assert_eq!(
        got, want,
        "seed {seed}: the resumed live events, per document"
    );

    // Resuming must name every shard; a malformed selector is refused with its reason.
    let partial = client
        .live_query(
            DB,
            COLL,
            Some(&predicate),
            Consistency::Linearizable,
            &after[..1],
        )
        .await;
    assert!(
        partial.is_err(),
        "seed {seed}: resumed from one shard of four"
    );
}

/// Applies a live event to the result it follows; panics on an event the result cannot take
/// (a second copy of a document, a change or leave of one it does not hold).
fn follow(result: &mut BTreeMap<String, Value>, event: &LiveEvent, seed: u64) {
    let parse = |d: &flotilla_client::Document| {
        serde_json::from_str::<Value>(&d.json).unwrap_or_else(|e| panic!("seed {seed}: {e}"))
    };
    match event {
        LiveEvent::Initial(d) | LiveEvent::Enter(d) => {
            let body = parse(d);
            assert!(
                result.insert(d.id.clone(), body).is_none(),
                "seed {seed}: {} twice in the result ({event:?})",
                d.id
            );
        }
        LiveEvent::Change(d) => {
            let body = parse(d);
            assert!(
                result.insert(d.id.clone(), body).is_some(),
                "seed {seed}: a change of {}, not in the result",
                d.id
            );
        }
        LiveEvent::Leave(d) => assert!(
            result.remove(&d.id).is_some(),
            "seed {seed}: {} left, but was not in the result",
            d.id
        ),
        LiveEvent::Current { .. } => panic!("seed {seed}: a second current event"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_query_larger_than_a_page_gives_every_document_once_then_the_changes() {
    let seed = flotilla_testkit::schedule::seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_cluster, client) = start().await;
    let predicate = parse_text("/keep = true").unwrap_or(Predicate::All);
    // Bodies large enough that the stream of the initial result waits on its reader.
    let pad = "x".repeat(1500);
    let mut docs: BTreeMap<String, Value> = BTreeMap::new();
    for i in 0..400 {
        let id = format!("p{i:03}");
        let body = json!({"keep": i % 5 != 0, "n": i, "pad": pad});
        client
            .put(DB, COLL, &id, &body.to_string(), None)
            .await
            .unwrap_or_else(|e| panic!("put {id}: {e}"));
        docs.insert(id, body);
    }
    let options = flotilla_client::LiveQueryOptions {
        page_size: 7,
        ..Default::default()
    };
    let mut live = client
        .live_query_with(DB, COLL, Some(&predicate), &options)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: live query: {e}"));
    let mut seen: BTreeMap<String, Value> = BTreeMap::new();
    let first = live.next().await;
    match &first {
        Some(Ok(event @ LiveEvent::Initial(_))) => follow(&mut seen, event, seed),
        other => panic!("seed {seed}: {other:?} first"),
    }
    // Writes while the initial result is still being read: updates (in, out), deletes, new
    // documents.
    for _ in 0..60 {
        let id = format!("p{:03}", rng.random_range(0..440));
        if rng.random_bool(0.25) {
            client
                .delete(DB, COLL, &id, None)
                .await
                .unwrap_or_else(|e| panic!("delete {id}: {e}"));
            docs.remove(&id);
        } else {
            let body = json!({"keep": rng.random_bool(0.6), "n": -1, "pad": pad});
            client
                .put(DB, COLL, &id, &body.to_string(), None)
                .await
                .unwrap_or_else(|e| panic!("put {id}: {e}"));
            docs.insert(id, body);
        }
    }
    let mut initial = 1;
    let current = loop {
        match live.next().await {
            Some(Ok(event @ LiveEvent::Initial(_))) => {
                follow(&mut seen, &event, seed);
                initial += 1;
            }
            Some(Ok(LiveEvent::Current { shards })) => break shards,
            other => panic!("seed {seed}: {other:?} before the result was current"),
        }
    };
    assert_eq!(current.len(), 4, "seed {seed}: one revision per shard");
    assert!(
        initial > 7,
        "seed {seed}: {initial} documents: more than a page"
    );
    // The changes after the revisions `current` names bring the result to the documents as
    // they are now: each exactly once, none missed, none given twice.
    let want: BTreeMap<String, Value> = docs
        .iter()
        .filter(|(_, d)| predicate.matches(d))
        .map(|(id, d)| (id.clone(), d.clone()))
        .collect();
    let caught_up = async {
        while seen != want {
            match live.next().await {
                Some(Ok(event)) => follow(&mut seen, &event, seed),
                other => panic!("seed {seed}: live query: {other:?}"),
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), caught_up)
        .await
        .is_err()
    {
        let missing: Vec<&String> = want.keys().filter(|k| !seen.contains_key(*k)).collect();
        let extra: Vec<&String> = seen.keys().filter(|k| !want.contains_key(*k)).collect();
        panic!("seed {seed}: the result never caught up: missing {missing:?}, extra {extra:?}");
    }
}
