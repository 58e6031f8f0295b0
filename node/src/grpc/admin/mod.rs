//! The `Admin` service: cluster membership, databases and leadership. Cluster-level changes are
//! made by the meta group leader; other nodes forward them there.

use std::sync::Arc;

use flotilla_proto::v1::admin_client::AdminClient;
use flotilla_proto::v1::admin_server::Admin;
use flotilla_proto::v1::{
    AddReplicaRequest, AssignLabelsRequest, AssignLabelsResponse, ClusterEvent,
    ClusterEventsRequest, ClusterStatusRequest, ClusterStatusResponse, CreateDatabaseRequest,
    CreateDatabaseResponse, DatabaseStatusRequest, DatabaseStatusResponse, DropDatabaseRequest,
    DropDatabaseResponse, JoinRequest, JoinResponse, LedShardsRequest, LedShardsResponse,
    ListDatabasesRequest, ListDatabasesResponse, MentorRequest, MentorResponse, RebalanceRequest,
    RemoveNodeRequest, RemoveNodeResponse, RemoveReplicaRequest, ReplicaChangeResponse,
    ShardMembershipRequest, ShardMembershipResponse, ShardStatus, ShardStatusRequest,
    TransferLeadershipRequest, TransferLeadershipResponse, UpdateDatabaseRequest,
    UpdateDatabaseResponse, transfer_leadership_request,
};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

mod views;

use super::forward::{Forwarder, MAX_HOPS, hops, is_unreachable, onward};
use crate::command::MetaCommand;
use crate::error::NodeError;
use crate::host::Host;
use crate::meta::placement::place_shards;
use crate::meta::{DatabaseRecord, ShardRecord};
use crate::types::{NodeAddr, NodeId};
use crate::validate;
use views::{info, parse_replace_after, placement};

/// Answers with the meta leader's answer to `$msg` (sent on with its `$method`) unless this node
/// leads the meta group, in which case the handler goes on.
macro_rules! forward_to_meta_leader {
    ($self:ident, $hops:expr, $msg:expr, $method:ident) => {
        if let Some(r) = $self
            .to_meta_leader($hops, &$msg, |mut c, r| {
                Box::pin(async move { c.$method(r).await })
            })
            .await
        {
            return r;
        }
    };
}

type BoxFut<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

pub struct AdminService {
    host: Arc<Host>,
    fwd: Arc<Forwarder>,
}

impl AdminService {
    pub fn new(host: Arc<Host>, fwd: Arc<Forwarder>) -> Self {
        AdminService { host, fwd }
    }

    /// Forwards `msg` to the meta leader unless this node is it.
    async fn to_meta_leader<T, R>(
        &self,
        hops: u32,
        msg: &T,
        call: impl FnOnce(AdminClient<Channel>, Request<T>) -> BoxFut<Result<Response<R>, Status>>,
    ) -> Option<Result<Response<R>, Status>>
    where
        T: Clone,
    {
        match self.host.meta_leader() {
            Some((leader, _)) if leader == self.host.id => None,
            Some((_, addr)) if hops < MAX_HOPS => {
                let client = match self.fwd.admin(&addr) {
                    Ok(c) => c,
                    Err(e) => return Some(Err(e)),
                };
                Some(
                    call(
                        client,
                        onward(msg.clone(), hops, self.host.config.request_timeout),
                    )
                    .await,
                )
            }
            _ => Some(Err(Status::unavailable(
                "no meta leader is known right now",
            ))),
        }
    }

    /// Finds a node that leads `group` (for a shard not led here) and forwards the transfer.
    async fn transfer_shard(
        &self,
        hops: u32,
        msg: &TransferLeadershipRequest,
        record: &ShardRecord,
    ) -> Result<Response<TransferLeadershipResponse>, Status> {
        let mut targets = Vec::new();
        if let Some(group) = self.host.group(record.group_id) {
            match self.host.transfer_leadership(&group, msg.to_node_id).await {
                Ok(leader) => {
                    return Ok(Response::new(TransferLeadershipResponse {
                        leader_id: leader,
                    }));
                }
                Err(NodeError::NotLeader {
                    leader: Some((_, addr)),
                }) => targets.push(addr),
                Err(NodeError::NotLeader { leader: None }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        for r in &record.replicas {
            if *r != self.host.id
                && let Some(a) = self.host.client_addr_of(*r)
                && !targets.contains(&a)
            {
                targets.push(a);
            }
        }
        if hops >= MAX_HOPS {
            return Err(Status::unavailable("shard leader not reachable"));
        }
        let mut last = Status::unavailable("no leader known for this shard");
        for addr in targets {
            let mut client = self.fwd.admin(&addr)?;
            match client
                .transfer_leadership(onward(msg.clone(), hops, self.host.config.request_timeout))
                .await
            {
                Ok(r) => return Ok(r),
                Err(s) if is_unreachable(&s) || s.code() == tonic::Code::Unavailable => last = s,
                Err(s) => return Err(s),
            }
        }
        Err(last)
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn cluster_status(
        &self,
        request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        let hops = hops(&request);
        let msg = request.into_inner();
        if self.host.meta_leader().is_some()
            && let Some(r) = self
                .to_meta_leader(hops, &msg, |mut c, r| {
                    Box::pin(async move { c.cluster_status(r).await })
                })
                .await
        {
            match r {
                Ok(resp) => return Ok(resp),
                Err(e) => tracing::debug!(error = %e, "meta leader unreachable; answering locally"),
            }
        }
        Ok(Response::new(views::cluster_status(&self.host)))
    }

    async fn join_cluster(
        &self,
        request: Request<JoinRequest>,
    ) -> Result<Response<JoinResponse>, Status> {
        let hops = hops(&request);
        let msg = request.into_inner();
        let node = msg
            .node
            .clone()
            .ok_or_else(|| Status::invalid_argument("join request without node"))?;
        if node.id == 0 || node.client_addr.is_empty() || node.peer_addr.is_empty() {
            return Err(Status::invalid_argument(
                "joining node needs an id, a client and a peer address",
            ));
        }
        crate::labels::check_all(&msg.labels)
            .map_err(|e| Status::invalid_argument(format!("invalid node labels: {e}")))?;
        forward_to_meta_leader!(self, hops, msg, join_cluster);
        let addr = NodeAddr {
            name: node.name,
            client_addr: node.client_addr,
            peer_addr: node.peer_addr,
        };
        tracing::info!(node = node.id, %addr, "admitting node");
        let labels = msg.labels.into_iter().collect();
        let cluster_id = self.host.admit_node(node.id, addr, labels).await?;
        Ok(Response::new(JoinResponse {
            cluster_id,
            leader_id: self.host.id,
        }))
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        let hops = hops(&request);
        let msg = request.into_inner();
        forward_to_meta_leader!(self, hops, msg, remove_node);
        // Not while the observer is half way through a step (it also retires drained nodes).
        let _quiet = self.host.topology_lock.lock().await;
        let steps = self.host.remove_node(msg.node_id).await?;
        Ok(Response::new(RemoveNodeResponse { steps }))
    }

    async fn transfer_leadership(
        &self,
        request: Request<TransferLeadershipRequest>,
    ) -> Result<Response<TransferLeadershipResponse>, Status> {
        let hops = hops(&request);
        let msg = request.into_inner();
        if msg.to_node_id == 0 {
            return Err(Status::invalid_argument("target node id is required"));
        }
        match &msg.group {
            None | Some(transfer_leadership_request::Group::Meta(_)) => {
                forward_to_meta_leader!(self, hops, msg, transfer_leadership);
                let leader = self
                    .host
                    .transfer_leadership(&self.host.meta(), msg.to_node_id)
                    .await?;
                Ok(Response::new(TransferLeadershipResponse {
                    leader_id: leader,
                }))
            }
            Some(transfer_leadership_request::Group::Shard(s)) => {
                let state = self.host.meta_state();
                let db = state.databases.get(&s.database).ok_or_else(|| {
                    Status::not_found(format!("database {} does not exist", s.database))
                })?;
                let record = db.shards.get(s.shard as usize).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "database {} has no shard {}",
                        s.database, s.shard
                    ))
                })?;
                self.transfer_shard(hops, &msg, record).await
            }
        }
    }

    async fn create_database(
        &self,
        request: Request<CreateDatabaseRequest>,
    ) -> Result<Response<CreateDatabaseResponse>, Status> {
        let hops = hops(&request);
        let msg = request.into_inner();
        validate::new_database(&msg.name)?;
        if msg.shards > 256 {
            return Err(Status::invalid_argument("at most 256 shards per database"));
        }
        if msg.replication_factor > 7 {
            return Err(Status::invalid_argument(
                "replication factor must be between 1 and 7",
            ));
        }
        let required = placement(&msg.placement)?;
        let replace_after_ms = match msg.replace_after.trim() {
            "" => Some(crate::meta::DEFAULT_REPLACE_AFTER_MS),
            text => parse_replace_after(text)?,
        };
        forward_to_meta_leader!(self, hops, msg, create_database);
        let state = self.host.meta_state();
        if let Some(existing) = state.databases.get(&msg.name) {
            return Err(Status::already_exists(format!(
                "database {} already exists ({} shards, replication factor {})",
                existing.name,
                existing.shards.len(),
                existing.replication_factor
            )));
        }
        // New replicas go to nodes that are up, staying and carrying the placement labels.
        let live = self.host.live_nodes();
        let load: std::collections::BTreeMap<NodeId, usize> = state
            .replica_load()
            .into_iter()
            .filter(|(n, _)| {
                live.contains(n)
                    && !state.draining.contains(n)
                    && crate::topology::labels_match(&required, &state.labels_of(*n))
            })
            .collect();
        if load.is_empty() && !required.is_empty() {
            return Err(Status::failed_precondition(format!(
                "no live node carries the placement labels {}",
                crate::labels::display(&required)
            )));
        }
        let rf = match msg.replication_factor {
            0 => load.len().clamp(1, 3),
            n => n as usize,
        };
        let shards = msg.shards.max(1) as usize;
        let placement = place_shards(&load, shards, rf)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let record = DatabaseRecord {
            name: msg.name.clone(),
            replication_factor: rf as u32,
            shards: placement
                .into_iter()
                .map(|replicas| ShardRecord::new(0, replicas))
                .collect(),
            replace_after_ms,
            placement: required,
            auto_rebalance: msg.auto_rebalance,
        };
        let outcome = self
            .host
            .propose_meta(MetaCommand::CreateDatabase { record })
            .await;
        match outcome {
            Ok(crate::command::MetaOutcome::DatabaseCreated(db)) => {
                tracing::info!(database = %db.name, shards = db.shards.len(), rf, "database created");
                Ok(Response::new(CreateDatabaseResponse {
                    database: Some(info(&db)),
                }))
            }
            Ok(other) => Err(Status::internal(format!("unexpected outcome {other:?}"))),
            Err(NodeError::FailedPrecondition(m)) if m.contains("already exists") => {
                Err(Status::already_exists(m))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn drop_database(
        &self,
        request: Request<DropDatabaseRequest>,
    ) -> Result<Response<DropDatabaseResponse>, Status> {
        let hops = hops(&request);
        let msg = request.into_inner();
        validate::database(&msg.name)?;
        forward_to_meta_leader!(self, hops, msg, drop_database);
        match self
            .host
            .propose_meta(MetaCommand::DropDatabase {
                name: msg.name.clone(),
            })
            .await
        {
            Ok(_) => Ok(Response::new(DropDatabaseResponse {})),
            Err(NodeError::FailedPrecondition(m)) if m.contains("does not exist") => {
                Err(Status::not_found(m))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn list_databases(
        &self,
        request: Request<ListDatabasesRequest>,
    ) -> Result<Response<ListDatabasesResponse>, Status> {
        let hops = hops(&request);
        let msg = request.into_inner();
        if let Some(Ok(r)) = self
            .to_meta_leader(hops, &msg, |mut c, r| {
                Box::pin(async move { c.list_databases(r).await })
            })
            .await
        {
            return Ok(r);
        }
        let databases = self
            .host
            .meta_state()
            .databases
            .values()
            .map(info)
            .collect();
        Ok(Response::new(ListDatabasesResponse { databases }))
    }

    async fn database_status(
        &self,
        request: Request<DatabaseStatusRequest>,
    ) -> Result<Response<DatabaseStatusResponse>, Status> {
        let hops = hops(&request);
        let msg = request.into_inner();
        validate::database(&msg.name)?;
        let Some(db) = self.host.meta_state().databases.get(&msg.name).cloned() else {
            forward_to_meta_leader!(self, hops, msg, database_status);
            return Err(Status::not_found(format!(
                "database {} does not exist",
                msg.name
            )));
        };
        let shards = futures::future::join_all(
            db.shards
                .iter()
                .enumerate()
                .map(|(i, record)| crate::shards::status(&self.host, i, record)),
        )
        .await;
        Ok(Response::new(DatabaseStatusResponse {
            database: Some(info(&db)),
            shards,
        }))
    }

    async fn assign_labels(
        &self,
        request: Request<AssignLabelsRequest>,
    ) -> Result<Response<AssignLabelsResponse>, Status> {
        let hops = hops(&request);
        let msg = request.into_inner();
        crate::labels::check_all(&msg.labels)
            .map_err(|e| Status::invalid_argument(format!("invalid node labels: {e}")))?;
        forward_to_meta_leader!(self, hops, msg, assign_labels);
        match self
            .host
            .propose_meta(MetaCommand::AssignLabels {
                id: msg.node_id,
                labels: msg.labels.into_iter().collect(),
            })
            .await
        {
            Ok(_) => Ok(Response::new(AssignLabelsResponse {
                labels: self
                    .host
                    .meta_state()
                    .labels_of(msg.node_id)
                    .into_iter()
                    .collect(),
            })),
            Err(NodeError::FailedPrecondition(m)) if m.contains("not a member") => {
                Err(Status::not_found(m))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn led_shards(
        &self,
        _request: Request<LedShardsRequest>,
    ) -> Result<Response<LedShardsResponse>, Status> {
        Ok(Response::new(LedShardsResponse {
            shards: crate::shards::led_here(&self.host),
        }))
    }

    async fn shard_status(
        &self,
        request: Request<ShardStatusRequest>,
    ) -> Result<Response<ShardStatus>, Status> {
        let gid = request.into_inner().group_id;
        let group = self
            .host
            .group(gid)
            .ok_or_else(|| Status::not_found(format!("raft group {gid} is not hosted here")))?;
        let state = self.host.meta_state();
        let found = state.shard_by_group(gid);
        let shard = found.map(|(_, i)| i as u32).unwrap_or(0);
        let record = found.map(|(db, i)| &db.shards[i]);
        Ok(Response::new(crate::shards::local_status(
            &self.host, gid, &group, shard, record,
        )))
    }

    async fn update_database(
        &self,
        request: Request<UpdateDatabaseRequest>,
    ) -> Result<Response<UpdateDatabaseResponse>, Status> {
        let hops = hops(&request);
        let msg = request.into_inner();
        validate::database(&msg.name)?;
        let replace_after_ms = msg
            .replace_after
            .as_deref()
            .map(parse_replace_after)
            .transpose()?;
        if let Some(rf) = msg.replication_factor
            && !(1..=7).contains(&rf)
        {
            return Err(Status::invalid_argument(
                "replication factor must be between 1 and 7",
            ));
        }
        let required = msg
            .placement
            .as_ref()
            .map(|p| placement(&p.labels))
            .transpose()?;
        forward_to_meta_leader!(self, hops, msg, update_database);
        let state = self.host.meta_state();
        let Some(db) = state.databases.get(&msg.name) else {
            return Err(Status::not_found(format!(
                "database {} does not exist",
                msg.name
            )));
        };
        let rf = msg.replication_factor.unwrap_or(db.replication_factor) as usize;
        let labels = required.as_ref().unwrap_or(&db.placement);
        let eligible = state
            .nodes
            .keys()
            .filter(|n| {
                !state.draining.contains(n)
                    && crate::topology::labels_match(labels, &state.labels_of(**n))
            })
            .count();
        if (msg.replication_factor.is_some() || required.is_some()) && rf > eligible {
            return Err(Status::failed_precondition(format!(
                "replication factor {rf} needs {rf} nodes, the cluster has {eligible} that may hold {}{}",
                msg.name,
                if labels.is_empty() {
                    String::new()
                } else {
                    format!(" (placement {})", crate::labels::display(labels))
                }
            )));
        }
        self.host
            .propose_meta(MetaCommand::UpdateDatabase {
                name: msg.name.clone(),
                replication_factor: msg.replication_factor,
                replace_after_ms,
                placement: required,
                auto_rebalance: msg.auto_rebalance,
            })
            .await?;
        let db = self
            .host
            .meta_state()
            .databases
            .get(&msg.name)
            .map(info)
            .ok_or_else(|| Status::not_found(format!("database {} does not exist", msg.name)))?;
        Ok(Response::new(UpdateDatabaseResponse { database: Some(db) }))
    }

    async fn add_replica(
        &self,
        request: Request<AddReplicaRequest>,
    ) -> Result<Response<ReplicaChangeResponse>, Status> {
        let hops = hops(&request);
        let msg = request.into_inner();
        validate::database(&msg.database)?;
        forward_to_meta_leader!(self, hops, msg, add_replica);
        let mentor = (msg.mentor_id != 0).then_some(msg.mentor_id);
        let steps =
            crate::replicas::add_replica(&self.host, &msg.database, msg.shard, msg.node_id, mentor)
                .await?;
        Ok(Response::new(ReplicaChangeResponse { steps }))
    }

    async fn remove_replica(
        &self,
        request: Request<RemoveReplicaRequest>,
    ) -> Result<Response<ReplicaChangeResponse>, Status> {
        let hops = hops(&request);
        let msg = request.into_inner();
        validate::database(&msg.database)?;
        forward_to_meta_leader!(self, hops, msg, remove_replica);
        let steps = crate::replicas::remove_replica(
            &self.host,
            &msg.database,
            msg.shard,
            msg.node_id,
            msg.hard,
        )
        .await?;
        Ok(Response::new(ReplicaChangeResponse { steps }))
    }

    async fn rebalance(
        &self,
        request: Request<RebalanceRequest>,
    ) -> Result<Response<ReplicaChangeResponse>, Status> {
        let hops = hops(&request);
        let msg = request.into_inner();
        forward_to_meta_leader!(self, hops, msg, rebalance);
        let state = self.host.meta_state();
        let live = self.host.live_nodes();
        let load = state.replica_load();
        let counts: Vec<String> = load
            .iter()
            .filter(|(n, _)| live.contains(n) && !state.draining.contains(n))
            .map(|(n, c)| format!("node {n}: {c}"))
            .collect();
        self.host
            .propose_meta(MetaCommand::RequestRebalance { requested: true })
            .await?;
        Ok(Response::new(ReplicaChangeResponse {
            steps: vec![
                format!("replicas per node now: {}", counts.join(", ")),
                "rebalance requested: replicas move (add Promotable, promote, remove the old one) until every node holds within one of the others".into(),
            ],
        }))
    }

    type ClusterEventsStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<ClusterEvent, Status>> + Send>>;

    async fn cluster_events(
        &self,
        request: Request<ClusterEventsRequest>,
    ) -> Result<Response<Self::ClusterEventsStream>, Status> {
        let msg = request.into_inner();
        let host = self.host.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut after = msg.after_sequence;
            let mut applied = host.meta().sm.state().subscribe();
            let mut stopping = host.stopping();
            loop {
                let state = host.meta_state();
                let since = after;
                for e in state.events.iter().filter(|e| e.sequence > since) {
                    after = e.sequence;
                    let event = ClusterEvent {
                        sequence: e.sequence,
                        at_unix_ms: e.at_ms,
                        database: e.database.clone(),
                        shard: e.shard,
                        node_id: e.node,
                        from_state: e.from.clone(),
                        to_state: e.to.clone(),
                        reason: e.reason.clone(),
                    };
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                if !msg.follow {
                    return;
                }
                tokio::select! {
                    r = applied.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                    _ = stopping.changed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn shard_membership(
        &self,
        request: Request<ShardMembershipRequest>,
    ) -> Result<Response<ShardMembershipResponse>, Status> {
        let msg = request.into_inner();
        let change = crate::shards::MembershipChange::from_proto(&msg)?;
        let group = self.host.group(msg.group_id).ok_or_else(|| {
            Status::unavailable(format!("raft group {} is not hosted here", msg.group_id))
        })?;
        crate::shards::change_here(&self.host, &group, &change).await?;
        Ok(Response::new(ShardMembershipResponse {}))
    }

    async fn mentor_replica(
        &self,
        request: Request<MentorRequest>,
    ) -> Result<Response<MentorResponse>, Status> {
        let msg = request.into_inner();
        let to = msg
            .to
            .ok_or_else(|| Status::invalid_argument("mentor request without a target node"))?;
        let addr = NodeAddr {
            name: to.name,
            client_addr: to.client_addr,
            peer_addr: to.peer_addr,
        };
        let sent = crate::mentor::send_snapshot(&self.host, msg.group_id, to.id, &addr).await?;
        Ok(Response::new(MentorResponse {
            bytes_sent: sent.bytes,
            snapshot_index: sent.snapshot_index,
        }))
    }
}
