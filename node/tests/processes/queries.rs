//! Queries with real node processes: results across shards (all pages concatenated) equal a
//! brute-force filter-and-sort of the documents written; a collection with a shard key places
//! documents by it and a query pinning it asks one shard; indexes are used, built over
//! existing documents while writes go on, and still exact on a replica that was down while the
//! log moved on (restart, catch-up by snapshot).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_client::{Client, ClientOptions, Consistency, Error};
use flotilla_query::{Predicate, compare_opt, parse_text};
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::wait::wait_until;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const STATUSES: [&str; 3] = ["open", "closed", "held"];

fn order(customer: u32, total: i64, status: &str) -> Value {
    json!({"customer": format!("c{customer}"), "total": total, "status": status})
}

/// The ids `filter` matches among `docs`, ordered by `order_by` then id.
pub(crate) fn brute_force(
    docs: &BTreeMap<String, Value>,
    filter: &Predicate,
    order_by: &[(&str, bool)],
) -> Vec<String> {
    let paths: Vec<(flotilla_query::Path, bool)> = order_by
        .iter()
        .map(|(p, d)| (flotilla_query::Path::parse(p).expect("path"), *d))
        .collect();
    let mut hits: Vec<(&String, &Value)> = docs.iter().filter(|(_, d)| filter.matches(d)).collect();
    hits.sort_by(|(ia, a), (ib, b)| {
        for (p, desc) in &paths {
            let o = compare_opt(p.resolve(a), p.resolve(b));
            let o = if *desc { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        ia.cmp(ib)
    });
    hits.into_iter().map(|(id, _)| id.clone()).collect()
}

async fn query_ids(
    client: &Client,
    db: &str,
    text: &str,
    order_by: &[(&str, bool)],
    page: u32,
    consistency: Consistency,
) -> Vec<String> {
    let mut q = client
        .query(db, "orders")
        .where_text(text)
        .expect("predicate")
        .page_size(page, 0)
        .consistency(consistency);
    for (p, d) in order_by {
        q = q.order_by(p, *d);
    }
    q.all()
        .await
        .unwrap_or_else(|e| panic!("query {text}: {e}"))
        .into_iter()
        .map(|d| d.id)
        .collect()
}

async fn wait_index_ready(client: &Client, db: &str) {
    wait_until(
        Duration::from_secs(60),
        "indexes built on every shard",
        async || {
            client
                .list_indexes(db, Some("orders"))
                .await
                .is_ok_and(|ix| !ix.is_empty() && ix.iter().all(|i| i.ready()))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn query_results_across_shards_equal_brute_force() {
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let cluster = Cluster::start(3, ClusterOptions::default().fast_elections()).await;
    cluster.create_database("shop", Some(1), Some(4)).await;
    let client = cluster.client();
    assert!(
        client
            .create_collection("shop", "orders", Some("/customer"))
            .await
            .expect("collection")
    );
    assert!(
        !client
            .create_collection("shop", "orders", Some("/customer"))
            .await
            .expect("same again")
    );
    match client
        .create_collection("shop", "orders", Some("/other"))
        .await
    {
        Err(Error::FailedPrecondition(_)) => {}
        other => panic!("changing the shard key must be refused: {other:?}"),
    }
    // Half the documents before the index exists, half after: the build covers the first.
    let mut docs = BTreeMap::new();
    for i in 0..240 {
        if i == 120 {
            client
                .create_index("shop", "orders", "by_status", &["/status", "/total"])
                .await
                .expect("index");
        }
        let doc = order(
            rng.random_range(0..12),
            rng.random_range(-50..500),
            STATUSES[rng.random_range(0..3)],
        );
        let id = format!("o{i:03}");
        client
            .put("shop", "orders", &id, &doc.to_string(), None)
            .await
            .expect("put");
        docs.insert(id, doc);
    }
    wait_index_ready(&client, "shop").await;

    let cases: [(&str, &[(&str, bool)]); 6] = [
        (r#"/status = "open""#, &[]),
        (r#"/status = "held" and /total > 100"#, &[("/total", true)]),
        (
            r#"/total >= 0 and /total < 50 or /status in ["closed"]"#,
            &[("/customer", false), ("/total", false)],
        ),
        (r#"/customer = "c3""#, &[("/total", false)]),
        (
            r#"not /status = "open" and /customer prefix "c1""#,
            &[("/status", false)],
        ),
        ("", &[("/total", true)]),
    ];
    for (text, order_by) in cases {
        let want = brute_force(&docs, &parse_text(text).expect("predicate"), order_by);
        for page in [7, 1000] {
            let got = query_ids(
                &client,
                "shop",
                text,
                order_by,
                page,
                Consistency::Linearizable,
            )
            .await;
            assert_eq!(
                got, want,
                "seed {seed}: {text} by {order_by:?}, pages of {page}"
            );
        }
    }

    // Each result carries its version and the revision of its last write, as a get does.
    for (id, doc) in docs.iter().take(5) {
        client
            .put("shop", "orders", id, &doc.to_string(), None)
            .await
            .expect("put again");
    }
    let all = client
        .query("shop", "orders")
        .page_size(50, 0)
        .all()
        .await
        .expect("query");
    assert_eq!(all.len(), docs.len());
    for d in all.iter().take(40) {
        let key = docs[&d.id]["customer"].to_string();
        let got = client
            .get_keyed("shop", "orders", &d.id, &key, Consistency::Linearizable)
            .await
            .expect("get")
            .expect("found");
        assert!(d.revision > 0, "{d:?}");
        assert_eq!(
            (d.version, d.revision, d.shard),
            (got.version, got.revision, got.shard),
            "{}",
            d.id
        );
    }
    assert_eq!(all.iter().filter(|d| d.version == 2).count(), 5);

    // A query pinning the shard key asks one shard; an indexed one says which index served it.
    let page = client
        .query("shop", "orders")
        .where_text(r#"/customer = "c3" and /status = "open""#)
        .expect("predicate")
        .explain()
        .page(None)
        .await
        .expect("explain");
    let explain = page.explain.expect("explain asked");
    assert!(explain.pinned);
    assert_eq!(page.shards.len(), 1, "{explain:?}");
    assert_eq!(explain.index.as_deref(), Some("by_status"));
    assert_eq!(explain.shards[0].index.as_deref(), Some("by_status"));
    let open = docs.values().filter(|d| d["status"] == "open").count() as u64;
    let counted = client
        .query("shop", "orders")
        .where_text(r#"/status = "open""#)
        .expect("predicate")
        .count()
        .await
        .expect("count");
    assert_eq!(counted, open);

    // Documents of a collection with a shard key: refused without it, found by it.
    match client
        .put("shop", "orders", "nokey", r#"{"total": 1}"#, None)
        .await
    {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("shard key"), "{m}"),
        other => panic!("a document without its shard key must be refused: {other:?}"),
    }
    let (id, doc) = docs.iter().next().expect("a document");
    let key = doc["customer"].to_string();
    let got = client
        .get_keyed("shop", "orders", id, &key, Consistency::Linearizable)
        .await
        .expect("get");
    assert_eq!(got.map(|d| d.id), Some(id.clone()));
    let anywhere = client
        .get("shop", "orders", id, Consistency::Linearizable)
        .await
        .expect("get");
    assert_eq!(anywhere.map(|d| d.id), Some(id.clone()));
    assert!(
        client
            .delete_keyed("shop", "orders", id, &key)
            .await
            .expect("delete")
    );

    // Bad input names position and reason.
    match client.query("shop", "orders").where_text("/total ~ 3") {
        Err(e) => assert!(e.to_string().contains("unknown operator"), "{e}"),
        Ok(_) => panic!("an unknown operator must be refused"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn indexes_survive_restart_and_catch_up_on_a_replica_that_was_down() {
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut cluster = Cluster::start(
        3,
        ClusterOptions::default()
            .fast_elections()
            .arg("--snapshot-threshold=50"),
    )
    .await;
    cluster.create_database("shop", Some(3), Some(1)).await;
    let client = cluster.client();
    client
        .create_index("shop", "orders", "by_status", &["/status"])
        .await
        .expect("index");
    let mut docs = BTreeMap::new();
    let put = async |client: &Client,
                     docs: &mut BTreeMap<String, Value>,
                     i: u32,
                     rng: &mut rand::rngs::StdRng| {
        let doc = order(
            rng.random_range(0..5),
            rng.random_range(0..100),
            STATUSES[rng.random_range(0..3)],
        );
        let id = format!("o{i:04}");
        client
            .put("shop", "orders", &id, &doc.to_string(), None)
            .await
            .expect("put");
        docs.insert(id, doc);
    };
    for i in 0..100 {
        put(&client, &mut docs, i, &mut rng).await;
    }
    wait_index_ready(&client, "shop").await;
    // A follower goes down while the log moves on past several snapshots.
    let leader = cluster.shard_leader("shop", 0).await.expect("leader");
    let down = (leader + 1) % 3;
    cluster.kill9(down);
    let client = Client::connect(
        cluster
            .endpoints()
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i != down)
            .map(|(_, e)| e)
            .collect(),
    )
    .expect("client");
    for i in 100..400 {
        put(&client, &mut docs, i % 250, &mut rng).await;
    }
    for i in 0..30 {
        let id = format!("o{:04}", i * 7);
        client
            .delete("shop", "orders", &id, None)
            .await
            .expect("delete");
        docs.remove(&id);
    }
    cluster.restart(down);
    cluster.wait_ready(down).await;
    // Stale reads at the restarted node are served by its own replica, through its index.
    let at_down = cluster.node_client(down, ClientOptions::default());
    let text = r#"/status = "open""#;
    let want = brute_force(&docs, &parse_text(text).expect("predicate"), &[]);
    wait_until(
        Duration::from_secs(60),
        "the restarted replica answers exactly through its index",
        async || {
            let Ok(page) = at_down
                .query("shop", "orders")
                .where_text(text)
                .expect("predicate")
                .consistency(Consistency::Stale)
                .page_size(10_000, 0)
                .explain()
                .page(None)
                .await
            else {
                return false;
            };
            let used = page
                .explain
                .as_ref()
                .and_then(|e| e.shards.first())
                .and_then(|s| s.index.clone());
            let ids: Vec<String> = page.documents.into_iter().map(|d| d.id).collect();
            used.as_deref() == Some("by_status") && ids == want
        },
    )
    .await;
    // And after every node restarts, the index is still there and exact.
    cluster.stop_all(Duration::from_secs(10)).await;
    for i in 0..3 {
        cluster.restart(i);
    }
    cluster.wait_all_ready().await;
    let client = cluster.client();
    wait_index_ready(&client, "shop").await;
    let got = query_ids(&client, "shop", text, &[], 50, Consistency::Linearizable).await;
    assert_eq!(got, want, "seed {seed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_index_built_under_concurrent_writes_ends_exact() {
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let cluster = Cluster::start(3, ClusterOptions::default().fast_elections()).await;
    cluster.create_database("shop", Some(3), Some(2)).await;
    let client = cluster.client();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut docs = BTreeMap::new();
    let ops: Vec<(String, Option<Value>)> = (0..1500)
        .map(|i| {
            let id = format!("o{:04}", if i < 600 { i } else { rng.random_range(0..800) });
            let doc = (i < 600 || rng.random_bool(0.8)).then(|| {
                order(
                    rng.random_range(0..5),
                    rng.random_range(0..100),
                    STATUSES[rng.random_range(0..3)],
                )
            });
            (id, doc)
        })
        .collect();
    let (before, during) = ops.split_at(600);
    let apply = async |client: &Client, ops: &[(String, Option<Value>)]| {
        for (id, doc) in ops {
            match doc {
                Some(d) => {
                    client
                        .put("shop", "orders", id, &d.to_string(), None)
                        .await
                        .expect("put");
                }
                None => {
                    client
                        .delete("shop", "orders", id, None)
                        .await
                        .expect("delete");
                }
            }
        }
    };
    apply(&client, before).await;
    // The index is created while a writer goes on, and built over what was there before.
    let writer = {
        let client = client.clone();
        let during = during.to_vec();
        tokio::spawn(async move { apply(&client, &during).await })
    };
    client
        .create_index("shop", "orders", "by_status", &["/status", "/total"])
        .await
        .expect("index");
    writer.await.expect("writer");
    for (id, doc) in &ops {
        match doc {
            Some(d) => docs.insert(id.clone(), d.clone()),
            None => docs.remove(id),
        };
    }
    wait_index_ready(&client, "shop").await;
    for text in [
        r#"/status = "open""#,
        r#"/status = "held" and /total >= 50"#,
        r#"/status in ["open", "closed"] and /total < 10"#,
    ] {
        let want = brute_force(&docs, &parse_text(text).expect("predicate"), &[]);
        let page = client
            .query("shop", "orders")
            .where_text(text)
            .expect("predicate")
            .page_size(10_000, 0)
            .explain()
            .page(None)
            .await
            .expect("query");
        let explain = page.explain.expect("explain");
        assert!(
            explain
                .shards
                .iter()
                .all(|s| s.index.as_deref() == Some("by_status")),
            "{explain:?}"
        );
        let ids: Vec<String> = page.documents.into_iter().map(|d| d.id).collect();
        assert_eq!(ids, want, "seed {seed}: {text}");
    }
}
