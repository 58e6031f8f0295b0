//! Entry points for the fuzz targets of `fuzz/` (cargo-fuzz) and the test that replays their
//! corpus: each takes arbitrary bytes, decodes them as the node decodes what arrives from a
//! client, a peer or its own disk, and runs the checks the node runs before acting on it. None
//! may panic on any input; a decoded stored record must also encode back to itself.
//!
//! Not an API: these functions exist for fuzzing and may change with the node's internals.

use std::sync::OnceLock;

use clap::Parser;
use flotilla_proto::peer::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use flotilla_proto::v1::{
    BatchRequest, CreateDatabaseRequest, DeleteRequest, GetRequest, ListRequest, PutRequest,
    QueryRequest, batch_op,
};
use prost::Message;

use crate::codec::decode;
use crate::config::NodeConfig;
use crate::consensus::{SnapshotMeta, TypeConfig, Vote};
use crate::grpc::documents::{batch_ops, check_query};
use crate::grpc::peer_checks::{check_entries, check_snapshot};
use crate::validate;

#[derive(Parser)]
struct ConfigOnly {
    #[command(flatten)]
    config: NodeConfig,
}

/// A node's configuration with every limit at its default.
fn config() -> &'static NodeConfig {
    static CONFIG: OnceLock<NodeConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        ConfigOnly::try_parse_from(["fuzz", "--name", "fuzz", "--data-dir", "/nonexistent"])
            .map(|c| c.config)
            .unwrap_or_else(|e| panic!("the default configuration parses: {e}"))
    })
}

/// A request of the client port: the first byte picks the message, the rest is its protobuf
/// encoding; what decodes goes through the checks its handler runs first.
pub fn client_request(data: &[u8]) {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let cfg = config();
    match kind % 7 {
        0 => {
            if let Ok(msg) = PutRequest::decode(bytes) {
                let _ = validate::database(&msg.database);
                let op = batch_op::Op::Put(flotilla_proto::v1::PutOp {
                    collection: msg.collection,
                    id: msg.id,
                    json: msg.json,
                    if_version: msg.if_version,
                });
                let batch = BatchRequest {
                    database: msg.database,
                    ops: vec![flotilla_proto::v1::BatchOp { op: Some(op) }],
                    ..Default::default()
                };
                let _ = batch_ops(&batch, cfg);
            }
        }
        1 => {
            if let Ok(msg) = GetRequest::decode(bytes) {
                let _ = validate::database(&msg.database);
                let _ = validate::collection(&msg.collection);
                let _ = validate::document_id(&msg.id);
            }
        }
        2 => {
            if let Ok(msg) = DeleteRequest::decode(bytes) {
                let _ = validate::database(&msg.database);
                let _ = validate::collection(&msg.collection);
                let _ = validate::document_id(&msg.id);
            }
        }
        3 => {
            if let Ok(msg) = BatchRequest::decode(bytes) {
                let _ = validate::database(&msg.database);
                let _ = batch_ops(&msg, cfg);
            }
        }
        4 => {
            if let Ok(msg) = QueryRequest::decode(bytes) {
                let _ = check_query(&msg);
            }
        }
        5 => {
            if let Ok(msg) = ListRequest::decode(bytes) {
                let _ = validate::database(&msg.database);
                let _ = validate::collection(&msg.collection);
                let _ = validate::limit(msg.limit);
            }
        }
        _ => {
            if let Ok(msg) = CreateDatabaseRequest::decode(bytes) {
                let _ = validate::new_database(&msg.name);
                let _ = crate::labels::check_all(&msg.placement);
            }
        }
    }
}

/// A query selector: `data` as text, parsed both as a JSON selector and in the command line's
/// text form.
pub fn query_selector(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = flotilla_query::parse_selector_str(text);
    let _ = flotilla_query::parse_text(text);
}

/// The entry point of a fuzz target.
pub type Target = fn(&[u8]);

/// Every fuzz target by name (its directory under `fuzz/corpus/`) and its entry point.
pub const TARGETS: &[(&str, Target)] = &[
    ("client_request", client_request),
    ("query_selector", query_selector),
    ("store_record", store_record),
    ("peer_message", peer_message),
];

/// A stored record: `data` decoded as each record type the store and the Raft log keep.
pub fn store_record(data: &[u8]) {
    crate::store::check_record_codecs(data);
}

/// A Raft message from a peer: the first byte picks append entries, vote or a snapshot's first
/// chunk, the rest is its protobuf encoding; the payload inside is decoded as the peer service
/// decodes it, then checked as it is before it reaches Raft.
pub fn peer_message(data: &[u8]) {
    type AppendEntries = openraft::raft::AppendEntriesRequest<TypeConfig>;
    type VoteRpc = openraft::raft::VoteRequest<TypeConfig>;
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 3 {
        0 => {
            if let Ok(msg) = AppendEntriesRequest::decode(bytes)
                && let Some(raft) = msg.raft
                && let Ok(rpc) = decode::<AppendEntries>(&raft.payload)
            {
                let _ = check_entries(rpc.prev_log_id.as_ref(), &rpc.entries);
            }
        }
        1 => {
            if let Ok(msg) = VoteRequest::decode(bytes)
                && let Some(raft) = msg.raft
            {
                let _ = decode::<VoteRpc>(&raft.payload);
            }
        }
        _ => {
            if let Ok(msg) = InstallSnapshotRequest::decode(bytes)
                && let Ok((_vote, meta)) = decode::<(Vote, SnapshotMeta)>(&msg.header)
            {
                let _ = check_snapshot(msg.group_id, &meta, msg.data.as_slice());
            }
        }
    }
}
