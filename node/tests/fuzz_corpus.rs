//! The fuzz corpus (`fuzz/corpus/<target>/`) replayed through each target's entry point
//! (`flotilla_node::fuzzing`) on the stable compiler: an input that once found a bug keeps
//! failing here if the bug comes back, without a nightly compiler or cargo-fuzz.
//!
//! The seed inputs are made here from real messages and records; `FLOTILLA_UPDATE_FUZZ_SEEDS=1`
//! writes them again after a format changed (a stale seed fails the test).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use flotilla_node::codec::encode;
use flotilla_node::consensus::{Entry, LogId, SnapshotMeta, TypeConfig, Vote};
use flotilla_node::fuzzing::TARGETS;
use flotilla_node::store::StoredDoc;
use flotilla_proto::peer::{
    AppendEntriesRequest, InstallSnapshotRequest, RaftRequest, VoteRequest,
};
use flotilla_proto::v1::{
    BatchOp, BatchRequest, CreateDatabaseRequest, DeleteOp, DeleteRequest, GetRequest, ListRequest,
    PutOp, PutRequest, QueryRequest, batch_op,
};
use openraft::entry::RaftEntry;
use openraft::vote::RaftLeaderIdExt;
use prost::Message;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

/// `kind` then the protobuf encoding of `msg`: the input form of the targets that pick a
/// message by their first byte.
fn picked(kind: u8, msg: &impl Message) -> Vec<u8> {
    let mut bytes = vec![kind];
    bytes.extend(msg.encode_to_vec());
    bytes
}

type Leader = openraft::alias::LeaderIdOf<TypeConfig>;

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(Leader::new_committed(term, 1), index)
}

/// The seed inputs by target and file name.
fn seeds() -> BTreeMap<(&'static str, &'static str), Vec<u8>> {
    let mut seeds = BTreeMap::new();
    let put = PutRequest {
        database: "default".into(),
        collection: "users".into(),
        id: "alice".into(),
        json: r#"{"name":"Alice","age":31}"#.into(),
        ..Default::default()
    };
    seeds.insert(("client_request", "put"), picked(0, &put));
    let get = GetRequest {
        database: "default".into(),
        collection: "users".into(),
        id: "alice".into(),
        ..Default::default()
    };
    seeds.insert(("client_request", "get"), picked(1, &get));
    let delete = DeleteRequest {
        database: "default".into(),
        collection: "users".into(),
        id: "alice".into(),
        ..Default::default()
    };
    seeds.insert(("client_request", "delete"), picked(2, &delete));
    let batch = BatchRequest {
        database: "default".into(),
        ops: vec![
            BatchOp {
                op: Some(batch_op::Op::Put(PutOp {
                    collection: "users".into(),
                    id: "bob".into(),
                    json: r#"{"tags":["a","b"]}"#.into(),
                    if_version: None,
                })),
            },
            BatchOp {
                op: Some(batch_op::Op::Delete(DeleteOp {
                    collection: "users".into(),
                    id: "alice".into(),
                    if_version: Some(3),
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    };
    seeds.insert(("client_request", "batch"), picked(3, &batch));
    let query = QueryRequest {
        database: "default".into(),
        collection: "users".into(),
        selector: r#"{"age":{"$gt":30},"name":{"$in":["Alice","Bob"]}}"#.into(),
        projection: vec!["/name".into()],
        limit: 10,
        ..Default::default()
    };
    seeds.insert(("client_request", "query"), picked(4, &query));
    let list = ListRequest {
        database: "default".into(),
        collection: "users".into(),
        limit: 50,
        ..Default::default()
    };
    seeds.insert(("client_request", "list"), picked(5, &list));
    let create = CreateDatabaseRequest {
        name: "orders".into(),
        replication_factor: 3,
        shards: 4,
        placement: [("zone".to_string(), "a".to_string())].into(),
        ..Default::default()
    };
    seeds.insert(("client_request", "create_database"), picked(6, &create));

    for (name, text) in [
        (
            "json",
            r#"{"age":{"$gte":18,"$lt":65},"$or":[{"tag":"a"},{"tag":{"$exists":true}}]}"#,
        ),
        (
            "json_nested",
            r#"{"/address/city":"Oslo","$not":{"name":{"$prefix":"tmp-"}}}"#,
        ),
        ("text", r#"/total > 1000 and /status = "open""#),
        (
            "text_nested",
            r#"(/tag in ["a", "b"] or /note exists) and not /name prefix "tmp-""#,
        ),
    ] {
        seeds.insert(("query_selector", name), text.as_bytes().to_vec());
    }

    let doc = StoredDoc {
        version: 2,
        revision: 17,
        json: r#"{"name":"Alice"}"#.into(),
    };
    let record = |value: Result<Vec<u8>, _>| value.expect("a seed record encodes");
    seeds.insert(("store_record", "document"), record(encode(&doc)));
    seeds.insert(
        ("store_record", "meta_state"),
        record(encode(&flotilla_node::meta::MetaState::default())),
    );
    seeds.insert(
        ("store_record", "entry"),
        record(encode(&Entry::new_blank(log_id(2, 9)))),
    );
    seeds.insert(("store_record", "vote"), record(encode(&Vote::new(3, 1))));
    seeds.insert(("store_record", "log_id"), record(encode(&log_id(3, 42))));

    let raft = |payload: Vec<u8>| RaftRequest {
        group_id: 1,
        payload,
        to_node_id: 2,
        from_node_id: 1,
    };
    let append = openraft::raft::AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(2, 1),
        prev_log_id: Some(log_id(2, 4)),
        entries: vec![
            Entry::new_blank(log_id(2, 5)),
            Entry::new_blank(log_id(2, 6)),
        ],
        leader_commit: Some(log_id(2, 4)),
    };
    let append = AppendEntriesRequest {
        raft: Some(raft(record(encode(&append)))),
    };
    seeds.insert(("peer_message", "append_entries"), picked(0, &append));
    let vote = openraft::raft::VoteRequest::<TypeConfig>::new(Vote::new(3, 1), Some(log_id(2, 6)));
    let vote = VoteRequest {
        raft: Some(raft(record(encode(&vote)))),
    };
    seeds.insert(("peer_message", "vote"), picked(1, &vote));
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(2, 6)),
        ..Default::default()
    };
    let snapshot = InstallSnapshotRequest {
        group_id: 1,
        header: record(encode(&(Vote::new_committed(2, 1), meta))),
        data: Vec::new(),
        to_node_id: 2,
        from_node_id: 1,
        checksum: None,
    };
    seeds.insert(("peer_message", "install_snapshot"), picked(2, &snapshot));
    seeds
}

#[test]
fn the_seed_corpus_is_current() {
    let update = std::env::var_os("FLOTILLA_UPDATE_FUZZ_SEEDS").is_some();
    for ((target, name), bytes) in seeds() {
        let path = corpus().join(target).join(format!("seed-{name}"));
        if update {
            std::fs::create_dir_all(path.parent().expect("a target directory"))
                .expect("the corpus directory");
            std::fs::write(&path, &bytes).expect("writing a seed");
            continue;
        }
        let stored = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (FLOTILLA_UPDATE_FUZZ_SEEDS=1 writes it)",
                path.display()
            )
        });
        assert!(
            stored == bytes,
            "{} is stale: run this test with FLOTILLA_UPDATE_FUZZ_SEEDS=1",
            path.display()
        );
    }
}

#[test]
fn every_corpus_input_runs_through_its_target() {
    let dirs: Vec<String> = std::fs::read_dir(corpus())
        .expect("fuzz/corpus")
        .map(|e| {
            e.expect("a corpus entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for dir in &dirs {
        assert!(
            TARGETS.iter().any(|(name, _)| name == dir),
            "fuzz/corpus/{dir} names no fuzz target"
        );
    }
    for (name, target) in TARGETS {
        let dir = corpus().join(name);
        let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("a corpus file").path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{} is empty", dir.display());
        for input in inputs {
            let bytes = std::fs::read(&input).expect("a corpus file");
            let outcome = std::panic::catch_unwind(|| target(&bytes));
            assert!(outcome.is_ok(), "{} panicked on {}", name, input.display());
        }
    }
}
