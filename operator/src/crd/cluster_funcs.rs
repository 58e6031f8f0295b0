//! Accessors and naming helpers of [`Cluster`]: names of its children, pod DNS names,
//! labels, and the values derived from its spec and status.

use super::cluster::{Cluster, ImagePullPolicy, ScaleDownIntent};
use crate::error::{Error, Result};
use std::collections::BTreeMap;

pub use super::cluster::{CLIENT_PORT, HTTP_PORT, PEER_PORT};

/// Where the node keeps its data inside the container.
pub const DATA_DIR: &str = "/var/lib/flotilla";
/// Name of the container that runs the node.
pub const NODE_CONTAINER: &str = "node";
/// Name of the volume (and PVC template) holding a node's data.
pub const DATA_VOLUME: &str = "data";

/// Label naming the cluster an object belongs to.
pub const CLUSTER_LABEL: &str = "flotilla.dev/cluster";
/// Annotation an administrator puts on a pod whose node's data is lost for good.
pub const UNRECOVERABLE_ANNOTATION: &str = "flotilla.dev/unrecoverable";

impl Cluster {
    /// The object's name.
    pub fn name(&self) -> Result<&str> {
        self.metadata
            .name
            .as_deref()
            .ok_or(Error::MissingObjectKey("metadata.name"))
    }

    /// The object's namespace; `default` when it has none (a manifest read from a file).
    pub fn namespace_or_default(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("default")
    }

    /// Name of the StatefulSet, and the prefix of every pod name.
    pub fn statefulset_name(&self) -> Result<String> {
        self.name().map(str::to_owned)
    }

    /// Name of the client Service.
    pub fn client_service_name(&self) -> Result<String> {
        self.name().map(str::to_owned)
    }

    /// Name of the headless Service that gives every pod a stable DNS name.
    pub fn headless_service_name(&self) -> Result<String> {
        Ok(format!("{}-peers", self.name()?))
    }

    /// Name of the ConfigMap read by the nodes at start.
    pub fn configmap_name(&self) -> Result<String> {
        Ok(format!("{}-config", self.name()?))
    }

    /// Name of the PodDisruptionBudget.
    pub fn pdb_name(&self) -> Result<String> {
        self.name().map(str::to_owned)
    }

    /// Name of the pod with the given ordinal.
    pub fn pod_name(&self, ordinal: i32) -> Result<String> {
        Ok(format!("{}-{ordinal}", self.name()?))
    }

    /// Name of the PVC holding the data of the pod with the given ordinal.
    pub fn pvc_name(&self, ordinal: i32) -> Result<String> {
        Ok(format!("{DATA_VOLUME}-{}-{ordinal}", self.name()?))
    }

    /// Stable DNS name of the pod with the given ordinal.
    pub fn pod_dns_name(&self, ordinal: i32) -> Result<String> {
        Ok(format!(
            "{}.{}.{}.svc",
            self.pod_name(ordinal)?,
            self.headless_service_name()?,
            self.namespace_or_default()
        ))
    }

    /// Domain under which every pod is reachable (`<pod>.<domain>`).
    pub fn pod_domain(&self) -> Result<String> {
        Ok(format!(
            "{}.{}.svc",
            self.headless_service_name()?,
            self.namespace_or_default()
        ))
    }

    /// Labels that select this cluster's pods. Never changes for a given cluster.
    pub fn selector_labels(&self) -> Result<BTreeMap<String, String>> {
        let name = self.name()?;
        Ok(BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), "flotilla".to_owned()),
            ("app.kubernetes.io/instance".to_owned(), name.to_owned()),
            ("app.kubernetes.io/component".to_owned(), "node".to_owned()),
        ]))
    }

    /// Labels of every object the operator creates for this cluster.
    pub fn labels(&self) -> Result<BTreeMap<String, String>> {
        let mut labels = self.selector_labels()?;
        labels.insert(
            "app.kubernetes.io/managed-by".to_owned(),
            "flotilla-operator".to_owned(),
        );
        labels.insert(CLUSTER_LABEL.to_owned(), self.name()?.to_owned());
        Ok(labels)
    }

    /// Whether the Raft cluster has been initialised (its id is recorded in status).
    pub fn is_bootstrapped(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.cluster_id.is_some())
    }

    /// The value every starting node gets for `--initial-cluster-state`.
    ///
    /// `new` only before the cluster id is recorded; only the first pod exists then.
    pub fn initial_cluster_state(&self) -> &'static str {
        if self.is_bootstrapped() {
            "existing"
        } else {
            "new"
        }
    }

    /// The scale-down in progress, if any.
    pub fn scale_down(&self) -> Option<&ScaleDownIntent> {
        self.status.as_ref().and_then(|s| s.scale_down.as_ref())
    }

    /// Size of the StatefulSet when the operator applies this cluster for the first time
    /// (and what `render` shows): one pod until the cluster is bootstrapped.
    pub fn initial_statefulset_replicas(&self) -> i32 {
        if self.is_bootstrapped() {
            self.spec.replicas
        } else {
            1
        }
    }

    /// Image pull policy as Kubernetes spells it.
    pub fn image_pull_policy(&self) -> &'static str {
        match self.spec.image_pull_policy {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }

    /// Ordinal of `pod` if it is one of this cluster's pods.
    pub fn ordinal_of(&self, pod: &str) -> Option<i32> {
        let name = self.name().ok()?;
        let suffix = pod.strip_prefix(name)?.strip_prefix('-')?;
        if suffix.starts_with('+') || (suffix.len() > 1 && suffix.starts_with('0')) {
            return None;
        }
        suffix.parse().ok().filter(|n: &i32| *n >= 0)
    }
}

#[cfg(test)]
mod tests {
    use crate::crd::Cluster;

    #[test]
    fn pod_dns_names_go_through_the_headless_service() {
        let cluster = Cluster::test().named("db").in_namespace("prod");
        assert_eq!(
            cluster.pod_dns_name(2).as_deref().ok(),
            Some("db-2.db-peers.prod.svc")
        );
        assert_eq!(cluster.pvc_name(2).as_deref().ok(), Some("data-db-2"));
    }

    #[test]
    fn only_an_unbootstrapped_cluster_starts_a_new_raft_cluster() {
        let fresh = Cluster::test().with_replicas(3);
        assert_eq!(fresh.initial_cluster_state(), "new");
        assert_eq!(fresh.initial_statefulset_replicas(), 1);
        let bootstrapped = fresh.with_cluster_id("c-1");
        assert_eq!(bootstrapped.initial_cluster_state(), "existing");
        assert_eq!(bootstrapped.initial_statefulset_replicas(), 3);
    }

    #[test]
    fn ordinals_are_parsed_only_from_this_clusters_pods() {
        let cluster = Cluster::test().named("db");
        assert_eq!(cluster.ordinal_of("db-0"), Some(0));
        assert_eq!(cluster.ordinal_of("db-12"), Some(12));
        assert_eq!(cluster.ordinal_of("db-peers"), None);
        assert_eq!(cluster.ordinal_of("dbx-1"), None);
        assert_eq!(cluster.ordinal_of("db-01"), None);
        assert_eq!(cluster.ordinal_of("db-+1"), None);
    }
}
