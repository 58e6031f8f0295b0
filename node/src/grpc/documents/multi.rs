//! Multi requests: independent calls sent together (client libraries send the calls their
//! callers make at the same time to one node as one Multi).
//!
//! Every call is answered as its single call would be; what differs is how. The writes of a
//! Multi that land on one shard led by this node are proposed as one Raft entry
//! ([`Command::DataMany`]), so that they share one proposal, one log write and one apply
//! instead of paying for one each; each still applies or is rejected on its own. The gets of a
//! Multi for one shard led here, at one consistency, pass one read barrier together (one
//! ReadIndex confirmation serves them all: every one of them arrived before it started).
//! Calls for shards led elsewhere, and anything unusual (an unknown database, a call that
//! fails validation), take the single-call path, which forwards or explains.

use std::collections::BTreeMap;

use flotilla_proto::v1::{
    BatchOp, BatchRequest, BatchResponse, Call, CallResult, DeleteOp, GetRequest, PutOp, batch_op,
    call, call_result,
};
use prost::Message;
use tonic::Status;

use super::answer;
use super::{BoxFut, DocumentsService, batch_result, consistency, read_document, shard_of_batch};
use crate::command::{Command, DataCommand, Rejection, WriteOp};
use crate::error::NodeError;
use crate::grpc::status::call_error;
use crate::host::GroupHandle;
use crate::types::GroupId;
use crate::validate;

/// Most bytes of results one Multi answer carries (clients accept 64 MiB).
const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// One write of a Multi, validated, for a shard led here.
struct Write {
    /// Its place among the calls.
    index: usize,
    database: String,
    cmd: DataCommand,
    /// Document bytes it carries.
    bytes: usize,
}

/// Gets of one Multi for one shard led here, at one consistency.
struct ShardReads {
    shard: usize,
    group: GroupHandle,
    /// Call index and its request.
    gets: Vec<(usize, GetRequest)>,
}

/// Writes of one Multi bound for one shard led here.
struct ShardWrites {
    shard: usize,
    group: GroupHandle,
    writes: Vec<Write>,
}

impl DocumentsService {
    /// The results of `calls`, in their order.
    pub(super) async fn serve_multi(&self, calls: Vec<Call>, hops: u32) -> Vec<CallResult> {
        let mut results: Vec<Option<CallResult>> = (0..calls.len()).map(|_| None).collect();
        let mut singles = Vec::new();
        let mut shards: BTreeMap<GroupId, ShardWrites> = BTreeMap::new();
        let mut reads: BTreeMap<(GroupId, i32), ShardReads> = BTreeMap::new();
        for (i, c) in calls.into_iter().enumerate() {
            match c.call {
                Some(call::Call::Get(get)) => match self.read_here(&get) {
                    Some((gid, shard, group)) => {
                        reads
                            .entry((gid, get.consistency))
                            .or_insert_with(|| ShardReads {
                                shard,
                                group,
                                gets: Vec::new(),
                            })
                            .gets
                            .push((i, get));
                    }
                    None => singles.push((i, get_call(get))),
                },
                Some(call::Call::Batch(batch)) => match self.led_here(&batch) {
                    Some((gid, shard, group, cmd, bytes)) => {
                        let write = Write {
                            index: i,
                            database: batch.database,
                            cmd,
                            bytes,
                        };
                        shards
                            .entry(gid)
                            .or_insert_with(|| ShardWrites {
                                shard,
                                group,
                                writes: Vec::new(),
                            })
                            .writes
                            .push(write);
                    }
                    None => singles.push((i, batch_call(batch))),
                },
                None => singles.push((i, Call { call: None })),
            }
        }
        let mut together: Vec<BoxFut<'_, Vec<(usize, CallResult)>>> = Vec::new();
        for (gid, sw) in shards {
            if sw.writes.len() == 1 {
                singles.extend(sw.writes.into_iter().map(Write::into_call));
                continue;
            }
            for chunk in self.chunks(sw.writes) {
                let proposal = self.propose(gid, sw.shard, sw.group.clone(), chunk, hops);
                together.push(Box::pin(proposal));
            }
        }
        for ((_, consistency), sr) in reads {
            if sr.gets.len() == 1 {
                singles.extend(sr.gets.into_iter().map(|(i, g)| (i, get_call(g))));
                continue;
            }
            together.push(Box::pin(self.read_together(consistency, sr, hops)));
        }
        let singles = singles
            .into_iter()
            .map(|(i, c)| async move { vec![(i, self.one_call(c, hops).await)] });
        let (a, b) = futures::future::join(
            futures::future::join_all(singles),
            futures::future::join_all(together),
        )
        .await;
        for (i, r) in a.into_iter().chain(b).flatten() {
            results[i] = Some(r);
        }
        // Documents read beyond what one answer may carry are not sent: those gets fail as
        // Unavailable, and the client asks for them again (writes carry no documents).
        let mut bytes = 0;
        results
            .into_iter()
            .map(|r| {
                let r = r.unwrap_or_else(|| error(&Status::internal("a call got no result")));
                bytes += r.encoded_len();
                match &r.result {
                    Some(call_result::Result::Get(_)) if bytes > MAX_RESPONSE_BYTES => {
                        error(&Status::unavailable(
                            "the documents read exceed what one Multi answer carries; ask again",
                        ))
                    }
                    _ => r,
                }
            })
            .collect()
    }

    /// One call, answered as the single call would be.
    async fn one_call(&self, call: Call, hops: u32) -> CallResult {
        let result = match call.call {
            Some(call::Call::Get(get)) => self
                .get_at(get, hops, None)
                .await
                .map(|r| call_result::Result::Get(r.into_inner())),
            Some(call::Call::Batch(batch)) => self
                .batch_at(batch, hops, None)
                .await
                .map(|r| call_result::Result::Batch(r.into_inner())),
            None => Err(Status::invalid_argument("a call needs a get or a batch")),
        };
        match result {
            Ok(r) => CallResult { result: Some(r) },
            Err(s) => error(&s),
        }
    }

    /// The group, shard and group handle of a valid get whose shard this node leads; `None`
    /// for anything else.
    fn read_here(&self, get: &GetRequest) -> Option<(GroupId, usize, GroupHandle)> {
        validate::collection(&get.collection).ok()?;
        validate::document_id(&get.id).ok()?;
        let meta = self.host.meta_state();
        let db = meta.databases.get(&get.database)?;
        let shard = super::placement::shard_of_named(db, &get.collection, &get.id, &get.shard_key)
            .ok()??;
        let gid = db.shards.get(shard)?.group_id;
        let group = self.host.group(gid)?;
        group.is_leader().then_some((gid, shard, group))
    }

    /// Serves the gets of `reads` after one read barrier.
    async fn read_together(
        &self,
        consistency_code: i32,
        reads: ShardReads,
        hops: u32,
    ) -> Vec<(usize, CallResult)> {
        let barrier = self
            .host
            .read_barrier(&reads.group, consistency(consistency_code))
            .await;
        match barrier {
            Ok(()) => {
                let group = &reads.group;
                let answers = reads.gets.into_iter().map(|(i, get)| async move {
                    let result = match read_document(&self.host, group, reads.shard, get).await {
                        Ok(r) => CallResult {
                            result: Some(call_result::Result::Get(r)),
                        },
                        Err(e) => error(&e.into()),
                    };
                    (i, result)
                });
                futures::future::join_all(answers).await
            }
            // The leadership moved: each get goes on its own, to the new leader.
            Err(NodeError::NotLeader { .. }) => {
                let calls = reads
                    .gets
                    .into_iter()
                    .map(|(i, get)| async move { (i, self.one_call(get_call(get), hops).await) });
                futures::future::join_all(calls).await
            }
            Err(e) => {
                let status = Status::from(e);
                reads
                    .gets
                    .iter()
                    .map(|(i, _)| (*i, error(&status)))
                    .collect()
            }
        }
    }

    /// The group, shard, group handle, command and body bytes of a valid batch whose shard this
    /// node leads; `None` for anything else.
    fn led_here(
        &self,
        batch: &BatchRequest,
    ) -> Option<(GroupId, usize, GroupHandle, DataCommand, usize)> {
        let ops = super::batch_ops(batch, &self.host.config).ok()?;
        let meta = self.host.meta_state();
        let db = meta.databases.get(&batch.database)?;
        let shard = shard_of_batch(db, &batch.ops).ok()?;
        let gid = db.shards.get(shard)?.group_id;
        let group = self.host.group(gid)?;
        if !group.is_leader() {
            return None;
        }
        let bytes = batch
            .ops
            .iter()
            .map(|o| match &o.op {
                Some(batch_op::Op::Put(p)) => p.json.len(),
                _ => 0,
            })
            .sum();
        let request = answer::request_id(batch.request_id.as_ref());
        Some((gid, shard, group, DataCommand { ops, request }, bytes))
    }

    /// Splits writes into runs that each stay within the limits of one batch.
    fn chunks(&self, writes: Vec<Write>) -> Vec<Vec<Write>> {
        let cfg = &self.host.config;
        let mut chunks: Vec<Vec<Write>> = Vec::new();
        let (mut ops, mut bytes) = (0, 0);
        for write in writes {
            let n = write.cmd.ops.len();
            if chunks.is_empty()
                || ops + n > cfg.max_batch_ops
                || bytes + write.bytes > cfg.max_batch_bytes
            {
                chunks.push(Vec::new());
                (ops, bytes) = (0, 0);
            }
            ops += n;
            bytes += write.bytes;
            if let Some(chunk) = chunks.last_mut() {
                chunk.push(write);
            }
        }
        chunks
    }

    /// Proposes `writes` (for group `gid`, shard `shard`) as one entry and answers each.
    async fn propose(
        &self,
        gid: GroupId,
        shard: usize,
        group: GroupHandle,
        writes: Vec<Write>,
        hops: u32,
    ) -> Vec<(usize, CallResult)> {
        let cmds = writes.iter().map(|w| w.cmd.clone()).collect();
        let proposed = self.host.write(&group, gid, Command::DataMany(cmds)).await;
        crate::crash_point::after_write(&self.host.config);
        let outcomes = proposed.and_then(|(applied, revision)| {
            Ok((revision, answer::many_raw(applied, revision, writes.len())?))
        });
        match outcomes {
            // A repeat is answered at the revision its first attempt applied at, before this
            // entry's.
            Ok((entry, outcomes)) => {
                let answers =
                    writes
                        .into_iter()
                        .zip(outcomes)
                        .map(|(w, (revision, outcome))| async move {
                            let result = match outcome {
                                Ok(ops) => CallResult {
                                    result: Some(call_result::Result::Batch(BatchResponse {
                                        results: ops.into_iter().map(batch_result).collect(),
                                        revision,
                                        shard: shard as u32,
                                        repeated: revision != entry,
                                    })),
                                },
                                // Locked by a transaction: on its own, it waits for it.
                                Err(Rejection::Intent { .. }) => {
                                    let (i, call) = w.into_call();
                                    return (i, self.one_call(call, hops).await);
                                }
                                Err(rejection) => error(&answer::rejected(rejection).into()),
                            };
                            (w.index, result)
                        });
                futures::future::join_all(answers).await
            }
            // Refused before it was proposed (the leadership moved): each write goes on its
            // own, to the new leader.
            Err(NodeError::NotLeader { .. }) => {
                let calls = writes.into_iter().map(|w| async move {
                    let (i, call) = w.into_call();
                    (i, self.one_call(call, hops).await)
                });
                futures::future::join_all(calls).await
            }
            Err(e) => {
                let status = Status::from(e);
                writes.iter().map(|w| (w.index, error(&status))).collect()
            }
        }
    }
}

impl Write {
    /// Back to its single call (its place, and the call).
    fn into_call(self) -> (usize, Call) {
        let ops = self.cmd.ops.into_iter().map(batch_op).collect();
        let batch = BatchRequest {
            database: self.database,
            ops,
            request_id: answer::request_id_proto(self.cmd.request),
        };
        (self.index, batch_call(batch))
    }
}

fn get_call(get: GetRequest) -> Call {
    Call {
        call: Some(call::Call::Get(get)),
    }
}

fn batch_call(batch: BatchRequest) -> Call {
    Call {
        call: Some(call::Call::Batch(batch)),
    }
}

fn batch_op(op: WriteOp) -> BatchOp {
    let op = match op {
        WriteOp::Put {
            collection,
            id,
            json,
            if_version,
        } => batch_op::Op::Put(PutOp {
            collection,
            id,
            json,
            if_version,
        }),
        WriteOp::Delete {
            collection,
            id,
            if_version,
        } => batch_op::Op::Delete(DeleteOp {
            collection,
            id,
            if_version,
            // Not kept in the command: a delete in a collection with a shard key is sent again
            // with its batch request, never rebuilt from the command.
            shard_key: String::new(),
        }),
    };
    BatchOp { op: Some(op) }
}

fn error(status: &Status) -> CallResult {
    CallResult {
        result: Some(call_result::Result::Error(call_error(status))),
    }
}
