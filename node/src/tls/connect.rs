//! This node's outgoing connections: to peer ports (mutual TLS when the cluster has a CA) and
//! to members' client ports (joining). With TLS every new connection takes the current client
//! configuration, so a rotated certificate is presented from the next connection on; the
//! server is verified against the CA for the host name (or IP address) dialled.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use super::Reloading;

/// How long connecting (TCP and TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// An address that is not a valid endpoint.
#[derive(Debug, thiserror::Error)]
#[error("bad address {addr}: {reason}")]
pub struct BadAddress {
    pub addr: String,
    pub reason: String,
}

/// The endpoint of `addr` (`host:port`) with the settings every node connection uses. The
/// scheme stays `http` with TLS too: the TLS is this module's connector, not tonic's.
pub fn endpoint(addr: &str) -> Result<Endpoint, BadAddress> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| BadAddress {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_while_idle(true))
}

/// A channel to `endpoint`, connected on first use, over TLS when `tls` is given.
pub fn channel(endpoint: Endpoint, tls: Option<Arc<Reloading<ClientConfig>>>) -> Channel {
    match tls {
        None => endpoint.connect_lazy(),
        Some(tls) => endpoint.connect_with_connector_lazy(tower::service_fn(move |uri: Uri| {
            connect(uri, tls.clone())
        })),
    }
}

async fn connect(
    uri: Uri,
    tls: Arc<Reloading<ClientConfig>>,
) -> io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>> {
    let invalid =
        |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: {what}"));
    let host = uri
        .host()
        .ok_or_else(|| invalid("no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().ok_or_else(|| invalid("no port"))?;
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(host).map_err(|_| invalid("not a valid server name"))?;
    let stream = TlsConnector::from(tls.current()).connect(name, tcp).await?;
    Ok(TokioIo::new(stream))
}
