//! Request ids: every write a [`Client`](crate::Client) sends names itself with the client's
//! random id and a sequence number, the same on every retry, so that a shard applies it at most
//! once and answers a repeat with the first outcome. That is what makes retrying a write whose
//! outcome is unknown safe (see [`ClientOptions::retry_uncertain_writes`](crate::ClientOptions)).

use std::sync::atomic::{AtomicU64, Ordering};

use flotilla_proto::v1 as pb;

/// Hands out the request ids of one client (and its clones).
#[derive(Debug)]
pub(crate) struct RequestIds {
    client: u64,
    next: AtomicU64,
}

impl RequestIds {
    /// Ids under a new random client id.
    pub(crate) fn new() -> RequestIds {
        RequestIds::with_client(rand::random::<u64>())
    }

    pub(crate) fn with_client(client: u64) -> RequestIds {
        RequestIds {
            client,
            next: AtomicU64::new(1),
        }
    }

    /// The id of a new write.
    pub(crate) fn next(&self) -> pb::RequestId {
        pb::RequestId {
            client: self.client,
            seq: self.next.fetch_add(1, Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_one_client_are_distinct_and_ordered() {
        let ids = RequestIds::with_client(9);
        let a = ids.next();
        let b = ids.next();
        assert_eq!((a.client, b.client), (9, 9));
        assert!(a.seq < b.seq);
        assert_ne!(
            RequestIds::new().next().client,
            RequestIds::new().next().client
        );
    }
}
