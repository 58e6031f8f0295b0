//! Exactly-once writes against real processes. The moment at which a write's outcome is unknown
//! to everyone who sent it is made to happen on purpose: the shard leader dies (as kill -9
//! would) right after applying a forwarded write and before answering it (the node's test-only
//! crash point, armed by a file in its data directory). Sent again, as a client that retries
//! writes does, a write without a request id applies a second time; with one, the retry is
//! answered with the first outcome.

use std::time::Duration;

use flotilla_client::{ClientOptions, Consistency};
use flotilla_node::crash_point::TRIGGER;
use flotilla_proto::v1::documents_client::DocumentsClient;
use flotilla_proto::v1::{PutRequest, PutResponse, RequestId};
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::progress;
use flotilla_testkit::wait::{wait_for, wait_until};
use tokio::time::Instant;
use tonic::Code;

const DB: &str = "once";

/// Time for the dead leader's successor to be elected and take writes.
const FAILOVER: Duration = Duration::from_secs(30);

async fn cluster() -> Cluster {
    let options = ClusterOptions::default()
        .fast_elections()
        .arg("--test-crash-point");
    let cluster = Cluster::start(3, options).await;
    cluster.create_database(DB, Some(3), None).await;
    cluster
}

async fn shard_leader(cluster: &Cluster) -> usize {
    wait_for(FAILOVER, "a shard leader", async || {
        cluster.shard_leader(DB, 0).await
    })
    .await
}

/// Arms the crash point of the shard leader, then waits until it has died of it. Returns the
/// leader, and a follower for writes to enter through (so that they are forwarded).
async fn arm_leader(cluster: &Cluster) -> (usize, usize) {
    let leader = shard_leader(cluster).await;
    let trigger = cluster.node(leader).data_dir.join(TRIGGER);
    std::fs::write(&trigger, b"").unwrap_or_else(|e| panic!("{}: {e}", trigger.display()));
    (leader, (leader + 1) % cluster.len())
}

/// Reaps the leader that died at its crash point, restarts it and waits until it is ready.
async fn bring_back(cluster: &mut Cluster, leader: usize) {
    wait_until(
        FAILOVER,
        &format!("node {leader} dies at its crash point"),
        async || !cluster.node_mut(leader).is_running(),
    )
    .await;
    cluster.kill9(leader);
    cluster.restart(leader);
    cluster.wait_ready(leader).await;
}

fn put(id: &str, request_id: Option<RequestId>) -> PutRequest {
    PutRequest {
        database: DB.into(),
        collection: "c".into(),
        id: id.into(),
        json: r#"{"n":1}"#.into(),
        if_version: None,
        request_id,
    }
}

/// Sends `req` to node `entry` until it is answered, as a client that retries writes whose
/// outcome is unknown does. Returns the answer and the attempts it took.
async fn send_until_answered(
    cluster: &Cluster,
    entry: usize,
    req: PutRequest,
) -> (PutResponse, u32) {
    let deadline = Instant::now() + FAILOVER;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let sent = async {
            let mut docs =
                DocumentsClient::connect(format!("http://{}", cluster.endpoint(entry))).await?;
            Ok::<_, Box<dyn std::error::Error>>(docs.put(req.clone()).await)
        };
        match sent.await {
            Ok(Ok(answer)) => return (answer.into_inner(), attempts),
            Ok(Err(s))
                if matches!(
                    s.code(),
                    Code::Aborted | Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
                ) =>
            {
                progress(format!(
                    "attempt {attempts}: {:?} {}",
                    s.code(),
                    s.message()
                ));
            }
            Ok(Err(s)) => panic!("attempt {attempts}: final error {s:?}"),
            Err(e) => progress(format!("attempt {attempts}: {e}")),
        }
        assert!(
            Instant::now() < deadline,
            "no answer within {FAILOVER:?}\n{}",
            cluster.describe()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn version_of(cluster: &Cluster, id: &str) -> (u64, u64) {
    let doc = cluster
        .client()
        .get(DB, "c", id, Consistency::Linearizable)
        .await
        .expect("read")
        .expect("the document exists");
    (doc.version, doc.revision)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_retried_after_its_leader_died_unanswered_applies_once_only_with_a_request_id() {
    let mut cluster = cluster().await;

    // Without a request id: the double apply that request ids exist for.
    let (leader, entry) = arm_leader(&cluster).await;
    let (answer, attempts) = send_until_answered(&cluster, entry, put("bare", None)).await;
    bring_back(&mut cluster, leader).await;
    assert!(
        attempts > 1,
        "the first attempt should have died with the leader"
    );
    assert_eq!(
        answer.version, 2,
        "a write without a request id, sent once more after its leader died, applies twice"
    );
    assert_eq!(version_of(&cluster, "bare").await.0, 2);
    progress("without a request id: applied twice (version 2)");

    // With a request id: the retry is answered with the first outcome.
    let (leader, entry) = arm_leader(&cluster).await;
    let id = RequestId { client: 42, seq: 1 };
    let (answer, attempts) = send_until_answered(&cluster, entry, put("named", Some(id))).await;
    bring_back(&mut cluster, leader).await;
    assert!(
        attempts > 1,
        "the first attempt should have died with the leader"
    );
    let (version, revision) = version_of(&cluster, "named").await;
    assert_eq!((answer.version, version), (1, 1), "applied once");
    assert_eq!(
        answer.revision, revision,
        "the retry answers the first revision"
    );
    // Sent yet again, much later: still the first outcome.
    let (again, _) = send_until_answered(&cluster, entry, put("named", Some(id))).await;
    assert_eq!((again.version, again.revision), (1, revision));
    progress("with a request id: applied once (version 1)");

    // The client library names every write and retries it: the caller sees one success.
    let (leader, entry) = arm_leader(&cluster).await;
    let client = cluster.node_client(
        entry,
        ClientOptions {
            total_timeout: FAILOVER,
            ..ClientOptions::default()
        },
    );
    let put = client
        .put(DB, "c", "client", r#"{"n":1}"#, None)
        .await
        .expect("the client retries the write to its end");
    bring_back(&mut cluster, leader).await;
    assert_eq!(put.version, 1);
    assert_eq!(version_of(&cluster, "client").await, (1, put.revision));
}

/// A batch over two shards runs as a transaction, which the shards do not remember by request
/// id: its id is claimed on its first shard, and its outcome kept there once it committed.
/// Sent again with the same id (as a client retrying a batch whose answer it lost does), through
/// any node, it is answered with that first outcome and never applied a second time; a repeat
/// of one whose outcome was not kept (it failed) is refused as of unknown outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_over_several_shards_sent_again_is_never_applied_twice() {
    use flotilla_proto::v1::{BatchOp, BatchRequest, PutOp, batch_op};
    let cluster = Cluster::start(3, ClusterOptions::default().fast_elections()).await;
    cluster.create_database(DB, Some(3), Some(3)).await;
    let client = cluster.client();
    // Two ids on shards 1 and 2: the claim goes to shard 1, which a node may have to be
    // forwarded to.
    let mut on_shard: [Option<String>; 3] = [None, None, None];
    for i in 0..128 {
        let id = format!("d{i}");
        let put = client
            .put(DB, "c", &id, r#"{"n":0}"#, None)
            .await
            .expect("a put");
        on_shard[put.shard as usize].get_or_insert(id);
        if on_shard[1..].iter().all(Option::is_some) {
            break;
        }
    }
    let [_, Some(a), Some(b)] = on_shard else {
        panic!("no ids on shards 1 and 2 among 128");
    };
    let op = |id: &str| BatchOp {
        op: Some(batch_op::Op::Put(PutOp {
            collection: "c".into(),
            id: id.into(),
            json: r#"{"n":1}"#.into(),
            ..PutOp::default()
        })),
    };
    let batch = BatchRequest {
        database: DB.into(),
        ops: vec![op(&a), op(&b)],
        request_id: Some(RequestId {
            client: 0xb47c,
            seq: 1,
        }),
    };
    let mut first = DocumentsClient::connect(format!("http://{}", cluster.endpoint(0)))
        .await
        .expect("connecting");
    let answer = first
        .batch(batch.clone())
        .await
        .expect("the batch")
        .into_inner();
    assert!(!answer.repeated);
    assert_eq!(
        answer.results.iter().map(|r| r.version).collect::<Vec<_>>(),
        vec![2, 2]
    );
    // Again through every node: whichever leads the shard that remembers the claim, or not.
    for node in 0..cluster.len() {
        let mut docs = DocumentsClient::connect(format!("http://{}", cluster.endpoint(node)))
            .await
            .expect("connecting");
        let again = docs
            .batch(batch.clone())
            .await
            .unwrap_or_else(|s| panic!("node {node}: the repeat failed: {s:?}"))
            .into_inner();
        assert!(again.repeated, "node {node} ran the batch again: {again:?}");
        assert_eq!(again.results, answer.results, "node {node}");
        assert_eq!(again.shard, answer.shard, "node {node}");
    }
    assert_eq!(version_of(&cluster, &a).await.0, 2);
    assert_eq!(version_of(&cluster, &b).await.0, 2);
    // Through the client, whose request ids are its own: a new batch runs.
    let next = client
        .batch(
            DB,
            vec![
                flotilla_client::BatchOp::put("c", a.as_str(), r#"{"n":2}"#),
                flotilla_client::BatchOp::put("c", b.as_str(), r#"{"n":2}"#),
            ],
        )
        .await
        .expect("a new batch");
    assert_eq!(
        next.results.iter().map(|r| r.version).collect::<Vec<_>>(),
        vec![3, 3]
    );
    // A batch that failed (its condition did not hold) keeps no outcome: its repeat cannot
    // tell, and says so.
    let mut failing = batch.clone();
    failing.request_id = Some(RequestId {
        client: 0xb47c,
        seq: 2,
    });
    if let Some(batch_op::Op::Put(put)) = &mut failing.ops[0].op {
        put.if_version = Some(1);
    }
    for attempt in 0..2 {
        let refused = first
            .batch(failing.clone())
            .await
            .expect_err("a condition that does not hold");
        let expected = match attempt {
            0 => Code::FailedPrecondition,
            _ => Code::Aborted,
        };
        assert_eq!(refused.code(), expected, "attempt {attempt}: {refused:?}");
    }
    assert_eq!(version_of(&cluster, &a).await.0, 3);
}
