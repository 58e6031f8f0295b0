//! Request metrics of the node's servers, as tower layers: for gRPC (client and peer port)
//! the calls started, and those handled by service, method and status code with their
//! latency, in the names of go-grpc-prometheus that etcd exports ([`GrpcLayer`]); for HTTP
//! the requests by route and status code with their latency ([`RequestLayer`]).
//!
//! A gRPC call counts when it ends, with its final status: the `grpc-status` of its
//! trailers (or of its headers, for a call answered with an error at once). A streaming
//! call (a watch) thus counts when its stream ends, with the code it ended with, and takes
//! as long as it was open; one whose client went away first counts as `Canceled`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::http;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
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

/// The families the layers record into.
#[derive(Clone)]
pub struct RequestMetrics {
    pub started: Family<RpcLabels, Counter>,
    pub handled: Family<HandledLabels, Counter>,
    pub handling_seconds: Family<RpcLabels, Histogram>,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_seconds: Family<HttpLabels, Histogram>,
}

impl RequestMetrics {
    pub fn register(registry: &mut Registry) -> RequestMetrics {
        let metrics = RequestMetrics {
            started: Family::default(),
            handled: Family::default(),
            handling_seconds: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
        };
        registry.register(
            "grpc_server_started",
            "gRPC calls the server started, by service and method",
            metrics.started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "gRPC calls completed by the server, by service, method and status code",
            metrics.handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Time from the start of a gRPC call to its final status (a stream: as long as it was open)",
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
    pub fn grpc(&self, server: &'static str) -> GrpcLayer {
        GrpcLayer {
            metrics: Arc::new(self.clone()),
            server,
        }
    }

    /// A layer recording HTTP requests to the given routes (any other path counts as `other`).
    pub fn http(&self, routes: &'static [&'static str]) -> RequestLayer {
        RequestLayer {
            metrics: Arc::new(self.clone()),
            routes,
        }
    }
}

/// Records the gRPC calls of one server, each when it ends (see the module notes).
#[derive(Clone)]
pub struct GrpcLayer {
    metrics: Arc<RequestMetrics>,
    server: &'static str,
}

impl<S> tower::Layer<S> for GrpcLayer {
    type Service = GrpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcService {
            inner,
            metrics: self.metrics.clone(),
            server: self.server,
        }
    }
}

#[derive(Clone)]
pub struct GrpcService<S> {
    inner: S,
    metrics: Arc<RequestMetrics>,
    server: &'static str,
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (grpc_service, grpc_method) = rpc_name(request.uri().path());
        let labels = RpcLabels {
            server: self.server,
            grpc_service,
            grpc_method,
        };
        self.metrics.started.get_or_create(&labels).inc();
        let call = Call {
            metrics: self.metrics.clone(),
            labels,
            started: Instant::now(),
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            match answer.await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    // Answered with its status at once (trailers-only): it ends here.
                    if let Some(code) = grpc_code(&parts.headers) {
                        call.finish(code);
                        return Ok(http::Response::from_parts(
                            parts,
                            tonic::body::Body::new(body),
                        ));
                    }
                    let body = CallBody {
                        inner: Box::pin(body),
                        call: Some(call),
                    };
                    Ok(http::Response::from_parts(
                        parts,
                        tonic::body::Body::new(body),
                    ))
                }
                Err(e) => {
                    call.finish("Unavailable");
                    Err(e)
                }
            }
        })
    }
}

/// A gRPC call under way, recorded once when it ends.
struct Call {
    metrics: Arc<RequestMetrics>,
    labels: RpcLabels,
    started: Instant,
}

impl Call {
    fn finish(self, grpc_code: &'static str) {
        let m = &self.metrics;
        m.handling_seconds
            .get_or_create(&self.labels)
            .observe(self.started.elapsed().as_secs_f64());
        let RpcLabels {
            server,
            grpc_service,
            grpc_method,
        } = self.labels;
        m.handled
            .get_or_create(&HandledLabels {
                server,
                grpc_service,
                grpc_method,
                grpc_code,
            })
            .inc();
    }
}

/// The body of a gRPC answer: finishes its call with the status of its trailers, or as
/// `Canceled` when dropped before its end (the client went away).
struct CallBody<B> {
    inner: Pin<Box<B>>,
    call: Option<Call>,
}

impl<B: Body<Data = Bytes>> Body for CallBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = this.inner.as_mut().poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                frame.trailers_ref().map(|t| grpc_code(t).unwrap_or("OK"))
            }
            Poll::Ready(Some(Err(_))) => Some("Internal"),
            Poll::Ready(None) => Some("OK"),
            Poll::Pending => None,
        };
        if let Some(code) = ended
            && let Some(call) = this.call.take()
        {
            call.finish(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for CallBody<B> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.finish("Canceled");
        }
    }
}

/// Records the HTTP requests of the HTTP port, each when its response headers are ready.
#[derive(Clone)]
pub struct RequestLayer {
    metrics: Arc<RequestMetrics>,
    routes: &'static [&'static str],
}

impl<S> tower::Layer<S> for RequestLayer {
    type Service = RequestService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestService {
            inner,
            metrics: self.metrics.clone(),
            routes: self.routes,
        }
    }
}

#[derive(Clone)]
pub struct RequestService<S> {
    inner: S,
    metrics: Arc<RequestMetrics>,
    routes: &'static [&'static str],
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
        let (metrics, routes) = (self.metrics.clone(), self.routes);
        Box::pin(async move {
            let result = call.await;
            let seconds = started.elapsed().as_secs_f64();
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

/// The gRPC status code the headers or trailers carry, named as `grpc_code` is in
/// go-grpc-prometheus.
fn grpc_code(headers: &http::HeaderMap) -> Option<&'static str> {
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
        .map(|code| NAMES.get(code).copied().unwrap_or("Unknown"))
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
    fn the_code_comes_from_grpc_status() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(grpc_code(&headers), None);
        headers.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(grpc_code(&headers), Some("NotFound"));
        headers.insert("grpc-status", http::HeaderValue::from_static("99"));
        assert_eq!(grpc_code(&headers), Some("Unknown"));
    }

    /// A streaming answer: one message, then trailers with `grpc_status`.
    fn stream_answer(grpc_status: &'static str) -> http::Response<tonic::body::Body> {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static(grpc_status));
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"message"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
        http::Response::new(tonic::body::Body::new(body))
    }

    fn text(registry: &Registry) -> String {
        let mut text = String::new();
        assert!(prometheus_client::encoding::text::encode(&mut text, registry).is_ok());
        text
    }

    async fn watch_call(
        layer: &GrpcLayer,
        grpc_status: &'static str,
    ) -> http::Response<tonic::body::Body> {
        use tower::{Layer, ServiceExt};
        let inner = tower::service_fn(move |_: http::Request<()>| async move {
            Ok::<_, std::convert::Infallible>(stream_answer(grpc_status))
        });
        let request = http::Request::builder()
            .uri("/flotilla.v1.Documents/Watch")
            .body(())
            .unwrap_or_else(|e| panic!("{e}"));
        let Ok(response) = layer.layer(inner).oneshot(request).await;
        response
    }

    #[tokio::test]
    async fn a_stream_counts_when_it_ends_with_the_code_of_its_trailers() {
        use http_body_util::BodyExt;
        let mut registry = Registry::default();
        let layer = RequestMetrics::register(&mut registry).grpc("client");
        let labels = r#"server="client",grpc_service="flotilla.v1.Documents",grpc_method="Watch""#;

        let response = watch_call(&layer, "14").await;
        let open = text(&registry);
        assert!(
            open.contains(&format!("grpc_server_started_total{{{labels}}} 1")),
            "{open}"
        );
        assert!(
            !open.contains("grpc_server_handled_total{"),
            "not ended yet:\n{open}"
        );
        let collected = response.into_body().collect().await;
        assert!(collected.is_ok());
        let ended = text(&registry);
        let unavailable =
            format!("grpc_server_handled_total{{{labels},grpc_code=\"Unavailable\"}} 1");
        assert!(ended.contains(&unavailable), "{ended}");

        // A client that goes away before the end: Canceled.
        drop(watch_call(&layer, "0").await);
        let canceled = format!("grpc_server_handled_total{{{labels},grpc_code=\"Canceled\"}} 1");
        let after = text(&registry);
        assert!(after.contains(&canceled), "{after}");
        assert!(
            after.contains(&format!("grpc_server_handling_seconds_count{{{labels}}} 2")),
            "{after}"
        );
    }
}
