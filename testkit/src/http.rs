//! GETs on a node's HTTP port (`/readyz`, `/healthz`, `/metrics`) through hyper's client: the
//! status code and the body, within a deadline. Plain HTTP/1.1 (the HTTP port serves no TLS).

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use crate::error::{Error, Result};

/// How long [`get`] waits for a whole answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// `GET path` on `addr` (`host:port`): the status code and the body, within [`TIMEOUT`].
pub async fn get(addr: &str, path: &str) -> Result<(u16, String)> {
    get_within(addr, path, TIMEOUT).await
}

/// `GET path` on `addr` (`host:port`): the status code and the body, within `timeout`.
pub async fn get_within(addr: &str, path: &str, timeout: Duration) -> Result<(u16, String)> {
    exchange(addr, path, timeout)
        .await
        .map(|(status, _, body)| (status, body))
}

/// The wall clock of the node whose HTTP port is `addr`, to the second: the `Date` of its
/// answer to `GET /healthz`.
pub async fn node_time(addr: &str) -> Result<std::time::SystemTime> {
    let (_, headers, _) = exchange(addr, "/healthz", TIMEOUT).await?;
    let failed = |reason: String| Error::Http {
        addr: addr.to_string(),
        path: "/healthz".into(),
        reason,
    };
    let date = headers
        .get(hyper::header::DATE)
        .ok_or_else(|| failed("an answer without a Date".into()))?
        .to_str()
        .map_err(|e| failed(format!("a Date that is not text: {e}")))?;
    httpdate::parse_http_date(date).map_err(|e| failed(format!("Date {date:?}: {e}")))
}

/// `GET path` on `addr`: the status code, the headers and the body, within `timeout`.
async fn exchange(
    addr: &str,
    path: &str,
    timeout: Duration,
) -> Result<(u16, hyper::HeaderMap, String)> {
    let failed = |reason: String| Error::Http {
        addr: addr.to_string(),
        path: path.to_string(),
        reason,
    };
    let uri: hyper::Uri = format!("http://{addr}{path}")
        .parse()
        .map_err(|e| failed(format!("not a URL: {e}")))?;
    // One connection per probe, closed after it: a probe must not be answered by a connection
    // that outlived the process it was made to.
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http::<Empty<Bytes>>();
    let exchange = async {
        let response = client.get(uri).await.map_err(|e| failed(chain(&e)))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| failed(chain(&e)))?
            .to_bytes();
        Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| failed(format!("no answer within {timeout:?}")))?
}

/// The status code of `GET path` on `addr`, for callers without a runtime of their own (it
/// makes a small one; do not call it from inside one).
pub fn status_blocking(addr: &str, path: &str, timeout: Duration) -> Result<u16> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Unavailable(format!("no tokio runtime for an HTTP probe: {e}")))?;
    runtime
        .block_on(get_within(addr, path, timeout))
        .map(|(status, _)| status)
}

/// Polls `GET /readyz` on `addr` until it answers 200, until `deadline`.
pub async fn wait_ready(addr: &str, deadline: Instant) -> Result<()> {
    let started = Instant::now();
    loop {
        let last = match get(addr, "/readyz").await {
            Ok((200, _)) => return Ok(()),
            Ok((code, body)) => format!("{code} {}", body.trim()),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!("{addr}/readyz to answer 200"),
                waited: started.elapsed(),
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An error and its sources on one line (hyper's own message alone says only "client error").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_an_error_that_names_the_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let addr = listener.local_addr().expect("its address").to_string();
        drop(listener);
        let error = get(&addr, "/readyz").await.expect_err("nothing listens");
        assert!(error.to_string().contains(&addr), "{error}");
    }

    #[tokio::test]
    async fn status_and_body_are_read() {
        use axum::http::StatusCode;
        let app = axum::Router::new().route(
            "/readyz",
            axum::routing::get(async || (StatusCode::SERVICE_UNAVAILABLE, "not ready")),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address").to_string();
        let server = tokio::spawn(axum::serve(listener, app).into_future());
        let (status, body) = get(&addr, "/readyz").await.expect("an answer");
        assert_eq!((status, body.as_str()), (503, "not ready"));
        server.abort();
    }
}
