//! Custom resource types served under `flotilla.dev/v1alpha1`: the schema only.
//!
//! Accessors and naming helpers live beside each type (`*_funcs.rs`), typed
//! condition types and reasons in [`conditions`].

pub mod backup;
pub mod cluster;
pub mod cluster_funcs;
pub mod conditions;
pub mod database_group;
mod database_group_funcs;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod recovery;
#[cfg(test)]
mod recovery_tests;
pub mod scheduled_backup;
#[cfg(test)]
mod tests;
pub mod validation;

pub use backup::{
    Backup, BackupDestination, BackupPhase, BackupSpec, BackupStatus, ResolvedDestination,
    SecretRef,
};
pub use cluster::{
    Cluster, ClusterSpec, ClusterStatus, ImagePullPolicy, IssuerRef, NetworkPolicySpec, NodeRole,
    NodeState, NodeStatus, PodOverrides, ScaleDownIntent, ScaleDownPhase, ServicePorts,
    ServiceSpec, ServiceType, StorageSpec, TlsSpec,
};
pub use conditions::{ConditionStatus, ConditionType, Reason};
pub use database_group::{
    ClusterRef, CollectionSpec, CollectionStatus, DatabaseGroup, DatabaseGroupSpec,
    DatabaseGroupStatus, DeletionPolicy, IndexSpec, IndexState, IndexStatus, ManagedIndex,
    Placement, ShardStatus,
};
pub use recovery::{
    BootstrapSpec, ClusterBackupSpec, DatabaseRecovery, RecoveryBackup, RecoveryPhase,
    RecoverySpec, RecoveryStatus,
};
pub use scheduled_backup::{
    Retention, ScheduledBackup, ScheduledBackupSpec, ScheduledBackupStatus,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API group of every Flotilla custom resource.
pub const GROUP: &str = "flotilla.dev";
/// API version of every Flotilla custom resource.
pub const VERSION: &str = "v1alpha1";

/// Every CustomResourceDefinition the operator serves, in a stable order.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![
        Cluster::crd(),
        DatabaseGroup::crd(),
        Backup::crd(),
        ScheduledBackup::crd(),
    ]
}
