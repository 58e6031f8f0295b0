//! Outgoing Raft traffic: one gRPC connection per peer node, shared by every Raft group on this
//! node; each message names its group.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_proto::raft::raft_client::RaftClient;
use flotilla_proto::raft::{NodeBeat, RaftMessage, SnapshotChunk};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkV2};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};

use crate::codec::{decode, encode};
use crate::consensus::{Snapshot, TypeConfig, Vote};
use crate::types::{GroupId, NodeAddr, NodeId};

/// Size of one snapshot chunk on the wire.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Shortest deadline of an append that carries entries (see `append_entries`).
const MIN_APPEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Connections to peer nodes, by peer address.
#[derive(Default)]
pub struct Peers {
    clients: Mutex<HashMap<String, RaftClient<Channel>>>,
    /// Bytes of the latest snapshot sent from here, per group and target node.
    snapshot_sent: Mutex<HashMap<(GroupId, NodeId), Arc<AtomicU64>>>,
}

impl Peers {
    /// Bytes of the latest (or current) snapshot this node sent to `target` for `gid`.
    pub fn snapshot_bytes_sent(&self, gid: GroupId, target: NodeId) -> u64 {
        let sent = self.snapshot_sent.lock().unwrap_or_else(|p| p.into_inner());
        sent.get(&(gid, target))
            .map(|c| c.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// A counter for a snapshot starting now, reset to zero.
    fn snapshot_counter(&self, gid: GroupId, target: NodeId) -> Arc<AtomicU64> {
        let mut sent = self.snapshot_sent.lock().unwrap_or_else(|p| p.into_inner());
        let c = sent.entry((gid, target)).or_default().clone();
        c.store(0, Ordering::Relaxed);
        c
    }

    fn client(&self, addr: &str) -> Result<RaftClient<Channel>, tonic::transport::Error> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .connect_lazy();
        let client = RaftClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        clients.insert(addr.to_string(), client.clone());
        Ok(client)
    }
}

impl Peers {
    /// Sends this node's heartbeat to the peer at `addr`; the answer is the peer's own.
    pub async fn beat(
        &self,
        addr: &str,
        beat: NodeBeat,
        timeout: Duration,
    ) -> Result<NodeBeat, BeatError> {
        let mut client = self
            .client(addr)
            .map_err(|e| BeatError::Failed(e.to_string()))?;
        let mut request = tonic::Request::new(beat);
        request.set_timeout(timeout);
        match client.heartbeat(request).await {
            Ok(answer) => Ok(answer.into_inner()),
            Err(s) if refused(&s) => Err(BeatError::Refused),
            Err(s) => Err(BeatError::Failed(format!("{}: {}", s.code(), s.message()))),
        }
    }
}

/// Why a node heartbeat got no answer.
#[derive(Debug, thiserror::Error)]
pub enum BeatError {
    /// The peer's address refused the connection: no process listens there.
    #[error("connection refused")]
    Refused,
    #[error("{0}")]
    Failed(String),
}

/// True when the call failed because the peer's address refused the connection.
fn refused(status: &tonic::Status) -> bool {
    let mut next = std::error::Error::source(status);
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        next = err.source();
    }
    false
}

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
    fn client(&self) -> Result<RaftClient<Channel>, SendError> {
        self.peers
            .client(&self.addr)
            .map_err(|e| SendError::Transport(self.addr.clone(), e.to_string()))
    }

    async fn call<Req, Resp, E, F, Fut>(
        &self,
        req: &Req,
        timeout: Duration,
        f: F,
    ) -> Result<Resp, SendError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: DeserializeOwned + std::fmt::Display,
        F: FnOnce(RaftClient<Channel>, tonic::Request<RaftMessage>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>>,
    {
        let payload = encode(req).map_err(|e| SendError::Remote(e.to_string()))?;
        let mut request = tonic::Request::new(RaftMessage {
            group_id: self.gid,
            payload,
            to_node_id: self.target,
            from_node_id: self.from,
        });
        request.set_timeout(timeout);
        let response = f(self.client()?, request).await.map_err(|s| {
            SendError::Transport(self.addr.clone(), format!("{}: {}", s.code(), s.message()))
        })?;
        let result: Result<Resp, E> =
            decode(&response.into_inner().payload).map_err(|e| SendError::Remote(e.to_string()))?;
        result.map_err(|e| SendError::Remote(e.to_string()))
    }
}

type RaftErr = openraft::error::RaftError<TypeConfig>;
type Fatal = openraft::error::Fatal<TypeConfig>;

impl RaftNetworkV2<TypeConfig> for GroupNetwork {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        // openraft gives every append the heartbeat interval as its deadline. An append that
        // carries entries waits for the follower's fsync, which on a busy disk or machine can
        // take longer: cutting it off makes the leader send the same entries again and adds
        // load exactly when there is too much. Heartbeats keep the short deadline.
        let timeout = if rpc.entries.is_empty() {
            option.hard_ttl()
        } else {
            option.hard_ttl().max(MIN_APPEND_TIMEOUT)
        };
        self.call::<_, _, RaftErr, _, _>(&rpc, timeout, |mut c, r| async move {
            c.append_entries(r).await
        })
        .await
        .map_err(unreachable)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call::<_, _, RaftErr, _, _>(&rpc, option.hard_ttl(), |mut c, r| async move {
            c.vote(r).await
        })
        .await
        .map_err(unreachable)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call::<_, _, RaftErr, _, _>(&rpc, option.hard_ttl(), |mut c, r| async move {
            c.pre_vote(r).await
        })
        .await
        .map_err(unreachable)
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call::<_, _, Fatal, _, _>(&req, option.hard_ttl(), |mut c, r| async move {
            c.transfer_leader(r).await
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
        let data = snapshot.snapshot;
        let mut chunks: Vec<SnapshotChunk> = Vec::new();
        let (to_node_id, from_node_id) = (self.target, self.from);
        chunks.push(SnapshotChunk {
            group_id: gid,
            header,
            data: vec![],
            to_node_id,
            from_node_id,
        });
        for piece in data.chunks(SNAPSHOT_CHUNK_BYTES) {
            chunks.push(SnapshotChunk {
                group_id: gid,
                header: vec![],
                data: piece.to_vec(),
                to_node_id,
                from_node_id,
            });
        }
        let mut client = self
            .client()
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?;
        let counter = self.peers.snapshot_counter(gid, to_node_id);
        let chunks = futures::StreamExt::inspect(futures::stream::iter(chunks), move |c| {
            counter.fetch_add(c.data.len() as u64, Ordering::Relaxed);
        });
        let mut request = tonic::Request::new(chunks);
        request.set_timeout(option.hard_ttl().max(Duration::from_secs(60)));
        let send = client.install_snapshot(request);
        let response = tokio::select! {
            r = send => r,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        let response = response.map_err(|s| {
            let e =
                SendError::Transport(self.addr.clone(), format!("{}: {}", s.code(), s.message()));
            StreamingError::Unreachable(Unreachable::new(&e))
        })?;
        let result: Result<SnapshotResponse<TypeConfig>, Fatal> =
            decode(&response.into_inner().payload)
                .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| {
            StreamingError::Network(NetworkError::new(&SendError::Remote(e.to_string())))
        })
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
