//! Accessors of [`DatabaseGroup`].

use super::database_group::{DatabaseGroup, DeletionPolicy};
use crate::error::{Error, Result};

impl DatabaseGroup {
    /// The object's name.
    pub fn name(&self) -> Result<&str> {
        self.metadata
            .name
            .as_deref()
            .ok_or(Error::MissingObjectKey("metadata.name"))
    }

    /// Name of the database in the cluster: `spec.databaseName`, else the object's name.
    pub fn database_name(&self) -> Result<&str> {
        match &self.spec.database_name {
            Some(name) => Ok(name),
            None => self.name(),
        }
    }

    /// Name of the Cluster holding the database.
    pub fn cluster_name(&self) -> &str {
        &self.spec.cluster_ref.name
    }

    /// Whether deleting the group needs cleanup outside Kubernetes (dropping the database),
    /// and so a finalizer. With `deletionPolicy: Retain` it needs none: the group goes at
    /// once, even when no operator runs (a namespace deletion never hangs on it).
    pub fn needs_finalizer(&self) -> bool {
        self.spec.deletion_policy == DeletionPolicy::Delete
    }

    /// Replicas the spec asks for over all shards.
    pub fn wanted_replicas(&self) -> i64 {
        i64::from(self.spec.replication_factor) * i64::from(self.spec.shards)
    }
}
