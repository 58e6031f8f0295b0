//! Queries inside transactions against real nodes: a query sees the transaction's own
//! writes; two transactions that each query a predicate and then insert a document matching
//! it (write skew through a phantom) never both commit; a read-only transaction whose query
//! met a later insert aborts; a query that finds a document changed since the transaction
//! read it aborts the transaction. (Over HTTP: `http_api.rs`.)

use std::time::Duration;

use flotilla_client::{Client, Consistency, Error, Field, Predicate};
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::wait::within;

const DB: &str = "q";

fn slot(n: u64) -> Predicate {
    Field::new("/slot").expect("a path").eq(n)
}

/// A cluster of 3 with database `q` on 4 shards.
async fn cluster() -> Cluster {
    let cluster = Cluster::start(3, ClusterOptions::default()).await;
    cluster.create_database(DB, Some(3), Some(4)).await;
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_in_a_transaction_sees_its_own_writes_and_nothing_uncommitted() {
    let cluster = cluster().await;
    let client = cluster.client();
    for (id, s) in [("r1", 1), ("r2", 1), ("r3", 2)] {
        client
            .put(DB, "rooms", id, &format!("{{\"slot\":{s}}}"), None)
            .await
            .expect("a put");
    }
    let txn = client.begin(DB, None).await.expect("begin");
    let ids =
        |docs: &[flotilla_client::Document]| docs.iter().map(|d| d.id.clone()).collect::<Vec<_>>();
    let found = txn.query("rooms", &slot(1)).await.expect("query");
    assert_eq!(ids(&found), ["r1", "r2"]);
    // Its own insert, update out of the predicate and delete show at once.
    txn.put("rooms", "r0", "{\"slot\":1}", None)
        .await
        .expect("put");
    txn.put("rooms", "r3", "{\"slot\":1}", None)
        .await
        .expect("put");
    txn.put("rooms", "r1", "{\"slot\":5}", None)
        .await
        .expect("put");
    txn.delete("rooms", "r2", None).await.expect("delete");
    let found = txn.query("rooms", &slot(1)).await.expect("query");
    assert_eq!(ids(&found), ["r0", "r3"]);
    assert_eq!(found[0].version, 1, "an insert's version to be");
    // Another client sees none of it before the commit.
    let other = client.begin(DB, None).await.expect("begin");
    let outside = other.query("rooms", &slot(1)).await.expect("query");
    assert_eq!(ids(&outside), ["r1", "r2"]);
    other.rollback().await.expect("rollback");
    txn.commit().await.expect("commit");
    let after = client.begin(DB, None).await.expect("begin");
    assert_eq!(
        ids(&after.query("rooms", &slot(1)).await.expect("query")),
        ["r0", "r3"]
    );
    after.commit().await.expect("a read-only commit");
    // A query that finds a document changed since the transaction read it ends the
    // transaction: it is aborted, not left open.
    let stale = client.begin(DB, None).await.expect("begin");
    stale.get("rooms", "r0").await.expect("get");
    client
        .put(DB, "rooms", "r0", "{\"slot\":1,\"moved\":true}", None)
        .await
        .expect("a put");
    let met = stale.query("rooms", &slot(1)).await;
    assert!(matches!(met, Err(Error::TxnConflict(_))), "{met:?}");
    let ended = stale.commit().await;
    assert!(
        matches!(ended, Err(Error::TxnAborted(_))),
        "the transaction is no longer open: {ended:?}"
    );
    // A malformed selector is refused.
    let bad = Field::new("/slot")
        .expect("a path")
        .gt(serde_json::json!([1]));
    let refused = after_bad(&client, &bad).await;
    assert!(
        matches!(refused, Err(Error::InvalidArgument(_))),
        "{refused:?}"
    );
}

async fn after_bad(client: &Client, p: &Predicate) -> flotilla_client::Result<()> {
    let txn = client.begin(DB, None).await?;
    txn.query("rooms", p).await.map(|_| ())
}

/// Two transactions query slot `n` (empty), then each books it with a document of its own
/// (ids on different shards, so that neither write meets the other's); committed `both_at_once`
/// or one after the other. Returns how many committed.
async fn book_twice(client: &Client, n: u64, both_at_once: bool) -> usize {
    let (t1, t2) = (
        client.begin(DB, None).await.expect("begin"),
        client.begin(DB, None).await.expect("begin"),
    );
    for t in [&t1, &t2] {
        assert!(
            t.query("bookings", &slot(n))
                .await
                .expect("query")
                .is_empty()
        );
    }
    let body = format!("{{\"slot\":{n}}}");
    t1.put("bookings", &format!("b{n}-x"), &body, None)
        .await
        .expect("put");
    t2.put("bookings", &format!("b{n}-y"), &body, None)
        .await
        .expect("put");
    let outcomes = if both_at_once {
        let (a, b) = tokio::join!(t1.commit(), t2.commit());
        vec![a, b]
    } else {
        vec![t1.commit().await, t2.commit().await]
    };
    let mut committed = 0;
    for o in outcomes {
        match o {
            Ok(_) => committed += 1,
            Err(Error::TxnConflict(_)) => {}
            Err(e) => panic!("slot {n}: {e}"),
        }
    }
    committed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_transactions_that_query_then_insert_a_match_never_both_commit() {
    let cluster = cluster().await;
    let client = cluster.client();
    for n in 0..6 {
        let committed = within(
            Duration::from_secs(30),
            "two bookings",
            book_twice(&client, n, n % 2 == 1),
        )
        .await;
        assert!(committed <= 1, "slot {n}: both bookings committed");
        if n % 2 == 0 {
            assert_eq!(
                committed, 1,
                "slot {n}: one after the other, the first commits"
            );
        }
        let txn = client.begin(DB, None).await.expect("begin");
        let booked = txn.query("bookings", &slot(n)).await.expect("query");
        assert_eq!(booked.len(), committed, "slot {n}: {booked:?}");
        txn.rollback().await.expect("rollback");
    }
    // A read-only transaction whose query a later insert changed does not commit either.
    let reader = client.begin(DB, None).await.expect("begin");
    assert!(
        reader
            .query("bookings", &slot(99))
            .await
            .expect("query")
            .is_empty()
    );
    client
        .put(DB, "bookings", "late", "{\"slot\":99}", None)
        .await
        .expect("a plain put");
    let late = reader.commit().await;
    assert!(matches!(late, Err(Error::TxnConflict(_))), "{late:?}");
    let d = client
        .get(DB, "bookings", "late", Consistency::Linearizable)
        .await
        .expect("get");
    assert!(d.is_some());
}
