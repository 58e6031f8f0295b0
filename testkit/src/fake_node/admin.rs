//! The fake's `Admin` service and the cluster it describes.

use super::*;

/// The fake's cluster: three nodes, node 1 leads the meta group, node 3 is unreachable.
pub fn cluster_status() -> pb::ClusterStatusResponse {
    let node = |id: u64, role: pb::MetaRole, health: pb::Health, lag: u64| pb::NodeStatus {
        node: Some(pb::NodeInfo {
            id,
            name: format!("node-{id}"),
            client_addr: format!("127.0.0.1:71{id}0"),
            peer_addr: format!("127.0.0.1:71{id}1"),
        }),
        meta_role: role as i32,
        health: health as i32,
        lag,
        ..Default::default()
    };
    pb::ClusterStatusResponse {
        cluster_id: "c-1".into(),
        meta_leader_id: 1,
        meta_term: 4,
        nodes: vec![
            node(1, pb::MetaRole::Leader, pb::Health::Healthy, 0),
            node(2, pb::MetaRole::Follower, pb::Health::Healthy, 0),
            node(3, pb::MetaRole::Follower, pb::Health::Unreachable, 17),
        ],
        answered_by: 2,
        rebalancing: false,
        auth_enabled: false,
    }
}

#[tonic::async_trait]
impl Admin for Fake {
    async fn update_database(
        &self,
        _request: Request<pb::UpdateDatabaseRequest>,
    ) -> Result<Response<pb::UpdateDatabaseResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn add_replica(
        &self,
        _request: Request<pb::AddReplicaRequest>,
    ) -> Result<Response<pb::AddReplicaResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn remove_replica(
        &self,
        _request: Request<pb::RemoveReplicaRequest>,
    ) -> Result<Response<pb::RemoveReplicaResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn rebalance(
        &self,
        _request: Request<pb::RebalanceRequest>,
    ) -> Result<Response<pb::RebalanceResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn assign_labels(
        &self,
        _request: Request<pb::AssignLabelsRequest>,
    ) -> Result<Response<pb::AssignLabelsResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn check_indexes(
        &self,
        _request: Request<pb::CheckIndexesRequest>,
    ) -> Result<Response<pb::CheckIndexesResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn replica_digest(
        &self,
        _request: Request<pb::ReplicaDigestRequest>,
    ) -> Result<Response<pb::ReplicaDigestResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    type ClusterEventsStream =
        Pin<Box<dyn futures::Stream<Item = Result<pb::ClusterEvent, Status>> + Send>>;

    async fn cluster_events(
        &self,
        _request: Request<pb::ClusterEventsRequest>,
    ) -> Result<Response<Self::ClusterEventsStream>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn cluster_status(
        &self,
        _request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        self.enter("cluster_status").await?;
        Ok(Response::new(cluster_status()))
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        self.enter("remove_node").await?;
        let id = request.into_inner().node_id;
        if !(1..=3).contains(&id) {
            return Err(Status::not_found(format!("node {id} not found")));
        }
        Ok(Response::new(pb::RemoveNodeResponse {
            steps: vec![format!("removed node {id} from the meta group")],
            progress: pb::RemoveNodeProgress::Removed as i32,
            replicas_remaining: 0,
            successor_id: 0,
        }))
    }

    async fn transfer_leadership(
        &self,
        request: Request<pb::TransferLeadershipRequest>,
    ) -> Result<Response<pb::TransferLeadershipResponse>, Status> {
        self.enter("transfer_leadership").await?;
        let r = request.into_inner();
        if let Some(pb::transfer_leadership_request::Group::Shard(s)) = &r.group {
            self.database(&s.database)?;
        }
        Ok(Response::new(pb::TransferLeadershipResponse {
            leader_id: r.to_node_id,
        }))
    }

    async fn create_database(
        &self,
        request: Request<pb::CreateDatabaseRequest>,
    ) -> Result<Response<pb::CreateDatabaseResponse>, Status> {
        self.enter("create_database").await?;
        let r = request.into_inner();
        let mut s = self.state();
        if s.databases.contains_key(&r.name) {
            return Err(Status::already_exists(format!(
                "database {} already exists",
                r.name
            )));
        }
        let info = pb::DatabaseInfo {
            name: r.name.clone(),
            shards: r.shards.max(1),
            replication_factor: if r.replication_factor == 0 {
                3
            } else {
                r.replication_factor
            },
            replace_after: "15m".into(),
            ..Default::default()
        };
        s.databases.insert(r.name, info.clone());
        Ok(Response::new(pb::CreateDatabaseResponse {
            database: Some(info),
        }))
    }

    async fn drop_database(
        &self,
        request: Request<pb::DropDatabaseRequest>,
    ) -> Result<Response<pb::DropDatabaseResponse>, Status> {
        self.enter("drop_database").await?;
        let name = request.into_inner().name;
        self.database(&name)?;
        self.state().databases.remove(&name);
        Ok(Response::new(pb::DropDatabaseResponse {}))
    }

    async fn list_databases(
        &self,
        _request: Request<pb::ListDatabasesRequest>,
    ) -> Result<Response<pb::ListDatabasesResponse>, Status> {
        self.enter("list_databases").await?;
        let databases = self.state().databases.values().cloned().collect();
        Ok(Response::new(pb::ListDatabasesResponse { databases }))
    }

    async fn database_status(
        &self,
        request: Request<pb::DatabaseStatusRequest>,
    ) -> Result<Response<pb::DatabaseStatusResponse>, Status> {
        self.enter("database_status").await?;
        let name = request.into_inner().name;
        self.database(&name)?;
        let info = self.state().databases[&name].clone();
        let shards = (0..info.shards)
            .map(|shard| pb::ShardStatus {
                shard,
                group_id: 10 + u64::from(shard),
                leader_id: 1 + u64::from(shard) % 3,
                term: 2,
                commit_index: 40,
                replicas: (1..=u64::from(info.replication_factor))
                    .map(|node_id| pb::ReplicaStatus {
                        node_id,
                        client_addr: format!("127.0.0.1:71{node_id}0"),
                        state: if node_id == 3 {
                            pb::ReplicaState::Rehab
                        } else {
                            pb::ReplicaState::Member
                        } as i32,
                        lag: if node_id == 3 { 12 } else { 0 },
                        matched_index: if node_id == 3 { 28 } else { 40 },
                        snapshot_bytes_sent: 0,
                        stopped: String::new(),
                        broken: false,
                    })
                    .collect(),
                replacement: None,
            })
            .collect();
        Ok(Response::new(pb::DatabaseStatusResponse {
            database: Some(info),
            shards,
        }))
    }
}
