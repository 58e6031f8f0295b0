//! Passing a request on to the node that can serve it (a group leader or a replica), through
//! that node's peer port ([`super::Peers::documents`], [`super::Peers::admin`]). A hop counter
//! in the request metadata bounds the chain of forwards.

use std::time::Duration;

use flotilla_proto::v1::{BatchRequest, GetRequest, ListRequest, WatchRequest};
use tonic::{Request, Status};

/// Metadata key counting how many times a request was forwarded.
pub const HOPS: &str = "x-flotilla-hops";
/// Most forwards of one request.
pub const MAX_HOPS: u32 = 3;

pub fn hops<T>(req: &Request<T>) -> u32 {
    req.metadata()
        .get(HOPS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Builds the forwarded request carrying `hops + 1`.
pub fn onward<T>(msg: T, hops: u32, deadline: Duration) -> Request<T> {
    let mut req = Request::new(msg);
    if let Ok(v) = (hops + 1).to_string().parse() {
        req.metadata_mut().insert(HOPS, v);
    }
    req.set_timeout(deadline);
    req
}

/// True when the request never reached the target (no connection could be made), so it is
/// safe to try another target. A connection lost after sending is not this: the request may
/// have been served.
pub fn is_unreachable(s: &Status) -> bool {
    let mut next = std::error::Error::source(s);
    while let Some(err) = next {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        next = err.source();
    }
    false
}

/// A forwarded request failed on the way (after it may have been sent): its outcome is unknown.
pub fn is_lost_in_flight(s: &Status) -> bool {
    std::error::Error::source(s).is_some() && !is_unreachable(s)
}

/// Whether a forwarded request changes data. Only a write lost in flight has an unknown
/// outcome; a read lost in flight found no one to answer it, and may be retried anywhere.
pub trait Effect {
    const WRITES: bool;

    /// Whether sending it again after it may have been served is harmless: a read, or a write
    /// that names its request (the shard answers a repeat with the first outcome).
    fn may_repeat(&self) -> bool {
        !Self::WRITES
    }
}

impl Effect for BatchRequest {
    const WRITES: bool = true;

    fn may_repeat(&self) -> bool {
        self.request_id.is_some()
    }
}

impl Effect for GetRequest {
    const WRITES: bool = false;
}

impl Effect for ListRequest {
    const WRITES: bool = false;
}

impl Effect for WatchRequest {
    const WRITES: bool = false;
}
