//! A stand-in for a running cluster's admin API that records every call, with the
//! databases, collections and indexes it holds and the topology events it recorded.

use crate::admin::{
    ClusterAdmin, DatabaseRequest, EnsuredDatabase, ShardTopology, TopologyEvent, TopologyEvents,
};
use crate::crd::Cluster;
use crate::error::{Error, Result};
use crate::plan::collections::{CollectionStep, ObservedCollection, ObservedIndex};
use crate::plan::{Labels, Membership};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
pub(super) struct AdminState {
    pub(super) membership: Option<Membership>,
    /// Draining fails, as it does on a cluster that cannot move replicas yet.
    pub(super) drain_fails: bool,
    pub(super) calls: Vec<String>,
    pub(super) databases: BTreeMap<String, DatabaseRequest>,
    /// The TLS settings the controllers last gave, by cluster name.
    pub(super) client_tls: BTreeMap<String, Option<flotilla_client::ClientTls>>,
    /// Collections by database, as the cluster declares them.
    pub(super) collections: BTreeMap<String, Vec<ObservedCollection>>,
    /// Indexes report this many documents done and are not ready until it is cleared.
    pub(super) indexes_building: Option<u64>,
    /// The cluster's id, which numbers its topology events.
    pub(super) cluster_id: String,
    /// The topology events the cluster keeps, oldest first.
    pub(super) events: Vec<TopologyEvent>,
    /// The sequence number after which each read of the events asked, in order (reads are
    /// not among `calls`, as every reconcile of a group makes one).
    pub(super) events_read_after: Vec<u64>,
}

/// Stands in for a running cluster's admin API and records every call.
#[derive(Clone, Default)]
pub(super) struct FakeAdmin {
    state: Arc<Mutex<AdminState>>,
}

impl FakeAdmin {
    pub(super) fn lock(&self) -> MutexGuard<'_, AdminState> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub(super) fn set_membership(&self, membership: Option<Membership>) {
        self.lock().membership = membership;
    }

    pub(super) fn edit_membership(&self, edit: impl FnOnce(&mut Membership)) {
        if let Some(m) = self.lock().membership.as_mut() {
            edit(m);
        }
    }

    pub(super) fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    pub(super) fn record(&self, call: String) {
        self.lock().calls.push(call);
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, Result<T>> {
    Box::pin(async move { Ok(value) })
}

impl ClusterAdmin for FakeAdmin {
    fn use_client_tls(&self, cluster: &Cluster, tls: Option<flotilla_client::ClientTls>) {
        let name = cluster.metadata.name.clone().unwrap_or_default();
        self.lock().client_tls.insert(name, tls);
    }

    fn membership<'a>(&'a self, _: &'a Cluster) -> BoxFuture<'a, Result<Membership>> {
        let membership = self.lock().membership.clone();
        Box::pin(async move { membership.ok_or(Error::AdminUnavailable) })
    }

    fn drain_node<'a>(&'a self, _: &'a Cluster, node_id: &'a str) -> BoxFuture<'a, Result<()>> {
        self.record(format!("drain {node_id}"));
        if self.lock().drain_fails {
            return Box::pin(async { Err(Error::AdminRefused("cannot move replicas".to_owned())) });
        }
        ready(())
    }

    fn remove_node<'a>(&'a self, _: &'a Cluster, node_id: &'a str) -> BoxFuture<'a, Result<()>> {
        self.record(format!("remove {node_id}"));
        ready(())
    }

    fn transfer_leadership<'a>(
        &'a self,
        _: &'a Cluster,
        node_id: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        self.record(format!("transfer {node_id}"));
        ready(())
    }

    fn assign_labels<'a>(
        &'a self,
        _: &'a Cluster,
        node_id: &'a str,
        labels: &'a Labels,
    ) -> BoxFuture<'a, Result<Labels>> {
        let shown: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.record(format!("label {node_id} {}", shown.join(",")));
        // The cluster reports the labels from now on.
        let mut state = self.lock();
        let node = state
            .membership
            .as_mut()
            .and_then(|m| m.nodes.iter_mut().find(|n| n.node_id == node_id));
        let Some(node) = node else {
            return Box::pin(async { Err(Error::AdminRefused("no such node".to_owned())) });
        };
        node.labels = labels.clone();
        ready(labels.clone())
    }

    fn ensure_database<'a>(
        &'a self,
        _: &'a Cluster,
        request: &'a DatabaseRequest,
    ) -> BoxFuture<'a, Result<EnsuredDatabase>> {
        self.record(format!("ensure {}", request.name));
        let exists = self.lock().databases.contains_key(&request.name);
        if exists && !request.may_exist {
            let name = request.name.clone();
            return Box::pin(async move { Err(Error::DatabaseExists(name)) });
        }
        self.lock()
            .databases
            .insert(request.name.clone(), request.clone());
        let pods: Vec<String> = (0..request.replication_factor)
            .map(|i| format!("flotilla-{i}"))
            .collect();
        ready(EnsuredDatabase {
            created: !exists,
            shards: (0..request.shards)
                .map(|shard| ShardTopology {
                    shard,
                    leader: pods.first().cloned(),
                    members: pods.clone(),
                    promotables: Vec::new(),
                    rehab: Vec::new(),
                })
                .collect(),
        })
    }

    fn delete_database<'a>(&'a self, _: &'a Cluster, name: &'a str) -> BoxFuture<'a, Result<()>> {
        self.record(format!("delete {name}"));
        self.lock().databases.remove(name);
        ready(())
    }

    fn collections<'a>(
        &'a self,
        _: &'a Cluster,
        database: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ObservedCollection>>> {
        let state = self.lock();
        let building = state.indexes_building;
        let mut collections = state.collections.get(database).cloned().unwrap_or_default();
        for index in collections.iter_mut().flat_map(|c| c.indexes.iter_mut()) {
            if let Some(done) = building {
                index.shards = vec![(0, false, done)];
            }
        }
        ready(collections)
    }

    fn change_collections<'a>(
        &'a self,
        _: &'a Cluster,
        database: &'a str,
        step: &'a CollectionStep,
    ) -> BoxFuture<'a, Result<()>> {
        self.record(format!("{step}"));
        let mut state = self.lock();
        let collections = state.collections.entry(database.to_owned()).or_default();
        // The node's rules: a shard key is fixed once declared; an index name is taken once.
        let refused = |why: String| -> BoxFuture<'a, Result<()>> {
            Box::pin(async move { Err(Error::AdminRefused(why)) })
        };
        match step {
            CollectionStep::CreateCollection {
                collection,
                shard_key,
            } => match collections.iter().find(|c| c.name == *collection) {
                Some(c) if c.shard_key != *shard_key => {
                    return refused(format!(
                        "collection {collection}: a shard key cannot change"
                    ));
                }
                Some(_) => {}
                None => collections.push(ObservedCollection {
                    name: collection.clone(),
                    shard_key: shard_key.clone(),
                    indexes: Vec::new(),
                }),
            },
            CollectionStep::CreateIndex {
                collection,
                name,
                paths,
            } => {
                let Some(c) = collections.iter_mut().find(|c| c.name == *collection) else {
                    return refused(format!("no collection {collection}"));
                };
                match c.indexes.iter().find(|i| i.name == *name) {
                    Some(i) if i.paths != *paths => {
                        return refused(format!("index {name} exists on other paths"));
                    }
                    Some(_) => {}
                    None => c.indexes.push(ObservedIndex {
                        name: name.clone(),
                        paths: paths.clone(),
                        shards: vec![(0, true, 0)],
                    }),
                }
            }
            CollectionStep::DropIndex { collection, name } => {
                if let Some(c) = collections.iter_mut().find(|c| c.name == *collection) {
                    c.indexes.retain(|i| i.name != *name);
                }
            }
        }
        ready(())
    }

    fn topology_events<'a>(
        &'a self,
        _: &'a Cluster,
        after_sequence: u64,
    ) -> BoxFuture<'a, Result<TopologyEvents>> {
        let mut state = self.lock();
        state.events_read_after.push(after_sequence);
        ready(TopologyEvents {
            cluster_id: state.cluster_id.clone(),
            events: state
                .events
                .iter()
                .filter(|e| e.sequence > after_sequence)
                .cloned()
                .collect(),
        })
    }
}
