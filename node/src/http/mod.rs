//! The node's HTTP port: `/metrics` (Prometheus text), `/healthz` (process alive and every
//! Raft group running: a group stopped by a storage failure is named, with why), `/readyz`
//! (member of the meta group and caught up), and the HTTP/JSON API under `/v1` with its
//! OpenAPI document at `/openapi.json` ([`api`]). Over TLS when the client port has it.

pub mod api;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::grpc::ClientService;
use crate::host::Host;

/// The routes, as the request metrics name them (an API route by its template).
pub const ROUTES: &[&str] = &[
    "/metrics",
    "/healthz",
    "/readyz",
    api::OPENAPI_PATH,
    "/v1/databases",
    "/v1/databases/{db}",
    "/v1/databases/{db}/batch",
    "/v1/databases/{db}/watch",
    "/v1/databases/{db}/collections/{coll}/documents",
    "/v1/databases/{db}/collections/{coll}/documents/{id}",
    "/v1/databases/{db}/collections/{coll}/query",
    "/v1/databases/{db}/collections/{coll}/live",
    "/v1/databases/{db}/collections",
    "/v1/databases/{db}/indexes",
    "/v1/databases/{db}/collections/{coll}/indexes",
    "/v1/databases/{db}/collections/{coll}/indexes/{name}",
    "/v1/databases/{db}/transactions",
    "/v1/transactions/{txn}/collections/{coll}/documents/{id}",
    "/v1/transactions/{txn}/collections/{coll}/query",
    "/v1/transactions/{txn}/commit",
    "/v1/transactions/{txn}/rollback",
    "/v1/cluster",
    "/v1/cluster/members",
];

/// Every route of the HTTP port; `client` is the client port's service stack, which the API
/// calls in process.
pub fn router(host: Arc<Host>, client: ClientService) -> Router {
    let requests = host.metrics.requests.http(ROUTES);
    let limits = api::Limits::of(&host.config);
    let probes = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(host);
    probes
        .merge(api::router(api::Gateway::new(client), limits))
        .layer(requests)
}

/// OpenMetrics to a scraper that asks for it (Prometheus does), else Prometheus' text format.
async fn metrics(State(host): State<Arc<Host>>, headers: HeaderMap) -> impl IntoResponse {
    let groups: Vec<_> = host
        .groups()
        .into_iter()
        .map(|(gid, _)| gid)
        .filter(|gid| *gid != crate::types::META_GROUP)
        .collect();
    // One lookup per shard here; a scrape that cannot read them reports none.
    let documents = host.storage.document_counts(&groups).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "reading the document counts for /metrics");
        Vec::new()
    });
    host.metrics
        .observe(&host.config.data_dir, &host.meta_state(), &documents);
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            host.metrics.render(),
        )
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            host.metrics.render_text(),
        )
    }
}

async fn healthz(State(host): State<Arc<Host>>) -> impl IntoResponse {
    let stopped = crate::host::supervise::unhealthy(&host.failures().stopped_groups());
    match stopped {
        _ if host.is_stopping() => (StatusCode::SERVICE_UNAVAILABLE, "stopping\n".to_string()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        None => (StatusCode::OK, "ok\n".to_string()),
    }
}

async fn readyz(State(host): State<Arc<Host>>) -> impl IntoResponse {
    if !host.is_stopping() && host.is_ready() {
        (StatusCode::OK, "ready\n".to_owned())
    } else if host.space().is_full() {
        let why = host.space().describe();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: storage full ({why})\n"),
        )
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_owned())
    }
}

pub async fn serve(
    host: Arc<Host>,
    client: ClientService,
    listener: TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = crate::tls::accept::accept(listener, host.tls.http_port.clone());
    axum::serve(listener, router(host, client))
        .with_graceful_shutdown(stop)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeConfig;
    use axum::http::{HeaderValue, Request, Response};
    use clap::Parser;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tower::{Layer, Service, ServiceExt};

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        config: NodeConfig,
    }

    /// The whole answer to `GET path` (HTTP/1.0: the server closes when done).
    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => stream,
            Err(e) => panic!("connecting to {addr}: {e}"),
        };
        let request = format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n");
        let mut answer = String::new();
        let exchanged = async {
            stream.write_all(request.as_bytes()).await?;
            stream.read_to_string(&mut answer).await
        };
        if let Err(e) = exchanged.await {
            panic!("GET {path}: {e}");
        }
        answer
    }

    /// One gRPC call through the client port's request layer, answered with `grpc_status`.
    async fn call(host: &Host, path: &str, grpc_status: &'static str) {
        let layer = host.metrics.requests.grpc("client");
        let inner = tower::service_fn(move |_: Request<()>| async move {
            let mut response = Response::new(tonic::body::Body::empty());
            response
                .headers_mut()
                .insert("grpc-status", HeaderValue::from_static(grpc_status));
            Ok::<_, std::convert::Infallible>(response)
        });
        let mut service = layer.layer(inner);
        let request = Request::builder().uri(path).body(()).unwrap_or_default();
        // The inner service never fails (Infallible).
        let Ok(ready) = service.ready().await;
        let Ok(_) = ready.call(request).await;
    }

    #[tokio::test]
    async fn the_metrics_endpoint_passes_promtool_and_counts_requests_per_rpc() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let data_dir = dir.path().display().to_string();
        let config = Args::parse_from([
            "node",
            "--name",
            "n0",
            "--data-dir",
            &data_dir,
            "--client-addr",
            "127.0.0.1:0",
            "--peer-addr",
            "127.0.0.1:0",
        ])
        .config;
        let host = match Host::start(config).await {
            Ok(host) => host,
            Err(e) => panic!("starting the node: {e}"),
        };
        call(&host, "/flotilla.v1.Documents/Get", "5").await;
        call(&host, "/flotilla.v1.Documents/Get", "0").await;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let client = match crate::grpc::ClientPort::new(&host) {
            Ok(port) => port.service(),
            Err(e) => panic!("client services: {e}"),
        };
        let server = tokio::spawn(serve(
            host.clone(),
            client,
            listener,
            std::future::pending(),
        ));
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.0 200"));
        let answer = get(addr, "/metrics").await;
        server.abort();
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        for expected in [
            "flotilla_grpc_server_handled_total{server=\"client\",grpc_service=\"flotilla.v1.Documents\",grpc_method=\"Get\",grpc_code=\"NotFound\"} 1",
            "flotilla_grpc_server_handling_seconds_count{server=\"client\",grpc_service=\"flotilla.v1.Documents\",grpc_method=\"Get\"} 2",
            "flotilla_http_requests_total{path=\"/healthz\",code=\"200\"} 1",
            "flotilla_storage_file_size_bytes{file=\"flotilla.redb\"}",
            "flotilla_raft_proposals_pending",
            "flotilla_grpc_server_started_total{server=\"client\",grpc_service=\"flotilla.v1.Documents\",grpc_method=\"Get\"} 2",
            "flotilla_storage_fsync_duration_seconds_count{file=\"flotilla.redb\"}",
            "flotilla_storage_fsync_duration_seconds_count{file=\"state.redb\"}",
            "flotilla_snapshot_build_duration_seconds_count ",
            "flotilla_snapshot_install_duration_seconds_count ",
            "flotilla_storage_compaction_duration_seconds_count ",
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_start_time_seconds ",
        ] {
            assert!(body.contains(expected), "no {expected} in\n{body}");
        }
        let promtool = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let mut promtool = match promtool {
            Ok(child) => child,
            Err(e) => {
                panic!("promtool (Debian's prometheus package; scripts/test.sh installs it): {e}")
            }
        };
        if let Some(mut stdin) = promtool.stdin.take() {
            use std::io::Write;
            assert!(stdin.write_all(body.as_bytes()).is_ok());
        }
        let output = promtool
            .wait_with_output()
            .unwrap_or_else(|e| panic!("promtool: {e}"));
        assert!(
            output.status.success(),
            "promtool check metrics:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        host.stop_groups().await;
    }
}
