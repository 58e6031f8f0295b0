//! Client settings (timeouts, retry budget, backoff, TLS) and the backoff schedule derived
//! from them.

use std::path::Path;
use std::time::Duration;

/// How a [`Client`](crate::Client) times out and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Total time one operation may take, all retries included.
    pub total_timeout: Duration,
    /// Time one attempt may take before it is abandoned (capped by what is left of
    /// `total_timeout`). Also sent to the node as the gRPC deadline.
    pub request_timeout: Duration,
    /// Time to establish a connection to one endpoint.
    pub connect_timeout: Duration,
    /// Most attempts one operation makes, the first included.
    pub max_attempts: u32,
    /// First backoff delay; doubles on every retry.
    pub backoff_base: Duration,
    /// Largest backoff delay.
    pub backoff_max: Duration,
    /// Retry a write whose outcome is unknown (sent, then timed out or lost its connection).
    ///
    /// On by default, and safe: every write carries a request id, the same on every retry,
    /// and a shard answers a repeat with the first outcome instead of applying it twice. Off,
    /// such a write ends at once with [`Error::OutcomeUnknown`](crate::Error::OutcomeUnknown).
    pub retry_uncertain_writes: bool,
    /// Send gets and writes made at the same time to one node together, as one request (see
    /// the `coalesce` notes of [`Client`](crate::Client)). On by default: a lone call still
    /// leaves at once, and each call keeps its own result and retries.
    pub coalesce_calls: bool,
    /// Longest a batch of coalesced calls waits, when fewer calls are waiting than the last
    /// request to that node carried, for the callers that request answered to call again (as
    /// a database's group commit delay does). A lone caller never waits; under load the
    /// batches stay whole instead of splitting in two, at most this much later.
    pub coalesce_linger: Duration,
    /// Connect over TLS (to nodes started with `--tls-cert`); plaintext when `None`.
    pub tls: Option<ClientTls>,
    /// Authenticate as this user (on clusters with auth enabled); see [`crate::Credentials`].
    pub credentials: Option<crate::Credentials>,
    /// A token made by `token create` (for scripts and services), sent with every call. It is
    /// never renewed: when it expires or is revoked, calls fail as unauthenticated.
    pub token: Option<String>,
}

/// How a client connects over TLS: the CA that the nodes' certificates must chain to, and the
/// client certificate to present, if any (all PEM).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM of the CA certificate(s) trusted for the nodes' certificates.
    pub ca_pem: Vec<u8>,
    /// PEM of a client certificate chain and of its private key, presented when set.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name the nodes' certificates are checked for, when not the host dialled.
    pub domain: Option<String>,
}

impl ClientTls {
    /// Reads the CA and, when both are given, the client certificate and key.
    pub fn from_files(
        ca: &Path,
        cert_and_key: Option<(&Path, &Path)>,
    ) -> std::io::Result<ClientTls> {
        let read = |p: &Path| {
            std::fs::read(p)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))
        };
        let identity = match cert_and_key {
            Some((cert, key)) => Some((read(cert)?, read(key)?)),
            None => None,
        };
        Ok(ClientTls {
            ca_pem: read(ca)?,
            identity,
            domain: None,
        })
    }

    /// The tonic configuration of these settings.
    pub(crate) fn config(&self) -> tonic::transport::ClientTlsConfig {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        config
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            total_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            max_attempts: 100,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_secs(1),
            retry_uncertain_writes: true,
            coalesce_calls: true,
            coalesce_linger: Duration::from_micros(100),
            tls: None,
            credentials: None,
            token: None,
        }
    }
}

impl ClientOptions {
    /// The delay before retry number `retry` (0 for the first retry): exponential from
    /// `backoff_base`, capped at `backoff_max`, with "equal jitter": half of the delay is fixed
    /// and the other half is scaled by `jitter`, a number in `[0, 1)`. Pure, so that the
    /// schedule can be tested; [`ClientOptions::backoff`] draws the jitter.
    pub fn backoff_with_jitter(&self, retry: u32, jitter: f64) -> Duration {
        let factor = 2u32.saturating_pow(retry.min(30));
        let full = self
            .backoff_base
            .saturating_mul(factor)
            .min(self.backoff_max);
        let half = full / 2;
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        half + half.mul_f64(jitter)
    }

    /// The delay before retry number `retry`, with random jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        self.backoff_with_jitter(retry, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(base_ms: u64, max_ms: u64) -> ClientOptions {
        ClientOptions {
            backoff_base: Duration::from_millis(base_ms),
            backoff_max: Duration::from_millis(max_ms),
            ..ClientOptions::default()
        }
    }

    #[test]
    fn backoff_doubles_from_the_base_until_the_cap() {
        let o = options(100, 1_000);
        let full: Vec<u128> = (0..6)
            .map(|r| o.backoff_with_jitter(r, 1.0).as_millis())
            .collect();
        assert_eq!(full, [100, 200, 400, 800, 1_000, 1_000]);
    }

    #[test]
    fn jitter_keeps_at_least_half_of_the_delay() {
        let o = options(100, 1_000);
        assert_eq!(o.backoff_with_jitter(2, 0.0), Duration::from_millis(200));
        assert_eq!(o.backoff_with_jitter(2, 0.5), Duration::from_millis(300));
        for retry in 0..20 {
            let d = o.backoff(retry);
            let full = o.backoff_with_jitter(retry, 1.0);
            assert!(d >= full / 2 && d <= full, "retry {retry}: {d:?}");
        }
    }

    #[test]
    fn backoff_never_overflows_and_ignores_bad_jitter() {
        let o = options(100, 5_000);
        assert_eq!(
            o.backoff_with_jitter(u32::MAX, 1.0),
            Duration::from_millis(5_000)
        );
        assert_eq!(
            o.backoff_with_jitter(0, f64::NAN),
            Duration::from_millis(50)
        );
        assert_eq!(o.backoff_with_jitter(0, 7.0), Duration::from_millis(100));
    }
}
