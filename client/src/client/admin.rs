//! The administration operations of [`Client`]: cluster status, databases and their settings,
//! replicas, labels and leadership, each run through the same retry loop as the documents.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_proto::v1 as pb;
use futures::{Stream, StreamExt};
use tokio::time::Instant;
use tonic::Request;

use super::{
    Client, DATABASE_POLL_INTERVAL, DatabaseOptions, DatabaseUpdate, Kind, admin, request,
};
use crate::error::{Error, Result, classify};
use crate::types::{
    ClusterEvent, ClusterStatus, DatabaseInfo, DatabaseStatus, Group, RemoveNodeProgress,
    ReplicaDigest,
};

/// Time between two calls while a node drains.
const REMOVE_NODE_POLL_INTERVAL: Duration = Duration::from_secs(1);

impl Client {
    /// The cluster's nodes and meta group state.
    pub async fn cluster_status(&self) -> Result<ClusterStatus> {
        let r = self
            .call(Kind::Read, |ch, timeout| async move {
                admin(ch)
                    .cluster_status(request(pb::ClusterStatusRequest {}, timeout))
                    .await
            })
            .await?;
        Ok(r.into())
    }

    /// Creates a database. `None` picks the cluster's default (replication factor min(3,
    /// nodes), one shard). The shards elect their leaders in the background: see
    /// [`Client::wait_for_database`].
    pub async fn create_database(
        &self,
        name: &str,
        replication_factor: Option<u32>,
        shards: Option<u32>,
    ) -> Result<DatabaseInfo> {
        let options = DatabaseOptions {
            replication_factor,
            shards,
            ..Default::default()
        };
        self.create_database_with(name, &options).await
    }

    /// Creates a database with every setting at hand (placement, replacement delay, automatic
    /// rebalancing).
    pub async fn create_database_with(
        &self,
        name: &str,
        options: &DatabaseOptions,
    ) -> Result<DatabaseInfo> {
        let req = pb::CreateDatabaseRequest {
            name: name.to_string(),
            replication_factor: options.replication_factor.unwrap_or(0),
            shards: options.shards.unwrap_or(0),
            replace_after: options.replace_after.clone().unwrap_or_default(),
            placement: options.placement.clone().into_iter().collect(),
            auto_rebalance: options.auto_rebalance,
        };
        let r = self
            .call(Kind::Write, |ch, timeout| {
                let req = req.clone();
                async move { admin(ch).create_database(request(req, timeout)).await }
            })
            .await?;
        r.database
            .map(DatabaseInfo::from)
            .ok_or_else(|| Error::Protocol("create database answered without the database".into()))
    }

    /// Drops a database and all of its documents (naming it is the confirmation the node
    /// asks for).
    pub async fn drop_database(&self, name: &str) -> Result<()> {
        let req = pb::DropDatabaseRequest {
            name: name.to_string(),
            confirm: name.to_string(),
        };
        self.call(Kind::Write, |ch, timeout| {
            let req = req.clone();
            async move { admin(ch).drop_database(request(req, timeout)).await }
        })
        .await?;
        Ok(())
    }

    /// Every database of the cluster.
    pub async fn list_databases(&self) -> Result<Vec<DatabaseInfo>> {
        let r = self
            .call(Kind::Read, |ch, timeout| async move {
                admin(ch)
                    .list_databases(request(pb::ListDatabasesRequest {}, timeout))
                    .await
            })
            .await?;
        Ok(r.databases.into_iter().map(DatabaseInfo::from).collect())
    }

    /// A database's shards, their leaders and replicas.
    pub async fn database_status(&self, name: &str) -> Result<DatabaseStatus> {
        let req = pb::DatabaseStatusRequest {
            name: name.to_string(),
        };
        let r = self
            .call(Kind::Read, |ch, timeout| {
                let req = req.clone();
                async move { admin(ch).database_status(request(req, timeout)).await }
            })
            .await?;
        DatabaseStatus::try_from(r)
    }

    /// Polls [`Client::database_status`] until every shard of the database has a leader, at
    /// most `timeout`. `progress` sees every status polled. A database not found yet (its
    /// record still spreading) is polled again; the last error is returned at the deadline.
    pub async fn wait_for_database(
        &self,
        name: &str,
        timeout: Duration,
        mut progress: impl FnMut(&DatabaseStatus),
    ) -> Result<DatabaseStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.database_status(name).await {
                Ok(status) if status.is_ready() => {
                    progress(&status);
                    return Ok(status);
                }
                Ok(status) => {
                    progress(&status);
                    Error::DeadlineExceeded(format!(
                        "database {name}: {} of {} shards have a leader after {timeout:?}",
                        status.shards_with_leader(),
                        status.database.shards.max(status.shards.len() as u32),
                    ))
                }
                // Not there yet, or the cluster is busy electing: poll again.
                Err(e) if e.is_unavailable() || matches!(e, Error::NotFound(_)) => e,
                Err(e) => return Err(e),
            };
            if Instant::now() + DATABASE_POLL_INTERVAL >= deadline {
                return Err(last);
            }
            tokio::time::sleep(DATABASE_POLL_INTERVAL).await;
        }
    }

    /// One step of removing a node from the cluster: the first call marks it draining (its
    /// replicas move to other nodes), and every call answers how far the removal has come.
    /// [`Client::remove_node_until_done`] calls it until the node is out.
    pub async fn remove_node(&self, node_id: u64) -> Result<RemoveNodeProgress> {
        let r = self
            .call(Kind::Write, |ch, timeout| async move {
                admin(ch)
                    .remove_node(request(pb::RemoveNodeRequest { node_id }, timeout))
                    .await
            })
            .await?;
        RemoveNodeProgress::try_from(r)
    }

    /// Removes a node from the cluster: its replicas are moved off first, then it leaves.
    /// Calls [`Client::remove_node`] once a second, passing every answer to `progress`, until
    /// the node is out (answering the steps of the last call) or `timeout` passes.
    pub async fn remove_node_until_done(
        &self,
        node_id: u64,
        timeout: Duration,
        mut progress: impl FnMut(&RemoveNodeProgress),
    ) -> Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let step = self.remove_node(node_id).await?;
            progress(&step);
            if let RemoveNodeProgress::Removed { steps } = step {
                return Ok(steps);
            }
            if Instant::now() + REMOVE_NODE_POLL_INTERVAL >= deadline {
                return Err(Error::DeadlineExceeded(format!(
                    "node {node_id} is not out of the cluster after {timeout:?}: {step}"
                )));
            }
            tokio::time::sleep(REMOVE_NODE_POLL_INTERVAL).await;
        }
    }

    /// Changes a database's replication factor and/or replacement delay (`"30s"`, `"15m"`,
    /// `"off"`); the cluster then adds or removes replicas to match.
    pub async fn update_database(
        &self,
        name: &str,
        replication_factor: Option<u32>,
        replace_after: Option<&str>,
    ) -> Result<DatabaseInfo> {
        let update = DatabaseUpdate {
            replication_factor,
            replace_after: replace_after.map(str::to_string),
            ..Default::default()
        };
        self.update_database_with(name, &update).await
    }

    /// Changes any of a database's settings; unset fields stay as they are.
    pub async fn update_database_with(
        &self,
        name: &str,
        update: &DatabaseUpdate,
    ) -> Result<DatabaseInfo> {
        let req = pb::UpdateDatabaseRequest {
            name: name.to_string(),
            replication_factor: update.replication_factor,
            replace_after: update.replace_after.clone(),
            placement: update.placement.as_ref().map(|p| pb::Placement {
                labels: p.clone().into_iter().collect(),
            }),
            auto_rebalance: update.auto_rebalance,
        };
        let r = self
            .call(Kind::Write, |ch, timeout| {
                let req = req.clone();
                async move { admin(ch).update_database(request(req, timeout)).await }
            })
            .await?;
        r.database
            .map(DatabaseInfo::from)
            .ok_or_else(|| Error::Protocol("update database answered without the database".into()))
    }

    /// Adds a replica of the database (of one shard, or all) on `node_id`, as a Promotable that
    /// becomes a Member once caught up. Returns the steps taken.
    pub async fn add_replica(
        &self,
        database: &str,
        shard: Option<u32>,
        node_id: u64,
        mentor_id: Option<u64>,
    ) -> Result<Vec<String>> {
        let req = pb::AddReplicaRequest {
            database: database.to_string(),
            shard,
            node_id,
            mentor_id: mentor_id.unwrap_or(0),
        };
        let r = self
            .call(Kind::Write, |ch, timeout| {
                let req = req.clone();
                async move { admin(ch).add_replica(request(req, timeout)).await }
            })
            .await?;
        Ok(r.steps)
    }

    /// Removes the replica on `node_id` (of one shard, or all); refused when it would break a
    /// shard's majority. Its files stay on the node unless `hard`.
    pub async fn remove_replica(
        &self,
        database: &str,
        shard: Option<u32>,
        node_id: u64,
        hard: bool,
    ) -> Result<Vec<String>> {
        let req = pb::RemoveReplicaRequest {
            database: database.to_string(),
            shard,
            node_id,
            hard,
        };
        let r = self
            .call(Kind::Write, |ch, timeout| {
                let req = req.clone();
                async move { admin(ch).remove_replica(request(req, timeout)).await }
            })
            .await?;
        Ok(r.steps)
    }

    /// Assigns placement labels to a node, on top of (and overriding) those it was started
    /// with; an empty map clears them. Returns the node's labels now.
    pub async fn assign_labels(
        &self,
        node_id: u64,
        labels: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>> {
        let req = pb::AssignLabelsRequest {
            node_id,
            labels: labels.clone().into_iter().collect(),
        };
        let r = self
            .call(Kind::Write, |ch, timeout| {
                let req = req.clone();
                async move { admin(ch).assign_labels(request(req, timeout)).await }
            })
            .await?;
        Ok(r.labels.into_iter().collect())
    }

    /// Asks the cluster to move replicas until every node holds within one replica of the
    /// others; follow it with [`Client::cluster_status`] (`rebalancing`). Returns what was
    /// started.
    pub async fn rebalance(&self) -> Result<Vec<String>> {
        let r = self
            .call(Kind::Write, |ch, timeout| async move {
                admin(ch)
                    .rebalance(request(pb::RebalanceRequest {}, timeout))
                    .await
            })
            .await?;
        Ok(r.steps)
    }

    /// The cluster's recorded topology transitions after `after_sequence`; with `follow` the
    /// stream stays open and delivers new ones as they happen.
    pub async fn cluster_events(
        &self,
        follow: bool,
        after_sequence: u64,
    ) -> Result<std::pin::Pin<Box<dyn Stream<Item = Result<ClusterEvent>> + Send>>> {
        let req = pb::ClusterEventsRequest {
            follow,
            after_sequence,
        };
        let (stream, addr) = self
            .call_at(Kind::Read, |ch, _timeout| async move {
                admin(ch).cluster_events(Request::new(req)).await
            })
            .await?;
        let events = stream.map(move |item| match item {
            Ok(event) => Ok(ClusterEvent::from(event)),
            Err(status) => Err(classify(&status, &addr).0),
        });
        Ok(Box::pin(events))
    }

    /// Hands the leadership of `group` to node `to_node_id`; returns the leader afterwards.
    pub async fn transfer_leadership(&self, group: Group, to_node_id: u64) -> Result<u64> {
        let req = pb::TransferLeadershipRequest {
            group: Some(group.to_proto()),
            to_node_id,
        };
        let r = self
            .call(Kind::Write, |ch, timeout| {
                let req = req.clone();
                async move { admin(ch).transfer_leadership(request(req, timeout)).await }
            })
            .await?;
        Ok(r.leader_id)
    }

    /// The applied index and content digest of the replica of `shard` on the node this client
    /// reaches first (a client of one node asks that node; the call is never forwarded).
    /// Replicas at the same applied index, with no index building, must have equal digests.
    pub async fn replica_digest(&self, database: &str, shard: u32) -> Result<ReplicaDigest> {
        let req = pb::ReplicaDigestRequest {
            database: database.to_string(),
            shard,
        };
        let r = self
            .call(Kind::Read, |ch, timeout| {
                let req = req.clone();
                async move { admin(ch).replica_digest(request(req, timeout)).await }
            })
            .await?;
        Ok(ReplicaDigest {
            node_id: r.node_id,
            applied_index: r.applied_index,
            digest: r.digest,
            documents: r.documents,
            indexes_building: r.indexes_building,
        })
    }
}
