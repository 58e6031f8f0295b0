//! The `Transactions` service of the client port, each rpc checked before it is served:
//! beginning a transaction needs the write permission on its database (a transaction may write
//! any document of it), listing them the read permission; the calls within a transaction need
//! an authenticated caller, who names the transaction by its handle (unguessable, and known
//! only to whoever began it).

use flotilla_proto::v1::transactions_server::Transactions;
use flotilla_proto::v1::{
    BeginRequest, BeginResponse, CommitRequest, CommitResponse, ListTransactionsRequest,
    ListTransactionsResponse, RollbackRequest, RollbackResponse, TxnDeleteRequest, TxnGetRequest,
    TxnGetResponse, TxnPutRequest, TxnQueryRequest, TxnQueryResponse, TxnWriteResponse,
};
use tonic::{Request, Response, Status};

use super::Guard;
use crate::grpc::transactions::TransactionsService;
use crate::meta::auth::{Need, Permission};

pub struct GuardedTransactions {
    inner: TransactionsService,
    guard: Guard,
}

impl GuardedTransactions {
    pub fn new(inner: TransactionsService, guard: Guard) -> Self {
        GuardedTransactions { inner, guard }
    }
}

#[tonic::async_trait]
impl Transactions for GuardedTransactions {
    async fn begin(
        &self,
        request: Request<BeginRequest>,
    ) -> Result<Response<BeginResponse>, Status> {
        let need = Need::Database(request.get_ref().database.clone(), Permission::Write);
        self.guard.check(&request, need)?;
        self.inner.begin(request).await
    }

    async fn get(
        &self,
        request: Request<TxnGetRequest>,
    ) -> Result<Response<TxnGetResponse>, Status> {
        self.guard.check(&request, Need::User)?;
        self.inner.get(request).await
    }

    async fn query(
        &self,
        request: Request<TxnQueryRequest>,
    ) -> Result<Response<TxnQueryResponse>, Status> {
        self.guard.check(&request, Need::User)?;
        self.inner.query(request).await
    }

    async fn put(
        &self,
        request: Request<TxnPutRequest>,
    ) -> Result<Response<TxnWriteResponse>, Status> {
        self.guard.check(&request, Need::User)?;
        self.inner.put(request).await
    }

    async fn delete(
        &self,
        request: Request<TxnDeleteRequest>,
    ) -> Result<Response<TxnWriteResponse>, Status> {
        self.guard.check(&request, Need::User)?;
        self.inner.delete(request).await
    }

    async fn commit(
        &self,
        request: Request<CommitRequest>,
    ) -> Result<Response<CommitResponse>, Status> {
        self.guard.check(&request, Need::User)?;
        self.inner.commit(request).await
    }

    async fn rollback(
        &self,
        request: Request<RollbackRequest>,
    ) -> Result<Response<RollbackResponse>, Status> {
        self.guard.check(&request, Need::User)?;
        self.inner.rollback(request).await
    }

    async fn list(
        &self,
        request: Request<ListTransactionsRequest>,
    ) -> Result<Response<ListTransactionsResponse>, Status> {
        let need = Need::Database(request.get_ref().database.clone(), Permission::Read);
        self.guard.check(&request, need)?;
        self.inner.list(request).await
    }
}
