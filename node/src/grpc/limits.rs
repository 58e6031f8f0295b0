//! Limits that keep one client from taking the node: a cap on the client requests served at
//! once by the node (a tower layer that refuses the excess at once, rather than queueing it
//! behind work the node cannot finish in time), and the typed error every limit answers with:
//! RESOURCE_EXHAUSTED, reason LIMIT_EXCEEDED, and a message naming the limit and its flag.
//! The other limits sit where their work is: HTTP/2 streams per connection and message sizes
//! in the servers (`grpc`), watches and answer sizes in the guarded Documents service, the
//! size of a received snapshot in the Peer service.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http;
use flotilla_proto::v1::ErrorReason;
use flotilla_proto::with_reason;
use tokio::sync::Semaphore;
use tonic::Status;

/// The status of a request refused by a limit.
pub fn limit_exceeded(message: String) -> Status {
    with_reason(
        Status::resource_exhausted(message),
        ErrorReason::LimitExceeded,
    )
}

/// Refuses requests beyond `limit` served at once (health checks are never refused).
#[derive(Clone)]
pub struct NodeLimitLayer {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl NodeLimitLayer {
    pub fn new(limit: usize) -> NodeLimitLayer {
        NodeLimitLayer {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }
}

impl<S> tower::Layer<S> for NodeLimitLayer {
    type Service = NodeLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        NodeLimit {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct NodeLimit<S> {
    inner: S,
    layer: NodeLimitLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for NodeLimit<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path().starts_with("/grpc.health.") {
            return Box::pin(self.inner.call(request));
        }
        match self.layer.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let call = self.inner.call(request);
                Box::pin(async move {
                    let answer = call.await;
                    drop(permit);
                    answer
                })
            }
            Err(_) => {
                let limit = self.layer.limit;
                tracing::debug!(limit, "client request refused: node at its request limit");
                let status = limit_exceeded(format!(
                    "the node serves {limit} client requests at once (--max-node-requests); retry later"
                ));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service, ServiceExt};

    #[tokio::test]
    async fn requests_beyond_the_limit_are_refused_until_one_ends() {
        let (release, hold) = tokio::sync::oneshot::channel::<()>();
        let hold = Arc::new(tokio::sync::Mutex::new(Some(hold)));
        let inner = tower::service_fn(move |_: http::Request<()>| {
            let hold = hold.clone();
            async move {
                if let Some(h) = hold.lock().await.take() {
                    let _ = h.await;
                }
                Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
            }
        });
        let mut svc = NodeLimitLayer::new(1).layer(inner);
        let call = |path: &str| http::Request::builder().uri(path).body(()).unwrap();
        let first = svc
            .ready()
            .await
            .unwrap()
            .call(call("/flotilla.v1.Documents/Get"));
        let first = tokio::spawn(first);
        tokio::task::yield_now().await;
        let refused = svc
            .ready()
            .await
            .unwrap()
            .call(call("/flotilla.v1.Documents/Get"))
            .await
            .unwrap();
        let status = Status::from_header_map(refused.headers()).expect("a status");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            flotilla_proto::reason_of(&status),
            Some(ErrorReason::LimitExceeded)
        );
        // Health checks pass anyway.
        let health = svc
            .ready()
            .await
            .unwrap()
            .call(call("/grpc.health.v1.Health/Check"));
        let _ = release.send(());
        assert!(health.await.is_ok());
        assert!(first.await.unwrap().is_ok());
        let served = svc
            .ready()
            .await
            .unwrap()
            .call(call("/flotilla.v1.Documents/Get"))
            .await
            .unwrap();
        assert!(Status::from_header_map(served.headers()).is_none());
    }
}
