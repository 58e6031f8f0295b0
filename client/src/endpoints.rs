//! The list of node endpoints a client talks to: one lazily connected channel and coalescer per
//! endpoint, and the index of the endpoint that answered last, shared by every clone of the
//! client.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use tonic::transport::{Channel, Endpoint};

use crate::auth::{AuthChannel, TokenSlot};
use crate::coalesce::Coalescer;
use crate::error::{Error, Result};
use crate::options::ClientOptions;

/// One node address and its channel, created on first use.
#[derive(Debug)]
struct Entry {
    /// The address as given (`host:port`).
    addr: String,
    endpoint: Endpoint,
    channel: OnceLock<AuthChannel>,
    coalescer: OnceLock<Coalescer>,
}

/// The endpoint of a node address (`host:port`, or a full URI; `https` when the options ask
/// for TLS), with the client's connection settings.
fn endpoint(addr: &str, options: &ClientOptions) -> Result<Endpoint> {
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("{scheme}://{addr}")
    };
    let mut endpoint = Endpoint::from_shared(uri)
        .map_err(|e| Error::InvalidArgument(format!("bad endpoint {addr:?}: {e}")))?
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(std::time::Duration::from_secs(10))
        .keep_alive_timeout(std::time::Duration::from_secs(5))
        .keep_alive_while_idle(true);
    if let Some(tls) = &options.tls {
        endpoint = endpoint
            .tls_config(tls.config())
            .map_err(|e| Error::InvalidArgument(format!("TLS settings for {addr:?}: {e}")))?;
    }
    Ok(endpoint)
}

/// The endpoints of a client, with failover order.
#[derive(Debug)]
pub(crate) struct Endpoints {
    entries: Vec<Entry>,
    /// Index of the endpoint to try first: the last one that worked, or the next one after the
    /// last one that failed.
    preferred: AtomicUsize,
    /// How long a batch of calls to one node waits for more (`ClientOptions::coalesce_linger`).
    linger: std::time::Duration,
    /// The token every call carries.
    token: TokenSlot,
}

impl Endpoints {
    /// Parses the addresses (`host:port`, or a full `http://host:port` URI; `https` when the
    /// options ask for TLS). Nothing is connected here.
    pub(crate) fn new(
        addrs: Vec<String>,
        options: &ClientOptions,
        token: TokenSlot,
    ) -> Result<Self> {
        let mut entries = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let addr = addr.trim().to_string();
            if addr.is_empty() {
                continue;
            }
            entries.push(Entry {
                endpoint: endpoint(&addr, options)?,
                addr,
                channel: OnceLock::new(),
                coalescer: OnceLock::new(),
            });
        }
        if entries.is_empty() {
            return Err(Error::InvalidArgument("no endpoints given".into()));
        }
        Ok(Endpoints {
            entries,
            preferred: AtomicUsize::new(0),
            linger: options.coalesce_linger,
            token,
        })
    }

    /// A channel to `addr` (any node, not necessarily one of the endpoints) with the same
    /// settings and token as the endpoints' channels.
    pub(crate) fn channel_to(&self, addr: &str, options: &ClientOptions) -> Result<AuthChannel> {
        let channel = endpoint(addr, options)?.connect_lazy();
        Ok(AuthChannel::new(channel, self.token.clone()))
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The addresses, in the order given.
    pub(crate) fn addrs(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.addr.clone()).collect()
    }

    pub(crate) fn addr(&self, index: usize) -> &str {
        &self.entries[index % self.entries.len()].addr
    }

    /// Index of the endpoint to try first.
    pub(crate) fn preferred(&self) -> usize {
        self.preferred.load(Ordering::Relaxed) % self.entries.len()
    }

    /// Records that `index` answered: later operations start there.
    pub(crate) fn succeeded(&self, index: usize) {
        self.preferred.store(index, Ordering::Relaxed);
    }

    /// Records that `index` failed and returns the endpoint to try next. When several tasks
    /// see the same endpoint fail, the preferred endpoint moves on only once.
    pub(crate) fn failed(&self, index: usize) -> usize {
        let next = (index + 1) % self.entries.len();
        let _ = self
            .preferred
            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
        next
    }

    /// The channel of endpoint `index`, created (not connected) on first use. Must be called
    /// from within a Tokio runtime.
    pub(crate) fn channel(&self, index: usize) -> AuthChannel {
        let entry = &self.entries[index % self.entries.len()];
        entry
            .channel
            .get_or_init(|| {
                let channel: Channel = entry.endpoint.connect_lazy();
                AuthChannel::new(channel, self.token.clone())
            })
            .clone()
    }

    /// The coalescer of endpoint `index`, started on first use. Must be called from within a
    /// Tokio runtime.
    pub(crate) fn coalescer(&self, index: usize) -> &Coalescer {
        let entry = &self.entries[index % self.entries.len()];
        entry
            .coalescer
            .get_or_init(|| Coalescer::start(self.channel(index), self.linger))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: usize) -> Endpoints {
        let addrs = (0..n).map(|i| format!("127.0.0.1:{}", 7100 + i)).collect();
        Endpoints::new(addrs, &ClientOptions::default(), TokenSlot::default()).unwrap()
    }

    #[test]
    fn failures_rotate_through_every_endpoint() {
        let e = endpoints(3);
        assert_eq!(e.preferred(), 0);
        assert_eq!(e.failed(0), 1);
        assert_eq!(e.preferred(), 1);
        assert_eq!(e.failed(1), 2);
        assert_eq!(e.failed(2), 0);
        assert_eq!(e.preferred(), 0);
    }

    #[test]
    fn the_endpoint_that_worked_is_tried_first() {
        let e = endpoints(3);
        e.succeeded(2);
        assert_eq!(e.preferred(), 2);
        assert_eq!(e.addr(e.preferred()), "127.0.0.1:7102");
    }

    #[test]
    fn concurrent_failures_of_one_endpoint_move_on_once() {
        let e = endpoints(3);
        // Two tasks both failed on endpoint 0.
        assert_eq!(e.failed(0), 1);
        assert_eq!(e.failed(0), 1);
        assert_eq!(
            e.preferred(),
            1,
            "the second failure must not skip endpoint 1"
        );
    }

    #[test]
    fn addresses_are_validated_and_blank_ones_skipped() {
        assert!(Endpoints::new(vec![], &ClientOptions::default(), TokenSlot::default()).is_err());
        assert!(
            Endpoints::new(
                vec![" ".into()],
                &ClientOptions::default(),
                TokenSlot::default()
            )
            .is_err()
        );
        assert!(
            Endpoints::new(
                vec!["bad host:1".into()],
                &ClientOptions::default(),
                TokenSlot::default()
            )
            .is_err()
        );
        let e = Endpoints::new(
            vec!["http://127.0.0.1:1".into(), "".into(), "localhost:2".into()],
            &ClientOptions::default(),
            TokenSlot::default(),
        )
        .unwrap();
        assert_eq!(e.addrs(), ["http://127.0.0.1:1", "localhost:2"]);
    }
}
