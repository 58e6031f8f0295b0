//! The `flotilla` command line as a user runs it: the real binary against a fake node, checking
//! what it prints and the exit code it ends with.

use std::process::Output;

use flotilla_proto::v1 as pb;
use flotilla_testkit::fake_node::{Fake, FakeNode, dead_addr};
use serde_json::{Value, json};

/// Runs `flotilla --endpoints <endpoints> <args>` and returns its output.
async fn flotilla(endpoints: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .arg("--endpoints")
        .arg(endpoints)
        .args(args)
        .env_remove("FLOTILLA_ENDPOINTS")
        .output()
        .await
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn json_lines(out: &Output) -> Vec<Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[track_caller]
fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_json_names_the_leader_and_every_node() {
    let node = FakeNode::start(Fake::new()).await;
    let out = flotilla(&node.addr, &["cluster", "status", "-o", "json"]).await;
    assert_exit(&out, 0);
    let v = json_lines(&out);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0]["meta_leader"]["name"], "node-1");
    let nodes = v[0]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    for n in nodes {
        for key in ["id", "name", "client_addr", "meta_role", "health"] {
            assert!(!n[key].is_null(), "{key} missing in {n}");
        }
    }
    assert_eq!(nodes[2]["health"], "unreachable");

    let out = flotilla(&node.addr, &["cluster", "status"]).await;
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("meta leader: node-1 (id 1)"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("ID   NAME")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_are_written_read_listed_and_deleted() {
    let node = FakeNode::start(Fake::new()).await;
    let a = &node.addr;
    let out = flotilla(a, &["doc", "put", "t", "users", "alice", r#"{"n": 1}"#]).await;
    assert_exit(&out, 0);
    assert_eq!(stdout(&out).lines().count(), 1);
    assert!(stdout(&out).starts_with("users/alice written: version 1"));

    let out = flotilla(a, &["-o", "json", "doc", "get", "t", "users", "alice"]).await;
    assert_exit(&out, 0);
    let v = json_lines(&out);
    assert_eq!(v[0]["value"], json!({"n": 1}));
    assert_eq!(v[0]["version"], 1);

    for id in ["bob", "carol", "dave"] {
        let out = flotilla(
            a,
            &["doc", "put", "t", "users", id, "{}", "--if-version", "0"],
        )
        .await;
        assert_exit(&out, 0);
    }
    let out = flotilla(
        a,
        &["doc", "list", "t", "users", "-o", "json", "--limit", "3"],
    )
    .await;
    assert_exit(&out, 0);
    let ids: Vec<Value> = json_lines(&out)
        .into_iter()
        .map(|v| v["id"].clone())
        .collect();
    assert_eq!(ids, [json!("alice"), json!("bob"), json!("carol")]);

    let out = flotilla(a, &["doc", "list", "t", "users", "--prefix", "d"]).await;
    assert_exit(&out, 0);
    assert_eq!(stdout(&out).lines().count(), 2, "{}", stdout(&out));

    let out = flotilla(
        a,
        &["doc", "delete", "t", "users", "alice", "--if-version", "1"],
    )
    .await;
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("deleted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_failure_has_its_exit_code_and_one_line() {
    let node = FakeNode::start(Fake::new()).await;
    let a = &node.addr;
    flotilla(a, &["doc", "put", "t", "users", "alice", "{}"]).await;

    let mismatch = flotilla(
        a,
        &[
            "doc",
            "put",
            "t",
            "users",
            "alice",
            "{}",
            "--if-version",
            "5",
        ],
    )
    .await;
    assert_exit(&mismatch, 4);
    let missing_doc = flotilla(a, &["doc", "get", "t", "users", "nobody"]).await;
    assert_exit(&missing_doc, 3);
    let missing_db = flotilla(a, &["db", "status", "nope"]).await;
    assert_exit(&missing_db, 3);
    let exists = flotilla(a, &["db", "create", "t"]).await;
    assert_exit(&exists, 8);
    let calls_before = node.fake.count("put");
    let bad_json = flotilla(a, &["doc", "put", "t", "users", "x", "{not json"]).await;
    assert_exit(&bad_json, 7);
    assert_eq!(
        node.fake.count("put"),
        calls_before,
        "bad JSON must not be sent"
    );
    let usage = flotilla(a, &["doc", "get", "t"]).await;
    assert_exit(&usage, 2);

    for out in [&mismatch, &missing_doc, &missing_db, &exists, &bad_json] {
        let err = stderr(out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("flotilla: "), "{err}");
        assert!(stdout(out).is_empty());
    }
    assert!(stderr(&mismatch).contains("version mismatch"));
    assert!(stderr(&missing_doc).contains("users/nobody"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_exits_with_unavailable() {
    let out = flotilla(&dead_addr(), &["--timeout", "300ms", "db", "list"]).await;
    assert_exit(&out, 5);
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_come_from_the_environment_and_fail_over() {
    let node = FakeNode::start(Fake::new()).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["db", "list", "-o", "json"])
        .env(
            "FLOTILLA_ENDPOINTS",
            format!("{},{}", dead_addr(), node.addr),
        )
        .output()
        .await
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(
        json_lines(&out),
        [
            json!({"name": "t", "shards": 2, "replication_factor": 3, "replace_after": "15m", "placement": {}, "auto_rebalance": false})
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_create_waits_for_leaders_and_reports_progress() {
    let node = FakeNode::start(Fake::new()).await;
    let a = &node.addr;
    let out = flotilla(
        a,
        &[
            "db",
            "create",
            "shop",
            "--shards",
            "3",
            "--replication-factor",
            "2",
        ],
    )
    .await;
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("3/3 shards have a leader"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        stdout(&out),
        "database shop created: 3 shard(s), replication factor 2, every shard has a leader\n"
    );
    assert!(node.fake.count("database_status") >= 1);

    let out = flotilla(a, &["db", "status", "shop", "-o", "json"]).await;
    assert_exit(&out, 0);
    let v = &json_lines(&out)[0];
    let shards = v["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 3);
    for s in shards {
        assert!(s["leader_id"].as_u64().is_some());
        for r in s["replicas"].as_array().unwrap() {
            for key in ["node_id", "client_addr", "state", "lag"] {
                assert!(!r[key].is_null(), "{key} missing in {r}");
            }
        }
    }

    let out = flotilla(a, &["db", "drop", "shop"]).await;
    assert_exit(&out, 0);
    let out = flotilla(a, &["db", "list"]).await;
    assert_eq!(
        stdout(&out),
        "NAME   SHARDS   REPLICATION FACTOR   REPLACE AFTER   PLACEMENT   AUTO REBALANCE\n\
         t      2        3                    15m             -           off\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_transfer_and_node_removal() {
    let node = FakeNode::start(Fake::new()).await;
    let a = &node.addr;
    let out = flotilla(
        a,
        &[
            "cluster",
            "transfer-leadership",
            "--to",
            "2",
            "--database",
            "t",
            "--shard",
            "1",
        ],
    )
    .await;
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "leader of shard 1 of database t is now node 2\n"
    );
    let out = flotilla(
        a,
        &["cluster", "transfer-leadership", "--to", "3", "-o", "json"],
    )
    .await;
    assert_exit(&out, 0);
    assert_eq!(json_lines(&out), [json!({"group": "meta", "leader_id": 3})]);
    let out = flotilla(
        a,
        &[
            "cluster",
            "transfer-leadership",
            "--to",
            "3",
            "--shard",
            "1",
        ],
    )
    .await;
    assert_exit(&out, 2);
    let out = flotilla(a, &["cluster", "remove-node", "3"]).await;
    assert_exit(&out, 0);
    assert!(stdout(&out).starts_with("node 3 removed\n"));
    let out = flotilla(a, &["cluster", "remove-node", "42"]).await;
    assert_exit(&out, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_events_and_says_where_to_resume() {
    let node = FakeNode::start(Fake::new()).await;
    let event = |t: pb::EventType, id: &str, rev: u64| pb::WatchEvent {
        r#type: t as i32,
        document: Some(pb::Document {
            collection: "users".into(),
            id: id.into(),
            json: r#"{"n":1}"#.into(),
            version: 1,
            revision: rev,
            shard: 0,
        }),
        prev: None,
    };
    node.fake.watch_events(vec![
        event(pb::EventType::Put, "a", 3),
        event(pb::EventType::Delete, "a", 4),
    ]);
    let out = flotilla(
        &node.addr,
        &["doc", "watch", "t", "-o", "json", "--from-revision", "1"],
    )
    .await;
    assert_exit(&out, 5);
    let v = json_lines(&out);
    assert_eq!(v.len(), 2);
    assert_eq!(v[0]["type"], "put");
    assert_eq!(v[1]["type"], "delete");
    assert!(
        stderr(&out).contains("--from-revision 5"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_role_and_auth_commands_check_their_arguments() {
    let a = &dead_addr();
    let no_password = flotilla(a, &["--user", "ann", "cluster", "status"]).await;
    assert_exit(&no_password, 2);
    let bad_permission = flotilla(
        a,
        &[
            "role",
            "grant",
            "r",
            "--database",
            "shop",
            "--permission",
            "everything",
        ],
    )
    .await;
    assert_exit(&bad_permission, 2);
    assert!(stderr(&bad_permission).contains("read, write or admin"));
    let help = flotilla(a, &["user", "--help"]).await;
    assert_exit(&help, 0);
    for sub in ["add", "delete", "list", "passwd", "grant", "revoke"] {
        assert!(stdout(&help).contains(sub), "{sub}: {}", stdout(&help));
    }
    // Well-formed, they reach the cluster (here: none, so unavailable).
    let unreachable = flotilla(
        a,
        &[
            "--timeout",
            "300ms",
            "--user",
            "ann",
            "--password",
            "x",
            "auth",
            "status",
        ],
    )
    .await;
    assert_exit(&unreachable, 5);
}
