//! The ConfigMap the nodes read when they start.
//!
//! It carries the values that must change without changing the pod template (a template
//! change would mark every pod for restart): whether a starting node may initialise a new
//! Raft cluster, and the members a starting node joins through.

use super::{Shape, child_metadata};
use crate::crd::Cluster;
use crate::crd::cluster_funcs::CLIENT_PORT;
use crate::error::Result;
use k8s_openapi::api::core::v1::ConfigMap;
use std::collections::BTreeMap;

/// Key holding `new` or `existing`, read into `FLOTILLA_INITIAL_CLUSTER_STATE`.
pub const INITIAL_CLUSTER_STATE_KEY: &str = "initial-cluster-state";
/// Key holding the comma-separated client addresses to join through, read into `FLOTILLA_JOIN`.
pub const JOIN_KEY: &str = "join";

/// The ConfigMap of `cluster` in `shape`.
pub fn configmap(cluster: &Cluster, shape: &Shape) -> Result<ConfigMap> {
    Ok(ConfigMap {
        metadata: child_metadata(cluster, cluster.configmap_name()?)?,
        data: Some(BTreeMap::from([
            (
                INITIAL_CLUSTER_STATE_KEY.to_owned(),
                shape.cluster_state.as_str().to_owned(),
            ),
            (
                JOIN_KEY.to_owned(),
                join_addresses(cluster, shape.replicas)?,
            ),
        ])),
        ..ConfigMap::default()
    })
}

/// Client addresses of the pods a starting node may join through, lowest ordinal first.
pub fn join_addresses(cluster: &Cluster, statefulset_replicas: i32) -> Result<String> {
    let addresses = (0..statefulset_replicas.max(1))
        .map(|ordinal| Ok(format!("{}:{CLIENT_PORT}", cluster.pod_dns_name(ordinal)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(addresses.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(cluster: &Cluster, shape: &Shape) -> BTreeMap<String, String> {
        match configmap(cluster, shape) {
            Ok(configmap) => configmap.data.unwrap_or_default(),
            Err(error) => panic!("configmap: {error}"),
        }
    }

    #[test]
    fn a_fresh_cluster_tells_its_first_node_to_initialise() {
        let data = data(&Cluster::test(), &Shape::first_apply());
        assert_eq!(data[INITIAL_CLUSTER_STATE_KEY], "new");
        assert_eq!(data[JOIN_KEY], "flotilla-0.flotilla-peers.db.svc:7100");
    }

    #[test]
    fn a_bootstrapped_cluster_tells_every_node_to_join() {
        let data = data(&Cluster::test(), &Shape::running(3));
        assert_eq!(data[INITIAL_CLUSTER_STATE_KEY], "existing");
        assert_eq!(
            data[JOIN_KEY],
            "flotilla-0.flotilla-peers.db.svc:7100,\
             flotilla-1.flotilla-peers.db.svc:7100,\
             flotilla-2.flotilla-peers.db.svc:7100"
        );
    }
}
