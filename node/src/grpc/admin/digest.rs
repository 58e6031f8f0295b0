//! `Admin.ReplicaDigest`: this node's replica of one shard, its applied index and the digest of
//! its content (`crate::store::ReplicaDigest`). Never forwarded: the caller picks the node.

use std::sync::Arc;

use flotilla_proto::v1::{ReplicaDigestRequest, ReplicaDigestResponse};
use tonic::Status;

use super::local::local_replica;
use crate::error::NodeError;
use crate::host::Host;

pub(super) async fn digest(
    host: &Arc<Host>,
    msg: ReplicaDigestRequest,
) -> Result<ReplicaDigestResponse, Status> {
    let group = local_replica(host, &msg.database, msg.shard)?;
    let sm = group.sm.clone();
    let d = tokio::task::spawn_blocking(move || sm.digest())
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(NodeError::from)?;
    Ok(ReplicaDigestResponse {
        node_id: host.id,
        applied_index: d.applied_index,
        digest: d.digest.to_vec(),
        documents: d.documents,
        indexes_building: d.indexes_building,
    })
}
