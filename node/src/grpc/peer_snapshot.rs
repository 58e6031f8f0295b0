//! A snapshot arriving from a peer (`Peer::install_snapshot`): its chunks written to a new
//! snapshot file as they come, and checked before Raft sees it. The data must match the
//! checksum its first chunk carries (see `network::raft::first_snapshot_chunk`): a snapshot
//! damaged on the way is refused, and the leader sends it again; it is never installed. Then
//! the file must read whole, a frame at a time (see `store::check_snapshot`). Nothing of it is
//! held in memory beyond a chunk or a frame.

use std::io::Write;
use std::sync::Arc;

use flotilla_proto::peer::InstallSnapshotRequest;
use flotilla_proto::v1::ErrorReason;
use flotilla_proto::with_reason;
use futures::{Stream, StreamExt};
use tonic::Status;

use super::peer_checks::check_snapshot_meta;
use crate::codec::decode;
use crate::consensus::{SnapshotMeta, Vote};
use crate::snapshot_file::{SnapshotFile, SnapshotWriter};
use crate::store::Storage;
use crate::types::GroupId;

/// A snapshot received whole: the sender's vote, the snapshot metadata, and its file (pending:
/// removed unless Raft installs it).
pub struct Received {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    pub file: SnapshotFile,
}

fn malformed(what: String) -> Status {
    with_reason(
        Status::invalid_argument(what),
        ErrorReason::MalformedMessage,
    )
}

/// The snapshot whose `first` chunk was read already, written from the `rest` of its chunks
/// into a new file of `storage` and checked: each chunk of the same group and nodes, the data
/// matching its checksum (when the sender sent one) and well formed.
pub async fn receive<S>(
    storage: &Arc<Storage>,
    first: InstallSnapshotRequest,
    mut rest: S,
) -> Result<Received, Status>
where
    S: Stream<Item = Result<InstallSnapshotRequest, Status>> + Unpin,
{
    let gid = first.group_id;
    let (vote, meta): (Vote, SnapshotMeta) =
        decode(&first.header).map_err(|e| malformed(format!("snapshot header: {e}")))?;
    check_snapshot_meta(&meta)?;
    let out = storage.new_snapshot_file(gid).map_err(unwritable)?;
    let mut out = written(out, first.data).await?;
    while let Some(chunk) = rest.next().await {
        let chunk = chunk?;
        if (chunk.group_id, chunk.to_node_id, chunk.from_node_id)
            != (gid, first.to_node_id, first.from_node_id)
        {
            return Err(malformed(
                "snapshot chunks of different groups or nodes".into(),
            ));
        }
        out = written(out, chunk.data).await?;
    }
    if let Some(sent) = first.checksum {
        check_arrived_whole(gid, sent, out.checksum(), out.len())?;
    }
    let storage = storage.clone();
    let file = tokio::task::spawn_blocking(move || {
        let file = out.finish(None).map_err(unwritable)?;
        storage
            .received_snapshot(gid, file)
            .map_err(|e| malformed(format!("snapshot body: {e}")))
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))??;
    Ok(Received { vote, meta, file })
}

fn unwritable(e: std::io::Error) -> Status {
    Status::unavailable(format!("the snapshot could not be written: {e}"))
}

/// `out` once `data` is written to it, off the async runtime (a write may wait on the disk).
async fn written(mut out: SnapshotWriter, data: Vec<u8>) -> Result<SnapshotWriter, Status> {
    tokio::task::spawn_blocking(move || out.write_all(&data).map(|()| out))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(unwritable)
}

/// Refuses snapshot data of group `gid` whose checksum (`computed`, over `bytes` bytes) is not
/// the one `sent` with it.
fn check_arrived_whole(gid: GroupId, sent: u32, computed: u32, bytes: u64) -> Result<(), Status> {
    if computed == sent {
        return Ok(());
    }
    tracing::warn!(
        group = gid,
        sent,
        computed,
        bytes,
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
    use crate::network::raft::{first_snapshot_chunk, snapshot_chunk};

    type Leader = openraft::alias::LeaderIdOf<TypeConfig>;

    /// The chunks a leader sends for a snapshot of a data group of `bytes` bytes of data.
    fn sent(bytes: usize) -> Vec<InstallSnapshotRequest> {
        let meta = SnapshotMeta {
            last_log_id: Some(LogId::new(Leader::new_committed(2, 1), 9)),
            ..Default::default()
        };
        let header = encode(&(Vote::new_committed(2, 1), meta)).unwrap_or_default();
        let data = crate::store::tests_support::data_snapshot(bytes);
        let mut chunks = vec![first_snapshot_chunk(
            5,
            2,
            1,
            header,
            crate::codec::checksum(&data),
        )];
        for piece in data.chunks(crate::network::SNAPSHOT_CHUNK_BYTES) {
            chunks.push(snapshot_chunk(5, 2, 1, piece.to_vec()));
        }
        chunks
    }

    async fn assemble(chunks: Vec<InstallSnapshotRequest>) -> Result<Received, Status> {
        let dir = tempfile::tempdir().map_err(|e| Status::internal(e.to_string()))?;
        let storage = Storage::open(dir.path(), crate::store::StorageMetrics::unregistered())
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut chunks = chunks.into_iter();
        let Some(first) = chunks.next() else {
            return Err(Status::invalid_argument("no chunk"));
        };
        receive(&storage, first, futures::stream::iter(chunks.map(Ok))).await
    }

    #[tokio::test]
    async fn a_snapshot_that_arrives_whole_is_taken() {
        let chunks = sent(3 * crate::network::SNAPSHOT_CHUNK_BYTES / 2);
        assert!(chunks.len() > 2, "the snapshot spans several chunks");
        let received = assemble(chunks).await;
        assert!(received.is_ok(), "{:?}", received.err());
    }

    #[tokio::test]
    async fn a_snapshot_from_a_node_that_kept_them_whole_is_taken_as_a_file() {
        let mut chunks = sent(0);
        let old = crate::store::tests_support::legacy_snapshot(20_000);
        chunks.truncate(1);
        chunks[0].checksum = Some(crate::codec::checksum(&old));
        chunks.push(snapshot_chunk(5, 2, 1, old));
        let received = assemble(chunks).await;
        assert!(received.is_ok(), "{:?}", received.err());
    }

    #[tokio::test]
    async fn a_snapshot_that_does_not_read_whole_is_refused() {
        let mut chunks = sent(3 * crate::network::SNAPSHOT_CHUNK_BYTES / 2);
        // Cut short by the sender, with a checksum that matches what was sent.
        chunks.pop();
        let sent_data: Vec<u8> = chunks[1..].iter().flat_map(|c| c.data.clone()).collect();
        chunks[0].checksum = Some(crate::codec::checksum(&sent_data));
        let status = assemble(chunks).await.err().expect("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("snapshot body"), "{status:?}");
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
