//! The parts of the `Backup` service that serve consistent cuts (see `crate::txn::fence`):
//! `BeginCut` / `EndCut`, and the stream of one shard's read for `ReadShard`: its first chunk,
//! sent as soon as the read is open, names the revision and carries the shard's pending
//! intents and transaction records; the documents follow.

use std::sync::Arc;

use flotilla_proto::v1::{
    BackupDocument, BackupIntent, BackupRecord, BeginCutRequest, BeginCutResponse, EndCutRequest,
    EndCutResponse, ErrorReason, ShardChunk,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Response, Status};

use super::backup::ShardStream;
use crate::command::txn::{CutId, Decision, TxnWrite};
use crate::error::{NodeError, Refusal};
use crate::host::Host;
use crate::store::Storage;
use crate::store::export::{self, ExportError, ExportHead};
use crate::txn::format_id;
use crate::types::GroupId;
use crate::validate;

use super::backup::{CHUNK_DOCS, CHUNKS_AHEAD};

pub(super) async fn begin_cut(
    host: &Arc<Host>,
    msg: BeginCutRequest,
) -> Result<Response<BeginCutResponse>, Status> {
    validate::database(&msg.database)?;
    let (cut, fence_indexes) = crate::txn::fence::begin_cut(host, &msg.database).await?;
    Ok(Response::new(BeginCutResponse { cut, fence_indexes }))
}

pub(super) async fn end_cut(
    host: &Arc<Host>,
    msg: EndCutRequest,
) -> Result<Response<EndCutResponse>, Status> {
    validate::database(&msg.database)?;
    if msg.cut == 0 {
        return Err(Status::invalid_argument("EndCut names no cut"));
    }
    crate::txn::fence::end_cut(host, &msg.database, msg.cut).await?;
    Ok(Response::new(EndCutResponse {}))
}

/// Opens the read of group `gid` (for cut `cut`, when not 0) and streams it: the head first,
/// at once, then the documents.
pub(super) fn stream_shard(
    storage: Arc<Storage>,
    gid: GroupId,
    cut: CutId,
) -> Result<ShardStream, Status> {
    let cut = (cut != 0).then_some(cut);
    let read = match export::open(&storage, gid, cut) {
        Ok(read) => read,
        Err(e @ ExportError::CutLifted(_)) => {
            return Err(NodeError::refused(
                Refusal::FailedPrecondition,
                ErrorReason::CutLifted,
                format!("{e}: begin a new cut"),
            )
            .into());
        }
        Err(ExportError::Io(e)) => return Err(NodeError::from(e).into()),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
    tokio::task::spawn_blocking(move || {
        let head = match export::head(&read, gid) {
            Ok(head) => head,
            Err(e) => {
                let _ = tx.blocking_send(Err(Status::internal(format!("reading the shard: {e}"))));
                return;
            }
        };
        let revision = head.revision;
        if tx.blocking_send(Ok(head_chunk(head))).is_err() {
            return;
        }
        let sent = export::export_docs(&read, gid, CHUNK_DOCS, |docs| {
            let chunk = ShardChunk {
                revision,
                documents: docs
                    .into_iter()
                    .map(|(collection, id, doc)| BackupDocument {
                        collection,
                        id,
                        json: doc.json,
                        version: doc.version,
                        revision: doc.revision,
                    })
                    .collect(),
                intents: Vec::new(),
                records: Vec::new(),
            };
            tx.blocking_send(Ok(chunk)).is_ok()
        });
        if let Err(e) = sent {
            let _ = tx.blocking_send(Err(Status::internal(format!("reading the shard: {e}"))));
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)) as ShardStream)
}

/// The first chunk of a stream: the revision, intents and records, no document.
fn head_chunk(head: ExportHead) -> ShardChunk {
    ShardChunk {
        revision: head.revision,
        documents: Vec::new(),
        intents: head
            .intents
            .into_iter()
            .map(|i| {
                let (json, delete) = match i.write {
                    TxnWrite::Put { json } => (json, false),
                    TxnWrite::Delete => (String::new(), true),
                };
                BackupIntent {
                    txn: format_id(i.txn),
                    collection: i.collection,
                    id: i.id,
                    json,
                    delete,
                    version: i.version,
                }
            })
            .collect(),
        records: head
            .records
            .into_iter()
            .map(|(txn, d)| BackupRecord {
                txn: format_id(txn),
                committed: d == Decision::Committed,
            })
            .collect(),
    }
}
