//! The document API against a real node: malformed requests get the right status codes and the
//! node keeps serving; batches, paging and watches behave as documented.

use std::time::Duration;

use flotilla_client::{BatchOp, ChangeKind, Consistency, Error};
use flotilla_proto::v1::documents_client::DocumentsClient;
use flotilla_proto::v1::{BatchRequest, GetRequest, PutRequest};
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::wait::within;
use futures::StreamExt;
use tonic::Code;

async fn raw(cluster: &Cluster) -> DocumentsClient<tonic::transport::Channel> {
    DocumentsClient::connect(format!("http://{}", cluster.endpoint(0)))
        .await
        .expect("connect")
}

fn put(db: &str, coll: &str, id: &str, json: &str) -> PutRequest {
    PutRequest {
        database: db.into(),
        collection: coll.into(),
        id: id.into(),
        json: json.into(),
        if_version: None,
        request_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_clear_statuses_and_the_node_keeps_serving() {
    let cluster = Cluster::start(3, ClusterOptions::default().max_document_bytes(1024)).await;
    cluster.create_database("app", None, None).await;
    let mut docs = raw(&cluster).await;

    let cases: Vec<(&str, PutRequest, Code)> = vec![
        (
            "bad JSON body",
            put("app", "c", "a", "{not json"),
            Code::InvalidArgument,
        ),
        ("empty id", put("app", "c", "", "{}"), Code::InvalidArgument),
        (
            "empty collection",
            put("app", "", "a", "{}"),
            Code::InvalidArgument,
        ),
        (
            "empty database",
            put("", "c", "a", "{}"),
            Code::InvalidArgument,
        ),
        (
            "unknown database",
            put("nope", "c", "a", "{}"),
            Code::NotFound,
        ),
        (
            "document over the configured limit",
            put(
                "app",
                "c",
                "big",
                &format!(r#"{{"pad":"{}"}}"#, "x".repeat(2048)),
            ),
            Code::ResourceExhausted,
        ),
    ];
    for (what, req, code) in cases {
        let status = docs.put(req).await.expect_err(what);
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(
            !status.message().is_empty(),
            "{what}: the status explains itself"
        );
    }

    // Optimistic concurrency: a stale version is FailedPrecondition and changes nothing.
    let first = docs
        .put(put("app", "c", "v", r#"{"n":1}"#))
        .await
        .expect("put")
        .into_inner();
    assert_eq!(first.version, 1);
    let mut stale = put("app", "c", "v", r#"{"n":2}"#);
    stale.if_version = Some(7);
    let status = docs.put(stale).await.expect_err("version mismatch");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let mut create_only = put("app", "c", "v", r#"{"n":3}"#);
    create_only.if_version = Some(0);
    assert_eq!(
        docs.put(create_only).await.expect_err("exists").code(),
        Code::FailedPrecondition
    );

    let empty = docs
        .batch(BatchRequest {
            database: "app".into(),
            ops: vec![],
            request_id: None,
        })
        .await
        .expect_err("empty batch");
    assert_eq!(empty.code(), Code::InvalidArgument);

    // Still serving, and nothing acknowledged was lost.
    let got = docs
        .get(GetRequest {
            database: "app".into(),
            collection: "c".into(),
            id: "v".into(),
            consistency: 0,
            shard_key: String::new(),
            at_least: Vec::new(),
        })
        .await
        .expect("get")
        .into_inner()
        .document
        .expect("document exists");
    assert_eq!((got.version, got.json.as_str()), (1, r#"{"n":1}"#));
    let ok = docs
        .put(put("app", "c", "after", "[1,2,3]"))
        .await
        .expect("a good request works");
    assert_eq!(ok.into_inner().version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_atomic_lists_page_and_watches_stream_changes() {
    let cluster = Cluster::start(3, ClusterOptions::default()).await;
    cluster.create_database("app", None, Some(1)).await;
    let client = cluster.client();
    let mut watch = client.watch("app", Some("users"), 0).await.expect("watch");

    let outcome = client
        .batch(
            "app",
            vec![
                BatchOp::put("users", "a", r#"{"n":1}"#),
                BatchOp::put("users", "b", r#"{"n":2}"#),
                BatchOp::put("orders", "o1", r#"{"n":3}"#),
            ],
        )
        .await
        .expect("batch");
    assert_eq!(outcome.results.len(), 3);

    // One stale condition rejects the whole batch.
    let err = client
        .batch(
            "app",
            vec![
                BatchOp::put("users", "c", r#"{"n":4}"#),
                BatchOp::delete("users", "a").if_version(9),
            ],
        )
        .await
        .expect_err("stale batch");
    assert!(matches!(err, Error::VersionMismatch(_)), "{err:?}");
    assert_eq!(
        client
            .get("app", "users", "c", Consistency::Linearizable)
            .await
            .unwrap(),
        None
    );

    for i in 0..25 {
        client
            .put("app", "users", &format!("p{i:02}"), "{}", None)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .list("app", "users", "p", 10, token.as_deref())
            .await
            .unwrap();
        assert!(page.documents.len() <= 10);
        seen.extend(page.documents.into_iter().map(|d| d.id));
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("p{i:02}")).collect();
    assert_eq!(seen, expected, "paging returns every id once, in order");

    // The watch saw the batch's two user documents first (orders are filtered out).
    let first_two = within(Duration::from_secs(10), "watch events", async {
        let mut ids = Vec::new();
        while ids.len() < 2 {
            let ev = watch.next().await.expect("stream open").expect("event");
            assert_eq!(ev.kind, ChangeKind::Put);
            ids.push(ev.document.id);
        }
        ids
    })
    .await;
    assert_eq!(first_two, vec!["a".to_string(), "b".to_string()]);

    // A watch from an old revision replays history.
    let mut replay = client
        .watch("app", Some("orders"), 1)
        .await
        .expect("watch from revision 1");
    let ev = within(Duration::from_secs(10), "replayed event", replay.next())
        .await
        .expect("open")
        .expect("event");
    assert_eq!(ev.document.id, "o1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_spread_over_shards_and_listing_gathers_them() {
    let cluster = Cluster::start(3, ClusterOptions::default()).await;
    cluster.create_database("sharded", Some(2), Some(4)).await;
    let client = cluster.client();
    let mut shards = std::collections::BTreeSet::new();
    for i in 0..40 {
        let r = client
            .put("sharded", "c", &format!("k{i:02}"), "{}", None)
            .await
            .unwrap();
        shards.insert(r.shard);
    }
    assert!(shards.len() > 1, "ids hash onto several shards: {shards:?}");
    let all = client.list("sharded", "c", "", 100, None).await.unwrap();
    let ids: Vec<String> = all.documents.into_iter().map(|d| d.id).collect();
    let expected: Vec<String> = (0..40).map(|i| format!("k{i:02}")).collect();
    assert_eq!(ids, expected);
    let cross = client
        .batch(
            "sharded",
            (0..40)
                .map(|i| BatchOp::delete("c", format!("k{i:02}")))
                .collect(),
        )
        .await
        .expect("a batch over several shards runs as a transaction");
    assert!(cross.results.iter().all(|r| r.deleted), "{cross:?}");
    let left = client.list("sharded", "c", "", 100, None).await.unwrap();
    assert!(left.documents.is_empty(), "every shard applied its part");
}
