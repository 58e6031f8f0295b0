//! The `Backup` service of the client port, checked before it is served: reading a shard for a
//! backup needs the read permission on its database (it streams every document); the read
//! index is for nodes and needs the role `root` here, as does loading a shard for a restore
//! (it sets versions no ordinary write can).

use flotilla_proto::v1::backup_server::Backup;
use flotilla_proto::v1::{
    LoadShardRequest, LoadShardResponse, ReadIndexRequest, ReadIndexResponse, ReadShardRequest,
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

    async fn read_index(
        &self,
        request: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        self.guard.check(&request, Need::ClusterAdmin)?;
        self.inner.read_index(request).await
    }
}
