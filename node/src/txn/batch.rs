//! An atomic batch whose documents live on several shards runs as a transaction of blind
//! writes (each op's `if_version` checked at commit).

use flotilla_proto::v1::{BatchResponse, BatchResult};

use super::Coordinator;
use crate::command::WriteOp;
use crate::error::NodeResult;

/// Runs `ops` on `database` as one transaction; `shard_keys` holds, op by op, the shard key
/// value a delete names (empty for a put, placed by its body). The answer's revision is 0
/// (each shard applies it at a revision of its own) and its shard that of the first op.
pub async fn run(
    txns: &Coordinator,
    database: &str,
    ops: Vec<WriteOp>,
    shard_keys: Vec<String>,
) -> NodeResult<BatchResponse> {
    let txn = txns.begin(database, None)?;
    let mut order = Vec::with_capacity(ops.len());
    for (op, shard_key) in ops.into_iter().zip(shard_keys) {
        let written = match op {
            WriteOp::Put {
                collection,
                id,
                json,
                if_version,
            } => {
                txns.write(txn, &collection, &id, Some(json), "", if_version)
                    .await?;
                (collection, id)
            }
            WriteOp::Delete {
                collection,
                id,
                if_version,
            } => {
                txns.write(txn, &collection, &id, None, &shard_key, if_version)
                    .await?;
                (collection, id)
            }
        };
        order.push(written);
    }
    let committed = txns.commit(txn).await?;
    // One result per op, in order (an op on a document written twice sees the last write).
    let results = order
        .iter()
        .map(|(c, i)| {
            let w = committed
                .writes
                .iter()
                .find(|w| &w.collection == c && &w.id == i);
            BatchResult {
                version: w.map_or(0, |w| w.version),
                deleted: w.is_some_and(|w| w.deleted),
            }
        })
        .collect();
    Ok(BatchResponse {
        results,
        revision: 0,
        shard: committed.writes.first().map_or(0, |w| w.shard),
    })
}
