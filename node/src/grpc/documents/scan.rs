//! Reading many documents of a shard: a page of a listing (resumed by a page token), and the
//! change feed a watch follows from a revision.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use flotilla_proto::v1::{Document, ErrorReason, EventType, ListRequest, ListResponse, WatchEvent};
use flotilla_proto::with_first_revision;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{DocumentsService, consistency};
use crate::error::{NodeError, NodeResult, Refusal};
use crate::host::GroupHandle;
use crate::validate;

impl DocumentsService {
    pub(super) async fn list_shard(
        &self,
        msg: ListRequest,
        hops: u32,
        shard: Option<usize>,
    ) -> Result<ListResponse, Status> {
        let database = msg.database.clone();
        let resp = self
            .serve(
                msg,
                hops,
                &database,
                shard,
                |_| Ok(0),
                |host, group, route, msg: ListRequest| {
                    Box::pin(async move {
                        host.read_barrier(&group, consistency(msg.consistency))
                            .await?;
                        host.session_floor(&group, route.shard, &msg.at_least)
                            .await?;
                        let limit = validate::limit(msg.limit);
                        let after = decode_token(&msg.page_token)?;
                        let mut rows = crate::txn::resolve::list(
                            &host,
                            &group,
                            &msg.collection,
                            &msg.prefix,
                            &after,
                            limit + 1,
                        )
                        .await?;
                        let more = rows.len() > limit;
                        rows.truncate(limit);
                        let more = more | cut_to_bytes(&mut rows, |(_, d)| d.json.len());
                        let next_page_token = match (more, rows.last()) {
                            (true, Some((id, _))) => URL_SAFE_NO_PAD.encode(id),
                            _ => String::new(),
                        };
                        let documents = rows
                            .into_iter()
                            .map(|(id, d)| Document {
                                collection: msg.collection.clone(),
                                id,
                                json: d.json,
                                version: d.version,
                                revision: d.revision,
                                shard: route.shard as u32,
                            })
                            .collect();
                        Ok(ListResponse {
                            documents,
                            next_page_token,
                        })
                    })
                },
                |mut c, r| Box::pin(async move { c.list(r).await }),
            )
            .await?;
        Ok(resp.into_inner())
    }

    /// The change feed of one shard served from this node's replica, from revision
    /// `from_revision` (0: only new changes); with `with_prev`, each event carries the body it
    /// replaced.
    pub(super) fn local_watch(
        &self,
        group: GroupHandle,
        shard: usize,
        collection: String,
        from_revision: u64,
        with_prev: bool,
    ) -> ReceiverStream<Result<WatchEvent, Status>> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let mut stopping = self.host.stopping();
        tokio::spawn(async move {
            let state = group.sm.state().clone();
            let mut applied = state.subscribe();
            let mut next: u64 = if from_revision == 0 {
                state.applied_index() + 1
            } else {
                from_revision
            };
            loop {
                let (batch, floor) = match group.sm.changes(next, 256) {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                        return;
                    }
                };
                // Changes this watch has not delivered are gone (pruned, or replaced by a
                // snapshot install): say so, never skip them silently. That holds for a watch
                // from revision 0 too, once it started.
                if next < floor {
                    let _ = tx.send(Err(compacted(shard, next, floor))).await;
                    return;
                }
                let empty = batch.is_empty();
                for (revision, events) in batch {
                    for ev in events {
                        if !collection.is_empty() && ev.collection != collection {
                            continue;
                        }
                        let prev = ev.prev.filter(|_| with_prev).map(|json| Document {
                            collection: ev.collection.clone(),
                            id: ev.id.clone(),
                            json,
                            shard: shard as u32,
                            ..Document::default()
                        });
                        let event = WatchEvent {
                            r#type: if ev.json.is_some() {
                                EventType::Put as i32
                            } else {
                                EventType::Delete as i32
                            },
                            document: Some(Document {
                                collection: ev.collection,
                                id: ev.id,
                                json: ev.json.unwrap_or_default(),
                                version: ev.version,
                                revision,
                                shard: shard as u32,
                            }),
                            prev,
                        };
                        if tx.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                    next = revision + 1;
                }
                if empty {
                    tokio::select! {
                        r = applied.changed() => if r.is_err() { return },
                        _ = tx.closed() => return,
                        // Already stopping when the watch opened, or since: the client
                        // resumes it on another node.
                        _ = async { let _ = stopping.wait_for(|stopping| *stopping).await; } => {
                            let _ = tx.send(Err(stopping_node())).await;
                            return;
                        }
                    }
                }
            }
        });
        ReceiverStream::new(rx)
    }
}

/// What ends a watch on a node that is stopping.
pub(super) fn stopping_node() -> Status {
    Status::from(NodeError::Unavailable(
        "this node is stopping: resume the watch on another node".into(),
    ))
}

/// The answer to a watch that needs revision `next` of `shard`, older than the oldest kept.
fn compacted(shard: usize, next: u64, floor: u64) -> Status {
    let refused = NodeError::refused(
        Refusal::OutOfRange,
        ErrorReason::RevisionCompacted,
        format!("revision {next} of shard {shard} was compacted; the oldest kept is {floor}"),
    );
    with_first_revision(Status::from(refused), floor)
}

fn decode_token(token: &str) -> NodeResult<String> {
    if token.is_empty() {
        return Ok(String::new());
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| NodeError::InvalidArgument("malformed page token".into()))?;
    String::from_utf8(bytes).map_err(|_| NodeError::InvalidArgument("malformed page token".into()))
}

/// Keeps the first rows whose bodies fit in a page's bytes (at least one row); true when some
/// were cut.
pub(super) fn cut_to_bytes<T>(rows: &mut Vec<T>, bytes: impl Fn(&T) -> usize) -> bool {
    let mut total = 0;
    let keep = rows
        .iter()
        .position(|r| {
            total += bytes(r);
            total > super::query::DEFAULT_PAGE_BYTES
        })
        .map_or(rows.len(), |i| i.max(1));
    let cut = keep < rows.len();
    rows.truncate(keep);
    cut
}
