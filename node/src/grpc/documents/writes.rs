//! Writes: a put, a delete or an atomic batch, proposed on its shard (served here when this node
//! leads it, otherwise forwarded), exactly once per request id; a batch over several shards
//! goes to [`super::spread`].

use flotilla_proto::v1::{BatchRequest, BatchResponse, BatchResult, batch_op};
use tonic::{Response, Status};

use super::{DocumentsService, answer};
use crate::command::{DataCommand, OpOutcome, WriteOp};
use crate::error::{NodeError, NodeResult};
use crate::placement::{self, shard_of_batch};
use crate::validate;

impl DocumentsService {
    pub(super) async fn write(
        &self,
        database: String,
        hops: u32,
        shard: Option<usize>,
        ops: Vec<WriteOp>,
        request: BatchRequest,
    ) -> Result<Response<BatchResponse>, Status> {
        let ops_for_pick = request.ops.clone();
        let request_id = answer::request_id(request.request_id.as_ref());
        self.serve(
            request,
            hops,
            &database,
            shard,
            // An empty batch claims a request id on the shard it names (see `spread`).
            move |db| match shard {
                Some(claimed) if ops_for_pick.is_empty() => Ok(claimed),
                _ => shard_of_batch(db, &ops_for_pick),
            },
            move |host, group, route, _msg| {
                Box::pin(async move {
                    let cmd = DataCommand {
                        ops,
                        request: request_id,
                    };
                    let (applied, revision) =
                        crate::txn::resolve::write_through_intents(&host, &group, route.gid, cmd)
                            .await?;
                    crate::crash_point::after_write(&host.config);
                    let repeated = matches!(applied, crate::command::Response::Repeated(_));
                    let (outcomes, revision) = answer::single(applied, revision)?;
                    let results = outcomes.into_iter().map(batch_result).collect();
                    Ok(BatchResponse {
                        results,
                        revision,
                        shard: route.shard as u32,
                        repeated,
                    })
                })
            },
            |mut c, r| Box::pin(async move { c.batch(r).await }),
        )
        .await
    }

    /// A write of one document, as a batch of one.
    pub(super) async fn write_one(
        &self,
        database: String,
        op: batch_op::Op,
        request_id: Option<flotilla_proto::v1::RequestId>,
        hops: u32,
        shard: Option<usize>,
    ) -> Result<BatchResponse, Status> {
        let batch = BatchRequest {
            database: database.clone(),
            ops: vec![flotilla_proto::v1::BatchOp { op: Some(op) }],
            request_id,
        };
        let ops = batch_ops(&batch, &self.host.config)?;
        Ok(self
            .write(database, hops, shard, ops, batch)
            .await?
            .into_inner())
    }

    pub(super) async fn batch_at(
        &self,
        msg: BatchRequest,
        hops: u32,
        shard: Option<usize>,
    ) -> Result<Response<BatchResponse>, Status> {
        // A claim of a request id forwarded by another node (see `claim`).
        if msg.ops.is_empty() && shard.is_some() && msg.request_id.is_some() {
            return self
                .write(msg.database.clone(), hops, shard, Vec::new(), msg)
                .await;
        }
        let ops = batch_ops(&msg, &self.host.config)?;
        // A batch over several shards is a transaction underneath.
        let shards = match self.host.meta_state().databases.get(&msg.database) {
            Some(db) if shard.is_none() => placement::shards_of_batch(db, &msg.ops)?,
            _ => Default::default(),
        };
        if shards.len() > 1 {
            return self.batch_over_shards(msg, ops, &shards, hops).await;
        }
        self.write(msg.database.clone(), hops, shard, ops, msg)
            .await
    }
}

/// The writes of a batch, checked: names, bodies and the node's limits.
pub(crate) fn batch_ops(
    request: &BatchRequest,
    cfg: &crate::config::NodeConfig,
) -> NodeResult<Vec<WriteOp>> {
    if request.ops.is_empty() {
        return Err(NodeError::InvalidArgument(
            "a batch needs at least one operation".into(),
        ));
    }
    if request.ops.len() > cfg.max_batch_ops {
        return Err(NodeError::ResourceExhausted(format!(
            "batch has {} operations, over the limit of {}",
            request.ops.len(),
            cfg.max_batch_ops
        )));
    }
    let mut bytes = 0usize;
    let mut ops = Vec::with_capacity(request.ops.len());
    for op in &request.ops {
        match &op.op {
            Some(batch_op::Op::Put(p)) => {
                validate::collection(&p.collection)?;
                validate::document_id(&p.id)?;
                validate::body(&p.json, cfg)?;
                bytes += p.json.len();
                ops.push(WriteOp::Put {
                    collection: p.collection.clone(),
                    id: p.id.clone(),
                    json: p.json.clone(),
                    if_version: p.if_version,
                });
            }
            Some(batch_op::Op::Delete(d)) => {
                validate::collection(&d.collection)?;
                validate::document_id(&d.id)?;
                ops.push(WriteOp::Delete {
                    collection: d.collection.clone(),
                    id: d.id.clone(),
                    if_version: d.if_version,
                });
            }
            None => {
                return Err(NodeError::InvalidArgument(
                    "batch operation without a put or delete".into(),
                ));
            }
        }
    }
    if bytes > cfg.max_batch_bytes {
        return Err(NodeError::ResourceExhausted(format!(
            "batch carries {bytes} bytes of documents, over the limit of {}",
            cfg.max_batch_bytes
        )));
    }
    Ok(ops)
}

pub(super) fn batch_result(outcome: OpOutcome) -> BatchResult {
    match outcome {
        OpOutcome::Put { version } => BatchResult {
            version,
            deleted: false,
        },
        OpOutcome::Delete { existed } => BatchResult {
            version: 0,
            deleted: existed,
        },
    }
}
