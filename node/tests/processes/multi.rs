//! Multi requests against real nodes: each call is answered as its single call would be, the
//! writes a shard leader receives together share one entry, and a client's concurrent calls
//! (sent together by its coalescer) each get their own result.

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_client::{ClientOptions, Consistency, Error};
use flotilla_proto::v1::documents_client::DocumentsClient;
use flotilla_proto::v1::{
    BatchOp, BatchRequest, Call, CallResult, GetRequest, MultiRequest, PutOp, batch_op, call,
    call_result,
};
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::wait::{wait_for, within};
use futures::StreamExt;
use tonic::Code;

fn put(db: &str, id: &str, json: &str, if_version: Option<u64>) -> Call {
    Call {
        call: Some(call::Call::Batch(BatchRequest {
            database: db.into(),
            ops: vec![BatchOp {
                op: Some(batch_op::Op::Put(PutOp {
                    collection: "c".into(),
                    id: id.into(),
                    json: json.into(),
                    if_version,
                })),
            }],
            request_id: None,
        })),
    }
}

fn get(db: &str, id: &str) -> Call {
    Call {
        call: Some(call::Call::Get(GetRequest {
            database: db.into(),
            collection: "c".into(),
            id: id.into(),
            consistency: 0,
            shard_key: String::new(),
            at_least: Vec::new(),
        })),
    }
}

/// (version, revision) of a successful write.
fn written(r: &CallResult) -> (u64, u64) {
    match &r.result {
        Some(call_result::Result::Batch(b)) => (b.results[0].version, b.revision),
        other => panic!("expected a write result, got {other:?}"),
    }
}

fn failed(r: &CallResult) -> (Code, String) {
    match &r.result {
        Some(call_result::Result::Error(e)) => (Code::from(e.code), e.reason.clone()),
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn raw(cluster: &Cluster, i: usize) -> DocumentsClient<tonic::transport::Channel> {
    DocumentsClient::connect(format!("http://{}", cluster.endpoint(i)))
        .await
        .expect("connect")
}

/// A 3-node cluster with database `db` and the index of its shard's leader.
async fn cluster_with(db: &str) -> (Cluster, usize) {
    let cluster = Cluster::start(3, ClusterOptions::default()).await;
    cluster.create_database(db, None, None).await;
    let leader = wait_for(
        Duration::from_secs(10),
        "the shard has a leader",
        async || cluster.shard_leader(db, 0).await,
    )
    .await;
    (cluster, leader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_of_a_multi_is_answered_on_its_own() {
    let (cluster, leader) = cluster_with("app").await;
    let mut docs = raw(&cluster, leader).await;

    let calls = vec![
        put("app", "a", r#"{"n":1}"#, None),
        // Sees the write before it in the same request.
        put("app", "a", r#"{"n":2}"#, Some(1)),
        put("app", "b", r#"{"n":1}"#, Some(5)),
        put("app", "c", r#"{"n":1}"#, None),
        put("nope", "a", "{}", None),
        get("app", "missing"),
        Call {
            call: Some(call::Call::Batch(BatchRequest {
                database: "app".into(),
                ops: vec![],
                request_id: None,
            })),
        },
        Call { call: None },
    ];
    let results = docs
        .multi(MultiRequest { calls })
        .await
        .expect("multi")
        .into_inner()
        .results;
    assert_eq!(results.len(), 8, "one result per call");
    let (a1, revision) = written(&results[0]);
    assert_eq!(a1, 1);
    assert_eq!(
        written(&results[1]),
        (2, revision),
        "writes to one shard share the entry"
    );
    assert_eq!(
        failed(&results[2]),
        (
            Code::FailedPrecondition,
            "ERROR_REASON_VERSION_MISMATCH".to_string()
        ),
        "a stale write fails on its own"
    );
    assert_eq!(written(&results[3]), (1, revision));
    assert_eq!(failed(&results[4]).0, Code::NotFound);
    assert!(matches!(
        &results[5].result,
        Some(call_result::Result::Get(g)) if g.document.is_none()
    ));
    assert_eq!(failed(&results[6]).0, Code::InvalidArgument);
    assert_eq!(failed(&results[7]).0, Code::InvalidArgument);

    // Gets of one Multi for the leader's shard pass one read barrier together, and each gets
    // its own answer.
    let results = docs
        .multi(MultiRequest {
            calls: vec![
                get("app", "a"),
                get("app", "missing"),
                get("app", "c"),
                get("app", ""),
            ],
        })
        .await
        .expect("multi of gets")
        .into_inner()
        .results;
    let version = |r: &CallResult| match &r.result {
        Some(call_result::Result::Get(g)) => g.document.as_ref().map(|d| d.version),
        other => panic!("expected a get result, got {other:?}"),
    };
    assert_eq!(version(&results[0]), Some(2));
    assert_eq!(version(&results[1]), None);
    assert_eq!(version(&results[2]), Some(1));
    assert_eq!(failed(&results[3]).0, Code::InvalidArgument);

    // What the leader answered is what everyone reads, and the change feed has the writes
    // that applied, in order.
    let client = cluster.client();
    let a = client
        .get("app", "c", "a", Consistency::Linearizable)
        .await
        .expect("get a")
        .expect("a exists");
    assert_eq!((a.version, a.json.as_str()), (2, r#"{"n":2}"#));
    assert!(
        client
            .get("app", "c", "b", Consistency::Linearizable)
            .await
            .expect("get b")
            .is_none()
    );
    let mut feed = client
        .watch("app", Some("c"), revision)
        .await
        .expect("watch");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev = within(Duration::from_secs(10), "change events", feed.next())
            .await
            .expect("feed open")
            .expect("event");
        seen.push((ev.document.id, ev.document.version, ev.document.revision));
    }
    assert_eq!(
        seen,
        vec![
            ("a".to_string(), 1, revision),
            ("a".to_string(), 2, revision),
            ("c".to_string(), 1, revision),
        ]
    );

    // A follower forwards each write on its own; every caller still gets its answer.
    let follower = (leader + 1) % 3;
    let mut via_follower = raw(&cluster, follower).await;
    let results = via_follower
        .multi(MultiRequest {
            calls: vec![
                put("app", "d", "{}", None),
                put("app", "e", "{}", None),
                get("app", "a"),
            ],
        })
        .await
        .expect("multi via a follower")
        .into_inner()
        .results;
    assert_eq!(written(&results[0]).0, 1);
    assert_eq!(written(&results[1]).0, 1);
    match &results[2].result {
        Some(call_result::Result::Get(g)) => {
            assert_eq!(g.document.as_ref().map(|d| d.version), Some(2));
        }
        other => panic!("expected a get result, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_through_one_client_each_get_their_own_result() {
    let cluster = Cluster::start(3, ClusterOptions::default()).await;
    cluster.create_database("app", None, Some(2)).await;
    for coalesce_calls in [true, false] {
        let client = cluster.client_with(ClientOptions {
            coalesce_calls,
            ..ClientOptions::default()
        });
        let prefix = if coalesce_calls { "co" } else { "single" };
        // Half the callers write a new document; the other half write with a stale version
        // and must fail alone.
        let tasks: Vec<_> = (0..48)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move {
                    let id = format!("{prefix}-{i}");
                    let stale = (i % 2 == 1).then_some(7);
                    let put = client
                        .put("app", "c", &id, &format!(r#"{{"i":{i}}}"#), stale)
                        .await;
                    let got = client.get("app", "c", &id, Consistency::Linearizable).await;
                    (i, put, got)
                })
            })
            .collect();
        let mut revisions = BTreeSet::new();
        for task in tasks {
            let (i, put, got) = task.await.expect("task");
            if i % 2 == 1 {
                assert!(
                    matches!(put, Err(Error::VersionMismatch(_))),
                    "caller {i} (coalesce {coalesce_calls}): {put:?}"
                );
                assert_eq!(got.expect("get"), None, "caller {i}: nothing written");
            } else {
                let put = put.unwrap_or_else(|e| panic!("caller {i}: {e}"));
                assert_eq!(put.version, 1);
                revisions.insert((put.shard, put.revision));
                let doc = got.expect("get").expect("written");
                assert_eq!(doc.json, format!(r#"{{"i":{i}}}"#));
                assert_eq!((doc.shard, doc.revision), (put.shard, put.revision));
            }
        }
        assert!(!revisions.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_too_large_for_one_multi_sends_the_rest_again() {
    let (cluster, leader) = cluster_with("big").await;
    // 40 documents of 900 KiB: more than the 32 MiB one answer carries.
    let body = format!(r#"{{"pad":"{}"}}"#, "x".repeat(900 * 1024));
    let client = cluster.client();
    for i in 0..40 {
        client
            .put("big", "c", &format!("d{i}"), &body, None)
            .await
            .expect("put");
    }
    let mut docs = raw(&cluster, leader)
        .await
        .max_decoding_message_size(64 << 20);
    let calls = (0..40).map(|i| get("big", &format!("d{i}"))).collect();
    let results = docs
        .multi(MultiRequest { calls })
        .await
        .expect("multi")
        .into_inner()
        .results;
    let served = results
        .iter()
        .take_while(
            |r| matches!(&r.result, Some(call_result::Result::Get(g)) if g.document.is_some()),
        )
        .count();
    assert!((20..40).contains(&served), "{served} gets served");
    for r in &results[served..] {
        assert_eq!(
            failed(r).0,
            Code::Unavailable,
            "the rest is to be asked again"
        );
    }
    // Through the client library, every caller gets its document (the rest is retried).
    let gets = (0..40).map(|i| {
        let client = client.clone();
        async move {
            client
                .get("big", "c", &format!("d{i}"), Consistency::Linearizable)
                .await
        }
    });
    for (i, got) in futures::future::join_all(gets)
        .await
        .into_iter()
        .enumerate()
    {
        let doc = got
            .unwrap_or_else(|e| panic!("get d{i}: {e}"))
            .expect("exists");
        assert_eq!(doc.json.len(), body.len());
    }
}
