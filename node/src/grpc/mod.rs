//! The node's gRPC services: `Documents` and `Admin` on the client port, `Raft` on the peer port.

pub mod admin;
pub mod documents;
pub mod forward;
pub mod raft;
pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;

use flotilla_proto::raft::raft_server::RaftServer;
use flotilla_proto::v1::admin_server::AdminServer;
use flotilla_proto::v1::documents_server::DocumentsServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use crate::host::Host;

/// Largest gRPC message accepted (documents are limited separately, with a clear error).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Serves the client and admin API until `stop` resolves.
pub async fn serve_client(
    host: Arc<Host>,
    listener: TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let fwd = Arc::new(forward::Forwarder::default());
    let docs = DocumentsServer::new(documents::DocumentsService::new(host.clone(), fwd.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let admin = AdminServer::new(admin::AdminService::new(host, fwd));
    tonic::transport::Server::builder()
        .add_service(docs)
        .add_service(admin)
        .serve_with_incoming_shutdown(incoming(listener), stop)
        .await
}

/// Serves the peer (Raft) API until `stop` resolves.
pub async fn serve_peer(
    host: Arc<Host>,
    listener: TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let svc = RaftServer::new(raft::PeerService::new(host))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming(listener), stop)
        .await
}

/// Accepted connections with Nagle's algorithm off: the server's `tcp_nodelay` does not apply
/// to a listener handed over, and small answers (heartbeat acks, read-index replies) would wait
/// for the peer's delayed ACK.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

pub fn local_addr(l: &TcpListener) -> Option<SocketAddr> {
    l.local_addr().ok()
}
