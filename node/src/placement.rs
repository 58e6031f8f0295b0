//! Which shard a document lives on: the hash of its id, or, in a collection declared with a
//! shard key, the hash of the value at that path ([`flotilla_query::shard_of_value`]).
//!
//! A put finds the value in its body. A get or delete names it in `shard_key` (JSON text of
//! the value, e.g. `"c42"` quoted or `17`): a delete without it is refused; a get without it
//! asks every shard (a point lookup on each, never a scan). Ids are unique per shard, not
//! across the collection: a put of an existing id with another shard key value writes over it
//! when both values hash to the same shard and makes a second document when they do not, so
//! changing a document's shard key value is a delete (with the old value) and a put.

use flotilla_proto::v1::{ErrorReason, batch_op};
use serde_json::Value;

use crate::error::{NodeError, NodeResult, Refusal};
use crate::meta::DatabaseRecord;

fn missing(message: String) -> NodeError {
    NodeError::refused(
        Refusal::InvalidArgument,
        ErrorReason::ShardKeyMissing,
        message,
    )
}

fn shard_of_key_value(db: &DatabaseRecord, collection: &str, v: &Value) -> NodeResult<usize> {
    if !flotilla_query::is_shard_key_value(v) {
        return Err(missing(format!(
            "the shard key of collection {collection} must hold a string, number or boolean, not {v}"
        )));
    }
    Ok(flotilla_query::shard_of_value(v, db.shards.len().max(1) as u32) as usize)
}

/// The shard of a document put with body `json`.
pub fn shard_of_put(
    db: &DatabaseRecord,
    collection: &str,
    id: &str,
    json: &str,
) -> NodeResult<usize> {
    let Some(key) = db.shard_key(collection) else {
        return Ok(db.shard_of(id));
    };
    let body: Value = serde_json::from_str(json)
        .map_err(|e| NodeError::InvalidArgument(format!("document body is not valid JSON: {e}")))?;
    match key.resolve(&body) {
        Some(v) => shard_of_key_value(db, collection, v),
        None => Err(missing(format!(
            "document {id} has no {key}, the shard key of collection {collection}"
        ))),
    }
}

/// The shard of a document named by id and, in a collection with a shard key, the JSON text
/// of its value; `Ok(None)` when the collection has a shard key and `shard_key` is empty.
pub fn shard_of_named(
    db: &DatabaseRecord,
    collection: &str,
    id: &str,
    shard_key: &str,
) -> NodeResult<Option<usize>> {
    let Some(key) = db.shard_key(collection) else {
        return Ok(Some(db.shard_of(id)));
    };
    if shard_key.is_empty() {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(shard_key).map_err(|e| {
        missing(format!(
            "shard_key must be the JSON text of the document's {key} (e.g. \"\\\"c42\\\"\"): {e}"
        ))
    })?;
    shard_of_key_value(db, collection, &v).map(Some)
}

/// [`shard_of_named`] where the shard key value cannot be left out (a delete; a get in a
/// transaction): refused with `SHARD_KEY_MISSING` when the collection has a shard key and
/// `shard_key` is empty. `what` names the operation in the refusal.
pub fn shard_of_named_required(
    db: &DatabaseRecord,
    collection: &str,
    id: &str,
    shard_key: &str,
    what: &str,
) -> NodeResult<usize> {
    shard_of_named(db, collection, id, shard_key)?.ok_or_else(|| {
        missing(format!(
            "{what} {id} in collection {collection}, which has a shard key, needs its shard_key value"
        ))
    })
}

/// The shard of an atomic batch, whose documents must all live on one.
pub fn shard_of_batch(
    db: &DatabaseRecord,
    ops: &[flotilla_proto::v1::BatchOp],
) -> NodeResult<usize> {
    let shards = shards_of_batch(db, ops)?;
    if shards.len() > 1 {
        return Err(NodeError::InvalidArgument(
            "all documents of an atomic batch must live on one shard".into(),
        ));
    }
    Ok(shards.first().copied().unwrap_or(0))
}

/// The shards the documents of a batch live on (a document lacking its shard key is refused).
pub fn shards_of_batch(
    db: &DatabaseRecord,
    ops: &[flotilla_proto::v1::BatchOp],
) -> NodeResult<std::collections::BTreeSet<usize>> {
    let mut shards = std::collections::BTreeSet::new();
    for op in ops {
        let s = match &op.op {
            Some(batch_op::Op::Put(p)) => shard_of_put(db, &p.collection, &p.id, &p.json)?,
            Some(batch_op::Op::Delete(d)) => {
                shard_of_named_required(db, &d.collection, &d.id, &d.shard_key, "deleting")?
            }
            None => continue,
        };
        shards.insert(s);
    }
    Ok(shards)
}
