//! `ReadChanges`: a shard's change feed in (after, to] for an incremental backup, streamed
//! from the replica the call reaches once it has applied `to` (for `to` 0, a read index its
//! leader confirmed now, as `ReadShard` reads at). The feed is read in one read transaction
//! (`store::changes_export`), so the stream is one consistent range, never held whole.

use std::pin::Pin;

use flotilla_proto::v1::{BackupChange, ChangesChunk, ErrorReason, ReadChangesRequest};
use flotilla_proto::with_first_revision;
use futures::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{BackupService, CHUNK_DOCS, CHUNKS_AHEAD};
use crate::error::{NodeError, Refusal};
use crate::store::changes_export::{ExportChangesError, ExportedChange, export_changes};

pub type ChangesStream = Pin<Box<dyn Stream<Item = Result<ChangesChunk, Status>> + Send>>;

impl BackupService {
    pub(super) async fn changes(&self, msg: ReadChangesRequest) -> Result<ChangesStream, Status> {
        let (_, record) = self.shard_record(&msg.database, msg.shard)?;
        let gid = record.group_id;
        let Some(group) = self.host.group(gid) else {
            return Err(NodeError::FailedPrecondition(format!(
                "this node holds no replica of shard {} of {}",
                msg.shard, msg.database
            ))
            .into());
        };
        let to = match msg.to_revision {
            0 => self.read_index(&group, gid).await?,
            to => to,
        };
        if to < msg.after_revision {
            return Err(Status::invalid_argument(format!(
                "to_revision {to} is before after_revision {}",
                msg.after_revision
            )));
        }
        self.caught_up(&group, to).await?;
        let (after, shard) = (msg.after_revision, msg.shard);
        let storage = self.host.storage.clone();
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
        tokio::task::spawn_blocking(move || {
            let mut first = Some(first_tx);
            let sent = export_changes(&storage, gid, after, to, CHUNK_DOCS, |changes| {
                // The range is there: the call is answered, the changes follow.
                if let Some(first) = first.take() {
                    let _ = first.send(Ok(()));
                }
                let chunk = ChangesChunk {
                    to_revision: to,
                    changes: changes.into_iter().map(to_pb).collect(),
                };
                tx.blocking_send(Ok(chunk)).is_ok()
            });
            match (sent, first.take()) {
                (Err(ExportChangesError::Compacted { after, oldest }), Some(first)) => {
                    let _ = first.send(Err(compacted(shard, after, oldest)));
                }
                (Err(e), first) => {
                    let status = Status::internal(e.to_string());
                    match first {
                        Some(first) => {
                            let _ = first.send(Err(status));
                        }
                        None => {
                            let _ = tx.blocking_send(Err(status));
                        }
                    }
                }
                (Ok(_), Some(first)) => {
                    // Nothing in the range: one empty chunk still names `to`.
                    let _ = first.send(Ok(()));
                    let _ = tx.blocking_send(Ok(ChangesChunk {
                        to_revision: to,
                        changes: Vec::new(),
                    }));
                }
                (Ok(_), None) => {}
            }
        });
        match first_rx.await {
            Ok(Ok(())) => Ok(Box::pin(ReceiverStream::new(rx)) as ChangesStream),
            Ok(Err(status)) => Err(status),
            Err(_) => Err(Status::internal("the change feed reader stopped")),
        }
    }
}

fn to_pb(c: ExportedChange) -> BackupChange {
    BackupChange {
        revision: c.revision,
        commit_unix_ms: c.unix_ms,
        collection: c.collection,
        id: c.id,
        version: c.version,
        deleted: c.json.is_none(),
        json: c.json.unwrap_or_default(),
    }
}

/// The answer when this replica's feed of `shard` no longer reaches back to `after + 1`.
fn compacted(shard: u32, after: u64, oldest: u64) -> Status {
    let refused = NodeError::refused(
        Refusal::OutOfRange,
        ErrorReason::RevisionCompacted,
        format!(
            "the change feed of shard {shard} starts at revision {oldest} on this replica; the \
             changes after revision {after} are gone (compacted)"
        ),
    );
    with_first_revision(Status::from(refused), oldest)
}
