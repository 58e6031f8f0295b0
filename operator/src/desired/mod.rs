//! The objects a `Cluster` should have, built by pure functions with no client.
//!
//! One file per object. Everything here is a function of the `Cluster` spec and the
//! [`Shape`] the planner chose (StatefulSet size, whether nodes start a new Raft cluster,
//! the cluster id), so a second reconcile of an unchanged cluster builds identical
//! objects and server-side apply changes nothing.

pub mod backup_job;
mod certificates;
mod configmap;
mod network_policy;
mod pdb;
pub mod restore_job;
pub mod scheduled_backup;
mod services;
mod statefulset;

pub use certificates::{CERT_MANAGER_GROUP, certificate_resource, certificates};
pub use configmap::{INITIAL_CLUSTER_STATE_KEY, configmap};
pub use network_policy::{OperatorPods, network_policy};
pub use pdb::pod_disruption_budget;
pub use services::{client_service, headless_service};
pub use statefulset::{NODE_UID, node_args, restricted_container, statefulset};

use crate::crd::Cluster;
use crate::crd::cluster_funcs::CLUSTER_ID_ANNOTATION;
use crate::error::{Error, Result};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::api::DynamicObject;
use serde::Serialize;

/// One object the operator applies for a cluster.
// A handful are built per reconcile; boxing would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum DesiredObject {
    ConfigMap(ConfigMap),
    Service(Service),
    StatefulSet(StatefulSet),
    PodDisruptionBudget(PodDisruptionBudget),
    NetworkPolicy(NetworkPolicy),
    /// A cert-manager `Certificate`.
    Certificate(DynamicObject),
}

impl DesiredObject {
    /// The object's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ConfigMap(_) => "ConfigMap",
            Self::Service(_) => "Service",
            Self::StatefulSet(_) => "StatefulSet",
            Self::PodDisruptionBudget(_) => "PodDisruptionBudget",
            Self::NetworkPolicy(_) => "NetworkPolicy",
            Self::Certificate(_) => "Certificate",
        }
    }

    /// The object's `apiVersion`.
    pub fn api_version(&self) -> &'static str {
        match self {
            Self::ConfigMap(_) | Self::Service(_) => "v1",
            Self::StatefulSet(_) => "apps/v1",
            Self::PodDisruptionBudget(_) => "policy/v1",
            Self::NetworkPolicy(_) => "networking.k8s.io/v1",
            Self::Certificate(_) => "cert-manager.io/v1",
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Self::ConfigMap(o) => &o.metadata,
            Self::Service(o) => &o.metadata,
            Self::StatefulSet(o) => &o.metadata,
            Self::PodDisruptionBudget(o) => &o.metadata,
            Self::NetworkPolicy(o) => &o.metadata,
            Self::Certificate(o) => &o.metadata,
        }
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }
}

impl Serialize for DesiredObject {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::ConfigMap(o) => o.serialize(serializer),
            Self::Service(o) => o.serialize(serializer),
            Self::StatefulSet(o) => o.serialize(serializer),
            Self::PodDisruptionBudget(o) => o.serialize(serializer),
            Self::NetworkPolicy(o) => o.serialize(serializer),
            Self::Certificate(o) => o.serialize(serializer),
        }
    }
}

/// What a starting node is told about the Raft cluster (`--initial-cluster-state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    /// No Raft cluster exists yet: the first node, with no data, initialises one.
    New,
    /// The Raft cluster exists: every node joins it, none may initialise another.
    Existing,
}

impl ClusterState {
    /// The value as the node's flag takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Existing => "existing",
        }
    }
}

/// What the objects depend on besides the spec; chosen by the planner from what it
/// observed (see [`crate::plan::shape`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Pods of the StatefulSet.
    pub replicas: i32,
    /// What a starting node is told.
    pub cluster_state: ClusterState,
    /// The Raft cluster's id once known, kept on the StatefulSet so that it survives a
    /// lost status.
    pub cluster_id: Option<String>,
    /// The storage request of the claim template when it differs from `storage.size`:
    /// the live StatefulSet's, which cannot change in place.
    pub volume_size: Option<String>,
}

impl Shape {
    /// The first apply of a new cluster: one pod, which initialises the Raft cluster.
    pub fn first_apply() -> Self {
        Self {
            replicas: 1,
            cluster_state: ClusterState::New,
            cluster_id: None,
            volume_size: None,
        }
    }

    /// A running cluster of `replicas` pods.
    pub fn running(replicas: i32) -> Self {
        Self {
            replicas,
            cluster_state: ClusterState::Existing,
            cluster_id: None,
            volume_size: None,
        }
    }

    /// What `cluster` runs with once it is bootstrapped and at its spec.
    pub fn steady(cluster: &Cluster) -> Self {
        Self {
            cluster_id: cluster.recorded_cluster_id().map(str::to_owned),
            ..Self::running(cluster.spec.replicas)
        }
    }
}

/// Every object `cluster` should have, in the order they are applied: the ConfigMap the
/// nodes read at start comes before the StatefulSet that starts them, and the
/// certificates (with an issuer) before the pods that mount them. The Secrets the operator
/// issues itself are not among them: their content is not a function of the spec (see
/// [`crate::plan::certificates`]).
pub fn desired_objects(
    cluster: &Cluster,
    shape: &Shape,
    operator: &OperatorPods,
) -> Result<Vec<DesiredObject>> {
    let mut statefulset = statefulset(cluster, shape.replicas)?;
    if let Some(size) = &shape.volume_size {
        for template in statefulset
            .spec
            .iter_mut()
            .flat_map(|s| s.volume_claim_templates.iter_mut().flatten())
        {
            template
                .spec
                .get_or_insert_with(Default::default)
                .resources
                .get_or_insert_with(Default::default)
                .requests
                .get_or_insert_with(Default::default)
                .insert("storage".to_owned(), Quantity(size.clone()));
        }
    }
    if let Some(id) = &shape.cluster_id {
        statefulset
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(CLUSTER_ID_ANNOTATION.to_owned(), id.clone());
    }
    let mut objects: Vec<DesiredObject> = certificates(cluster)?
        .into_iter()
        .map(DesiredObject::Certificate)
        .collect();
    objects.extend([
        DesiredObject::ConfigMap(configmap(cluster, shape)?),
        DesiredObject::Service(headless_service(cluster)?),
        DesiredObject::Service(client_service(cluster)?),
        DesiredObject::StatefulSet(statefulset),
    ]);
    if let Some(policy) = network_policy(cluster, operator)? {
        objects.push(DesiredObject::NetworkPolicy(policy));
    }
    if let Some(pdb) = pod_disruption_budget(cluster, shape.replicas)? {
        objects.push(DesiredObject::PodDisruptionBudget(pdb));
    }
    Ok(objects)
}

/// The value of a builder's result; an error fails the test, naming the error (a test
/// must never compare defaults that stand in for a failed build).
#[cfg(test)]
pub(crate) fn built<T>(result: Result<T>) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("building failed: {error}"),
    }
}

/// Metadata of a child object: name, namespace, labels and the controller owner reference.
///
/// A cluster read from a file has no uid; its children then carry no owner reference.
pub(crate) fn child_metadata(cluster: &Cluster, name: String) -> Result<ObjectMeta> {
    if name.is_empty() {
        return Err(Error::MissingObjectKey("metadata.name"));
    }
    Ok(ObjectMeta {
        name: Some(name),
        namespace: Some(cluster.namespace_or_default().to_owned()),
        labels: Some(cluster.labels()?),
        owner_references: cluster.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_gets_a_configmap_two_services_a_statefulset_and_a_pdb() {
        let cluster = Cluster::test().with_cluster_id("c-1");
        let objects = built(desired_objects(
            &cluster,
            &Shape::running(3),
            &OperatorPods::default(),
        ));
        let kinds: Vec<_> = objects.iter().map(|o| (o.kind(), o.name())).collect();
        assert_eq!(
            kinds,
            vec![
                ("ConfigMap", "flotilla-config"),
                ("Service", "flotilla-peers"),
                ("Service", "flotilla"),
                ("StatefulSet", "flotilla"),
                ("PodDisruptionBudget", "flotilla"),
            ]
        );
    }

    #[test]
    fn every_child_is_owned_by_its_cluster_as_controller() {
        let cluster = Cluster::test();
        for object in built(desired_objects(
            &cluster,
            &Shape::running(3),
            &OperatorPods::default(),
        )) {
            let owners = object
                .metadata()
                .owner_references
                .clone()
                .unwrap_or_default();
            assert_eq!(owners.len(), 1, "{}", object.kind());
            assert_eq!(owners[0].kind, "Cluster");
            assert_eq!(owners[0].api_version, "flotilla.dev/v1alpha1");
            assert_eq!(owners[0].name, "flotilla");
            assert_eq!(owners[0].controller, Some(true));
            assert_eq!(object.metadata().namespace.as_deref(), Some("db"));
        }
    }

    #[test]
    fn a_cluster_without_uid_gets_children_without_owner_references() {
        let mut cluster = Cluster::test();
        cluster.metadata.uid = None;
        for object in built(desired_objects(
            &cluster,
            &Shape::running(3),
            &OperatorPods::default(),
        )) {
            assert_eq!(object.metadata().owner_references, None);
        }
    }

    #[test]
    fn the_cluster_id_is_kept_on_the_statefulset_once_known() {
        let cluster = Cluster::test();
        let annotation = |shape: &Shape| {
            let objects = match desired_objects(&cluster, shape, &OperatorPods::default()) {
                Ok(objects) => objects,
                Err(error) => panic!("desired objects: {error}"),
            };
            objects
                .iter()
                .find(|o| o.kind() == "StatefulSet")
                .and_then(|o| o.metadata().annotations.clone())
                .and_then(|a| a.get(CLUSTER_ID_ANNOTATION).cloned())
        };
        assert_eq!(annotation(&Shape::first_apply()), None);
        let known = Shape {
            cluster_id: Some("c-1".to_owned()),
            ..Shape::running(3)
        };
        assert_eq!(annotation(&known).as_deref(), Some("c-1"));
    }

    #[test]
    fn the_statefulset_keeps_the_volume_size_it_was_created_with() {
        let mut cluster = Cluster::test();
        cluster.spec.storage.size = Quantity("20Gi".to_owned());
        let kept = Shape {
            volume_size: Some("10Gi".to_owned()),
            ..Shape::running(3)
        };
        let size = |shape: &Shape| {
            built(desired_objects(&cluster, shape, &OperatorPods::default()))
                .into_iter()
                .find_map(|o| match o {
                    DesiredObject::StatefulSet(sts) => sts.spec,
                    _ => None,
                })
                .and_then(|s| s.volume_claim_templates)
                .and_then(|t| t.into_iter().next())
                .and_then(|t| t.spec?.resources?.requests?.remove("storage"))
        };
        assert_eq!(size(&kept), Some(Quantity("10Gi".to_owned())));
        assert_eq!(size(&Shape::running(3)), Some(Quantity("20Gi".to_owned())));
    }

    #[test]
    fn building_twice_gives_identical_objects() {
        let cluster = Cluster::test().with_cluster_id("c-1");
        let first = built(desired_objects(
            &cluster,
            &Shape::running(3),
            &OperatorPods::default(),
        ));
        let second = built(desired_objects(
            &cluster,
            &Shape::running(3),
            &OperatorPods::default(),
        ));
        assert!(!first.is_empty());
        assert_eq!(first, second);
    }

    #[test]
    fn a_cluster_without_a_name_is_an_error() {
        let mut cluster = Cluster::test();
        cluster.metadata.name = None;
        assert!(matches!(
            desired_objects(&cluster, &Shape::running(3), &OperatorPods::default()),
            Err(Error::MissingObjectKey(_))
        ));
    }
}
