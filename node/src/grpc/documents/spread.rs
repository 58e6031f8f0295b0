//! Atomic batches over several shards: a transaction underneath, run at most once per request
//! id and answered again with its first outcome.
//!
//! A transaction is not remembered by request id, so before it runs the batch's id is
//! *claimed* on its first shard: an empty batch with that id, remembered there like any write
//! (`store::dedup`). Only the attempt whose claim is new runs the transaction; once it
//! committed, its outcome is *settled* under the claim (`TxnCommand::Settle`). A repeat (a
//! client retrying after a lost answer, through any node) finds the claim and answers:
//! - the settled outcome, as the first attempt's answer said;
//! - after waiting a while for a claim not settled yet (the first attempt still running, or it
//!   failed, or its node died before settling), an outcome unknown (ABORTED, reason
//!   REQUEST_EXPIRED): never a second run.

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_proto::v1::{
    BatchRequest, BatchResponse, BatchResult, ErrorReason, RequestId, batch_op,
};
use tokio::time::Instant;
use tonic::{Response, Status};

use super::{DocumentsService, answer};
use crate::command::{OpOutcome, WriteOp};
use crate::error::{NodeError, Refusal};
use crate::txn::shards::{ShardCall, call_shard};

/// How often a repeat asks again whether the first attempt settled.
const SETTLE_POLL: Duration = Duration::from_millis(200);

/// What a claim found.
enum Claim {
    /// No attempt of the batch came before: this one runs it.
    First,
    /// An attempt came before; its results when it settled.
    Repeat(Option<Vec<BatchResult>>),
}

impl DocumentsService {
    /// Runs `ops` of `msg` (on `shards`, more than one) as one transaction, at most once per
    /// request id (see the module notes).
    pub(super) async fn batch_over_shards(
        &self,
        msg: BatchRequest,
        ops: Vec<WriteOp>,
        shards: &BTreeSet<usize>,
        hops: u32,
    ) -> Result<Response<BatchResponse>, Status> {
        let database = msg.database.clone();
        let claimed = match (msg.request_id, shards.first()) {
            (Some(id), Some(&first)) => Some((id, first)),
            _ => None,
        };
        if let Some((id, first)) = claimed
            && let Some(answer) = self.claim_or_repeat(&msg, id, first, hops).await?
        {
            return Ok(Response::new(answer));
        }
        let puts: Vec<bool> = ops
            .iter()
            .map(|o| matches!(o, WriteOp::Put { .. }))
            .collect();
        let shard_keys = msg
            .ops
            .iter()
            .map(|o| match &o.op {
                Some(batch_op::Op::Delete(d)) => d.shard_key.clone(),
                _ => String::new(),
            })
            .collect();
        let txns = crate::txn::coordinator(&self.host);
        let answer = crate::txn::batch::run(&txns, &database, ops, shard_keys).await?;
        if let Some((id, first)) = claimed
            && let Some(request) = answer::request_id(Some(&id))
        {
            let outcomes = puts
                .iter()
                .zip(&answer.results)
                .map(|(put, r)| match put {
                    true => OpOutcome::Put { version: r.version },
                    false => OpOutcome::Delete { existed: r.deleted },
                })
                .collect();
            let settle =
                ShardCall::Propose(crate::command::txn::TxnCommand::Settle { request, outcomes });
            // Committed either way: a repeat finds no outcome and answers unknown.
            if let Err(e) = call_shard(&self.host, &database, first as u32, settle).await {
                tracing::warn!(error = %e, "remembering the outcome of a batch over several shards failed");
            }
        }
        Ok(Response::new(answer))
    }

    /// Claims request `id` on shard `first`. `None` when this attempt is the first; otherwise
    /// the answer to the repeat: the first attempt's outcome once it settles, or the error
    /// that says it is unknown.
    async fn claim_or_repeat(
        &self,
        msg: &BatchRequest,
        id: RequestId,
        first: usize,
        hops: u32,
    ) -> Result<Option<BatchResponse>, Status> {
        let patience = self.host.config.request_timeout / 2;
        let started = Instant::now();
        loop {
            match self.claim(&msg.database, first, id, hops).await? {
                Claim::First => return Ok(None),
                Claim::Repeat(Some(results)) if results.len() == msg.ops.len() => {
                    return Ok(Some(BatchResponse {
                        results,
                        revision: 0,
                        shard: self.first_op_shard(msg).unwrap_or(first) as u32,
                        repeated: true,
                    }));
                }
                Claim::Repeat(_) if started.elapsed() < patience => {
                    tokio::time::sleep(SETTLE_POLL).await;
                }
                Claim::Repeat(_) => {
                    return Err(NodeError::refused(
                        Refusal::Aborted,
                        ErrorReason::RequestExpired,
                        format!(
                            "this batch over several shards was sent before (request {:x}/{}) \
                             and its outcome is not known here: it runs at most once",
                            id.client, id.seq
                        ),
                    )
                    .into());
                }
            }
        }
    }

    /// Claims request `id` on shard `shard` with an empty batch (see the module notes).
    async fn claim(
        &self,
        database: &str,
        shard: usize,
        id: RequestId,
        hops: u32,
    ) -> Result<Claim, Status> {
        let claim = BatchRequest {
            database: database.to_string(),
            ops: Vec::new(),
            request_id: Some(id),
        };
        let answer = self
            .write(database.to_string(), hops, Some(shard), Vec::new(), claim)
            .await?
            .into_inner();
        if !answer.repeated {
            return Ok(Claim::First);
        }
        // A claim answers no results; a settled one, the batch's.
        let outcomes = (!answer.results.is_empty()).then_some(answer.results);
        Ok(Claim::Repeat(outcomes))
    }

    /// The shard of the batch's first operation, as its first answer named it.
    fn first_op_shard(&self, msg: &BatchRequest) -> Option<usize> {
        let meta = self.host.meta_state();
        let db = meta.databases.get(&msg.database)?;
        let first = msg.ops.first()?;
        crate::placement::shards_of_batch(db, std::slice::from_ref(first))
            .ok()?
            .first()
            .copied()
    }
}
