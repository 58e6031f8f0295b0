//! What every request this node sends to a peer says of its origin, in request metadata: the
//! sender's node id and the id of the cluster it belongs to (once it knows it). The peer port
//! refuses a request for another cluster or from a node it does not know (`grpc::peer_checks`).

use std::sync::{Arc, RwLock};

use tonic::metadata::{Ascii, MetadataMap, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::types::NodeId;

/// Metadata key naming the cluster a peer request is meant for.
pub const CLUSTER_KEY: &str = "x-flotilla-cluster";
/// Metadata key naming the node that sent a peer request.
pub const FROM_KEY: &str = "x-flotilla-from";

/// Puts this node's id and cluster id on every outgoing peer request.
#[derive(Clone)]
pub struct Stamp {
    from: MetadataValue<Ascii>,
    cluster: Arc<RwLock<Option<MetadataValue<Ascii>>>>,
}

impl Stamp {
    pub fn new(from: NodeId) -> Self {
        Stamp {
            from: MetadataValue::from(from),
            cluster: Arc::default(),
        }
    }

    /// Records the cluster this node belongs to (unchanged when `cluster` is not a valid
    /// metadata value, which a generated cluster id always is).
    pub fn set_cluster(&self, cluster: &str) {
        let Ok(value) = MetadataValue::try_from(cluster) else {
            tracing::warn!(cluster, "cluster id is not valid request metadata");
            return;
        };
        let mut current = self.cluster.write().unwrap_or_else(|p| p.into_inner());
        if current.as_ref() != Some(&value) {
            *current = Some(value);
        }
    }
}

impl Interceptor for Stamp {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let cluster = self
            .cluster
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let metadata = request.metadata_mut();
        metadata.insert(FROM_KEY, self.from.clone());
        if let Some(cluster) = cluster {
            metadata.insert(CLUSTER_KEY, cluster);
        }
        Ok(request)
    }
}

/// The sender a request's metadata names.
pub fn sender(metadata: &MetadataMap) -> Option<NodeId> {
    metadata.get(FROM_KEY)?.to_str().ok()?.parse().ok()
}

/// The cluster a request's metadata names.
pub fn cluster(metadata: &MetadataMap) -> Option<&str> {
    metadata.get(CLUSTER_KEY)?.to_str().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_request_names_its_sender_and_cluster() {
        let mut stamp = Stamp::new(42);
        let request = stamp.call(Request::new(())).expect("stamped");
        assert_eq!(sender(request.metadata()), Some(42));
        assert_eq!(cluster(request.metadata()), None);
        stamp.set_cluster("c-1");
        let request = stamp.call(Request::new(())).expect("stamped");
        assert_eq!(cluster(request.metadata()), Some("c-1"));
    }
}
