//! The `Documents` service of the client port, each rpc checked before it is served: reads
//! need the read permission on their database, writes the write permission. A Multi request
//! serves the calls its caller may make and answers PERMISSION_DENIED for each of the others,
//! in place (the calls of a Multi succeed or fail on their own).

use flotilla_proto::v1::documents_server::Documents;
use flotilla_proto::v1::{
    BatchRequest, BatchResponse, CallResult, CreateCollectionRequest, CreateCollectionResponse,
    CreateIndexRequest, CreateIndexResponse, DeleteRequest, DeleteResponse, DropIndexRequest,
    DropIndexResponse, GetRequest, GetResponse, ListCollectionsRequest, ListCollectionsResponse,
    ListIndexesRequest, ListIndexesResponse, ListRequest, ListResponse, LiveQueryRequest,
    MultiRequest, MultiResponse, PutRequest, PutResponse, QueryRequest, QueryResponse,
    QueryShardRequest, QueryShardResponse, ShardIndexesRequest, ShardIndexesResponse, WatchRequest,
    call, call_result,
};
use tonic::{Request, Response, Status};

use std::sync::Arc;

use futures::StreamExt;
use prost::Message;
use tokio::sync::Semaphore;

use super::Guard;
use crate::grpc::documents::DocumentsService;
use crate::grpc::limits::limit_exceeded;
use crate::grpc::status::call_error;
use crate::meta::auth::{Need, Permission};

pub struct GuardedDocuments {
    inner: DocumentsService,
    guard: Guard,
    /// One permit per watch open on the node (`--max-watches`).
    watches: Arc<Semaphore>,
}

impl GuardedDocuments {
    pub fn new(inner: DocumentsService, guard: Guard) -> Self {
        let max = guard.host().config.security.max_watches;
        GuardedDocuments {
            inner,
            guard,
            watches: Arc::new(Semaphore::new(max)),
        }
    }

    fn max_answer_bytes(&self) -> usize {
        self.guard.host().config.security.max_answer_bytes
    }

    /// A place among the node's open watches (and live queries), held as long as the stream.
    fn watch_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.watches.clone().try_acquire_owned().map_err(|_| {
            let max = self.guard.host().config.security.max_watches;
            limit_exceeded(format!(
                "the node has {max} watches open, its limit (--max-watches)"
            ))
        })
    }
}

fn on(database: &str, permission: Permission) -> Need {
    Need::Database(database.to_string(), permission)
}

#[tonic::async_trait]
impl Documents for GuardedDocuments {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let need = on(&request.get_ref().database, Permission::Read);
        self.guard.check(&request, need)?;
        self.inner.get(request).await
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let need = on(&request.get_ref().database, Permission::Write);
        self.guard.check(&request, need)?;
        self.inner.put(request).await
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let need = on(&request.get_ref().database, Permission::Write);
        self.guard.check(&request, need)?;
        self.inner.delete(request).await
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let need = on(&request.get_ref().database, Permission::Read);
        self.guard.check(&request, need)?;
        let answer = self.inner.list(request).await?;
        let (bytes, max) = (answer.get_ref().encoded_len(), self.max_answer_bytes());
        if bytes > max {
            return Err(limit_exceeded(format!(
                "the answer is {bytes} bytes, over the limit of {max} (--max-answer-bytes): ask for fewer documents per page"
            )));
        }
        Ok(answer)
    }

    async fn batch(
        &self,
        request: Request<BatchRequest>,
    ) -> Result<Response<BatchResponse>, Status> {
        let need = on(&request.get_ref().database, Permission::Write);
        self.guard.check(&request, need)?;
        self.inner.batch(request).await
    }

    async fn query(
        &self,
        request: Request<QueryRequest>,
    ) -> Result<Response<QueryResponse>, Status> {
        let need = on(&request.get_ref().database, Permission::Read);
        self.guard.check(&request, need)?;
        self.inner.query(request).await
    }

    async fn create_collection(
        &self,
        request: Request<CreateCollectionRequest>,
    ) -> Result<Response<CreateCollectionResponse>, Status> {
        let need = on(&request.get_ref().database, Permission::Admin);
        self.guard.check(&request, need)?;
        self.inner.create_collection(request).await
    }

    async fn list_collections(
        &self,
        request: Request<ListCollectionsRequest>,
    ) -> Result<Response<ListCollectionsResponse>, Status> {
        let need = on(&request.get_ref().database, Permission::Read);
        self.guard.check(&request, need)?;
        self.inner.list_collections(request).await
    }

    async fn create_index(
        &self,
        request: Request<CreateIndexRequest>,
    ) -> Result<Response<CreateIndexResponse>, Status> {
        let need = on(&request.get_ref().database, Permission::Admin);
        self.guard.check(&request, need)?;
        self.inner.create_index(request).await
    }

    async fn drop_index(
        &self,
        request: Request<DropIndexRequest>,
    ) -> Result<Response<DropIndexResponse>, Status> {
        let need = on(&request.get_ref().database, Permission::Admin);
        self.guard.check(&request, need)?;
        self.inner.drop_index(request).await
    }

    async fn list_indexes(
        &self,
        request: Request<ListIndexesRequest>,
    ) -> Result<Response<ListIndexesResponse>, Status> {
        let need = on(&request.get_ref().database, Permission::Read);
        self.guard.check(&request, need)?;
        self.inner.list_indexes(request).await
    }

    async fn query_shard(
        &self,
        request: Request<QueryShardRequest>,
    ) -> Result<Response<QueryShardResponse>, Status> {
        let database = request
            .get_ref()
            .query
            .as_ref()
            .map(|q| q.database.clone())
            .unwrap_or_default();
        let need = on(&database, Permission::Read);
        self.guard.check(&request, need)?;
        self.inner.query_shard(request).await
    }

    async fn shard_indexes(
        &self,
        request: Request<ShardIndexesRequest>,
    ) -> Result<Response<ShardIndexesResponse>, Status> {
        let need = on(&request.get_ref().database, Permission::Read);
        self.guard.check(&request, need)?;
        self.inner.shard_indexes(request).await
    }

    type LiveQueryStream = <DocumentsService as Documents>::LiveQueryStream;

    /// Reads the database, and counts as a watch against `--max-watches`.
    async fn live_query(
        &self,
        request: Request<LiveQueryRequest>,
    ) -> Result<Response<Self::LiveQueryStream>, Status> {
        let need = on(&request.get_ref().database, Permission::Read);
        self.guard.check(&request, need)?;
        let permit = self.watch_permit()?;
        let events = self.inner.live_query(request).await?.into_inner();
        // The permit goes when the live query does.
        let events = events.map(move |event| {
            let _held = &permit;
            event
        });
        Ok(Response::new(Box::pin(events) as Self::LiveQueryStream))
    }

    type WatchStream = <DocumentsService as Documents>::WatchStream;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let need = on(&request.get_ref().database, Permission::Read);
        self.guard.check(&request, need)?;
        let permit = self.watch_permit()?;
        let events = self.inner.watch(request).await?.into_inner();
        // The permit goes when the watch does.
        let events = events.map(move |event| {
            let _held = &permit;
            event
        });
        Ok(Response::new(Box::pin(events) as Self::WatchStream))
    }

    async fn multi(
        &self,
        request: Request<MultiRequest>,
    ) -> Result<Response<MultiResponse>, Status> {
        let caller = self.guard.caller(&request)?;
        let mut refused: Vec<(usize, Status)> = Vec::new();
        let mut allowed = Vec::with_capacity(request.get_ref().calls.len());
        for (i, c) in request.get_ref().calls.iter().enumerate() {
            let need = match &c.call {
                Some(call::Call::Get(g)) => on(&g.database, Permission::Read),
                Some(call::Call::Batch(b)) => on(&b.database, Permission::Write),
                // An empty call is the service's to refuse.
                None => Need::User,
            };
            match self.guard.allows(&caller, &need) {
                Ok(()) => allowed.push(c.clone()),
                Err(s) => refused.push((i, s)),
            }
        }
        if refused.is_empty() {
            return self.inner.multi(request).await;
        }
        let (metadata, extensions, _) = request.into_parts();
        let served = if allowed.is_empty() {
            Vec::new()
        } else {
            let inner = Request::from_parts(metadata, extensions, MultiRequest { calls: allowed });
            self.inner.multi(inner).await?.into_inner().results
        };
        Ok(Response::new(MultiResponse {
            results: splice(served, refused),
        }))
    }
}

/// The results of the served calls with the refusals put back in their places.
fn splice(served: Vec<CallResult>, refused: Vec<(usize, Status)>) -> Vec<CallResult> {
    let mut served = served.into_iter();
    let mut refused = refused.into_iter().peekable();
    let mut out = Vec::new();
    for i in 0.. {
        let next = match refused.peek() {
            Some((at, _)) if *at == i => refused.next().map(|(_, s)| CallResult {
                result: Some(call_result::Result::Error(call_error(&s))),
            }),
            _ => served.next(),
        };
        match next {
            Some(r) => out.push(r),
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::v1::GetResponse;

    fn got(n: u64) -> CallResult {
        let document = flotilla_proto::v1::Document {
            version: n,
            ..Default::default()
        };
        CallResult {
            result: Some(call_result::Result::Get(GetResponse {
                document: Some(document),
            })),
        }
    }

    #[test]
    fn refused_calls_are_answered_in_their_places() {
        let denied = || Status::permission_denied("no");
        let out = splice(vec![got(1), got(3)], vec![(0, denied()), (2, denied())]);
        let kinds: Vec<_> = out
            .iter()
            .map(|r| match &r.result {
                Some(call_result::Result::Get(g)) => {
                    format!("get{}", g.document.as_ref().map_or(0, |d| d.version))
                }
                Some(call_result::Result::Error(_)) => "refused".into(),
                _ => "other".into(),
            })
            .collect();
        assert_eq!(kinds, ["refused", "get1", "refused", "get3"]);
        assert_eq!(splice(vec![], vec![(0, denied())]).len(), 1);
    }
}
