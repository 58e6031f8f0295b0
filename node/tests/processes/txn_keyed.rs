//! Transactions over a collection declared with a shard key: documents are placed by the
//! hash of their owner, not of their id, and a transaction places them as plain calls do (a
//! put by its body, a get or delete by the shard key value it names). Transfers between
//! accounts on several shards keep the total.

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_client::{Client, ClientOptions, Consistency, Error};
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::schedule::seed;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DB: &str = "keyed";
const OWNERS: usize = 8;
const INITIAL: i64 = 100;

fn owner(i: usize) -> String {
    format!("o{i}")
}

fn id(i: usize) -> String {
    format!("a{i}")
}

/// The shard key value of owner `i`, as JSON text.
fn key(i: usize) -> String {
    format!("\"{}\"", owner(i))
}

fn body(i: usize, balance: i64) -> String {
    format!("{{\"owner\":\"{}\",\"balance\":{balance}}}", owner(i))
}

fn balance_of(json: &str) -> i64 {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v["balance"].as_i64())
        .unwrap_or_else(|| panic!("not an account: {json}"))
}

/// Moves `amount` from owner `from`'s account to owner `to`'s; false when `from` has too
/// little.
async fn transfer(client: &Client, from: usize, to: usize, amount: i64) -> Result<bool, Error> {
    client
        .transaction(DB, |txn| async move {
            let a = txn.get_keyed("acct", &id(from), &key(from)).await?;
            let b = txn.get_keyed("acct", &id(to), &key(to)).await?;
            let (Some(a), Some(b)) = (a, b) else {
                return Err(Error::InvalidArgument("an account is missing".into()));
            };
            let (a, b) = (balance_of(&a.json), balance_of(&b.json));
            if a < amount {
                return Ok(false);
            }
            txn.put("acct", &id(from), &body(from, a - amount), None)
                .await?;
            txn.put("acct", &id(to), &body(to, b + amount), None)
                .await?;
            Ok(true)
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_in_a_collection_with_a_shard_key_keep_the_total_over_several_shards() {
    let seed = seed();
    let cluster = Cluster::start(3, ClusterOptions::default()).await;
    cluster.create_database(DB, Some(3), Some(4)).await;
    let client = cluster.client();
    client
        .create_collection(DB, "acct", Some("/owner"))
        .await
        .expect("a collection with a shard key");
    // Placed by owner: the shards the plain API put them on are where transactions look.
    let mut shards = BTreeSet::new();
    for i in 0..OWNERS {
        let r = client
            .put(DB, "acct", &id(i), &body(i, INITIAL), None)
            .await
            .expect("opening an account");
        shards.insert(r.shard);
    }
    assert!(shards.len() >= 2, "accounts spread over shards {shards:?}");

    // A get or delete that does not name the shard key value is refused, and names why.
    let txn = client.begin(DB, None).await.expect("begin");
    let refused = txn.get("acct", &id(0)).await;
    assert!(
        matches!(&refused, Err(Error::InvalidArgument(m)) if m.contains("shard_key")),
        "{refused:?}"
    );
    let refused = txn.delete("acct", &id(0), None).await;
    assert!(
        matches!(&refused, Err(Error::InvalidArgument(_))),
        "{refused:?}"
    );
    let refused = txn.put("acct", "x", "{\"balance\":1}", None).await;
    assert!(
        matches!(&refused, Err(Error::InvalidArgument(_))),
        "a put without its shard key: {refused:?}"
    );
    txn.rollback().await.expect("rollback");

    // Concurrent transfers from two clients, coordinated by different nodes.
    let mut workers = Vec::new();
    for c in 0..2 {
        let mut endpoints = cluster.endpoints();
        endpoints.rotate_left(c);
        let client = Client::with_options(
            endpoints,
            ClientOptions {
                total_timeout: Duration::from_secs(30),
                ..ClientOptions::default()
            },
        )
        .expect("a client");
        workers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ (c as u64 + 1));
            let mut committed = 0;
            for _ in 0..10 {
                let from = rng.random_range(0..OWNERS);
                let to = (from + rng.random_range(1..OWNERS)) % OWNERS;
                match transfer(&client, from, to, rng.random_range(1..30)).await {
                    Ok(true) => committed += 1,
                    Ok(false) | Err(Error::TxnConflict(_) | Error::TxnAborted(_)) => {}
                    Err(e) => panic!("transfer {from} -> {to}: {e} (seed {seed})"),
                }
            }
            committed
        }));
    }
    let mut committed = 0;
    for w in workers {
        committed += w.await.expect("a transfer client");
    }
    assert!(
        committed >= 5,
        "most transfers commit: {committed} (seed {seed})"
    );

    // Read back through the plain API, one shard asked per account: the total holds; then a
    // transaction deletes one account, named by its shard key value.
    let mut total = 0;
    for i in 0..OWNERS {
        let d = client
            .get_keyed(DB, "acct", &id(i), &key(i), Consistency::Linearizable)
            .await
            .expect("get")
            .expect("account");
        total += balance_of(&d.json);
    }
    assert_eq!(total, INITIAL * OWNERS as i64, "the total (seed {seed})");
    let txn = client.begin(DB, None).await.expect("begin");
    let zero = txn
        .get_keyed("acct", &id(0), &key(0))
        .await
        .expect("get")
        .expect("account 0");
    txn.delete_keyed("acct", &id(0), &key(0), Some(zero.version))
        .await
        .expect("delete");
    assert_eq!(
        txn.get_keyed("acct", &id(0), &key(0)).await.expect("get"),
        None,
        "its own delete"
    );
    assert!(
        txn.get_keyed("acct", &id(1), &key(1))
            .await
            .expect("get")
            .is_some()
    );
    txn.commit().await.expect("commit");
    for i in 0..OWNERS {
        let d = client
            .get_keyed(DB, "acct", &id(i), &key(i), Consistency::Linearizable)
            .await
            .expect("get");
        assert_eq!(d.is_none(), i == 0, "owner {i}");
    }
}
