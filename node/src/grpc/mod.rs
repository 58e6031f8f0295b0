//! The node's gRPC servers. The client port serves what users call: `Documents`, `Admin`, the
//! standard health service (`grpc.health.v1`, which Kubernetes gRPC probes and load balancers
//! speak) and server reflection (so that `grpcurl` works without the .proto files). The peer
//! port serves what nodes call: `Peer` (Raft, heartbeats, joining, shard status, membership,
//! mentoring), and `Documents` and `Admin` for requests forwarded between nodes. Each port
//! speaks TLS when configured (see [`crate::tls`]); the peer port then requires the cluster CA.

pub mod admin;
pub mod auth;
pub mod backup;
mod backup_cut;
pub mod documents;
pub mod guard;
pub mod limits;
pub mod peer;
pub mod peer_checks;
mod peer_snapshot;
pub mod status;
pub mod transactions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::peer::peer_server::PeerServer;
use flotilla_proto::v1::admin_server::AdminServer;
use flotilla_proto::v1::auth_server::AuthServer;
use flotilla_proto::v1::backup_server::BackupServer;
use flotilla_proto::v1::documents_server::DocumentsServer;
use flotilla_proto::v1::transactions_server::TransactionsServer;
use flotilla_proto::v1::txn_shards_server::TxnShardsServer;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};
use tower::util::BoxCloneSyncService;

use crate::host::Host;
use crate::metrics::GrpcLayer;
use crate::tls::accept::accept;

/// Services the client port names in its health and reflection answers.
const CLIENT_SERVICES: [&str; 5] = [
    "flotilla.v1.Documents",
    "flotilla.v1.Admin",
    "flotilla.v1.Auth",
    "flotilla.v1.Transactions",
    "flotilla.v1.Backup",
];

/// The client port's services behind the layers every client call passes, built once: the
/// client port serves it, and the HTTP gateway ([`crate::http::api`]) calls it in process, so
/// that an HTTP request is counted, checked and limited exactly as the gRPC call it becomes.
/// A layer for every client call (authentication, limits) goes into [`ClientLayers`].
pub struct ClientPort {
    routes: Routes,
    layers: ClientLayers,
    reporter: HealthReporter,
}

/// The layers of the client port, outermost first: request metrics, then the node's limit on
/// requests served at once.
pub type ClientLayers = ServiceBuilder<Stack<limits::NodeLimitLayer, Stack<GrpcLayer, Identity>>>;

/// The client port's whole stack as one service, for in-process callers. Its error type is
/// concrete (a boxed error in its place trips the compiler on every async caller).
pub type ClientService = BoxCloneSyncService<
    axum::http::Request<tonic::body::Body>,
    axum::http::Response<tonic::body::Body>,
    std::convert::Infallible,
>;

impl ClientPort {
    pub fn new(host: &Arc<Host>) -> Result<ClientPort, ServeError> {
        // Requests are bounded by --max-message-bytes; answers by the limits of what they
        // carry (list and Multi answers in bytes), under the largest message a peer may send.
        let max = host.config.security.max_message_bytes;
        let answers = crate::network::MAX_PEER_MESSAGE_BYTES;
        // Every call is checked for its caller first (see `guard`).
        let guard = guard::Guard::new(host.clone());
        let docs = DocumentsServer::new(guard::documents::GuardedDocuments::new(
            documents::DocumentsService::for_clients(host.clone()),
            guard.clone(),
        ))
        .max_decoding_message_size(max)
        .max_encoding_message_size(answers);
        let admin = AdminServer::new(guard::admin::GuardedAdmin::new(
            admin::AdminService::new(host.clone()),
            guard.clone(),
        ))
        .max_decoding_message_size(max)
        .max_encoding_message_size(answers);
        let users = AuthServer::new(auth::AuthService::for_clients(host.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(answers);
        let txns = TransactionsServer::new(guard::transactions::GuardedTransactions::new(
            transactions::TransactionsService::new(host.clone()),
            guard.clone(),
        ))
        .max_decoding_message_size(max)
        .max_encoding_message_size(answers);
        let backup = BackupServer::new(guard::backup::GuardedBackup::new(
            backup::BackupService::for_clients(host.clone()),
            guard,
        ))
        .max_decoding_message_size(max)
        .max_encoding_message_size(answers);
        let (reporter, health) = tonic_health::server::health_reporter();
        let reflection = || {
            CLIENT_SERVICES
                .iter()
                .fold(
                    tonic_reflection::server::Builder::configure()
                        .register_encoded_file_descriptor_set(flotilla_proto::FILE_DESCRIPTOR_SET)
                        .register_encoded_file_descriptor_set(
                            tonic_health::pb::FILE_DESCRIPTOR_SET,
                        ),
                    |builder, name| builder.with_service_name(*name),
                )
                .with_service_name("grpc.health.v1.Health")
        };
        // grpcurl and other tools ask v1 first and fall back to v1alpha.
        let routes = Routes::new(docs)
            .add_service(admin)
            .add_service(users)
            .add_service(txns)
            .add_service(backup)
            .add_service(health)
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?);
        let layers = ServiceBuilder::new()
            .layer(host.metrics.requests.grpc("client"))
            .layer(limits::NodeLimitLayer::new(
                host.config.security.max_node_requests,
            ));
        Ok(ClientPort {
            routes,
            layers,
            reporter,
        })
    }

    /// The stack as one service: what the client port serves, callable in process.
    pub fn service(&self) -> ClientService {
        // A layer answers a refused call with its gRPC status, never with a transport error.
        BoxCloneSyncService::new(self.layers.service(self.routes.clone()))
    }
}

/// Serves the client and admin API until `stop` resolves.
pub async fn serve_client(
    host: Arc<Host>,
    port: ClientPort,
    listener: TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let incoming = accept(listener, host.tls.client_port.clone()).into_stream();
    let max_streams = host.config.security.max_connection_requests;
    let health_task = tokio::spawn(report_health(host, port.reporter));
    let served = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(max_streams))
        .layer(port.layers)
        .add_routes(port.routes)
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
            for service in std::iter::once("").chain(CLIENT_SERVICES) {
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
    // Raft entries and snapshot chunks between nodes may be as large as the peers send.
    let peer_max = crate::network::MAX_PEER_MESSAGE_BYTES;
    let peer = PeerServer::new(peer::PeerService::new(host.clone()))
        .max_decoding_message_size(peer_max)
        .max_encoding_message_size(peer_max);
    let requests = host.metrics.requests.grpc("peer");
    // Forwarded requests are checked for their cluster and sender, as the Peer calls are.
    let docs = InterceptedService::new(
        DocumentsServer::new(documents::DocumentsService::for_peers(host.clone()))
            .max_decoding_message_size(peer_max)
            .max_encoding_message_size(peer_max),
        peer_checks::forwarded(host.clone()),
    );
    let admin = InterceptedService::new(
        AdminServer::new(admin::AdminService::new(host.clone())),
        peer_checks::forwarded(host.clone()),
    );
    let users = InterceptedService::new(
        AuthServer::new(auth::AuthService::for_peers(host.clone())),
        peer_checks::forwarded(host.clone()),
    );
    let txns = InterceptedService::new(
        TransactionsServer::new(transactions::TransactionsService::new(host.clone()))
            .max_decoding_message_size(peer_max)
            .max_encoding_message_size(peer_max),
        peer_checks::forwarded(host.clone()),
    );
    let txn_shards = InterceptedService::new(
        TxnShardsServer::new(transactions::TxnShardsService::new(host.clone()))
            .max_decoding_message_size(peer_max)
            .max_encoding_message_size(peer_max),
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
        .add_service(users)
        .add_service(txns)
        .add_service(txn_shards)
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
