//! Accessors and naming helpers of [`Cluster`]: names of its children, pod DNS names,
//! labels, and the values derived from its spec and status.

use super::cluster::{Cluster, ImagePullPolicy, IssuerRef, NodeState, ScaleDownIntent};
use crate::error::{Error, Result};
use std::collections::BTreeMap;

pub use super::cluster::{CLIENT_PORT, HTTP_PORT, PEER_PORT};

/// Where the node keeps its data inside the container.
pub const DATA_DIR: &str = "/var/lib/flotilla";
/// Name of the container that runs the node.
pub const NODE_CONTAINER: &str = "node";
/// Name of the volume (and PVC template) holding a node's data.
pub const DATA_VOLUME: &str = "data";

/// Where the node's certificates (the `<cluster>-tls` Secret) are mounted.
pub const TLS_DIR: &str = "/etc/flotilla/tls";
/// Name of the volume holding the node's certificates.
pub const TLS_VOLUME: &str = "tls";
/// Default of `spec.tls.certificateLifetime`: 90 days.
pub const DEFAULT_CERTIFICATE_LIFETIME: std::time::Duration =
    std::time::Duration::from_secs(90 * 24 * 3600);
/// Common name of the operator's client certificate: the user the nodes authenticate it
/// as (`--client-cert-auth`), the built-in administrator.
pub const OPERATOR_USER: &str = "root";

/// Default of `spec.forceDeleteAfter`.
pub const DEFAULT_FORCE_DELETE_AFTER: std::time::Duration = std::time::Duration::from_secs(300);
/// Label naming the cluster an object belongs to.
pub const CLUSTER_LABEL: &str = "flotilla.dev/cluster";
/// Annotation keeping the Raft cluster's id on the StatefulSet and on every volume, so
/// that it survives a lost status.
pub const CLUSTER_ID_ANNOTATION: &str = "flotilla.dev/cluster-id";
/// Annotation an administrator puts on a pod whose node's data is lost for good.
pub const UNRECOVERABLE_ANNOTATION: &str = "flotilla.dev/unrecoverable";
/// Annotation asking the operator to move every leadership off the pod's node; its value is
/// when it was asked.
pub const HAND_OVER_ANNOTATION: &str = "flotilla.dev/handOverLeadership";

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

    /// Name of the Secret holding the cluster CA's certificate and key (operator-issued
    /// certificates only; never mounted into a pod).
    pub fn ca_secret_name(&self) -> Result<String> {
        Ok(format!("{}-ca", self.name()?))
    }

    /// Name of the Secret holding the nodes' certificate, key and trusted CAs.
    pub fn tls_secret_name(&self) -> Result<String> {
        Ok(format!("{}-tls", self.name()?))
    }

    /// Name of the Secret holding the operator's client certificate for this cluster.
    pub fn operator_tls_secret_name(&self) -> Result<String> {
        Ok(format!("{}-operator-tls", self.name()?))
    }

    /// Name of the NetworkPolicy of the nodes.
    pub fn network_policy_name(&self) -> Result<String> {
        self.name().map(str::to_owned)
    }

    /// The databases to restore into the new cluster (`spec.bootstrap.recovery`), if any.
    pub fn recovery_spec(&self) -> Option<&crate::crd::RecoverySpec> {
        self.spec.bootstrap.as_ref()?.recovery.as_ref()
    }

    /// Whether the nodes serve TLS (`spec.tls.enabled`).
    pub fn tls_enabled(&self) -> bool {
        self.spec.tls.as_ref().is_some_and(|t| t.enabled)
    }

    /// The cert-manager issuer of the certificates, when TLS is on and one is named.
    pub fn tls_issuer(&self) -> Option<&IssuerRef> {
        self.spec
            .tls
            .as_ref()
            .filter(|t| t.enabled)
            .and_then(|t| t.issuer_ref.as_ref())
    }

    /// Lifetime of the node and operator certificates.
    pub fn certificate_lifetime(&self) -> std::time::Duration {
        self.spec
            .tls
            .as_ref()
            .and_then(|t| t.certificate_lifetime)
            .map_or(DEFAULT_CERTIFICATE_LIFETIME, std::time::Duration::from)
    }

    /// DNS name of the client Service, which every node certificate names and the operator
    /// checks the nodes' certificates for.
    pub fn client_service_dns_name(&self) -> Result<String> {
        Ok(format!(
            "{}.{}.svc",
            self.client_service_name()?,
            self.namespace_or_default()
        ))
    }

    /// The names the node certificate is valid for: every pod's stable name (a wildcard
    /// under the headless Service) and the client Service, short and fully qualified, and
    /// `localhost`.
    pub fn node_certificate_names(&self) -> Result<Vec<String>> {
        let namespace = self.namespace_or_default();
        let peers = self.headless_service_name()?;
        let client = self.client_service_name()?;
        let mut names = Vec::new();
        for service in [&peers, &client] {
            let prefix = if *service == peers { "*." } else { "" };
            names.extend([
                format!("{prefix}{service}"),
                format!("{prefix}{service}.{namespace}"),
                format!("{prefix}{service}.{namespace}.svc"),
                format!("{prefix}{service}.{namespace}.svc.cluster.local"),
            ]);
        }
        names.push("localhost".to_owned());
        Ok(names)
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

    /// [`Self::selector_labels`] as a label selector (`k=v,k=v`), for list requests.
    pub fn label_selector(&self) -> Result<String> {
        Ok(self
            .selector_labels()?
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","))
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

    /// The Raft cluster id the status records (possibly empty: recorded by an older
    /// operator before the first node reported it).
    ///
    /// The status alone never decides that a cluster is new: see
    /// [`crate::plan::bootstrap`], which also looks at volumes, the live StatefulSet and
    /// ConfigMap, and what the nodes report.
    pub fn recorded_cluster_id(&self) -> Option<&str> {
        self.status.as_ref().and_then(|s| s.cluster_id.as_deref())
    }

    /// How long a pod being replaced may stay Terminating on a NotReady Kubernetes Node
    /// before it is deleted with no grace period.
    pub fn force_delete_after(&self) -> std::time::Duration {
        self.spec
            .force_delete_after
            .map_or(DEFAULT_FORCE_DELETE_AFTER, std::time::Duration::from)
    }

    /// The scale-down in progress, if any.
    pub fn scale_down(&self) -> Option<&ScaleDownIntent> {
        self.status.as_ref().and_then(|s| s.scale_down.as_ref())
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

impl NodeState {
    /// Every state, in the order metrics list them.
    pub const ALL: [NodeState; 5] = [
        NodeState::Member,
        NodeState::Promotable,
        NodeState::Rehab,
        NodeState::Draining,
        NodeState::Unknown,
    ];

    /// The state as status writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Member => "Member",
            NodeState::Promotable => "Promotable",
            NodeState::Rehab => "Rehab",
            NodeState::Draining => "Draining",
            NodeState::Unknown => "Unknown",
        }
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
