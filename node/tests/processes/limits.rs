//! The node's limits with real processes: beyond each, the call is refused with
//! RESOURCE_EXHAUSTED and reason LIMIT_EXCEEDED, and the node keeps serving everyone else.

use std::time::Duration;

use flotilla_client::{Client, ClientOptions, Consistency, Error, ListOptions};
use flotilla_proto::reason_of;
use flotilla_proto::v1::documents_client::DocumentsClient;
use flotilla_proto::v1::{ErrorReason, ListRequest, WatchRequest};
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::wait::wait_until;

async fn watch(
    addr: &str,
) -> Result<tonic::Streaming<flotilla_proto::v1::WatchEvent>, tonic::Status> {
    let mut docs = DocumentsClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let request = WatchRequest {
        database: "t".into(),
        ..Default::default()
    };
    Ok(docs.watch(request).await?.into_inner())
}

fn limit_exceeded(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::ResourceExhausted
        && reason_of(status) == Some(ErrorReason::LimitExceeded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_and_answers_beyond_the_limits_are_refused_and_the_node_keeps_serving() {
    let options = ClusterOptions::default()
        .arg("--max-watches")
        .arg("2")
        .arg("--max-answer-bytes")
        .arg("65536");
    let cluster = Cluster::start(1, options).await;
    let client = cluster.client();
    client.create_database("t", None, None).await.unwrap();
    client
        .wait_for_database("t", Duration::from_secs(30), |_| {})
        .await
        .unwrap();
    let addr = cluster.node(0).client_addr.clone();

    let first = watch(&addr).await.unwrap();
    let _second = watch(&addr).await.unwrap();
    let third = watch(&addr).await.expect_err("a third watch");
    assert!(limit_exceeded(&third), "{third:?}");
    // Writes and reads go on.
    client.put("t", "c", "k", "{}", None).await.unwrap();
    // A watch that ends gives its place back.
    drop(first);
    wait_until(
        Duration::from_secs(10),
        "a watch's place is free again",
        async || watch(&addr).await.is_ok(),
    )
    .await;

    // An answer over --max-answer-bytes is refused; a smaller page is served.
    let body = format!(r#"{{"pad":"{}"}}"#, "x".repeat(30_000));
    for i in 0..3 {
        client
            .put("t", "big", &format!("d{i}"), &body, None)
            .await
            .unwrap();
    }
    let mut docs = DocumentsClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let list = |limit: u32| ListRequest {
        database: "t".into(),
        collection: "big".into(),
        limit,
        ..Default::default()
    };
    let refused = docs.list(list(0)).await.expect_err("too large an answer");
    assert!(limit_exceeded(&refused), "{refused:?}");
    let page = docs.list(list(1)).await.unwrap().into_inner();
    assert_eq!(page.documents.len(), 1);
    let r = client
        .list_with(
            "t",
            "big",
            &ListOptions {
                limit: 0,
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(r, Err(Error::ResourceExhausted(_))), "{r:?}");
    // A request over --max-message-bytes (16 MiB by default) is refused before it is read.
    let huge = flotilla_proto::v1::PutRequest {
        database: "t".into(),
        collection: "c".into(),
        id: "huge".into(),
        json: format!(r#"{{"pad":"{}"}}"#, "x".repeat(17 << 20)),
        if_version: None,
        request_id: None,
    };
    let refused = docs.put(huge).await.expect_err("too large a request");
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    let one = Client::with_options(vec![addr.clone()], ClientOptions::default()).unwrap();
    assert!(
        one.get("t", "c", "k", Consistency::Linearizable)
            .await
            .unwrap()
            .is_some()
    );
}
