//! A snapshot arriving from a peer (`Peer::install_snapshot`): its chunks assembled and checked
//! before Raft sees it. The data must match the checksum its first chunk carries (see
//! `network::raft::snapshot_chunks`): a snapshot damaged on the way is refused, and the leader
//! sends it again; it is never installed.

use flotilla_proto::peer::InstallSnapshotRequest;
use flotilla_proto::v1::ErrorReason;
use flotilla_proto::with_reason;
use futures::{Stream, StreamExt};
use tonic::Status;

use super::peer_checks::check_snapshot;
use crate::codec::{checksum, decode};
use crate::consensus::{SnapshotMeta, Vote};
use crate::types::GroupId;

/// Largest snapshot accepted (it is assembled in memory before it is installed).
const MAX_SNAPSHOT_BYTES: usize = 8 << 30;

/// A snapshot assembled from its chunks: the sender's vote, the snapshot metadata and data.
pub struct Received {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

/// The snapshot whose `first` chunk was read already, assembled from the `rest` of its chunks
/// and checked: each chunk of the same group and nodes, the whole no larger than a node takes,
/// the data matching its checksum (when the sender sent one) and well formed.
pub async fn receive<S>(first: InstallSnapshotRequest, mut rest: S) -> Result<Received, Status>
where
    S: Stream<Item = Result<InstallSnapshotRequest, Status>> + Unpin,
{
    let gid = first.group_id;
    let (vote, meta): (Vote, SnapshotMeta) = decode(&first.header).map_err(|e| {
        with_reason(
            Status::invalid_argument(format!("snapshot header: {e}")),
            ErrorReason::MalformedMessage,
        )
    })?;
    let mut data = first.data;
    while let Some(chunk) = rest.next().await {
        let chunk = chunk?;
        if (chunk.group_id, chunk.to_node_id, chunk.from_node_id)
            != (gid, first.to_node_id, first.from_node_id)
        {
            return Err(with_reason(
                Status::invalid_argument("snapshot chunks of different groups or nodes"),
                ErrorReason::MalformedMessage,
            ));
        }
        if data.len().saturating_add(chunk.data.len()) > MAX_SNAPSHOT_BYTES {
            return Err(Status::resource_exhausted(format!(
                "a snapshot larger than {MAX_SNAPSHOT_BYTES} bytes"
            )));
        }
        data.extend_from_slice(&chunk.data);
    }
    if let Some(sent) = first.checksum {
        check_arrived_whole(gid, sent, &data)?;
    }
    check_snapshot(gid, &meta, &data)?;
    Ok(Received { vote, meta, data })
}

/// Refuses snapshot `data` of group `gid` that does not match the checksum `sent` with it.
fn check_arrived_whole(gid: GroupId, sent: u32, data: &[u8]) -> Result<(), Status> {
    let computed = checksum(data);
    if computed == sent {
        return Ok(());
    }
    tracing::warn!(
        group = gid,
        sent,
        computed,
        bytes = data.len(),
        "a snapshot arrived damaged; refused"
    );
    Err(Status::data_loss(format!(
        "the snapshot of group {gid} arrived damaged (checksum {computed:#010x}, sent \
         {sent:#010x}); it was not installed, send it again"
    )))
}

#[cfg(test)]
mod tests {
    use openraft::vote::RaftLeaderIdExt;

    use super::*;
    use crate::codec::encode;
    use crate::consensus::{LogId, TypeConfig};
    use crate::network::raft::snapshot_chunks;

    type Leader = openraft::alias::LeaderIdOf<TypeConfig>;

    /// The chunks a leader sends for a snapshot of a data group of `bytes` bytes of data.
    fn sent(bytes: usize) -> Vec<InstallSnapshotRequest> {
        let meta = SnapshotMeta {
            last_log_id: Some(LogId::new(Leader::new_committed(2, 1), 9)),
            ..Default::default()
        };
        let header = encode(&(Vote::new_committed(2, 1), meta)).unwrap_or_default();
        let data = crate::store::tests_support::data_snapshot(bytes);
        snapshot_chunks(5, 2, 1, header, &data)
    }

    async fn assemble(chunks: Vec<InstallSnapshotRequest>) -> Result<Received, Status> {
        let mut chunks = chunks.into_iter();
        let Some(first) = chunks.next() else {
            return Err(Status::invalid_argument("no chunk"));
        };
        receive(first, futures::stream::iter(chunks.map(Ok))).await
    }

    #[tokio::test]
    async fn a_snapshot_that_arrives_whole_is_taken() {
        let chunks = sent(3 * crate::network::SNAPSHOT_CHUNK_BYTES / 2);
        assert!(chunks.len() > 2, "the snapshot spans several chunks");
        let received = assemble(chunks).await;
        assert!(received.is_ok(), "{:?}", received.err());
    }

    #[tokio::test]
    async fn a_snapshot_changed_on_the_way_is_refused() {
        let mut chunks = sent(3 * crate::network::SNAPSHOT_CHUNK_BYTES / 2);
        // One bit of the second data chunk flipped in transit.
        let chunk = &mut chunks[2].data;
        let at = chunk.len() / 2;
        chunk[at] ^= 0x10;
        let refused = assemble(chunks).await.err();
        let Some(status) = refused else {
            panic!("a damaged snapshot was taken");
        };
        assert_eq!(status.code(), tonic::Code::DataLoss, "{status:?}");
        assert!(status.message().contains("arrived damaged"), "{status:?}");
    }
}
