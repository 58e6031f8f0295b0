//! Everything this node sends to other nodes, over one gRPC connection per peer, to the peer's
//! peer port: the Raft messages of every group ([`raft`]), node heartbeats, the `Peer` calls
//! (joining, shard status, membership changes, mentoring) and requests forwarded to the node
//! that can serve them ([`forward`]). What is heard back from peers is kept in [`beats`].

pub mod beats;
pub mod forward;
pub mod raft;
pub mod snapshot_sends;
pub mod stamp;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_proto::peer::peer_client::PeerClient;
use flotilla_proto::peer::{HeartbeatRequest, HeartbeatResponse};
use flotilla_proto::v1::admin_client::AdminClient;
use flotilla_proto::v1::backup_client::BackupClient;
use flotilla_proto::v1::documents_client::DocumentsClient;
use flotilla_proto::v1::transactions_client::TransactionsClient;
use flotilla_proto::v1::txn_shards_client::TxnShardsClient;
use rustls::ClientConfig;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::tls::Reloading;
pub use crate::tls::connect::BadAddress;
use crate::types::{GroupId, NodeId};
pub use beats::{Beats, LeaderNode};
pub use raft::{GroupNetwork, NetworkFactory};
pub use snapshot_sends::SnapshotSends;
pub use stamp::Stamp;

/// A connection to a peer port whose every request names this node and its cluster.
pub type PeerChannel = InterceptedService<Channel, Stamp>;

/// Size of one snapshot chunk on the wire.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Largest message sent to or accepted from a peer.
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 << 20;

/// Connections to peer nodes (one per peer address, shared by every caller), and what this
/// node sent over them.
pub struct Peers {
    /// Mutual TLS to peer ports (`--peer-tls-*`); plaintext without.
    tls: Option<Arc<Reloading<ClientConfig>>>,
    /// This node's id and cluster id, on every request.
    stamp: Stamp,
    channels: Mutex<HashMap<String, Channel>>,
    /// Bytes of the latest snapshot sent from here, per group and target node.
    snapshot_sent: Mutex<HashMap<(GroupId, NodeId), Arc<AtomicU64>>>,
    /// The snapshots on their way to replicas, or lately installed there.
    snapshot_sends: SnapshotSends,
}

impl From<BadAddress> for tonic::Status {
    fn from(e: BadAddress) -> Self {
        tonic::Status::internal(e.to_string())
    }
}

impl Peers {
    /// The connections of node `from`, made over mutual TLS with `tls` (plaintext without).
    pub fn new(from: NodeId, tls: Option<Arc<Reloading<ClientConfig>>>) -> Self {
        Peers {
            tls,
            stamp: Stamp::new(from),
            channels: Mutex::default(),
            snapshot_sent: Mutex::default(),
            snapshot_sends: SnapshotSends::default(),
        }
    }

    /// Records the cluster this node belongs to, named from then on in every request.
    pub fn set_cluster(&self, cluster: &str) {
        self.stamp.set_cluster(cluster);
    }

    /// Bytes of the latest (or current) snapshot this node sent to `target` for `gid`.
    pub fn snapshot_bytes_sent(&self, gid: GroupId, target: NodeId) -> u64 {
        let sent = self.snapshot_sent.lock().unwrap_or_else(|p| p.into_inner());
        sent.get(&(gid, target))
            .map(|c| c.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// The snapshots on their way to replicas, or lately installed there.
    pub fn snapshot_sends(&self) -> &SnapshotSends {
        &self.snapshot_sends
    }

    /// A counter for a snapshot starting now, reset to zero.
    fn snapshot_counter(&self, gid: GroupId, target: NodeId) -> Arc<AtomicU64> {
        let mut sent = self.snapshot_sent.lock().unwrap_or_else(|p| p.into_inner());
        let c = sent.entry((gid, target)).or_default().clone();
        c.store(0, Ordering::Relaxed);
        c
    }

    /// The connection to the peer port at `addr` (made on first use).
    fn channel(&self, addr: &str) -> Result<PeerChannel, BadAddress> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(InterceptedService::new(c.clone(), self.stamp.clone()));
        }
        let endpoint = crate::tls::connect::endpoint(addr)?;
        let channel = crate::tls::connect::channel(endpoint, self.tls.clone());
        channels.insert(addr.to_string(), channel.clone());
        Ok(InterceptedService::new(channel, self.stamp.clone()))
    }

    /// The `Peer` service of the node at peer address `addr`.
    pub fn peer(&self, addr: &str) -> Result<PeerClient<PeerChannel>, BadAddress> {
        Ok(PeerClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES))
    }

    /// The `Documents` service of the node at peer address `addr` (for forwarded requests).
    pub fn documents(&self, addr: &str) -> Result<DocumentsClient<PeerChannel>, BadAddress> {
        Ok(DocumentsClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES))
    }

    /// The `Backup` service of the node at peer address `addr` (a shard leader's read index).
    pub fn backup(&self, addr: &str) -> Result<BackupClient<PeerChannel>, BadAddress> {
        Ok(BackupClient::new(self.channel(addr)?))
    }

    /// The `Admin` service of the node at peer address `addr` (for forwarded requests).
    pub fn admin(&self, addr: &str) -> Result<AdminClient<PeerChannel>, BadAddress> {
        Ok(AdminClient::new(self.channel(addr)?))
    }

    /// The `Auth` service of the node at peer address `addr` (for forwarded user and role
    /// changes).
    pub fn auth(
        &self,
        addr: &str,
    ) -> Result<flotilla_proto::v1::auth_client::AuthClient<PeerChannel>, BadAddress> {
        Ok(flotilla_proto::v1::auth_client::AuthClient::new(
            self.channel(addr)?,
        ))
    }

    /// The `TxnShards` service of the node at peer address `addr` (a transaction's calls on
    /// one shard, see `crate::txn`).
    pub fn txn_shards(&self, addr: &str) -> Result<TxnShardsClient<PeerChannel>, BadAddress> {
        Ok(TxnShardsClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES))
    }

    /// The `Transactions` service of the node at peer address `addr` (calls forwarded to a
    /// transaction's coordinator).
    pub fn transactions(&self, addr: &str) -> Result<TransactionsClient<PeerChannel>, BadAddress> {
        Ok(TransactionsClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES))
    }

    /// Sends this node's heartbeat to the peer at `addr`; the answer is the peer's own.
    pub async fn beat(
        &self,
        addr: &str,
        beat: HeartbeatRequest,
        timeout: Duration,
    ) -> Result<HeartbeatResponse, BeatError> {
        let mut client = self
            .peer(addr)
            .map_err(|e| BeatError::Failed(e.to_string()))?;
        let mut request = tonic::Request::new(beat);
        request.set_timeout(timeout);
        match client.heartbeat(request).await {
            Ok(answer) => Ok(answer.into_inner()),
            Err(s) if refused(&s) => Err(BeatError::Refused),
            Err(s)
                if flotilla_proto::reason_of(&s)
                    == Some(flotilla_proto::v1::ErrorReason::NodeRemoved) =>
            {
                Err(BeatError::Removed(s.message().to_string()))
            }
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
    /// The peer holds the record that this node was removed from the cluster.
    #[error("removed from the cluster: {0}")]
    Removed(String),
    #[error("{0}")]
    Failed(String),
}

/// True when the call failed because the peer's address refused the connection.
pub fn refused(status: &tonic::Status) -> bool {
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
