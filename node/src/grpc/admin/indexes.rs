//! `Admin.CheckIndexes`: this node's replica of one shard, its indexes compared with a rebuild
//! from its documents (`crate::store::IndexCheck`). Never forwarded: the caller picks the node.

use std::sync::Arc;

use flotilla_proto::v1::{CheckIndexesRequest, CheckIndexesResponse};
use tonic::Status;

use super::local::local_replica;
use crate::error::NodeError;
use crate::host::Host;

pub(super) async fn check(
    host: &Arc<Host>,
    msg: CheckIndexesRequest,
) -> Result<CheckIndexesResponse, Status> {
    let group = local_replica(host, &msg.database, msg.shard)?;
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
