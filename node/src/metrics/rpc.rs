//! Request metrics of the node's servers, as a tower layer: for gRPC (client and peer
//! port) the requests handled by service, method and status code and their latency, in
//! the names of go-grpc-prometheus that etcd exports; for HTTP the same by route.
//!
//! A request counts when its response headers are ready: the whole handling of a unary
//! call. Its code is the `grpc-status` of those headers (a call that failed before its
//! first message answers with it there); a streaming call that fails after its first
//! message counts as `OK`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::http;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::latency_histogram;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// `client` or `peer`: the port that served the call.
    pub server: &'static str,
    pub grpc_service: String,
    pub grpc_method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandledLabels {
    pub server: &'static str,
    pub grpc_service: String,
    pub grpc_method: String,
    pub grpc_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub path: &'static str,
    pub code: u16,
}

/// The families the layer records into.
#[derive(Clone)]
pub struct RequestMetrics {
    pub handled: Family<HandledLabels, Counter>,
    pub handling_seconds: Family<RpcLabels, Histogram>,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_seconds: Family<HttpLabels, Histogram>,
}

impl RequestMetrics {
    pub fn register(registry: &mut Registry) -> RequestMetrics {
        let metrics = RequestMetrics {
            handled: Family::default(),
            handling_seconds: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
        };
        registry.register(
            "grpc_server_handled",
            "gRPC calls completed by the server, by service, method and status code",
            metrics.handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Time the server took to answer a gRPC call (to its response headers)",
            metrics.handling_seconds.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status code",
            metrics.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time taken to answer an HTTP request",
            metrics.http_seconds.clone(),
        );
        metrics
    }

    /// A layer recording the gRPC calls of the server on port `server`.
    pub fn grpc(&self, server: &'static str) -> RequestLayer {
        RequestLayer {
            metrics: Arc::new(self.clone()),
            protocol: Protocol::Grpc(server),
        }
    }

    /// A layer recording HTTP requests to the given routes (any other path counts as `other`).
    pub fn http(&self, routes: &'static [&'static str]) -> RequestLayer {
        RequestLayer {
            metrics: Arc::new(self.clone()),
            protocol: Protocol::Http(routes),
        }
    }
}

#[derive(Clone, Copy)]
enum Protocol {
    Grpc(&'static str),
    Http(&'static [&'static str]),
}

#[derive(Clone)]
pub struct RequestLayer {
    metrics: Arc<RequestMetrics>,
    protocol: Protocol,
}

impl<S> tower::Layer<S> for RequestLayer {
    type Service = RequestService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestService {
            inner,
            metrics: self.metrics.clone(),
            protocol: self.protocol,
        }
    }
}

#[derive(Clone)]
pub struct RequestService<S> {
    inner: S,
    metrics: Arc<RequestMetrics>,
    protocol: Protocol,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for RequestService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let path = request.uri().path().to_owned();
        // An HTTP route with parameters counts under its template (`/v1/databases/{db}`).
        let matched = request
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map(|m| m.as_str().to_owned());
        let call = self.inner.call(request);
        let (metrics, protocol) = (self.metrics.clone(), self.protocol);
        Box::pin(async move {
            let result = call.await;
            let seconds = started.elapsed().as_secs_f64();
            match protocol {
                Protocol::Grpc(server) => {
                    let (grpc_service, grpc_method) = rpc_name(&path);
                    let code = match &result {
                        Ok(response) => grpc_code(response.headers()),
                        Err(_) => "Unavailable",
                    };
                    let labels = RpcLabels {
                        server,
                        grpc_service,
                        grpc_method,
                    };
                    metrics
                        .handling_seconds
                        .get_or_create(&labels)
                        .observe(seconds);
                    metrics
                        .handled
                        .get_or_create(&HandledLabels {
                            server,
                            grpc_service: labels.grpc_service,
                            grpc_method: labels.grpc_method,
                            grpc_code: code,
                        })
                        .inc();
                }
                Protocol::Http(routes) => {
                    let labels = HttpLabels {
                        path: routes
                            .iter()
                            .find(|r| **r == path || matched.as_deref() == Some(**r))
                            .copied()
                            .unwrap_or("other"),
                        code: result.as_ref().map_or(500, |r| r.status().as_u16()),
                    };
                    metrics.http_requests.get_or_create(&labels).inc();
                    metrics.http_seconds.get_or_create(&labels).observe(seconds);
                }
            }
            result
        })
    }
}

/// Service and method of a gRPC path (`/flotilla.v1.Documents/Get`); paths that are not a
/// Flotilla or gRPC service count as `unknown`, so that no caller can grow the label sets.
fn rpc_name(path: &str) -> (String, String) {
    let known = |service: &str| service.starts_with("flotilla.") || service.starts_with("grpc.");
    match path.trim_start_matches('/').split_once('/') {
        Some((service, method))
            if known(service)
                && !method.is_empty()
                && method.len() <= 64
                && method
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            (service.to_owned(), method.to_owned())
        }
        _ => ("unknown".to_owned(), "unknown".to_owned()),
    }
}

/// The gRPC status code of a response whose headers carry one (an error answered at
/// once), else `OK`; named as `grpc_code` is in go-grpc-prometheus.
fn grpc_code(headers: &http::HeaderMap) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .map_or("OK", |code| NAMES.get(code).copied().unwrap_or("Unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_path_gives_service_and_method_and_anything_else_is_unknown() {
        assert_eq!(
            rpc_name("/flotilla.v1.Documents/Get"),
            ("flotilla.v1.Documents".to_owned(), "Get".to_owned())
        );
        assert_eq!(rpc_name("/evil/../../x").0, "unknown");
        assert_eq!(rpc_name("/flotilla.v1.Documents/").0, "unknown");
    }

    #[test]
    fn the_code_comes_from_grpc_status_and_is_ok_without_one() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(grpc_code(&headers), "OK");
        headers.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(grpc_code(&headers), "NotFound");
        headers.insert("grpc-status", http::HeaderValue::from_static("99"));
        assert_eq!(grpc_code(&headers), "Unknown");
    }
}
