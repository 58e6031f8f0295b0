//! A randomized property test of queries and indexes on real node processes: random puts and
//! deletes of random nested documents and random index creates and drops, in phases, each
//! followed by a fault (a follower down while the log moves past several snapshots, then
//! restarted; every node restarted; a replica moved to a new node, which installs a snapshot).
//! After each phase, every query of a random sample (predicates, orderings, limits, page sizes;
//! all pages at linearizable consistency) equals a brute-force filter-and-sort of the model, and
//! every index on every replica equals a rebuild from that replica's documents
//! (`Admin.CheckIndexes`).
//!
//! Bounded for CI (three phases); `FLOTILLA_QUERY_PROPS_PHASES=30` runs longer, and
//! `FLOTILLA_SEED` replays the seed a failure printed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use flotilla_client::{Client, ClientOptions, Consistency};
use flotilla_query::parse_text;
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::wait::wait_until;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

use crate::queries::brute_force;

const DB: &str = "props";
const COLL: &str = "orders";
const SHARDS: u32 = 2;
/// Phases run (each: writes, a fault, the checks); three unless the variable says more.
const PHASES_ENV: &str = "FLOTILLA_QUERY_PROPS_PHASES";
const OPS_PER_PHASE: usize = 80;
const QUERIES_PER_PHASE: usize = 12;
/// The indexes the test creates and drops.
const INDEXES: [(&str, &[&str]); 4] = [
    ("by_a", &["/a"]),
    ("by_c", &["/b/c"]),
    ("by_a_c", &["/a", "/b/c"]),
    ("by_d", &["/b/d"]),
];
const WORDS: [&str; 4] = ["x", "xy", "y", "z"];

fn random_doc(rng: &mut StdRng) -> Value {
    let mut doc = Map::new();
    if rng.random_bool(0.9) {
        doc.insert("a".into(), json!(rng.random_range(0..6)));
    }
    if rng.random_bool(0.85) {
        let mut b = Map::new();
        if rng.random_bool(0.85) {
            b.insert("c".into(), json!(WORDS[rng.random_range(0..4)]));
        }
        if rng.random_bool(0.6) {
            b.insert("d".into(), json!(f64::from(rng.random_range(-4..4)) / 2.0));
        }
        doc.insert("b".into(), Value::Object(b));
    }
    match rng.random_range(0..4) {
        0 => {}
        1 => {
            doc.insert("e".into(), Value::Null);
        }
        2 => {
            doc.insert("e".into(), json!(rng.random_bool(0.5)));
        }
        _ => {
            doc.insert("e".into(), json!([rng.random_range(0..3), "t"]));
        }
    }
    Value::Object(doc)
}

fn atom(rng: &mut StdRng) -> String {
    let n = rng.random_range(0..6);
    let word = WORDS[rng.random_range(0..4)];
    match rng.random_range(0..8) {
        0 => format!("/a = {n}"),
        1 => format!("/a > {n}"),
        2 => format!("/a <= {n}"),
        3 => format!("/b/c = \"{word}\""),
        4 => format!(
            "/b/c in [\"{word}\", \"{}\"]",
            WORDS[rng.random_range(0..4)]
        ),
        5 => "/e exists".to_string(),
        6 => "/b/c prefix \"x\"".to_string(),
        _ => format!("/b/d >= {}", f64::from(rng.random_range(-4..4)) / 2.0),
    }
}

/// A random predicate in the text form ("" matches everything).
fn predicate(rng: &mut StdRng) -> String {
    match rng.random_range(0..6) {
        0 => String::new(),
        1 | 2 => atom(rng),
        3 => format!("{} and {}", atom(rng), atom(rng)),
        4 => format!("{} or {}", atom(rng), atom(rng)),
        _ => format!("not ({})", atom(rng)),
    }
}

fn ordering(rng: &mut StdRng) -> Vec<(&'static str, bool)> {
    match rng.random_range(0..4) {
        0 => vec![],
        1 => vec![("/a", rng.random_bool(0.5))],
        2 => vec![("/b/c", rng.random_bool(0.5))],
        _ => vec![("/a", rng.random_bool(0.5)), ("/b/d", rng.random_bool(0.5))],
    }
}

/// The model and what the test has declared.
struct Run {
    seed: u64,
    rng: StdRng,
    docs: BTreeMap<String, Value>,
    indexes: BTreeSet<&'static str>,
}

impl Run {
    /// Random writes and index changes through `client`.
    async fn operate(&mut self, client: &Client, ops: usize) {
        for _ in 0..ops {
            let id = format!("d{:03}", self.rng.random_range(0..150));
            let roll = self.rng.random_range(0..100);
            if roll < 4 {
                let (name, paths) = INDEXES[self.rng.random_range(0..INDEXES.len())];
                if self.indexes.remove(name) {
                    client
                        .drop_index(DB, COLL, name)
                        .await
                        .unwrap_or_else(|e| panic!("seed {}: drop {name}: {e}", self.seed));
                } else {
                    client
                        .create_index(DB, COLL, name, paths)
                        .await
                        .unwrap_or_else(|e| panic!("seed {}: create {name}: {e}", self.seed));
                    self.indexes.insert(name);
                }
            } else if roll < 25 {
                client
                    .delete(DB, COLL, &id, None)
                    .await
                    .unwrap_or_else(|e| panic!("seed {}: delete {id}: {e}", self.seed));
                self.docs.remove(&id);
            } else {
                let doc = random_doc(&mut self.rng);
                client
                    .put(DB, COLL, &id, &doc.to_string(), None)
                    .await
                    .unwrap_or_else(|e| panic!("seed {}: put {id}: {e}", self.seed));
                self.docs.insert(id, doc);
            }
        }
    }

    /// Random queries, all pages at linearizable consistency, against the brute force.
    async fn check_queries(&mut self, client: &Client, phase: usize) {
        for _ in 0..QUERIES_PER_PHASE {
            let text = predicate(&mut self.rng);
            let order_by = ordering(&mut self.rng);
            let limit = self
                .rng
                .random_bool(0.4)
                .then(|| self.rng.random_range(1..30_u64));
            let page = self.rng.random_range(3..25);
            let filter = parse_text(if text.is_empty() { "true" } else { &text })
                .unwrap_or_else(|e| panic!("seed {}: {text}: {e}", self.seed));
            let mut want = brute_force(&self.docs, &filter, &order_by);
            if let Some(l) = limit {
                want.truncate(l as usize);
            }
            let mut q = client
                .query(DB, COLL)
                .page_size(page, 0)
                .consistency(Consistency::Linearizable);
            if !text.is_empty() {
                q = q
                    .where_text(&text)
                    .unwrap_or_else(|e| panic!("seed {}: {text}: {e}", self.seed));
            }
            for (p, d) in &order_by {
                q = q.order_by(p, *d);
            }
            if let Some(l) = limit {
                q = q.limit(l);
            }
            let got = q
                .all()
                .await
                .unwrap_or_else(|e| panic!("seed {}: query {text}: {e}", self.seed));
            let ids: Vec<String> = got.iter().map(|d| d.id.clone()).collect();
            assert_eq!(
                ids, want,
                "seed {}, phase {phase}: {text:?} by {order_by:?}, limit {limit:?}, pages of {page}",
                self.seed
            );
            for d in &got {
                let body: Value = serde_json::from_str(&d.json).unwrap_or(Value::Null);
                assert_eq!(Some(&body), self.docs.get(&d.id), "seed {}", self.seed);
                assert!(d.revision > 0, "seed {}: {d:?}", self.seed);
            }
        }
    }
}

/// What keeps the replicas' indexes from being exact now: an index missing or not built on
/// a replica, one that differs from its rebuild, or a shard with fewer than three replicas.
async fn index_mismatch(clients: &[Client], run: &Run) -> Option<String> {
    for shard in 0..SHARDS {
        let mut replicas = 0;
        for client in clients {
            let Ok((node, revision, checks)) = client.check_indexes(DB, shard).await else {
                continue;
            };
            replicas += 1;
            let names: BTreeSet<&str> = checks.iter().map(|c| c.name.as_str()).collect();
            if names != run.indexes || !checks.iter().all(|c| c.exact()) {
                return Some(format!(
                    "shard {shard}, node {node} at revision {revision}: {checks:?}"
                ));
            }
        }
        if replicas < 3 {
            return Some(format!("shard {shard}: {replicas} replicas answered"));
        }
    }
    None
}

/// Waits until every replica of every shard holds each index the test declared, built and
/// equal to its rebuild (a replica that restarted or installed a snapshot builds them again).
async fn check_indexes(cluster: &Cluster, run: &Run, phase: usize) {
    let clients: Vec<Client> = (0..cluster.len())
        .map(|i| cluster.node_client(i, ClientOptions::default()))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Some(why) = index_mismatch(&clients, run).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "seed {}, phase {phase}: indexes not exact after 60 s: {why}",
            run.seed
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client of every node but `down`.
fn client_without(cluster: &Cluster, down: usize) -> Client {
    let endpoints = (0..cluster.len())
        .filter(|i| *i != down)
        .map(|i| cluster.endpoint(i))
        .collect();
    Client::connect(endpoints).unwrap_or_else(|e| panic!("client: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_and_indexes_equal_brute_force_through_restarts_snapshots_and_moves() {
    let seed = flotilla_testkit::schedule::seed();
    let phases: usize = std::env::var(PHASES_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut cluster = Cluster::start(
        3,
        ClusterOptions::default()
            .fast_elections()
            .snapshot_threshold(40),
    )
    .await;
    cluster.create_database(DB, Some(3), Some(SHARDS)).await;
    let mut run = Run {
        seed,
        rng: StdRng::seed_from_u64(seed),
        docs: BTreeMap::new(),
        indexes: BTreeSet::new(),
    };
    let mut moved = false;
    for phase in 0..phases {
        let client = cluster.client();
        run.operate(&client, OPS_PER_PHASE).await;
        match phase % 3 {
            // A follower of shard 0 misses writes past several snapshots, then installs one.
            0 => {
                let leader = cluster.shard_leader(DB, 0).await.unwrap_or(0);
                let down = (leader + 1 + run.rng.random_range(0..2)) % cluster.len();
                cluster.kill9(down);
                run.operate(&client_without(&cluster, down), OPS_PER_PHASE)
                    .await;
                cluster.restart(down);
                cluster.wait_ready(down).await;
            }
            // Every node restarts.
            1 => {
                cluster.stop_all(Duration::from_secs(10)).await;
                for i in 0..cluster.len() {
                    cluster.restart(i);
                }
                cluster.wait_all_ready().await;
            }
            // A replica of shard 1 moves to a new node (which installs a snapshot).
            _ if !moved => {
                moved = true;
                let new = cluster.add_node().await;
                let new_id = cluster.node_id(new).await;
                let old_id = cluster.node_id(0).await;
                client
                    .add_replica(DB, Some(1), new_id, None)
                    .await
                    .unwrap_or_else(|e| panic!("seed {seed}: add replica: {e}"));
                wait_until(
                    Duration::from_secs(60),
                    "the old replica is removed once the new one caught up",
                    async || {
                        client
                            .remove_replica(DB, Some(1), old_id, false)
                            .await
                            .is_ok()
                    },
                )
                .await;
            }
            _ => run.operate(&client, OPS_PER_PHASE).await,
        }
        let client = cluster.client();
        run.check_queries(&client, phase).await;
        check_indexes(&cluster, &run, phase).await;
        println!(
            "phase {phase}: {} documents, indexes {:?}: queries and indexes exact",
            run.docs.len(),
            run.indexes
        );
    }
}
