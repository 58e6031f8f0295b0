//! The `Backup` service of the client port, checked before it is served: reading a shard for a
//! backup needs the read permission on its database (it streams every document); the read
//! index is for nodes and needs the role `root` here, as do loading a shard for a restore
//! (it sets versions no ordinary write can), beginning or ending a backup cut (a fence holds
//! every transaction commit of the database back) and reading a shard's change feed for an
//! incremental backup.

use flotilla_proto::v1::backup_server::Backup;
use flotilla_proto::v1::{
    BeginCutRequest, BeginCutResponse, EndCutRequest, EndCutResponse, LoadShardRequest,
    LoadShardResponse, ReadChangesRequest, ReadIndexRequest, ReadIndexResponse, ReadShardRequest,
};
use tonic::{Request, Response, Status};

use super::Guard;
use crate::grpc::backup::BackupService;
use crate::meta::auth::{Need, Permission};

pub struct GuardedBackup {
    inner: BackupService,
    guard: Guard,
}

impl GuardedBackup {
    pub fn new(inner: BackupService, guard: Guard) -> Self {
        GuardedBackup { inner, guard }
    }
}

#[tonic::async_trait]
impl Backup for GuardedBackup {
    type ReadShardStream = <BackupService as Backup>::ReadShardStream;
    type ReadChangesStream = <BackupService as Backup>::ReadChangesStream;

    /// The feed carries every write of the shard: cluster administrators only, as loading a
    /// restore is.
    async fn read_changes(
        &self,
        request: Request<ReadChangesRequest>,
    ) -> Result<Response<Self::ReadChangesStream>, Status> {
        self.guard.check(&request, Need::ClusterAdmin)?;
        self.inner.read_changes(request).await
    }

    async fn read_shard(
        &self,
        request: Request<ReadShardRequest>,
    ) -> Result<Response<Self::ReadShardStream>, Status> {
        let need = Need::Database(request.get_ref().database.clone(), Permission::Read);
        self.guard.check(&request, need)?;
        self.inner.read_shard(request).await
    }

    async fn load_shard(
        &self,
        request: Request<LoadShardRequest>,
    ) -> Result<Response<LoadShardResponse>, Status> {
        self.guard.check(&request, Need::ClusterAdmin)?;
        self.inner.load_shard(request).await
    }

    async fn begin_cut(
        &self,
        request: Request<BeginCutRequest>,
    ) -> Result<Response<BeginCutResponse>, Status> {
        self.guard.check(&request, Need::ClusterAdmin)?;
        self.inner.begin_cut(request).await
    }

    async fn end_cut(
        &self,
        request: Request<EndCutRequest>,
    ) -> Result<Response<EndCutResponse>, Status> {
        self.guard.check(&request, Need::ClusterAdmin)?;
        self.inner.end_cut(request).await
    }

    async fn read_index(
        &self,
        request: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        self.guard.check(&request, Need::ClusterAdmin)?;
        self.inner.read_index(request).await
    }
}
