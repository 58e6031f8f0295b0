//! The node's gRPC servers. The client port serves what users call: `Documents`, `Admin`, the
//! standard health service (`grpc.health.v1`, which Kubernetes gRPC probes and load balancers
//! speak) and server reflection (so that `grpcurl` works without the .proto files). The peer
//! port serves what nodes call: `Peer` (Raft, heartbeats, joining, shard status, membership,
//! mentoring), and `Documents` and `Admin` for requests forwarded between nodes. Each port
//! speaks TLS when configured (see [`crate::tls`]); the peer port then requires the cluster CA.

pub mod admin;
pub mod backup;
pub mod documents;
pub mod peer;
pub mod peer_checks;
pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::peer::peer_server::PeerServer;
use flotilla_proto::v1::admin_server::AdminServer;
use flotilla_proto::v1::backup_server::BackupServer;
use flotilla_proto::v1::documents_server::DocumentsServer;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::host::Host;
use crate::tls::accept::accept;

/// Largest gRPC message accepted (documents are limited separately, with a clear error).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Services the client port names in its health and reflection answers.
const CLIENT_SERVICES: [&str; 3] = [
    "flotilla.v1.Documents",
    "flotilla.v1.Admin",
    "flotilla.v1.Backup",
];

/// Serves the client and admin API until `stop` resolves.
pub async fn serve_client(
    host: Arc<Host>,
    listener: TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let docs = DocumentsServer::new(documents::DocumentsService::for_clients(host.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let admin = AdminServer::new(admin::AdminService::new(host.clone()));
    let backup = BackupServer::new(backup::BackupService::for_clients(host.clone()));
    let (reporter, health) = tonic_health::server::health_reporter();
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(flotilla_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(CLIENT_SERVICES[0])
            .with_service_name(CLIENT_SERVICES[1])
            .with_service_name(CLIENT_SERVICES[2])
            .with_service_name("grpc.health.v1.Health")
    };
    // grpcurl and other tools ask v1 first and fall back to v1alpha.
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let requests = host.metrics.requests.grpc("client");
    let incoming = accept(listener, host.tls.client_port.clone()).into_stream();
    let health_task = tokio::spawn(report_health(host, reporter));
    let served = tonic::transport::Server::builder()
        .layer(requests)
        .add_service(docs)
        .add_service(admin)
        .add_service(backup)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, stop)
        .await;
    health_task.abort();
    Ok(served?)
}

/// Keeps the health service's answers equal to the node's readiness (`/readyz`): SERVING once
/// the node is a member of the meta group and caught up, NOT_SERVING before and while stopping.
async fn report_health(host: Arc<Host>, reporter: HealthReporter) {
    let mut last = None;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let status = if host.is_ready() && !host.is_stopping() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if last != Some(status) {
            for service in [
                "",
                CLIENT_SERVICES[0],
                CLIENT_SERVICES[1],
                CLIENT_SERVICES[2],
            ] {
                reporter.set_service_status(service, status).await;
            }
            last = Some(status);
        }
    }
}

/// Serves the peer API (and forwarded requests) until `stop` resolves.
pub async fn serve_peer(
    host: Arc<Host>,
    listener: TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let peer = PeerServer::new(peer::PeerService::new(host.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let requests = host.metrics.requests.grpc("peer");
    // Forwarded requests are checked for their cluster and sender, as the Peer calls are.
    let docs = InterceptedService::new(
        DocumentsServer::new(documents::DocumentsService::for_peers(host.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        peer_checks::forwarded(host.clone()),
    );
    let admin = InterceptedService::new(
        AdminServer::new(admin::AdminService::new(host.clone())),
        peer_checks::forwarded(host.clone()),
    );
    let backup = InterceptedService::new(
        BackupServer::new(backup::BackupService::for_peers(host.clone())),
        peer_checks::forwarded(host.clone()),
    );
    let incoming = accept(listener, host.tls.peer_port.clone()).into_stream();
    tonic::transport::Server::builder()
        .layer(requests)
        .add_service(peer)
        .add_service(docs)
        .add_service(admin)
        .add_service(backup)
        .serve_with_incoming_shutdown(incoming, stop)
        .await?;
    Ok(())
}

/// Why a gRPC server could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    #[error("building the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

pub fn local_addr(l: &TcpListener) -> Option<SocketAddr> {
    l.local_addr().ok()
}
