//! HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (process alive), `/readyz` (member
//! of the meta group and caught up). Over TLS when the client port has it.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::host::Host;

pub fn router(host: Arc<Host>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(host)
}

async fn metrics(State(host): State<Arc<Host>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        host.metrics.render(),
    )
}

async fn healthz(State(host): State<Arc<Host>>) -> impl IntoResponse {
    if host.is_stopping() {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

async fn readyz(State(host): State<Arc<Host>>) -> impl IntoResponse {
    if !host.is_stopping() && host.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

pub async fn serve(
    host: Arc<Host>,
    listener: TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = crate::tls::accept::accept(listener, host.tls.http_port.clone());
    axum::serve(listener, router(host))
        .with_graceful_shutdown(stop)
        .await
}
