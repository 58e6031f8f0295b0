//! `Admin.CheckIndexes`: this node's replica of one shard, its indexes compared with a rebuild
//! from its documents (`crate::store::IndexCheck`). Never forwarded: the caller picks the node.

use std::sync::Arc;

use flotilla_proto::v1::{CheckIndexesRequest, CheckIndexesResponse, ErrorReason};
use tonic::Status;

use crate::error::{NodeError, Refusal};
use crate::host::Host;
use crate::validate;

pub(super) async fn check(
    host: &Arc<Host>,
    msg: CheckIndexesRequest,
) -> Result<CheckIndexesResponse, Status> {
    validate::database(&msg.database)?;
    let Some(db) = host.meta_state().databases.get(&msg.database).cloned() else {
        return Err(NodeError::database_not_found(&msg.database).into());
    };
    let Some(shard) = db.shards.get(msg.shard as usize) else {
        return Err(NodeError::refused(
            Refusal::NotFound,
            ErrorReason::ShardNotFound,
            format!("database {} has no shard {}", msg.database, msg.shard),
        )
        .into());
    };
    let Some(group) = host.group(shard.group_id) else {
        return Err(NodeError::refused(
            Refusal::NotFound,
            ErrorReason::ReplicaNotFound,
            format!(
                "this node holds no replica of shard {} of {}",
                msg.shard, msg.database
            ),
        )
        .into());
    };
    let sm = group.sm.clone();
    let (revision, checks) = tokio::task::spawn_blocking(move || sm.check_indexes())
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(NodeError::from)?;
    Ok(CheckIndexesResponse {
        node_id: host.id,
        revision,
        indexes: checks.into_iter().map(Into::into).collect(),
    })
}
