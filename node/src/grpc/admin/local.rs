//! The replica of one shard on the node a call reached, for the admin calls that look at this
//! node's copy and are never forwarded (index check, replica digest).

use std::sync::Arc;

use flotilla_proto::v1::ErrorReason;
use tonic::Status;

use crate::error::{NodeError, Refusal};
use crate::host::{GroupHandle, Host};
use crate::validate;

/// This node's replica of shard `shard` of `database`: NOT_FOUND when the database or shard
/// does not exist or the node holds no replica of it.
pub(super) fn local_replica(
    host: &Arc<Host>,
    database: &str,
    shard: u32,
) -> Result<GroupHandle, Status> {
    validate::database(database)?;
    let Some(db) = host.meta_state().databases.get(database).cloned() else {
        return Err(NodeError::database_not_found(database).into());
    };
    let Some(record) = db.shards.get(shard as usize) else {
        return Err(NodeError::refused(
            Refusal::NotFound,
            ErrorReason::ShardNotFound,
            format!("database {database} has no shard {shard}"),
        )
        .into());
    };
    host.group(record.group_id).ok_or_else(|| {
        NodeError::refused(
            Refusal::NotFound,
            ErrorReason::ReplicaNotFound,
            format!("this node holds no replica of shard {shard} of {database}"),
        )
        .into()
    })
}
