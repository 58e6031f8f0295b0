//! An atomic batch whose documents live on several shards runs as a transaction of blind
//! writes (each op's `if_version` checked at commit).

use flotilla_proto::v1::{BatchResponse, BatchResult};

use super::Coordinator;
use super::coordinator::CommittedWrite;
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
                let shard = txns
                    .write(txn, &collection, &id, Some(json), "", if_version)
                    .await?;
                (collection, id, shard)
            }
            WriteOp::Delete {
                collection,
                id,
                if_version,
            } => {
                let shard = txns
                    .write(txn, &collection, &id, None, &shard_key, if_version)
                    .await?;
                (collection, id, shard)
            }
        };
        order.push(written);
    }
    let committed = txns.commit(txn).await?;
    Ok(BatchResponse {
        results: results(&order, &committed.writes),
        revision: 0,
        shard: committed.writes.first().map_or(0, |w| w.shard),
        repeated: false,
    })
}

/// One result per op of `order` (collection, id, shard), in order: what the commit wrote on
/// that document of that shard (an op on a document written twice sees the last write; in a
/// collection with a shard key, the same id on another shard is another document).
fn results(order: &[(String, String, u32)], writes: &[CommittedWrite]) -> Vec<BatchResult> {
    order
        .iter()
        .map(|(c, i, s)| {
            let w = writes
                .iter()
                .find(|w| &w.collection == c && &w.id == i && w.shard == *s);
            BatchResult {
                version: w.map_or(0, |w| w.version),
                deleted: w.is_some_and(|w| w.deleted),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(id: &str, shard: u32, version: u64, deleted: bool) -> CommittedWrite {
        CommittedWrite {
            collection: "orders".into(),
            id: id.into(),
            shard,
            version,
            deleted,
        }
    }

    #[test]
    fn each_op_gets_the_result_of_its_own_document_even_when_its_id_is_on_two_shards() {
        let order = vec![
            ("orders".to_string(), "a".to_string(), 1),
            ("orders".to_string(), "a".to_string(), 3),
            ("orders".to_string(), "b".to_string(), 1),
        ];
        let writes = [
            written("a", 1, 4, false),
            written("a", 3, 0, true),
            written("b", 1, 1, false),
        ];
        assert_eq!(
            results(&order, &writes),
            vec![
                BatchResult {
                    version: 4,
                    deleted: false
                },
                BatchResult {
                    version: 0,
                    deleted: true
                },
                BatchResult {
                    version: 1,
                    deleted: false
                },
            ]
        );
    }
}
