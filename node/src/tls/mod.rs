//! Transport security of every port, in one place: the rustls configurations of the client,
//! peer and HTTP ports and of this node's outgoing connections, built from the PEM files named
//! by the `--tls-*` and `--peer-tls-*` flags and built again when those files change
//! ([`reload`]), the listener that performs TLS handshakes off the accept path ([`accept`]),
//! and the connector of outgoing peer connections ([`connect`]).
//!
//! - Client port and HTTP port (`--tls-cert`, `--tls-key`, optional `--tls-ca`): TLS; with a
//!   CA, a client certificate is verified when presented (not required).
//! - Peer port (`--peer-tls-cert`, `--peer-tls-key`, `--peer-tls-ca`): mutual TLS. The port
//!   refuses any client without a certificate signed by the cluster CA, and this node's calls
//!   to peers present its certificate and accept only peers whose certificate the CA signed
//!   for the address dialled.
//!
//! Without the flags every port speaks plaintext. ring is the one crypto provider.

pub mod accept;
pub mod connect;
pub mod reload;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFlags;
pub use reload::Reloading;

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: no PEM certificate found")]
    NoCertificate { what: &'static str },
    #[error("{what}: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// ALPN of the gRPC ports (HTTP/2 only).
const ALPN_GRPC: &[&[u8]] = &[b"h2"];
/// ALPN of the HTTP port.
const ALPN_HTTP: &[&[u8]] = &[b"http/1.1"];

/// Whether a port asks its clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Verified against the CA when presented; a client without one is served.
    Optional,
    /// Refused without a certificate the CA signed.
    Required,
}

/// The TLS configurations of one node, each re-read from its files when they change.
#[derive(Default)]
pub struct NodeTls {
    /// Client port (gRPC).
    pub client_port: Option<Arc<Reloading<ServerConfig>>>,
    /// HTTP port.
    pub http_port: Option<Arc<Reloading<ServerConfig>>>,
    /// Peer port: mutual TLS.
    pub peer_port: Option<Arc<Reloading<ServerConfig>>>,
    /// This node's connections to peer ports: its peer certificate, the cluster CA.
    pub to_peers: Option<Arc<Reloading<ClientConfig>>>,
    /// This node's connections to other members' client ports (joining).
    pub to_members: Option<Arc<Reloading<ClientConfig>>>,
}

impl NodeTls {
    /// Loads what the flags name; nothing when no flag is set (plaintext).
    pub fn from_flags(flags: &TlsFlags) -> Result<NodeTls, TlsError> {
        let mut tls = NodeTls::default();
        if let (Some(cert), Some(key)) = (&flags.tls_cert, &flags.tls_key) {
            let ca = flags.tls_ca.clone();
            let port = |alpn: &'static [&'static [u8]]| {
                server(cert, key, ca.as_ref(), ClientAuth::Optional, alpn)
            };
            tls.client_port = Some(Arc::new(port(ALPN_GRPC)?));
            tls.http_port = Some(Arc::new(port(ALPN_HTTP)?));
        }
        if let (Some(cert), Some(key), Some(ca)) = (
            &flags.peer_tls_cert,
            &flags.peer_tls_key,
            &flags.peer_tls_ca,
        ) {
            let port = server(cert, key, Some(ca), ClientAuth::Required, ALPN_GRPC)?;
            tls.peer_port = Some(Arc::new(port));
            let paths = vec![ca.clone(), cert.clone(), key.clone()];
            let to_peers = Reloading::new("peer client", paths, |files| {
                client_config(&files[0], Some((&files[1], &files[2])))
            })?;
            tls.to_peers = Some(Arc::new(to_peers));
        }
        // A member's client port is verified against --tls-ca, else against the cluster CA
        // (nodes commonly take both certificates from the one cluster CA).
        if flags.tls_cert.is_some()
            && let Some(ca) = flags.tls_ca.as_ref().or(flags.peer_tls_ca.as_ref())
        {
            let to_members = Reloading::new("member client", vec![ca.clone()], |files| {
                client_config(&files[0], None)
            })?;
            tls.to_members = Some(Arc::new(to_members));
        }
        Ok(tls)
    }
}

/// A server configuration read from `cert`, `key` and `ca`, rebuilt when they change.
fn server(
    cert: &Path,
    key: &Path,
    ca: Option<&PathBuf>,
    auth: ClientAuth,
    alpn: &'static [&'static [u8]],
) -> Result<Reloading<ServerConfig>, TlsError> {
    let mut paths = vec![cert.to_path_buf(), key.to_path_buf()];
    paths.extend(ca.cloned());
    Reloading::new("server", paths, move |files| {
        server_config(
            &files[0],
            &files[1],
            files.get(2).map(Vec::as_slice),
            auth,
            alpn,
        )
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration from PEM bytes: its certificate chain and key, and the CA that
/// client certificates are verified against (none: no client certificates asked for).
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    ca_pem: Option<&[u8]>,
    auth: ClientAuth,
    alpn: &[&[u8]],
) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match ca_pem {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider);
            let verifier = match auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                ClientAuth::Required => verifier,
            };
            builder.with_client_cert_verifier(verifier.build()?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs(cert_pem)?, private_key(key_pem)?)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A client configuration (HTTP/2) trusting the CA in `ca_pem`, presenting `identity` (a
/// certificate chain and key, PEM) when given.
pub fn client_config(
    ca_pem: &[u8],
    identity: Option<(&[u8], &[u8])>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem)?);
    let mut config = match identity {
        Some((cert, key)) => builder.with_client_auth_cert(certs(cert)?, private_key(key)?)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = ALPN_GRPC.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// True when `cert` (a leaf certificate the handshake verified) names the host of `addr`
/// (`host:port`; a DNS name or an IP address) among its subject alternative names.
pub fn names_host_of(cert: &CertificateDer<'_>, addr: &str) -> bool {
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let Ok(cert) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    let Ok(name) = rustls_pki_types::ServerName::try_from(host) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}

/// The subject common name of `cert` (a leaf certificate the handshake verified), if it has
/// one that is UTF-8.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: "certificate",
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what: "certificate",
        });
    }
    Ok(certs)
}

fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Pem {
        what: "private key",
        reason: e.to_string(),
    })
}

fn roots(pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| TlsError::Pem {
            what: "CA",
            reason: e.to_string(),
        })?;
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCertificate { what: "CA" });
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(common_name: Option<&str>) -> CertificateDer<'static> {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("parameters");
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = common_name {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        let key = rcgen::KeyPair::generate().expect("a key");
        params
            .self_signed(&key)
            .expect("a certificate")
            .der()
            .clone()
    }

    #[test]
    fn the_common_name_of_a_certificate_names_its_user() {
        assert_eq!(common_name(&cert(Some("ann"))).as_deref(), Some("ann"));
        assert_eq!(common_name(&cert(None)), None);
        assert_eq!(common_name(&CertificateDer::from(vec![1, 2, 3])), None);
    }
}
