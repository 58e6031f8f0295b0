//! The `Admin` service of the client port, each rpc checked before it is served: cluster-wide
//! changes (removing nodes, labels, rebalancing, the meta group's leadership) need the role
//! `root`; a database's creation, settings, replicas and deletion need the admin permission on
//! it; its status the read permission; the cluster's status, database list and events any
//! authenticated user; checking a shard's indexes the admin permission on its database; a replica's digest the
//! role `root`. A drop must also name its database twice (`confirm`), so that no
//! request drops one by accident.

use flotilla_proto::v1::admin_server::Admin;
use flotilla_proto::v1::{
    AddReplicaRequest, AddReplicaResponse, AssignLabelsRequest, AssignLabelsResponse,
    CheckIndexesRequest, CheckIndexesResponse, ClusterEventsRequest, ClusterStatusRequest,
    ClusterStatusResponse, CreateDatabaseRequest, CreateDatabaseResponse, DatabaseStatusRequest,
    DatabaseStatusResponse, DropDatabaseRequest, DropDatabaseResponse, ErrorReason,
    ListDatabasesRequest, ListDatabasesResponse, RebalanceRequest, RebalanceResponse,
    RemoveNodeRequest, RemoveNodeResponse, RemoveReplicaRequest, RemoveReplicaResponse,
    ReplicaDigestRequest, ReplicaDigestResponse, TransferLeadershipRequest,
    TransferLeadershipResponse, UpdateDatabaseRequest, UpdateDatabaseResponse,
    transfer_leadership_request,
};
use flotilla_proto::with_reason;
use tonic::{Request, Response, Status};

use super::Guard;
use crate::grpc::admin::AdminService;
use crate::meta::auth::{Need, Permission};

pub struct GuardedAdmin {
    inner: AdminService,
    guard: Guard,
}

impl GuardedAdmin {
    pub fn new(inner: AdminService, guard: Guard) -> Self {
        GuardedAdmin { inner, guard }
    }
}

fn admin_of(database: &str) -> Need {
    Need::Database(database.to_string(), Permission::Admin)
}

/// Refuses a drop that does not repeat the database's name in `confirm`.
pub fn check_drop_confirmed(msg: &DropDatabaseRequest) -> Result<(), Status> {
    if msg.confirm != msg.name {
        return Err(with_reason(
            Status::failed_precondition(format!(
                "dropping database {:?} deletes every document in it: repeat its name in the request's confirm field",
                msg.name
            )),
            ErrorReason::ConfirmationRequired,
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl Admin for GuardedAdmin {
    async fn cluster_status(
        &self,
        request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        self.guard.check(&request, Need::User)?;
        self.inner.cluster_status(request).await
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        self.guard.check(&request, Need::ClusterAdmin)?;
        self.inner.remove_node(request).await
    }

    async fn transfer_leadership(
        &self,
        request: Request<TransferLeadershipRequest>,
    ) -> Result<Response<TransferLeadershipResponse>, Status> {
        let need = match &request.get_ref().group {
            Some(transfer_leadership_request::Group::Shard(s)) => admin_of(&s.database),
            _ => Need::ClusterAdmin,
        };
        self.guard.check(&request, need)?;
        self.inner.transfer_leadership(request).await
    }

    async fn create_database(
        &self,
        request: Request<CreateDatabaseRequest>,
    ) -> Result<Response<CreateDatabaseResponse>, Status> {
        let need = admin_of(&request.get_ref().name);
        self.guard.check(&request, need)?;
        self.inner.create_database(request).await
    }

    async fn drop_database(
        &self,
        request: Request<DropDatabaseRequest>,
    ) -> Result<Response<DropDatabaseResponse>, Status> {
        let need = admin_of(&request.get_ref().name);
        self.guard.check(&request, need)?;
        check_drop_confirmed(request.get_ref())?;
        self.inner.drop_database(request).await
    }

    async fn list_databases(
        &self,
        request: Request<ListDatabasesRequest>,
    ) -> Result<Response<ListDatabasesResponse>, Status> {
        self.guard.check(&request, Need::User)?;
        self.inner.list_databases(request).await
    }

    async fn database_status(
        &self,
        request: Request<DatabaseStatusRequest>,
    ) -> Result<Response<DatabaseStatusResponse>, Status> {
        let need = Need::Database(request.get_ref().name.clone(), Permission::Read);
        self.guard.check(&request, need)?;
        self.inner.database_status(request).await
    }

    async fn update_database(
        &self,
        request: Request<UpdateDatabaseRequest>,
    ) -> Result<Response<UpdateDatabaseResponse>, Status> {
        let need = admin_of(&request.get_ref().name);
        self.guard.check(&request, need)?;
        self.inner.update_database(request).await
    }

    async fn add_replica(
        &self,
        request: Request<AddReplicaRequest>,
    ) -> Result<Response<AddReplicaResponse>, Status> {
        let need = admin_of(&request.get_ref().database);
        self.guard.check(&request, need)?;
        self.inner.add_replica(request).await
    }

    async fn remove_replica(
        &self,
        request: Request<RemoveReplicaRequest>,
    ) -> Result<Response<RemoveReplicaResponse>, Status> {
        let need = admin_of(&request.get_ref().database);
        self.guard.check(&request, need)?;
        self.inner.remove_replica(request).await
    }

    async fn rebalance(
        &self,
        request: Request<RebalanceRequest>,
    ) -> Result<Response<RebalanceResponse>, Status> {
        self.guard.check(&request, Need::ClusterAdmin)?;
        self.inner.rebalance(request).await
    }

    async fn assign_labels(
        &self,
        request: Request<AssignLabelsRequest>,
    ) -> Result<Response<AssignLabelsResponse>, Status> {
        self.guard.check(&request, Need::ClusterAdmin)?;
        self.inner.assign_labels(request).await
    }

    type ClusterEventsStream = <AdminService as Admin>::ClusterEventsStream;

    async fn cluster_events(
        &self,
        request: Request<ClusterEventsRequest>,
    ) -> Result<Response<Self::ClusterEventsStream>, Status> {
        self.guard.check(&request, Need::User)?;
        self.inner.cluster_events(request).await
    }

    /// Reads the whole shard: its database's administrators only.
    async fn check_indexes(
        &self,
        request: Request<CheckIndexesRequest>,
    ) -> Result<Response<CheckIndexesResponse>, Status> {
        let need = admin_of(&request.get_ref().database);
        self.guard.check(&request, need)?;
        self.inner.check_indexes(request).await
    }

    /// Reads the whole replica: cluster administrators only.
    async fn replica_digest(
        &self,
        request: Request<ReplicaDigestRequest>,
    ) -> Result<Response<ReplicaDigestResponse>, Status> {
        self.guard.check(&request, Need::ClusterAdmin)?;
        self.inner.replica_digest(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::reason_of;

    #[test]
    fn a_drop_must_name_its_database_twice() {
        let drop = |name: &str, confirm: &str| DropDatabaseRequest {
            name: name.into(),
            confirm: confirm.into(),
        };
        assert!(check_drop_confirmed(&drop("shop", "shop")).is_ok());
        for bad in [
            drop("shop", ""),
            drop("shop", "Shop"),
            drop("shop", "shop "),
        ] {
            let s = check_drop_confirmed(&bad).expect_err("refused");
            assert_eq!(s.code(), tonic::Code::FailedPrecondition);
            assert_eq!(reason_of(&s), Some(ErrorReason::ConfirmationRequired));
        }
    }
}
