//! [`ClusterAdmin`] over the nodes' admin gRPC API, through `flotilla-client`.
//!
//! One client per cluster, pointed at every pod's stable DNS name; the client follows
//! the meta leader and retries within short deadlines so that a reconcile never hangs.
//! What the API cannot do yet (moving replicas off a node, changing a database's
//! replication factor or placement) fails with an error that says so.

use super::mapping::{membership, topology, topology_events};
use super::{ClusterAdmin, DatabaseRequest, EnsuredDatabase, TopologyEvents};
use crate::crd::Cluster;
use crate::crd::cluster_funcs::CLIENT_PORT;
use crate::error::{Error, Result};
use crate::plan::collections::{CollectionStep, ObservedCollection, ObservedIndex};
use crate::plan::{Labels, Membership};
use flotilla_client::RemoveNodeProgress;
use flotilla_client::{
    Client, ClientOptions, ClientTls, DatabaseInfo, DatabaseOptions, DatabaseStatus,
    DatabaseUpdate, Group,
};
use futures::StreamExt;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest a read of the cluster's recorded events may take, once its stream is open.
const EVENTS_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Rewrites a node's `host:port` address before the operator connects to it.
pub type AddressMap = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// Admin operations through the cluster's own gRPC API.
#[derive(Default)]
pub struct GrpcAdmin {
    /// Clients by cluster (`namespace/name`), with the endpoints they were made for.
    clients: Mutex<HashMap<String, (ClientKey, Client)>>,
    /// How pod addresses are reached when the operator is outside the pod network.
    address_map: Option<AddressMap>,
    /// TLS settings by cluster (`namespace/name`), for clusters that serve TLS.
    tls: Mutex<HashMap<String, ClientTls>>,
}

/// The cache entry of a cluster's client: what it was made for.
type ClientKey = (Vec<String>, Option<ClientTls>);

fn admin_error(error: flotilla_client::Error) -> Error {
    use flotilla_client::Error as E;
    match error {
        E::Unavailable(_) | E::Transport { .. } | E::DeadlineExceeded(_) => {
            Error::Admin(error.to_string())
        }
        other => Error::AdminRefused(other.to_string()),
    }
}

fn node_id(id: &str) -> Result<u64> {
    id.parse()
        .map_err(|_| Error::AdminRefused(format!("invalid node id {id:?}")))
}

/// Client addresses of every pod the cluster may have.
fn endpoints(cluster: &Cluster) -> Result<Vec<String>> {
    let known = cluster.status.as_ref().map_or(0, |s| s.nodes.len());
    let count = usize::try_from(cluster.spec.replicas)
        .unwrap_or(1)
        .max(known)
        .max(1);
    (0..count)
        .map(|ordinal| {
            let ordinal = i32::try_from(ordinal).unwrap_or(i32::MAX);
            Ok(format!("{}:{CLIENT_PORT}", cluster.pod_dns_name(ordinal)?))
        })
        .collect()
}

/// The key of a cluster in the caches: `namespace/name`.
fn cluster_key(cluster: &Cluster) -> Result<String> {
    Ok(format!(
        "{}/{}",
        cluster.namespace_or_default(),
        cluster.name()?
    ))
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// A replacement delay as the cluster's API takes it.
fn duration_text(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

/// Settings of a database to create for `request`.
fn database_options(request: &DatabaseRequest) -> DatabaseOptions {
    DatabaseOptions {
        replication_factor: Some(request.replication_factor),
        shards: Some(request.shards),
        replace_after: request.replace_after.map(duration_text),
        placement: request.node_labels.clone(),
        ..DatabaseOptions::default()
    }
}

/// The change that brings `database` to what `request` asks, if it differs.
fn database_update(database: &DatabaseInfo, request: &DatabaseRequest) -> Option<DatabaseUpdate> {
    let mut update = DatabaseUpdate::default();
    if database.replication_factor != request.replication_factor {
        update.replication_factor = Some(request.replication_factor);
    }
    if let Some(wanted) = request.replace_after {
        let current = humantime::parse_duration(&database.replace_after).ok();
        if current != Some(wanted) {
            update.replace_after = Some(duration_text(wanted));
        }
    }
    if database.placement != request.node_labels {
        update.placement = Some(request.node_labels.clone());
    }
    (update != DatabaseUpdate::default()).then_some(update)
}

fn options(tls: Option<ClientTls>) -> ClientOptions {
    ClientOptions {
        tls,
        total_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(2),
        max_attempts: 3,
        ..ClientOptions::default()
    }
}

impl GrpcAdmin {
    /// Admin operations that reach each pod's address (`<pod>.<service>.<namespace>.svc:PORT`)
    /// through `map`: for an operator that runs outside the cluster's pod network and its
    /// DNS (through a tunnel, or against a stand-in of Kubernetes).
    pub fn with_address_map(map: AddressMap) -> Self {
        Self {
            address_map: Some(map),
            ..Self::default()
        }
    }

    fn client(&self, cluster: &Cluster) -> Result<Client> {
        let key = cluster_key(cluster)?;
        let mut endpoints = endpoints(cluster)?;
        if let Some(map) = &self.address_map {
            endpoints = endpoints.iter().map(|e| map(e)).collect();
        }
        let tls = if cluster.tls_enabled() {
            match locked(&self.tls).get(&key) {
                Some(tls) => Some(tls.clone()),
                None => {
                    return Err(Error::Certificate(format!(
                        "the operator's client certificate for this cluster (Secret {}) is not issued yet",
                        cluster.operator_tls_secret_name()?
                    )));
                }
            }
        } else {
            None
        };
        let wanted: ClientKey = (endpoints, tls);
        let mut clients = locked(&self.clients);
        if let Some((known, client)) = clients.get(&key)
            && *known == wanted
        {
            return Ok(client.clone());
        }
        // A renewed certificate makes a new client: connections are made with the settings
        // of the moment.
        let client = Client::with_options(wanted.0.clone(), options(wanted.1.clone()))
            .map_err(admin_error)?;
        clients.insert(key, (wanted, client.clone()));
        Ok(client)
    }

    async fn databases(client: &Client) -> Result<Vec<DatabaseStatus>> {
        let mut statuses = Vec::new();
        for database in client.list_databases().await.map_err(admin_error)? {
            match client.database_status(&database.name).await {
                Ok(status) => statuses.push(status),
                // Dropped between the two calls.
                Err(flotilla_client::Error::NotFound(_)) => {}
                Err(error) => return Err(admin_error(error)),
            }
        }
        Ok(statuses)
    }

    async fn topology_events_of(
        &self,
        cluster: &Cluster,
        after_sequence: u64,
    ) -> Result<TopologyEvents> {
        let client = self.client(cluster)?;
        let stream = client
            .cluster_events(false, after_sequence)
            .await
            .map_err(admin_error)?;
        // Without `follow` the node sends what it records and ends the stream; the limit
        // only guards against a node that stalls half way.
        let events: Vec<_> = tokio::time::timeout(EVENTS_READ_TIMEOUT, stream.collect::<Vec<_>>())
            .await
            .map_err(|_| {
                Error::Admin(format!(
                    "reading the cluster's events took longer than {EVENTS_READ_TIMEOUT:?}"
                ))
            })?
            .into_iter()
            .collect::<std::result::Result<_, _>>()
            .map_err(admin_error)?;
        // Read after the events, so that every node they name is known.
        let status = client.cluster_status().await.map_err(admin_error)?;
        Ok(topology_events(&status, events))
    }

    async fn membership_of(&self, cluster: &Cluster) -> Result<Membership> {
        let client = self.client(cluster)?;
        let status = client.cluster_status().await.map_err(admin_error)?;
        let databases = Self::databases(&client).await?;
        Ok(membership(&status, &databases))
    }
}

impl ClusterAdmin for GrpcAdmin {
    fn use_client_tls(&self, cluster: &Cluster, tls: Option<ClientTls>) {
        let Ok(key) = cluster_key(cluster) else {
            return;
        };
        let mut settings = locked(&self.tls);
        match tls {
            Some(tls) => settings.insert(key, tls),
            None => settings.remove(&key),
        };
    }

    fn membership<'a>(&'a self, cluster: &'a Cluster) -> BoxFuture<'a, Result<Membership>> {
        Box::pin(self.membership_of(cluster))
    }

    fn drain_node<'a>(&'a self, cluster: &'a Cluster, id: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // Asking the cluster to remove the node starts moving its replicas off it; each
            // answer says how far that has come.
            let client = self.client(cluster)?;
            match client.remove_node(node_id(id)?).await {
                Ok(step @ RemoveNodeProgress::Removed { .. }) => {
                    tracing::info!(node = id, %step, "node drained and removed");
                    Ok(())
                }
                Ok(step) => {
                    tracing::info!(node = id, %step, "draining");
                    Ok(())
                }
                Err(flotilla_client::Error::NotFound(_)) => Ok(()),
                Err(error) => Err(admin_error(error)),
            }
        })
    }

    fn remove_node<'a>(&'a self, cluster: &'a Cluster, id: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let client = self.client(cluster)?;
            match client.remove_node(node_id(id)?).await {
                Ok(RemoveNodeProgress::Removed { steps }) => {
                    tracing::info!(node = id, ?steps, "removed node");
                    Ok(())
                }
                // Not out yet (its replicas still move, or the meta leadership moved first):
                // the next pass asks again.
                Ok(step) => Err(admin_error(flotilla_client::Error::Unavailable(format!(
                    "node {id}: {step}"
                )))),
                Err(flotilla_client::Error::NotFound(_)) => Ok(()),
                Err(error) => Err(admin_error(error)),
            }
        })
    }

    fn transfer_leadership<'a>(
        &'a self,
        cluster: &'a Cluster,
        id: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let client = self.client(cluster)?;
            let membership = self.membership_of(cluster).await?;
            for group in membership
                .groups
                .iter()
                .filter(|g| g.leader.as_deref() == Some(id))
            {
                let Some(target) = group.caught_up.iter().find(|n| *n != id) else {
                    return Err(Error::AdminRefused(format!(
                        "group {} has no other caught-up voter to lead it",
                        group.id
                    )));
                };
                let which = match group.id.split_once('/') {
                    None => Group::Meta,
                    Some((database, shard)) => Group::Shard {
                        database: database.to_owned(),
                        shard: shard.parse().map_err(|_| {
                            Error::AdminRefused(format!("invalid group {}", group.id))
                        })?,
                    },
                };
                client
                    .transfer_leadership(which, node_id(target)?)
                    .await
                    .map_err(admin_error)?;
            }
            Ok(())
        })
    }

    fn assign_labels<'a>(
        &'a self,
        cluster: &'a Cluster,
        id: &'a str,
        labels: &'a Labels,
    ) -> BoxFuture<'a, Result<Labels>> {
        Box::pin(async move {
            let client = self.client(cluster)?;
            client
                .assign_labels(node_id(id)?, labels)
                .await
                .map_err(admin_error)
        })
    }

    fn ensure_database<'a>(
        &'a self,
        cluster: &'a Cluster,
        request: &'a DatabaseRequest,
    ) -> BoxFuture<'a, Result<EnsuredDatabase>> {
        Box::pin(async move {
            let client = self.client(cluster)?;
            let existing = client
                .list_databases()
                .await
                .map_err(admin_error)?
                .into_iter()
                .find(|d| d.name == request.name);
            let mut created = false;
            match existing {
                None => {
                    match client
                        .create_database_with(&request.name, &database_options(request))
                        .await
                    {
                        Ok(_) => created = true,
                        // Made by someone else since it was listed.
                        Err(flotilla_client::Error::AlreadyExists(_)) if !request.may_exist => {
                            return Err(Error::DatabaseExists(request.name.clone()));
                        }
                        Err(flotilla_client::Error::AlreadyExists(_)) => {}
                        Err(error) => return Err(admin_error(error)),
                    }
                }
                Some(_) if !request.may_exist => {
                    return Err(Error::DatabaseExists(request.name.clone()));
                }
                Some(database) => {
                    // The cluster adds, moves or removes replicas to match, one safe step at
                    // a time.
                    if let Some(update) = database_update(&database, request) {
                        client
                            .update_database_with(&request.name, &update)
                            .await
                            .map_err(admin_error)?;
                    }
                }
            }
            let status = client.cluster_status().await.map_err(admin_error)?;
            let database = client
                .database_status(&request.name)
                .await
                .map_err(admin_error)?;
            Ok(EnsuredDatabase {
                created,
                shards: topology(&status, &database),
            })
        })
    }

    fn delete_database<'a>(
        &'a self,
        cluster: &'a Cluster,
        name: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match self.client(cluster)?.drop_database(name).await {
                Ok(()) | Err(flotilla_client::Error::NotFound(_)) => Ok(()),
                Err(error) => Err(admin_error(error)),
            }
        })
    }

    fn collections<'a>(
        &'a self,
        cluster: &'a Cluster,
        database: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ObservedCollection>>> {
        Box::pin(async move {
            let client = self.client(cluster)?;
            let collections = client
                .list_collections(database)
                .await
                .map_err(admin_error)?;
            let indexes = client
                .list_indexes(database, None)
                .await
                .map_err(admin_error)?;
            Ok(observed_collections(collections, indexes))
        })
    }

    fn change_collections<'a>(
        &'a self,
        cluster: &'a Cluster,
        database: &'a str,
        step: &'a CollectionStep,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let client = self.client(cluster)?;
            match step {
                CollectionStep::CreateCollection {
                    collection,
                    shard_key,
                } => client
                    .create_collection(database, collection, shard_key.as_deref())
                    .await
                    .map(drop),
                CollectionStep::CreateIndex {
                    collection,
                    name,
                    paths,
                } => {
                    let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
                    client
                        .create_index(database, collection, name, &paths)
                        .await
                }
                CollectionStep::DropIndex { collection, name } => client
                    .drop_index(database, collection, name)
                    .await
                    .map(drop),
            }
            .map_err(admin_error)
        })
    }

    fn topology_events<'a>(
        &'a self,
        cluster: &'a Cluster,
        after_sequence: u64,
    ) -> BoxFuture<'a, Result<TopologyEvents>> {
        Box::pin(self.topology_events_of(cluster, after_sequence))
    }
}

/// The declared collections with their indexes and each index's progress.
fn observed_collections(
    collections: Vec<flotilla_client::CollectionInfo>,
    indexes: Vec<flotilla_client::IndexInfo>,
) -> Vec<ObservedCollection> {
    let mut observed: Vec<ObservedCollection> = collections
        .into_iter()
        .map(|c| ObservedCollection {
            name: c.name,
            shard_key: c.shard_key,
            indexes: Vec::new(),
        })
        .collect();
    for index in indexes {
        let entry = match observed.iter().position(|c| c.name == index.collection) {
            Some(i) => &mut observed[i],
            None => {
                // An index declares its collection (placed by id) when it was not.
                observed.push(ObservedCollection {
                    name: index.collection.clone(),
                    shard_key: None,
                    indexes: Vec::new(),
                });
                let last = observed.len() - 1;
                &mut observed[last]
            }
        };
        entry.indexes.push(ObservedIndex {
            name: index.name,
            paths: index.paths,
            shards: index.shards,
        });
    }
    observed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_map_rewrites_every_pod_address() {
        let admin =
            GrpcAdmin::with_address_map(Arc::new(|addr: &str| addr.replace(".svc", ".example")));
        let cluster = Cluster::test().with_replicas(1);
        let endpoints = admin
            .client(&cluster)
            .map(|c| c.endpoints())
            .unwrap_or_default();
        assert_eq!(endpoints, ["flotilla-0.flotilla-peers.db.example:7100"]);
    }

    fn request() -> DatabaseRequest {
        DatabaseRequest {
            name: "orders".to_owned(),
            replication_factor: 3,
            shards: 4,
            pods: Vec::new(),
            node_labels: [("zone".to_owned(), "a".to_owned())].into(),
            replace_after: Some(Duration::from_secs(30)),
            may_exist: true,
        }
    }

    fn info(replace_after: &str) -> DatabaseInfo {
        DatabaseInfo {
            name: "orders".to_owned(),
            shards: 4,
            replication_factor: 3,
            replace_after: replace_after.to_owned(),
            placement: [("zone".to_owned(), "a".to_owned())].into(),
            auto_rebalance: false,
        }
    }

    #[test]
    fn placement_and_replace_after_reach_a_new_database() {
        let options = database_options(&request());
        assert_eq!(options.replace_after.as_deref(), Some("30000ms"));
        assert_eq!(options.placement.get("zone").map(String::as_str), Some("a"));
        assert_eq!(options.shards, Some(4));
    }

    #[test]
    fn a_database_as_asked_needs_no_update() {
        assert_eq!(database_update(&info("30s"), &request()), None);
        let update = database_update(&info("15m"), &request());
        assert_eq!(
            update.as_ref().and_then(|u| u.replace_after.as_deref()),
            Some("30000ms")
        );
        assert_eq!(update.and_then(|u| u.placement), None);
        let mut moved = request();
        moved.node_labels.clear();
        let update = database_update(&info("30s"), &moved);
        assert_eq!(update.and_then(|u| u.placement), Some(Default::default()));
    }

    #[test]
    fn the_client_knows_every_pod_of_the_cluster() {
        let cluster = Cluster::test().with_replicas(2);
        assert_eq!(
            endpoints(&cluster).unwrap_or_default(),
            [
                "flotilla-0.flotilla-peers.db.svc:7100",
                "flotilla-1.flotilla-peers.db.svc:7100"
            ]
        );
    }
}
