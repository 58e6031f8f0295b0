//! The client's retry, failover and error mapping against fake nodes speaking the real protocol.

use std::time::{Duration, Instant};

use flotilla_client::{
    BatchOp, ChangeKind, Client, ClientOptions, Consistency, Error, Group, MetaRole,
    RemoveNodeProgress,
};
use flotilla_proto::v1 as pb;
use flotilla_testkit::fake_node::{Fake, FakeNode, Step, dead_addr};
use futures::StreamExt;
use tonic::Code;

fn fast_options() -> ClientOptions {
    ClientOptions {
        total_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(300),
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(50),
        ..ClientOptions::default()
    }
}

fn client(addrs: &[&str], options: ClientOptions) -> Client {
    Client::with_options(addrs.iter().map(|a| a.to_string()).collect(), options).unwrap()
}

#[tokio::test]
async fn unavailable_is_retried_until_the_cluster_answers() {
    let node = FakeNode::start(Fake::new()).await;
    node.fake.script([
        Step::Fail(Code::Unavailable, "no leader"),
        Step::Fail(Code::Unavailable, "no leader"),
        Step::Fail(Code::Unavailable, "no leader"),
    ]);
    let c = client(&[&node.addr], fast_options());
    let put = c.put("t", "users", "a", r#"{"n":1}"#, None).await.unwrap();
    assert_eq!(put.version, 1);
    assert_eq!(node.fake.count("put"), 4);
}

#[tokio::test]
async fn final_answers_are_mapped_and_never_retried() {
    let node = FakeNode::start(Fake::new()).await;
    let c = client(&[&node.addr], fast_options());
    let cases = [
        (Code::NotFound, "database x not found"),
        (Code::InvalidArgument, "bad json"),
        (Code::ResourceExhausted, "document too large"),
        (Code::FailedPrecondition, "node 7 still holds replicas"),
        (Code::AlreadyExists, "exists"),
        (Code::Internal, "boom"),
    ];
    for (code, message) in cases {
        node.fake.script([Step::Fail(code, message)]);
        let before = node.fake.count("put");
        let err = c.put("t", "users", "a", "{}", None).await.unwrap_err();
        assert_eq!(node.fake.count("put"), before + 1, "{code:?} was retried");
        let expected = match code {
            Code::NotFound => Error::NotFound(message.into()),
            Code::InvalidArgument => Error::InvalidArgument(message.into()),
            Code::ResourceExhausted => Error::ResourceExhausted(message.into()),
            Code::FailedPrecondition => Error::FailedPrecondition(message.into()),
            Code::AlreadyExists => Error::AlreadyExists(message.into()),
            _ => Error::Server {
                code,
                message: message.into(),
            },
        };
        assert_eq!(err, expected);
    }
}

#[tokio::test]
async fn optimistic_concurrency_reports_a_version_mismatch() {
    let node = FakeNode::start(Fake::new()).await;
    let c = client(&[&node.addr], fast_options());
    assert_eq!(
        c.put("t", "u", "a", "{}", Some(0)).await.unwrap().version,
        1
    );
    assert_eq!(
        c.put("t", "u", "a", "{}", Some(1)).await.unwrap().version,
        2
    );
    let err = c.put("t", "u", "a", "{}", Some(1)).await.unwrap_err();
    assert!(matches!(err, Error::VersionMismatch(_)), "{err:?}");
    let err = c.delete("t", "u", "a", Some(7)).await.unwrap_err();
    assert!(matches!(err, Error::VersionMismatch(_)), "{err:?}");
    assert!(c.delete("t", "u", "a", Some(2)).await.unwrap().deleted);
}

#[tokio::test]
async fn a_missing_document_is_none_but_a_missing_database_is_an_error() {
    let node = FakeNode::start(Fake::new()).await;
    let c = client(&[&node.addr], fast_options());
    assert_eq!(
        c.get("t", "users", "nobody", Consistency::Stale)
            .await
            .unwrap(),
        None
    );
    let err = c
        .get("nope", "users", "a", Consistency::Linearizable)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn a_dead_endpoint_is_skipped_and_the_live_one_remembered() {
    let node = FakeNode::start(Fake::new()).await;
    node.fake.insert("t", "users", "a", r#"{"n":1}"#);
    let dead = dead_addr();
    let c = client(&[&dead, &node.addr], fast_options());
    assert_eq!(c.preferred_endpoint(), dead);
    let doc = c
        .get("t", "users", "a", Consistency::Linearizable)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(doc.json, r#"{"n":1}"#);
    assert_eq!(c.preferred_endpoint(), node.addr);
    // Clones share the preference: the next call goes straight to the live node.
    let clone = c.clone();
    clone.put("t", "users", "b", "{}", None).await.unwrap();
    assert_eq!(node.fake.calls(), ["get", "put"]);
}

#[tokio::test]
async fn a_write_to_a_dead_node_fails_over_because_it_was_never_sent() {
    let node = FakeNode::start(Fake::new()).await;
    let dead = dead_addr();
    let c = client(&[&dead, &dead, &node.addr], fast_options());
    let put = c.put("t", "users", "a", "{}", None).await.unwrap();
    assert_eq!(put.version, 1);
    assert_eq!(node.fake.count("put"), 1);
}

#[tokio::test]
async fn an_unavailable_node_is_left_for_the_next_endpoint() {
    let minority = FakeNode::start(Fake::new()).await;
    minority
        .fake
        .always(Step::Fail(Code::Unavailable, "no quorum"));
    let majority = FakeNode::start(Fake::new()).await;
    let c = client(&[&minority.addr, &majority.addr], fast_options());
    c.put("t", "users", "a", "{}", None).await.unwrap();
    assert_eq!(minority.fake.count("put"), 1);
    assert_eq!(majority.fake.count("put"), 1);
    assert_eq!(c.preferred_endpoint(), majority.addr);
}

#[tokio::test]
async fn without_uncertain_write_retries_a_write_that_times_out_is_outcome_unknown() {
    let slow = FakeNode::start(Fake::new()).await;
    slow.fake.script([Step::Delay(Duration::from_secs(2))]);
    let fast = FakeNode::start(Fake::new()).await;
    let options = ClientOptions {
        request_timeout: Duration::from_millis(200),
        retry_uncertain_writes: false,
        ..fast_options()
    };
    let c = client(&[&slow.addr, &fast.addr], options);
    let err = c.put("t", "users", "a", "{}", None).await.unwrap_err();
    assert!(matches!(err, Error::OutcomeUnknown(_)), "{err:?}");
    assert_eq!(slow.fake.count("put"), 1);
    assert_eq!(fast.fake.count("put"), 0);
}

#[tokio::test]
async fn without_uncertain_write_retries_a_deadline_exceeded_write_is_outcome_unknown_but_a_read_is_retried()
 {
    let node = FakeNode::start(Fake::new()).await;
    let options = ClientOptions {
        retry_uncertain_writes: false,
        ..fast_options()
    };
    let c = client(&[&node.addr], options);
    node.fake
        .script([Step::Fail(Code::DeadlineExceeded, "commit timed out")]);
    let err = c.delete("t", "users", "a", None).await.unwrap_err();
    assert!(matches!(err, Error::OutcomeUnknown(_)), "{err:?}");
    assert_eq!(node.fake.count("delete"), 1);

    node.fake
        .script([Step::Fail(Code::DeadlineExceeded, "read index timed out")]);
    assert_eq!(
        c.get("t", "users", "a", Consistency::Linearizable)
            .await
            .unwrap(),
        None
    );
    assert_eq!(node.fake.count("get"), 2);
}

#[tokio::test]
async fn uncertain_writes_are_retried_when_the_caller_opts_in() {
    let slow = FakeNode::start(Fake::new()).await;
    slow.fake.script([Step::Delay(Duration::from_secs(2))]);
    let fast = FakeNode::start(Fake::new()).await;
    let options = ClientOptions {
        request_timeout: Duration::from_millis(200),
        retry_uncertain_writes: true,
        ..fast_options()
    };
    let c = client(&[&slow.addr, &fast.addr], options);
    c.put("t", "users", "a", "{}", Some(0)).await.unwrap();
    assert_eq!(fast.fake.count("put"), 1);
}

#[tokio::test]
async fn a_write_refused_for_a_full_storage_is_asked_again_then_reported_as_such() {
    let node = FakeNode::start(Fake::new()).await;
    node.fake.always(Step::Refuse(
        Code::ResourceExhausted,
        pb::ErrorReason::StorageFull,
        "node 2's storage is full",
    ));
    let options = ClientOptions {
        max_attempts: 3,
        ..fast_options()
    };
    let c = client(&[&node.addr], options);
    let err = c.put("t", "users", "a", "{}", None).await.unwrap_err();
    assert!(matches!(err, Error::StorageFull(_)), "{err:?}");
    assert_eq!(
        node.fake.count("put"),
        3,
        "refused before proposing: asked again"
    );
}

#[tokio::test]
async fn a_write_refused_for_a_full_storage_after_an_uncertain_attempt_is_outcome_unknown() {
    let node = FakeNode::start(Fake::new()).await;
    // The first attempt gets no answer in time (it may have applied); the next are refused.
    node.fake.script([Step::Delay(Duration::from_secs(2))]);
    node.fake.always(Step::Refuse(
        Code::ResourceExhausted,
        pb::ErrorReason::StorageFull,
        "node 2's storage is full",
    ));
    let options = ClientOptions {
        request_timeout: Duration::from_millis(200),
        retry_uncertain_writes: true,
        max_attempts: 3,
        ..fast_options()
    };
    let c = client(&[&node.addr], options);
    let err = c.put("t", "users", "a", "{}", None).await.unwrap_err();
    assert!(matches!(err, Error::OutcomeUnknown(_)), "{err:?}");
}

#[tokio::test]
async fn a_read_that_times_out_moves_to_the_next_endpoint() {
    let slow = FakeNode::start(Fake::new()).await;
    slow.fake.always(Step::Delay(Duration::from_secs(5)));
    let fast = FakeNode::start(Fake::new()).await;
    let options = ClientOptions {
        request_timeout: Duration::from_millis(200),
        ..fast_options()
    };
    let c = client(&[&slow.addr, &fast.addr], options);
    let started = Instant::now();
    let dbs = c.list_databases().await.unwrap();
    assert_eq!(dbs.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(c.preferred_endpoint(), fast.addr);
}

#[tokio::test]
async fn retries_stop_at_the_total_deadline() {
    let node = FakeNode::start(Fake::new()).await;
    node.fake.always(Step::Fail(Code::Unavailable, "no leader"));
    let options = ClientOptions {
        total_timeout: Duration::from_millis(600),
        ..fast_options()
    };
    let c = client(&[&node.addr], options);
    let started = Instant::now();
    let err = c.cluster_status().await.unwrap_err();
    let elapsed = started.elapsed();
    // The last attempt may have been cut short by the deadline itself.
    assert!(
        matches!(err, Error::Unavailable(_) | Error::DeadlineExceeded(_)),
        "{err:?}"
    );
    assert!(elapsed < Duration::from_millis(1_500), "{elapsed:?}");
    assert!(node.fake.count("cluster_status") > 3);
}

#[tokio::test]
async fn an_attempt_cut_short_by_the_total_deadline_reports_what_the_node_said_before() {
    let node = FakeNode::start(Fake::new()).await;
    node.fake
        .script([
            Step::Fail(Code::Unavailable, "no quorum"),
            Step::Fail(Code::Unavailable, "no quorum"),
        ])
        .always(Step::Delay(Duration::from_secs(5)));
    // One attempt may use the whole budget, as a probe of a single node does: the gRPC
    // deadline of the last attempt expires with the budget.
    let options = ClientOptions {
        total_timeout: Duration::from_millis(800),
        request_timeout: Duration::from_millis(800),
        ..fast_options()
    };
    let c = client(&[&node.addr], options);
    let read = c.get("t", "users", "a", Consistency::Linearizable).await;
    assert!(
        matches!(&read, Err(Error::Unavailable(m)) if m.contains("no quorum")),
        "{read:?}"
    );
    assert_eq!(node.fake.count("get"), 3);
}

#[tokio::test]
async fn an_attempt_its_node_cancels_at_the_total_deadline_reports_what_the_node_said_before() {
    // A node's server cancels a call whose gRPC deadline expired (CANCELLED, not
    // DEADLINE_EXCEEDED) and its answer may come before the client's own timer fires.
    let node = FakeNode::start(Fake::new()).await;
    node.fake
        .script([Step::Fail(Code::Unavailable, "replica behind")])
        .always(Step::Fail(Code::Cancelled, "Timeout expired"));
    let options = ClientOptions {
        total_timeout: Duration::from_millis(800),
        request_timeout: Duration::from_millis(800),
        ..fast_options()
    };
    let c = client(&[&node.addr], options);
    let read = c.get("t", "users", "a", Consistency::Stale).await;
    assert!(
        matches!(&read, Err(Error::Unavailable(m)) if m.contains("replica behind")),
        "{read:?}"
    );
    assert_eq!(node.fake.count("get"), 2);
}

#[tokio::test]
async fn retries_stop_at_the_attempt_budget() {
    let node = FakeNode::start(Fake::new()).await;
    node.fake.always(Step::Fail(Code::Unavailable, "no leader"));
    let options = ClientOptions {
        max_attempts: 3,
        ..fast_options()
    };
    let c = client(&[&node.addr], options);
    let err = c.list_databases().await.unwrap_err();
    assert!(err.is_unavailable());
    assert_eq!(node.fake.count("list_databases"), 3);
}

#[tokio::test]
async fn no_reachable_node_is_a_transport_error() {
    let a = dead_addr();
    let b = dead_addr();
    let options = ClientOptions {
        total_timeout: Duration::from_millis(400),
        ..fast_options()
    };
    let c = client(&[&a, &b], options);
    let err = c.cluster_status().await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert!(err.is_unavailable());
}

#[tokio::test]
async fn a_client_is_shared_by_many_tasks() {
    let node = FakeNode::start(Fake::new()).await;
    node.fake
        .script((0..10).map(|_| Step::Fail(Code::Unavailable, "election")));
    let c = client(&[&dead_addr(), &node.addr], fast_options());
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.put("t", "users", &format!("u{i}"), "{}", None).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().version, 1);
    }
    let page = c.list("t", "users", "u", 0, None).await.unwrap();
    assert_eq!(page.documents.len(), 20);
}

#[tokio::test]
async fn list_pages_through_a_collection() {
    let node = FakeNode::start(Fake::new()).await;
    for i in 0..5 {
        node.fake.insert("t", "users", &format!("u{i}"), "{}");
    }
    node.fake.insert("t", "users", "x", "{}");
    let c = client(&[&node.addr], fast_options());
    let first = c.list("t", "users", "u", 3, None).await.unwrap();
    let ids: Vec<_> = first.documents.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["u0", "u1", "u2"]);
    let token = first.next_page_token.unwrap();
    let second = c.list("t", "users", "u", 3, Some(&token)).await.unwrap();
    let ids: Vec<_> = second.documents.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["u3", "u4"]);
    assert_eq!(second.next_page_token, None);
}

#[tokio::test]
async fn batch_applies_all_operations() {
    let node = FakeNode::start(Fake::new()).await;
    node.fake.insert("t", "users", "old", "{}");
    let c = client(&[&node.addr], fast_options());
    let outcome = c
        .batch(
            "t",
            vec![
                BatchOp::put("users", "new", "{}").if_version(0),
                BatchOp::delete("users", "old"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(outcome.results.len(), 2);
    assert_eq!(outcome.results[0].version, 1);
    assert!(outcome.results[1].deleted);
}

#[tokio::test]
async fn watch_streams_events_in_order() {
    let node = FakeNode::start(Fake::new()).await;
    let event = |t: pb::EventType, id: &str, rev: u64| pb::WatchEvent {
        r#type: t as i32,
        document: Some(pb::Document {
            collection: "users".into(),
            id: id.into(),
            json: "{}".into(),
            version: 1,
            revision: rev,
            shard: 0,
        }),
        prev: None,
    };
    node.fake.watch_events(vec![
        event(pb::EventType::Put, "a", 5),
        event(pb::EventType::Delete, "a", 6),
        event(pb::EventType::Put, "b", 7),
    ]);
    node.fake
        .script([Step::Fail(Code::Unavailable, "no leader")]);
    let c = client(&[&node.addr], fast_options());
    let events: Vec<_> = c
        .watch("t", Some("users"), 6)
        .await
        .unwrap()
        .collect()
        .await;
    let events: Vec<_> = events.into_iter().map(Result::unwrap).collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].kind, ChangeKind::Delete);
    assert_eq!(events[1].document.id, "b");
    assert_eq!(node.fake.count("watch"), 2);
}

#[tokio::test]
async fn admin_operations_round_trip() {
    let node = FakeNode::start(Fake::new()).await;
    let c = client(&[&node.addr], fast_options());
    let status = c.cluster_status().await.unwrap();
    assert_eq!(status.meta_leader().unwrap().name, "node-1");
    assert_eq!(status.nodes[1].meta_role, MetaRole::Follower);

    let info = c.create_database("shop", Some(2), Some(3)).await.unwrap();
    assert_eq!((info.shards, info.replication_factor), (3, 2));
    let err = c.create_database("shop", None, None).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists(_)), "{err:?}");

    let mut polls = 0;
    let ready = c
        .wait_for_database("shop", Duration::from_secs(2), |_| polls += 1)
        .await
        .unwrap();
    assert!(ready.is_ready());
    assert_eq!(polls, 1);
    assert_eq!(ready.shards.len(), 3);

    let moved = c
        .transfer_leadership(
            Group::Shard {
                database: "shop".into(),
                shard: 1,
            },
            2,
        )
        .await
        .unwrap();
    assert_eq!(moved, 2);
    assert_eq!(c.transfer_leadership(Group::Meta, 3).await.unwrap(), 3);
    assert!(matches!(
        c.remove_node(2).await.unwrap(),
        RemoveNodeProgress::Removed { steps } if steps.len() == 1
    ));
    assert!(matches!(
        c.remove_node(9).await.unwrap_err(),
        Error::NotFound(_)
    ));

    c.drop_database("shop").await.unwrap();
    let names: Vec<_> = c
        .list_databases()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["t"]);
}

#[tokio::test]
async fn a_write_fails_over_when_the_node_it_used_goes_away() {
    let first = FakeNode::start(Fake::new()).await;
    let second = FakeNode::start(Fake::new()).await;
    let c = client(&[&first.addr, &second.addr], fast_options());
    c.put("t", "users", "a", "{}", None).await.unwrap();
    assert_eq!(c.preferred_endpoint(), first.addr);
    // Killed: the listener and the established connection die together.
    drop(first);
    flotilla_testkit::fake_node::wait_closed(&c.endpoints()[0]).await;
    let put = c.put("t", "users", "b", "{}", None).await.unwrap();
    assert_eq!(put.version, 1);
    assert_eq!(c.preferred_endpoint(), second.addr);
    assert_eq!(second.fake.count("put"), 1);
}

#[tokio::test]
async fn concurrent_calls_share_requests_and_each_gets_its_own_answer() {
    let node = FakeNode::start(Fake::new()).await;
    node.fake.insert("t", "users", "seed", r#"{"n":0}"#);
    let c = client(&[&node.addr], fast_options());
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                match i % 3 {
                    0 => c
                        .put("t", "users", &format!("k{i}"), "{}", None)
                        .await
                        .map(|p| p.version),
                    // A stale version fails for this caller only.
                    1 => c
                        .put("t", "users", "seed", "{}", Some(9))
                        .await
                        .map(|p| p.version),
                    _ => c
                        .get("t", "users", "seed", Consistency::Linearizable)
                        .await
                        .map(|d| d.map_or(0, |d| d.version)),
                }
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let answer = task.await.unwrap();
        match i % 3 {
            0 => assert_eq!(answer.unwrap(), 1, "caller {i}"),
            1 => assert!(
                matches!(answer, Err(Error::VersionMismatch(_))),
                "caller {i}: {answer:?}"
            ),
            _ => assert_eq!(answer.unwrap(), 1, "caller {i}"),
        }
    }
    assert_eq!(node.fake.count("put"), 16);
    assert_eq!(node.fake.count("get"), 8);
    let multis = node.fake.multi_requests();
    assert!((1..=24).contains(&multis), "{multis} multi requests");
}

#[tokio::test]
async fn a_node_without_multi_requests_gets_single_calls() {
    let node = FakeNode::start(Fake::new()).await;
    node.fake.without_multi();
    let c = client(&[&node.addr], fast_options());
    let put = c.put("t", "users", "a", r#"{"n":1}"#, None).await.unwrap();
    assert_eq!(put.version, 1);
    let doc = c
        .get("t", "users", "a", Consistency::Linearizable)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(doc.version, 1);
    let deleted = c.delete("t", "users", "a", Some(1)).await.unwrap();
    assert!(deleted.deleted);
    assert_eq!(node.fake.multi_requests(), 0);
    assert_eq!(node.fake.calls(), ["batch", "get", "batch"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_answered_together_call_again_together() {
    let node = FakeNode::start(Fake::new()).await;
    node.fake.insert("t", "users", "seed", r#"{"n":0}"#);
    let options = ClientOptions {
        // Long enough that no batch leaves before every caller is back, however slow the
        // machine; a batch that is complete leaves without waiting.
        coalesce_linger: Duration::from_millis(200),
        ..fast_options()
    };
    let c = client(&[&node.addr], options);
    const CALLERS: usize = 8;
    const ROUNDS: usize = 25;
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                for _ in 0..ROUNDS {
                    c.get("t", "users", "seed", Consistency::Linearizable)
                        .await
                        .map(|d| d.map(|d| d.version))
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(node.fake.count("get"), CALLERS * ROUNDS);
    // The first call leaves alone and the others follow it; from then on every request
    // carries every caller's next call, rather than the callers splitting into two halves
    // that alternate (twice as many requests). On a loaded machine a caller descheduled for
    // longer than the linger misses a request now and then (36 were seen in a full CI run):
    // well short of the alternating halves' 2 x ROUNDS.
    let multis = node.fake.multi_requests();
    assert!(
        multis <= ROUNDS * 7 / 4,
        "{multis} multi requests for {CALLERS} callers of {ROUNDS} calls each"
    );
}

#[tokio::test]
async fn by_default_a_write_that_times_out_is_sent_again_to_another_node() {
    let slow = FakeNode::start(Fake::new()).await;
    slow.fake.script([Step::Delay(Duration::from_secs(2))]);
    let fast = FakeNode::start(Fake::new()).await;
    let options = ClientOptions {
        request_timeout: Duration::from_millis(200),
        ..fast_options()
    };
    let c = client(&[&slow.addr, &fast.addr], options);
    let put = c.put("t", "users", "a", "{}", None).await;
    assert!(put.is_ok(), "retried on the other node: {put:?}");
    assert_eq!(slow.fake.count("put"), 1);
    assert_eq!(fast.fake.count("put"), 1);
}
