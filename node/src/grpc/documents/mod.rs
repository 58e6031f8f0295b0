//! The client `Documents` service: routes each request to its shard, serves it when this node
//! can, and otherwise forwards it to the shard leader (or a replica that knows it). Multi
//! requests are in [`multi`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use flotilla_proto::v1::documents_server::Documents;
use flotilla_proto::v1::{
    BatchRequest, BatchResponse, Consistency, DeleteRequest, DeleteResponse, Document, GetRequest,
    GetResponse, ListRequest, ListResponse, MultiRequest, MultiResponse, PutRequest, PutResponse,
    WatchEvent, WatchRequest, batch_op,
};
use flotilla_proto::v1::{
    CreateCollectionRequest, CreateCollectionResponse, CreateIndexRequest, CreateIndexResponse,
    DropIndexRequest, DropIndexResponse, ListCollectionsRequest, ListCollectionsResponse,
    ListIndexesRequest, ListIndexesResponse, LiveQueryRequest, QueryRequest, QueryResponse,
    QueryShardRequest, QueryShardResponse, ShardIndexesRequest, ShardIndexesResponse,
};
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::error::{NodeError, NodeResult};
use crate::host::{GroupHandle, Host, ReadConsistency};
use crate::network::forward::hops;
use crate::placement;
use crate::types::GroupId;
use crate::validate;

/// Metadata key addressing one shard of a database, set on requests forwarded between nodes
/// (honoured on the peer port only: a client cannot place a document on another shard).
pub const SHARD: &str = "x-flotilla-shard";

/// Most calls one Multi request may carry.
pub const MAX_MULTI_CALLS: usize = 1024;

mod answer;
mod collections;
mod live;
mod multi;
mod query;
mod route;
mod scan;
mod spread;
mod writes;

pub(crate) use writes::batch_ops;
use writes::batch_result;

use placement::shard_of_batch;

#[derive(Clone)]
pub struct DocumentsService {
    host: Arc<Host>,
    /// Serves the peer port: requests forwarded by other nodes, which may name their shard.
    for_peers: bool,
}

/// Where a request goes: its shard and that shard's group.
#[derive(Clone)]
struct Route {
    shard: usize,
    gid: GroupId,
}

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The revision a watch of shard `shard` starts at: after the one `msg.after` names for it,
/// else `msg.from_revision` (0: only new changes).
fn watch_start(msg: &WatchRequest, shard: usize) -> u64 {
    msg.after
        .iter()
        .find(|a| a.shard as usize == shard)
        .map_or(msg.from_revision, |a| a.revision.saturating_add(1))
}

fn consistency(c: i32) -> ReadConsistency {
    match Consistency::try_from(c).unwrap_or(Consistency::Unspecified) {
        Consistency::Lease => ReadConsistency::Lease,
        Consistency::Stale => ReadConsistency::Stale,
        Consistency::Linearizable | Consistency::Unspecified => ReadConsistency::Linearizable,
    }
}

/// Answers `msg` from this replica of `shard` (the caller has passed the read barrier) once it
/// reached the session's floor the request names, never showing half a transaction (see
/// `crate::txn::resolve`).
async fn read_document(
    host: &Arc<Host>,
    group: &GroupHandle,
    shard: usize,
    msg: GetRequest,
) -> NodeResult<GetResponse> {
    host.session_floor(group, shard, &msg.at_least).await?;
    let doc = crate::txn::resolve::visible(host, group, &msg.collection, &msg.id).await?;
    let document = doc.map(|d| Document {
        collection: msg.collection,
        id: msg.id,
        json: d.json,
        version: d.version,
        revision: d.revision,
        shard: shard as u32,
    });
    Ok(GetResponse { document })
}

impl DocumentsService {
    /// The service users call, on the client port.
    pub fn for_clients(host: Arc<Host>) -> Self {
        DocumentsService {
            host,
            for_peers: false,
        }
    }

    /// The service other nodes forward requests to, on the peer port.
    pub fn for_peers(host: Arc<Host>) -> Self {
        DocumentsService {
            host,
            for_peers: true,
        }
    }

    async fn get_at(
        &self,
        msg: GetRequest,
        hops: u32,
        shard: Option<usize>,
    ) -> Result<Response<GetResponse>, Status> {
        validate::collection(&msg.collection)?;
        validate::document_id(&msg.id)?;
        let database = msg.database.clone();
        let everywhere = match self.host.meta_state().databases.get(&database) {
            Some(db) if shard.is_none() => {
                placement::shard_of_named(db, &msg.collection, &msg.id, &msg.shard_key)?
                    .is_none()
                    .then_some(db.shards.len())
            }
            _ => None,
        };
        if let Some(shards) = everywhere {
            return self.get_everywhere(msg, hops, shards).await;
        }
        let (collection, id, shard_key) = (
            msg.collection.clone(),
            msg.id.clone(),
            msg.shard_key.clone(),
        );
        self.serve(
            msg,
            hops,
            &database,
            shard,
            move |db| {
                placement::shard_of_named(db, &collection, &id, &shard_key).map(|s| s.unwrap_or(0))
            },
            |host, group, route, msg: GetRequest| {
                Box::pin(async move {
                    host.read_barrier(&group, consistency(msg.consistency))
                        .await?;
                    read_document(&host, &group, route.shard, msg).await
                })
            },
            |mut c, r| Box::pin(async move { c.get(r).await }),
        )
        .await
    }

    /// A get in a collection with a shard key that does not name its value: a point lookup on
    /// every shard (a document is on one of them).
    fn get_everywhere(
        &self,
        msg: GetRequest,
        hops: u32,
        shards: usize,
    ) -> BoxFut<'_, Result<Response<GetResponse>, Status>> {
        Box::pin(async move {
            let asks = (0..shards).map(|s| self.get_at(msg.clone(), hops, Some(s)));
            let mut found = None;
            for answer in futures::future::join_all(asks).await {
                if let Some(d) = answer?.into_inner().document {
                    found = Some(d);
                }
            }
            Ok(Response::new(GetResponse { document: found }))
        })
    }
}

/// The query a client's request asks for, checked as a node checks it on arrival (for
/// `crate::fuzzing`).
pub(crate) fn check_query(msg: &QueryRequest) -> NodeResult<()> {
    validate::database(&msg.database)?;
    validate::collection(&msg.collection)?;
    let parsed = query::parse_query(msg)?;
    if !msg.page_token.is_empty() {
        flotilla_query::Cursor::from_token(&msg.page_token, &parsed)
            .map_err(|e| NodeError::InvalidArgument(e.to_string()))?;
    }
    Ok(())
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Documents for DocumentsService {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let (hops, shard) = (hops(&request), self.shard_override(&request));
        self.get_at(request.into_inner(), hops, shard).await
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let (hops, shard) = (hops(&request), self.shard_override(&request));
        let msg = request.into_inner();
        let op = batch_op::Op::Put(flotilla_proto::v1::PutOp {
            collection: msg.collection,
            id: msg.id,
            json: msg.json,
            if_version: msg.if_version,
        });
        let resp = self
            .write_one(msg.database, op, msg.request_id, hops, shard)
            .await?;
        let version = resp.results.first().map(|r| r.version).unwrap_or(0);
        Ok(Response::new(PutResponse {
            version,
            revision: resp.revision,
            shard: resp.shard,
        }))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let (hops, shard) = (hops(&request), self.shard_override(&request));
        let msg = request.into_inner();
        let op = batch_op::Op::Delete(flotilla_proto::v1::DeleteOp {
            collection: msg.collection,
            id: msg.id,
            if_version: msg.if_version,
            shard_key: msg.shard_key,
        });
        let resp = self
            .write_one(msg.database, op, msg.request_id, hops, shard)
            .await?;
        Ok(Response::new(DeleteResponse {
            deleted: resp.results.first().is_some_and(|r| r.deleted),
            revision: resp.revision,
            shard: resp.shard,
        }))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let (hops, shard) = (hops(&request), self.shard_override(&request));
        let msg = request.into_inner();
        validate::collection(&msg.collection)?;
        validate::database(&msg.database)?;
        let limit = validate::limit(msg.limit);
        let shards = match self.host.meta_state().databases.get(&msg.database) {
            Some(db) => db.shards.len(),
            None => 1,
        };
        if shard.is_some() || shards <= 1 {
            return Ok(Response::new(self.list_shard(msg, hops, shard).await?));
        }
        // Scatter to every shard, gather in id order.
        let parts = futures::future::join_all(
            (0..shards).map(|s| self.list_shard(msg.clone(), hops, Some(s))),
        )
        .await;
        let mut documents = Vec::new();
        let mut more = false;
        // A shard that has more (its page was cut by count or bytes) bounds the merged page at
        // its last id: a document of it past that id is not in hand.
        let mut bound: Option<String> = None;
        for part in parts {
            let part = part?;
            if !part.next_page_token.is_empty() {
                more = true;
                if let Some(last) = part.documents.last()
                    && bound.as_ref().is_none_or(|b| &last.id < b)
                {
                    bound = Some(last.id.clone());
                }
            }
            documents.extend(part.documents);
        }
        if let Some(b) = &bound {
            documents.retain(|d| &d.id <= b);
        }
        documents.sort_by(|a, b| a.id.cmp(&b.id));
        more |= documents.len() > limit;
        documents.truncate(limit);
        more |= scan::cut_to_bytes(&mut documents, |d| d.json.len());
        let next_page_token = match (more, documents.last()) {
            (true, Some(d)) => URL_SAFE_NO_PAD.encode(&d.id),
            _ => String::new(),
        };
        Ok(Response::new(ListResponse {
            documents,
            next_page_token,
        }))
    }

    async fn batch(
        &self,
        request: Request<BatchRequest>,
    ) -> Result<Response<BatchResponse>, Status> {
        let (hops, shard) = (hops(&request), self.shard_override(&request));
        self.batch_at(request.into_inner(), hops, shard).await
    }

    async fn multi(
        &self,
        request: Request<MultiRequest>,
    ) -> Result<Response<MultiResponse>, Status> {
        let hops = hops(&request);
        let msg = request.into_inner();
        if msg.calls.len() > MAX_MULTI_CALLS {
            return Err(Status::resource_exhausted(format!(
                "multi request has {} calls, over the limit of {MAX_MULTI_CALLS}",
                msg.calls.len()
            )));
        }
        let results = self.serve_multi(msg.calls, hops).await;
        Ok(Response::new(MultiResponse { results }))
    }

    type WatchStream = WatchStream;

    async fn query(
        &self,
        request: Request<QueryRequest>,
    ) -> Result<Response<QueryResponse>, Status> {
        let hops = hops(&request);
        Ok(Response::new(
            self.query_at(request.into_inner(), hops).await?,
        ))
    }

    async fn create_collection(
        &self,
        request: Request<CreateCollectionRequest>,
    ) -> Result<Response<CreateCollectionResponse>, Status> {
        let hops = hops(&request);
        self.create_collection_at(request.into_inner(), hops).await
    }

    async fn list_collections(
        &self,
        request: Request<ListCollectionsRequest>,
    ) -> Result<Response<ListCollectionsResponse>, Status> {
        let hops = hops(&request);
        self.list_collections_at(request.into_inner(), hops).await
    }

    async fn create_index(
        &self,
        request: Request<CreateIndexRequest>,
    ) -> Result<Response<CreateIndexResponse>, Status> {
        let hops = hops(&request);
        self.create_index_at(request.into_inner(), hops).await
    }

    async fn drop_index(
        &self,
        request: Request<DropIndexRequest>,
    ) -> Result<Response<DropIndexResponse>, Status> {
        let hops = hops(&request);
        self.drop_index_at(request.into_inner(), hops).await
    }

    async fn list_indexes(
        &self,
        request: Request<ListIndexesRequest>,
    ) -> Result<Response<ListIndexesResponse>, Status> {
        let hops = hops(&request);
        self.list_indexes_at(request.into_inner(), hops).await
    }

    type LiveQueryStream = live::LiveStream;

    async fn live_query(
        &self,
        request: Request<LiveQueryRequest>,
    ) -> Result<Response<Self::LiveQueryStream>, Status> {
        let hops = hops(&request);
        Ok(Response::new(
            self.live_query_at(request.into_inner(), hops).await?,
        ))
    }

    async fn query_shard(
        &self,
        request: Request<QueryShardRequest>,
    ) -> Result<Response<QueryShardResponse>, Status> {
        if !self.for_peers {
            return Err(Status::permission_denied(
                "QueryShard is served on the peer port only",
            ));
        }
        let hops = hops(&request);
        Ok(Response::new(
            self.query_shard_at(request.into_inner(), hops).await?,
        ))
    }

    async fn shard_indexes(
        &self,
        request: Request<ShardIndexesRequest>,
    ) -> Result<Response<ShardIndexesResponse>, Status> {
        if !self.for_peers {
            return Err(Status::permission_denied(
                "ShardIndexes is served on the peer port only",
            ));
        }
        let hops = hops(&request);
        Ok(Response::new(
            self.shard_indexes_at(request.into_inner(), hops).await?,
        ))
    }

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (hops, shard) = (hops(&request), self.shard_override(&request));
        let msg = request.into_inner();
        // Refused at once, so that the client opens it on another node.
        if self.host.is_stopping() {
            return Err(scan::stopping_node());
        }
        validate::database(&msg.database)?;
        if !msg.collection.is_empty() {
            validate::collection(&msg.collection)?;
        }
        let Some(db) = self.host.meta_state().databases.get(&msg.database).cloned() else {
            return self
                .unknown_database(&msg.database.clone(), msg, hops, shard, |mut c, r| {
                    Box::pin(async move {
                        let resp = c.watch(r).await?;
                        Ok(Response::new(Box::pin(resp.into_inner()) as WatchStream))
                    })
                })
                .await;
        };
        let shards: Vec<usize> = match shard {
            Some(s) if s < db.shards.len() => vec![s],
            Some(s) => {
                return Err(Status::invalid_argument(format!(
                    "database has no shard {s}"
                )));
            }
            None => (0..db.shards.len()).collect(),
        };
        let mut streams: Vec<WatchStream> = Vec::new();
        for s in shards {
            let record = &db.shards[s];
            if let Some(group) = self.host.group(record.group_id) {
                streams.push(Box::pin(self.local_watch(
                    group,
                    s,
                    msg.collection.clone(),
                    watch_start(&msg, s),
                    msg.with_prev,
                )));
                continue;
            }
            let targets: Vec<String> = record
                .replicas
                .iter()
                .filter_map(|r| self.host.peer_addr_of(*r))
                .collect();
            let resp = self
                .forward(targets, hops, msg.clone(), Some(s), |mut c, r| {
                    Box::pin(async move {
                        let resp = c.watch(r).await?;
                        Ok(Response::new(Box::pin(resp.into_inner()) as WatchStream))
                    })
                })
                .await?;
            streams.push(resp.into_inner());
        }
        let merged = futures::stream::select_all(streams);
        Ok(Response::new(Box::pin(merged) as WatchStream))
    }
}
