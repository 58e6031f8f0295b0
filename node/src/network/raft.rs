//! Raft traffic of one group to one peer (openraft's network): every message names its group,
//! its sender and its target, and travels over the peer's one shared connection.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use flotilla_proto::peer::peer_client::PeerClient;
use flotilla_proto::peer::{
    AppendEntriesRequest as PbAppend, InstallSnapshotRequest, PreVoteRequest as PbPreVote,
    RaftReply, RaftRequest, TransferLeaderRequest as PbTransfer, VoteRequest as PbVote,
};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkV2};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{PeerChannel, Peers, SNAPSHOT_CHUNK_BYTES};
use crate::codec::{decode, encode};
use crate::consensus::{Snapshot, TypeConfig, Vote};
use crate::snapshot_file::SnapshotFile;
use crate::types::{GroupId, NodeAddr, NodeId};

/// Shortest deadline of an append that carries entries (see `append_entries`).
const MIN_APPEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Shortest deadline of every other Raft message: heartbeats, probes and votes (see
/// `append_entries`).
const MIN_RAFT_TIMEOUT: Duration = Duration::from_millis(500);

/// Creates the network of one group.
pub struct NetworkFactory {
    gid: GroupId,
    from: NodeId,
    peers: Arc<Peers>,
}

impl NetworkFactory {
    pub fn new(gid: GroupId, from: NodeId, peers: Arc<Peers>) -> Self {
        NetworkFactory { gid, from, peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = GroupNetwork;

    async fn new_client(&mut self, target: NodeId, node: &NodeAddr) -> Self::Network {
        GroupNetwork {
            gid: self.gid,
            from: self.from,
            target,
            addr: node.peer_addr.clone(),
            peers: self.peers.clone(),
        }
    }
}

/// The path from one group to one peer.
pub struct GroupNetwork {
    gid: GroupId,
    from: NodeId,
    target: NodeId,
    addr: String,
    peers: Arc<Peers>,
}

impl GroupNetwork {
    /// The path from group `gid` on node `from` to `target` at peer address `addr` (also used
    /// outside Raft, by a replica that mentors a new one with its snapshot).
    pub fn new(
        gid: GroupId,
        from: NodeId,
        target: NodeId,
        addr: String,
        peers: Arc<Peers>,
    ) -> Self {
        GroupNetwork {
            gid,
            from,
            target,
            addr,
            peers,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("peer {0}: {1}")]
    Transport(String, String),
    #[error("peer answered: {0}")]
    Remote(String),
}

fn unreachable(e: SendError) -> RPCError<TypeConfig> {
    match e {
        SendError::Transport(..) => RPCError::Unreachable(Unreachable::new(&e)),
        SendError::Remote(_) => RPCError::Network(NetworkError::new(&e)),
    }
}

impl GroupNetwork {
    fn client(&self) -> Result<PeerClient<PeerChannel>, SendError> {
        self.peers
            .peer(&self.addr)
            .map_err(|e| SendError::Transport(self.addr.clone(), e.to_string()))
    }

    async fn call<Req, Resp, E, W, F, Fut>(
        &self,
        req: &Req,
        timeout: Duration,
        f: F,
    ) -> Result<Resp, SendError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: DeserializeOwned + std::fmt::Display,
        W: From<RaftRequest>,
        F: FnOnce(PeerClient<PeerChannel>, tonic::Request<W>) -> Fut,
        Fut: Future<Output = Result<Option<RaftReply>, tonic::Status>>,
    {
        let payload = encode(req).map_err(|e| SendError::Remote(e.to_string()))?;
        let request = RaftRequest {
            group_id: self.gid,
            payload,
            to_node_id: self.target,
            from_node_id: self.from,
        };
        let mut request = tonic::Request::new(W::from(request));
        request.set_timeout(timeout);
        let reply = f(self.client()?, request)
            .await
            .map_err(|s| {
                SendError::Transport(self.addr.clone(), format!("{}: {}", s.code(), s.message()))
            })?
            .ok_or_else(|| SendError::Remote("an answer without its Raft reply".into()))?;
        let result: Result<Resp, E> =
            decode(&reply.payload).map_err(|e| SendError::Remote(e.to_string()))?;
        result.map_err(|e| SendError::Remote(e.to_string()))
    }
}

type RaftErr = openraft::error::RaftError<TypeConfig>;
type Fatal = openraft::error::Fatal<TypeConfig>;

impl RaftNetworkV2<TypeConfig> for GroupNetwork {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        // openraft gives every append the heartbeat interval as its deadline. An append that
        // carries entries waits for the follower's fsync, which on a busy disk or machine can
        // take longer: cutting it off makes the leader send the same entries again and adds
        // load exactly when there is too much. Heartbeats and probes get at least
        // [`MIN_RAFT_TIMEOUT`]: openraft gives them the heartbeat interval (50 ms with fast
        // elections), which a loaded machine misses for every group at once; each miss is
        // cancelled at the follower too and sent again, and the cluster does nothing but time
        // out. One heartbeat per follower is in flight at a time, so a longer deadline only
        // skips beats while a follower is slow.
        let timeout = if rpc.entries.is_empty() {
            option.hard_ttl().max(MIN_RAFT_TIMEOUT)
        } else {
            option.hard_ttl().max(MIN_APPEND_TIMEOUT)
        };
        self.call::<_, _, RaftErr, PbAppend, _, _>(&rpc, timeout, |mut c, r| async move {
            Ok(c.append_entries(r).await?.into_inner().raft)
        })
        .await
        .map_err(unreachable)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let timeout = option.hard_ttl().max(MIN_RAFT_TIMEOUT);
        self.call::<_, _, RaftErr, PbVote, _, _>(&rpc, timeout, |mut c, r| async move {
            Ok(c.vote(r).await?.into_inner().raft)
        })
        .await
        .map_err(unreachable)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call::<_, _, RaftErr, PbPreVote, _, _>(
            &rpc,
            option.hard_ttl().max(MIN_RAFT_TIMEOUT),
            |mut c, r| async move { Ok(c.pre_vote(r).await?.into_inner().raft) },
        )
        .await
        .map_err(unreachable)
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call::<_, _, Fatal, PbTransfer, _, _>(&req, option.hard_ttl(), |mut c, r| async move {
            Ok(c.transfer_leader(r).await?.into_inner().raft)
        })
        .await
        .map_err(unreachable)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let header = encode(&(vote, snapshot.meta.clone()))
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let gid = self.gid;
        let (to, from) = (self.target, self.from);
        let first = first_snapshot_chunk(gid, to, from, header, snapshot.snapshot.checksum());
        let mut client = self
            .client()
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?;
        let counter = self.peers.snapshot_counter(gid, to);
        let index = snapshot.meta.last_log_id.as_ref().map_or(0, |l| l.index);
        let sending = self.peers.snapshot_sends().start(gid, to, index);
        // Read from the file as the stream is sent. A read that fails (the file damaged, its
        // last piece then held back) ends the stream early: the peer refuses the snapshot as
        // incomplete, and the failure is reported here instead of the peer's answer.
        let failed: Arc<std::sync::Mutex<Option<std::io::Error>>> = Arc::default();
        let failure = failed.clone();
        let pieces = futures::StreamExt::scan(
            snapshot.snapshot.chunks(SNAPSHOT_CHUNK_BYTES),
            (),
            move |_, piece| {
                let out = match piece {
                    Ok(data) => {
                        counter.fetch_add(data.len() as u64, Ordering::Relaxed);
                        Some(snapshot_chunk(gid, to, from, data))
                    }
                    Err(e) => {
                        *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        None
                    }
                };
                futures::future::ready(out)
            },
        );
        let chunks = futures::StreamExt::chain(futures::stream::iter([first]), pieces);
        let mut request = tonic::Request::new(chunks);
        request.set_timeout(option.hard_ttl().max(Duration::from_secs(60)));
        let send = client.install_snapshot(request);
        let response = tokio::select! {
            r = send => r,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        if let Some(e) = failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            tracing::error!(group = gid, to, error = %e, "a snapshot could not be read to be sent");
            return Err(StreamingError::Network(NetworkError::new(&e)));
        }
        let response = response.map_err(|s| {
            let e =
                SendError::Transport(self.addr.clone(), format!("{}: {}", s.code(), s.message()));
            StreamingError::Unreachable(Unreachable::new(&e))
        })?;
        let reply = response.into_inner().raft.ok_or_else(|| {
            StreamingError::Network(NetworkError::new(&SendError::Remote(
                "an answer without its Raft reply".into(),
            )))
        })?;
        let result: Result<SnapshotResponse<TypeConfig>, Fatal> =
            decode(&reply.payload).map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let response = result.map_err(|e| {
            StreamingError::Network(NetworkError::new(&SendError::Remote(e.to_string())))
        })?;
        sending.installed();
        Ok(response)
    }
}

/// The first message of a snapshot of group `gid` sent from node `from` to node `to`: it
/// names the group and carries the `header` (the sender's vote and the snapshot metadata) and
/// the checksum of the whole data, which follows in [`snapshot_chunk`]s.
pub fn first_snapshot_chunk(
    gid: GroupId,
    to: NodeId,
    from: NodeId,
    header: Vec<u8>,
    checksum: u32,
) -> InstallSnapshotRequest {
    InstallSnapshotRequest {
        group_id: gid,
        header,
        data: vec![],
        to_node_id: to,
        from_node_id: from,
        checksum: Some(checksum),
    }
}

/// A message carrying a piece of a snapshot's data (after [`first_snapshot_chunk`]).
pub fn snapshot_chunk(
    gid: GroupId,
    to: NodeId,
    from: NodeId,
    data: Vec<u8>,
) -> InstallSnapshotRequest {
    InstallSnapshotRequest {
        group_id: gid,
        header: vec![],
        data,
        to_node_id: to,
        from_node_id: from,
        checksum: None,
    }
}

impl std::fmt::Debug for GroupNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GroupNetwork(group={}, target={}, addr={})",
            self.gid, self.target, self.addr
        )
    }
}
