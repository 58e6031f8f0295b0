//! The operator's view of a running Flotilla cluster's admin API: membership,
//! draining and removing nodes, leadership transfer, placement labels, and databases.
//!
//! Controllers talk to a cluster only through [`ClusterAdmin`], so that reconcile tests
//! can stand in for the cluster. [`grpc::GrpcAdmin`] is the implementation over the
//! nodes' admin gRPC API.

pub mod grpc;
mod mapping;

use crate::crd::Cluster;
use crate::error::{Error, Result};
use crate::plan::collections::{CollectionStep, ObservedCollection};
use crate::plan::{Labels, Membership};
use futures::future::BoxFuture;

/// What a DatabaseGroup asks the cluster for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseRequest {
    pub name: String,
    pub replication_factor: u32,
    pub shards: u32,
    /// Pods whose nodes may hold replicas; every node when empty.
    pub pods: Vec<String>,
    /// Labels a node must carry to hold replicas; any node when empty.
    pub node_labels: std::collections::BTreeMap<String, String>,
    /// How long a replica may stay in Rehab before it is replaced; the cluster's default
    /// when unset.
    pub replace_after: Option<std::time::Duration>,
    /// Whether a database of this name that exists already may be taken as it is (and
    /// updated to the request); when not, finding one fails with [`Error::DatabaseExists`].
    pub may_exist: bool,
}

/// What [`ClusterAdmin::ensure_database`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnsuredDatabase {
    /// The database did not exist and was created by this call.
    pub created: bool,
    /// Its live topology.
    pub shards: Vec<ShardTopology>,
}

/// Live topology of one shard, with replicas named by pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardTopology {
    pub shard: u32,
    pub leader: Option<String>,
    pub members: Vec<String>,
    pub promotables: Vec<String>,
    pub rehab: Vec<String>,
}

/// The topology transitions a cluster records (`Admin.ClusterEvents`), as read at one time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopologyEvents {
    /// The cluster that numbered them: sequence numbers count within one cluster only.
    pub cluster_id: String,
    /// Oldest first.
    pub events: Vec<TopologyEvent>,
}

/// One recorded topology transition of a replica, with its node named by pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopologyEvent {
    /// Position in the cluster's history: one more than the event before.
    pub sequence: u64,
    /// When the cluster recorded it, in Unix milliseconds.
    pub at_unix_ms: u64,
    pub database: String,
    pub shard: u32,
    pub node_id: u64,
    /// The pod running the node; `None` once the cluster no longer knows the node.
    pub pod: Option<String>,
    /// Replica states as the cluster names them (`member`, `rehab`, `promotable`), or
    /// `absent` before a replica's first state and `removed` after its last.
    pub from_state: String,
    pub to_state: String,
    /// Why, in the cluster's words.
    pub reason: String,
    /// Made because the replica was stopped for good on its node (corrupt or diverged).
    pub replica_broken: bool,
}

/// Admin operations on a running cluster. Every operation is idempotent.
pub trait ClusterAdmin: Send + Sync + 'static {
    /// How to reach `cluster` from now on: over TLS with these settings (the operator's
    /// client certificate and the cluster's CAs), or in plaintext (`None`) when the cluster
    /// serves no TLS. A cluster with `spec.tls.enabled` and no settings yet is not called.
    fn use_client_tls(&self, cluster: &Cluster, tls: Option<flotilla_client::ClientTls>) {
        let _ = (cluster, tls);
    }

    /// Raft membership of the cluster, asked of any node that answers.
    fn membership<'a>(&'a self, cluster: &'a Cluster) -> BoxFuture<'a, Result<Membership>>;

    /// Starts (or continues) moving every data replica off the node.
    fn drain_node<'a>(
        &'a self,
        cluster: &'a Cluster,
        node_id: &'a str,
    ) -> BoxFuture<'a, Result<()>>;

    /// Removes the node from the membership of every Raft group.
    fn remove_node<'a>(
        &'a self,
        cluster: &'a Cluster,
        node_id: &'a str,
    ) -> BoxFuture<'a, Result<()>>;

    /// Moves every leadership the node holds to other caught-up voters.
    fn transfer_leadership<'a>(
        &'a self,
        cluster: &'a Cluster,
        node_id: &'a str,
    ) -> BoxFuture<'a, Result<()>>;

    /// Sets the labels assigned to the node (on top of, and overriding, those it was
    /// started with; an empty map clears them) and returns the labels it carries now.
    fn assign_labels<'a>(
        &'a self,
        cluster: &'a Cluster,
        node_id: &'a str,
        labels: &'a Labels,
    ) -> BoxFuture<'a, Result<Labels>>;

    /// Creates the database, or updates its replication factor and placement (when
    /// `request.may_exist`), and returns its live topology and whether it was created.
    fn ensure_database<'a>(
        &'a self,
        cluster: &'a Cluster,
        request: &'a DatabaseRequest,
    ) -> BoxFuture<'a, Result<EnsuredDatabase>>;

    /// Deletes the database and its data; succeeds when it does not exist.
    fn delete_database<'a>(
        &'a self,
        cluster: &'a Cluster,
        name: &'a str,
    ) -> BoxFuture<'a, Result<()>>;

    /// The collections the database declares, with their indexes and each index's build
    /// progress on every shard.
    fn collections<'a>(
        &'a self,
        cluster: &'a Cluster,
        database: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ObservedCollection>>>;

    /// Creates a collection or an index, or drops an index, of the database. A refusal (a
    /// shard key that differs, documents placed already) is [`Error::AdminRefused`].
    fn change_collections<'a>(
        &'a self,
        cluster: &'a Cluster,
        database: &'a str,
        step: &'a CollectionStep,
    ) -> BoxFuture<'a, Result<()>>;

    /// The topology transitions the cluster still records after `after_sequence`, oldest
    /// first. The cluster keeps a bounded number of the most recent ones, so older
    /// transitions may be gone.
    fn topology_events<'a>(
        &'a self,
        cluster: &'a Cluster,
        after_sequence: u64,
    ) -> BoxFuture<'a, Result<TopologyEvents>>;
}

/// Stands in while no admin client is configured: every call fails with
/// [`Error::AdminUnavailable`], so clusters stay at their first node and say why.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoAdmin;

fn unavailable<'a, T: Send + 'a>() -> BoxFuture<'a, Result<T>> {
    Box::pin(async { Err(Error::AdminUnavailable) })
}

impl ClusterAdmin for NoAdmin {
    fn membership<'a>(&'a self, _: &'a Cluster) -> BoxFuture<'a, Result<Membership>> {
        unavailable()
    }

    fn drain_node<'a>(&'a self, _: &'a Cluster, _: &'a str) -> BoxFuture<'a, Result<()>> {
        unavailable()
    }

    fn remove_node<'a>(&'a self, _: &'a Cluster, _: &'a str) -> BoxFuture<'a, Result<()>> {
        unavailable()
    }

    fn transfer_leadership<'a>(&'a self, _: &'a Cluster, _: &'a str) -> BoxFuture<'a, Result<()>> {
        unavailable()
    }

    fn assign_labels<'a>(
        &'a self,
        _: &'a Cluster,
        _: &'a str,
        _: &'a Labels,
    ) -> BoxFuture<'a, Result<Labels>> {
        unavailable()
    }

    fn ensure_database<'a>(
        &'a self,
        _: &'a Cluster,
        _: &'a DatabaseRequest,
    ) -> BoxFuture<'a, Result<EnsuredDatabase>> {
        unavailable()
    }

    fn delete_database<'a>(&'a self, _: &'a Cluster, _: &'a str) -> BoxFuture<'a, Result<()>> {
        unavailable()
    }

    fn collections<'a>(
        &'a self,
        _: &'a Cluster,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ObservedCollection>>> {
        unavailable()
    }

    fn change_collections<'a>(
        &'a self,
        _: &'a Cluster,
        _: &'a str,
        _: &'a CollectionStep,
    ) -> BoxFuture<'a, Result<()>> {
        unavailable()
    }

    fn topology_events<'a>(
        &'a self,
        _: &'a Cluster,
        _: u64,
    ) -> BoxFuture<'a, Result<TopologyEvents>> {
        unavailable()
    }
}
