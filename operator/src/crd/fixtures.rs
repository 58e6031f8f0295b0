//! Test fixtures: `Cluster::test()` and `DatabaseGroup::test()` builders.

use super::cluster::{Cluster, ClusterSpec, ClusterStatus, ScaleDownIntent};
use super::database_group::{ClusterRef, DatabaseGroup, DatabaseGroupSpec, DeletionPolicy};
use crate::crd::StorageSpec;

impl Cluster {
    /// A three-node cluster `flotilla` in namespace `db`, with a uid and generation 1.
    pub fn test() -> Self {
        let mut cluster = Cluster::new(
            "flotilla",
            ClusterSpec {
                replicas: 3,
                image: "flotilla/flotilla-node:0.1.0".to_owned(),
                image_pull_policy: Default::default(),
                storage: StorageSpec::default(),
                resources: None,
                meta_voters: 3,
                heartbeat_interval: None,
                election_timeout: None,
                snapshot_threshold: None,
                snapshot_log_bytes: None,
                rehab_after: None,
                promotion_lag: None,
                rehab_lag: None,
                force_delete_after: None,
                pod: None,
                service: Default::default(),
                paused: false,
                placement_labels: super::cluster::default_placement_labels(),
                tls: None,
                network_policy: None,
                backup: None,
                bootstrap: None,
            },
        );
        cluster.metadata.namespace = Some("db".to_owned());
        cluster.metadata.uid = Some("0b7a8c2e-uid".to_owned());
        cluster.metadata.generation = Some(1);
        cluster
    }

    pub fn named(mut self, name: &str) -> Self {
        self.metadata.name = Some(name.to_owned());
        self
    }

    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.metadata.namespace = Some(namespace.to_owned());
        self
    }

    pub fn with_replicas(mut self, replicas: i32) -> Self {
        self.spec.replicas = replicas;
        self
    }

    pub fn with_generation(mut self, generation: i64) -> Self {
        self.metadata.generation = Some(generation);
        self
    }

    pub fn paused(mut self) -> Self {
        self.spec.paused = true;
        self
    }

    pub fn with_cluster_id(mut self, id: &str) -> Self {
        self.status_mut().cluster_id = Some(id.to_owned());
        self
    }

    pub fn with_scale_down(mut self, intent: ScaleDownIntent) -> Self {
        self.status_mut().scale_down = Some(intent);
        self
    }

    pub fn status_mut(&mut self) -> &mut ClusterStatus {
        self.status.get_or_insert_with(ClusterStatus::default)
    }
}

impl DatabaseGroup {
    /// A database group `orders` on cluster `flotilla` with RF 3 and 4 shards.
    pub fn test() -> Self {
        let mut group = DatabaseGroup::new(
            "orders",
            DatabaseGroupSpec {
                cluster_ref: ClusterRef {
                    name: "flotilla".to_owned(),
                },
                database_name: None,
                replication_factor: 3,
                shards: 4,
                placement: None,
                replace_after: None,
                deletion_policy: DeletionPolicy::Retain,
                adopt: false,
                collections: Vec::new(),
            },
        );
        group.metadata.namespace = Some("db".to_owned());
        group.metadata.generation = Some(1);
        group
    }

    pub fn with_replication_factor(mut self, rf: i32) -> Self {
        self.spec.replication_factor = rf;
        self
    }

    pub fn on_cluster(mut self, cluster: &str) -> Self {
        self.spec.cluster_ref.name = cluster.to_owned();
        self
    }
}

/// The in-process fake Kubernetes API with Flotilla's custom resources defined, as after
/// `kubectl apply -f crds/`, and the namespaces `db` (of the fixtures) and `ops` (of the
/// operator's own objects).
pub(crate) fn fake_api() -> flotilla_kubefake::FakeApi {
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::CustomResourceExt;
    let api = flotilla_kubefake::FakeApi::default();
    api.put(&Cluster::crd());
    api.put(&DatabaseGroup::crd());
    api.put(&super::Backup::crd());
    api.put(&super::ScheduledBackup::crd());
    for name in ["db", "ops"] {
        api.put(&Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        });
    }
    api
}
