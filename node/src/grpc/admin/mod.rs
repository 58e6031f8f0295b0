//! The `Admin` service: cluster membership, databases and leadership. Cluster-level changes are
//! made by the meta group leader; other nodes forward them there.

use std::sync::Arc;

use flotilla_proto::v1::ErrorReason;
use flotilla_proto::v1::admin_server::Admin;
use flotilla_proto::v1::{
    AddReplicaRequest, AddReplicaResponse, AssignLabelsRequest, AssignLabelsResponse,
    CheckIndexesRequest, CheckIndexesResponse, ClusterEvent, ClusterEventsRequest,
    ClusterStatusRequest, ClusterStatusResponse, CreateDatabaseRequest, CreateDatabaseResponse,
    DatabaseStatusRequest, DatabaseStatusResponse, DropDatabaseRequest, DropDatabaseResponse,
    ListDatabasesRequest, ListDatabasesResponse, RebalanceRequest, RebalanceResponse,
    RemoveNodeRequest, RemoveNodeResponse, RemoveReplicaRequest, RemoveReplicaResponse,
    ReplicaDigestRequest, ReplicaDigestResponse, TransferLeadershipRequest,
    TransferLeadershipResponse, UpdateDatabaseRequest, UpdateDatabaseResponse,
    transfer_leadership_request,
};
use flotilla_proto::with_reason;
use tonic::{Request, Response, Status};

mod digest;
mod events;
mod indexes;
mod local;
mod route;
mod views;

use route::forward_to_meta_leader;

use crate::command::MetaCommand;
use crate::error::{NodeError, Refusal};
use crate::host::Host;
use crate::meta::placement::place_shards;
use crate::meta::{DatabaseRecord, ShardRecord};
use crate::network::forward::hops;
use crate::replication;
use crate::types::NodeId;
use crate::validate;
use views::{info, parse_replace_after, placement};

pub struct AdminService {
    host: Arc<Host>,
}

impl AdminService {
    pub fn new(host: Arc<Host>) -> Self {
        AdminService { host }
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

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        let hops = hops(&request);
        let msg = request.into_inner();
        forward_to_meta_leader!(self, hops, msg, remove_node);
        // Not while the observer is half way through a step (it also retires drained nodes).
        let _quiet = self.host.topology_lock.lock().await;
        let removal = self.host.remove_node(msg.node_id).await?;
        Ok(Response::new(views::removal(msg.node_id, removal)))
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
                let db = state
                    .databases
                    .get(&s.database)
                    .ok_or_else(|| NodeError::database_not_found(&s.database))?;
                let record = db.shards.get(s.shard as usize).ok_or_else(|| {
                    NodeError::refused(
                        Refusal::InvalidArgument,
                        ErrorReason::ShardNotFound,
                        format!("database {} has no shard {}", s.database, s.shard),
                    )
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
            return Err(with_reason(
                Status::already_exists(format!(
                    "database {} already exists ({} shards, replication factor {})",
                    existing.name,
                    existing.shards.len(),
                    existing.replication_factor
                )),
                ErrorReason::DatabaseExists,
            ));
        }
        // New replicas go to nodes that are up, staying and carrying the placement labels.
        let live = self.host.placeable_nodes();
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
        let placement = place_shards(&load, shards, rf).map_err(|e| match e {
            crate::meta::placement::PlacementError::NotEnoughNodes { .. } => with_reason(
                Status::failed_precondition(format!(
                    "{e} that may take replicas ({} registered; a node takes replicas when \
                     heard from within {} s, not draining, and carrying the placement labels)",
                    state.nodes.len(),
                    crate::host::PLACEMENT_GRACE.as_secs()
                )),
                ErrorReason::NotEnoughNodes,
            ),
            e => Status::failed_precondition(e.to_string()),
        })?;
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
            collections: Default::default(),
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
        self.host
            .propose_meta(MetaCommand::DropDatabase {
                name: msg.name.clone(),
            })
            .await?;
        Ok(Response::new(DropDatabaseResponse {}))
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
            return Err(NodeError::database_not_found(&msg.name).into());
        };
        let shards = futures::future::join_all(
            db.shards
                .iter()
                .enumerate()
                .map(|(i, record)| replication::status::status(&self.host, i, record)),
        )
        .await;
        Ok(Response::new(DatabaseStatusResponse {
            database: Some(info(&db)),
            shards: shards.into_iter().map(Into::into).collect(),
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
            Err(e) => Err(e.into()),
        }
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
            return Err(NodeError::database_not_found(&msg.name).into());
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
            .ok_or_else(|| NodeError::database_not_found(&msg.name))?;
        Ok(Response::new(UpdateDatabaseResponse { database: Some(db) }))
    }

    async fn add_replica(
        &self,
        request: Request<AddReplicaRequest>,
    ) -> Result<Response<AddReplicaResponse>, Status> {
        let hops = hops(&request);
        let msg = request.into_inner();
        validate::database(&msg.database)?;
        forward_to_meta_leader!(self, hops, msg, add_replica);
        let mentor = (msg.mentor_id != 0).then_some(msg.mentor_id);
        let steps = replication::by_hand::add_replica(
            &self.host,
            &msg.database,
            msg.shard,
            msg.node_id,
            mentor,
        )
        .await?;
        Ok(Response::new(AddReplicaResponse { steps }))
    }

    async fn remove_replica(
        &self,
        request: Request<RemoveReplicaRequest>,
    ) -> Result<Response<RemoveReplicaResponse>, Status> {
        let hops = hops(&request);
        let msg = request.into_inner();
        validate::database(&msg.database)?;
        forward_to_meta_leader!(self, hops, msg, remove_replica);
        let steps = replication::by_hand::remove_replica(
            &self.host,
            &msg.database,
            msg.shard,
            msg.node_id,
            msg.hard,
        )
        .await?;
        Ok(Response::new(RemoveReplicaResponse { steps }))
    }

    async fn rebalance(
        &self,
        request: Request<RebalanceRequest>,
    ) -> Result<Response<RebalanceResponse>, Status> {
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
        Ok(Response::new(RebalanceResponse {
            steps: vec![
                format!("replicas per node now: {}", counts.join(", ")),
                "rebalance requested: replicas move (add Promotable, promote, remove the old one) until every node holds within one of the others".into(),
            ],
        }))
    }

    async fn check_indexes(
        &self,
        request: Request<CheckIndexesRequest>,
    ) -> Result<Response<CheckIndexesResponse>, Status> {
        Ok(Response::new(
            indexes::check(&self.host, request.into_inner()).await?,
        ))
    }

    async fn replica_digest(
        &self,
        request: Request<ReplicaDigestRequest>,
    ) -> Result<Response<ReplicaDigestResponse>, Status> {
        Ok(Response::new(
            digest::digest(&self.host, request.into_inner()).await?,
        ))
    }

    type ClusterEventsStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<ClusterEvent, Status>> + Send>>;

    async fn cluster_events(
        &self,
        request: Request<ClusterEventsRequest>,
    ) -> Result<Response<Self::ClusterEventsStream>, Status> {
        let msg = request.into_inner();
        Ok(Response::new(Box::pin(events::follow(
            self.host.clone(),
            msg,
        ))))
    }
}
