//! Collections and secondary indexes: declared in the meta state (at the meta leader, where
//! other nodes forward these calls), then carried to every shard as a replicated index command
//! (through each shard's leader), so that every replica creates or drops an index at the same
//! position of its log. Listing asks each shard's leader for its indexes and build progress.

use std::collections::BTreeMap;

use flotilla_proto::v1::{
    CollectionInfo, CreateCollectionRequest, CreateCollectionResponse, CreateIndexRequest,
    CreateIndexResponse, DropIndexRequest, DropIndexResponse, ErrorReason, IndexInfo,
    IndexShardState, ListCollectionsRequest, ListCollectionsResponse, ListIndexesRequest,
    ListIndexesResponse, ListRequest, ShardIndex, ShardIndexesRequest, ShardIndexesResponse,
};
use tonic::{Request, Response, Status};

use super::{BoxFut, DocumentsService};
use crate::command::{Command, IndexCommand, IndexOutcome, MetaCommand, Response as Applied};
use crate::error::{NodeError, NodeResult, Refusal};
use crate::meta::collections::check_index_paths;
use crate::network::PeerChannel;
use crate::network::forward::Effect;
use crate::validate;
use flotilla_proto::v1::documents_client::DocumentsClient;

macro_rules! effect {
    ($($t:ty => $w:expr),* $(,)?) => { $(impl Effect for $t { const WRITES: bool = $w; })* };
}
effect! {
    CreateCollectionRequest => true,
    CreateIndexRequest => true,
    DropIndexRequest => true,
    ShardIndexesRequest => true,
    ListCollectionsRequest => false,
    ListIndexesRequest => false,
}

fn invalid_index(message: String) -> NodeError {
    NodeError::refused(Refusal::InvalidArgument, ErrorReason::InvalidIndex, message)
}

type Call<T, R> =
    fn(DocumentsClient<PeerChannel>, Request<T>) -> BoxFut<'static, Result<Response<R>, Status>>;

impl DocumentsService {
    /// Forwards `msg` to the meta leader unless this node is it (`None`: serve it here).
    async fn at_meta_leader<T, R>(
        &self,
        hops: u32,
        msg: &T,
        call: Call<T, R>,
    ) -> Option<Result<Response<R>, Status>>
    where
        T: Effect + Clone + Send + 'static,
    {
        match self.host.meta_leader_peer() {
            Some((leader, _)) if leader == self.host.id => None,
            Some((_, addr)) => Some(
                self.forward(vec![addr], hops, msg.clone(), None, call)
                    .await,
            ),
            None => Some(Err(Status::unavailable(
                "no meta leader is known right now",
            ))),
        }
    }

    pub(super) async fn create_collection_at(
        &self,
        msg: CreateCollectionRequest,
        hops: u32,
    ) -> Result<Response<CreateCollectionResponse>, Status> {
        validate::database(&msg.database)?;
        validate::collection(&msg.collection)?;
        let shard_key = match msg.shard_key.as_str() {
            "" => None,
            k => {
                flotilla_query::Path::parse(k).map_err(|e| {
                    NodeError::InvalidArgument(format!("shard key {k:?} is not a path: {e}"))
                })?;
                Some(k.to_string())
            }
        };
        if let Some(r) = self
            .at_meta_leader(hops, &msg, |mut c, r| {
                Box::pin(async move { c.create_collection(r).await })
            })
            .await
        {
            return r;
        }
        let meta = self.host.meta_state();
        let db = meta
            .databases
            .get(&msg.database)
            .ok_or_else(|| NodeError::database_not_found(&msg.database))?;
        // Documents already placed by id would be lost to a shard key declared after them.
        if shard_key.is_some() && db.collection(&msg.collection).is_none() {
            for s in 0..db.shards.len() {
                let list = ListRequest {
                    database: msg.database.clone(),
                    collection: msg.collection.clone(),
                    limit: 1,
                    ..ListRequest::default()
                };
                if !self
                    .list_shard(list, hops, Some(s))
                    .await?
                    .documents
                    .is_empty()
                {
                    return Err(NodeError::FailedPrecondition(format!(
                        "collection {} holds documents placed by id already; a shard key is declared before the first document",
                        msg.collection
                    ))
                    .into());
                }
            }
        }
        let outcome = self
            .host
            .propose_meta(MetaCommand::CreateCollection {
                database: msg.database,
                collection: msg.collection,
                shard_key,
            })
            .await?;
        Ok(Response::new(CreateCollectionResponse {
            created: outcome == crate::command::MetaOutcome::Done,
        }))
    }

    pub(super) async fn list_collections_at(
        &self,
        msg: ListCollectionsRequest,
        hops: u32,
    ) -> Result<Response<ListCollectionsResponse>, Status> {
        validate::database(&msg.database)?;
        let Some(db) = self.host.meta_state().databases.get(&msg.database).cloned() else {
            let database = msg.database.clone();
            return self
                .unknown_database(&database, msg, hops, None, |mut c, r| {
                    Box::pin(async move { c.list_collections(r).await })
                })
                .await;
        };
        let collections = db
            .collections
            .iter()
            .map(|(name, c)| CollectionInfo {
                name: name.clone(),
                shard_key: c.shard_key.clone().unwrap_or_default(),
                indexes: c.indexes.keys().cloned().collect(),
            })
            .collect();
        Ok(Response::new(ListCollectionsResponse { collections }))
    }

    pub(super) async fn create_index_at(
        &self,
        msg: CreateIndexRequest,
        hops: u32,
    ) -> Result<Response<CreateIndexResponse>, Status> {
        validate::database(&msg.database)?;
        validate::collection(&msg.collection)?;
        validate::collection(&msg.name)
            .map_err(|_| invalid_index("an index needs a name".into()))?;
        check_index_paths(&msg.paths).map_err(invalid_index)?;
        if let Some(r) = self
            .at_meta_leader(hops, &msg, |mut c, r| {
                Box::pin(async move { c.create_index(r).await })
            })
            .await
        {
            return r;
        }
        self.host
            .propose_meta(MetaCommand::CreateIndex {
                database: msg.database.clone(),
                collection: msg.collection.clone(),
                name: msg.name.clone(),
                paths: msg.paths.clone(),
            })
            .await?;
        let database = msg.database.clone();
        self.on_every_shard(&database, hops, |shard| ShardIndexesRequest {
            database: database.clone(),
            shard,
            create: Some(msg.clone()),
            drop: None,
        })
        .await?;
        Ok(Response::new(CreateIndexResponse {}))
    }

    pub(super) async fn drop_index_at(
        &self,
        msg: DropIndexRequest,
        hops: u32,
    ) -> Result<Response<DropIndexResponse>, Status> {
        validate::database(&msg.database)?;
        validate::collection(&msg.collection)?;
        if let Some(r) = self
            .at_meta_leader(hops, &msg, |mut c, r| {
                Box::pin(async move { c.drop_index(r).await })
            })
            .await
        {
            return r;
        }
        let outcome = self
            .host
            .propose_meta(MetaCommand::DropIndex {
                database: msg.database.clone(),
                collection: msg.collection.clone(),
                name: msg.name.clone(),
            })
            .await?;
        let database = msg.database.clone();
        self.on_every_shard(&database, hops, |shard| ShardIndexesRequest {
            database: database.clone(),
            shard,
            create: None,
            drop: Some(msg.clone()),
        })
        .await?;
        Ok(Response::new(DropIndexResponse {
            dropped: outcome == crate::command::MetaOutcome::Done,
        }))
    }

    pub(super) async fn list_indexes_at(
        &self,
        msg: ListIndexesRequest,
        hops: u32,
    ) -> Result<Response<ListIndexesResponse>, Status> {
        validate::database(&msg.database)?;
        if !self.host.meta_state().databases.contains_key(&msg.database) {
            let database = msg.database.clone();
            return self
                .unknown_database(&database, msg, hops, None, |mut c, r| {
                    Box::pin(async move { c.list_indexes(r).await })
                })
                .await;
        }
        let database = msg.database.clone();
        let answers = self
            .on_every_shard(&database, hops, |shard| ShardIndexesRequest {
                database: database.clone(),
                shard,
                create: None,
                drop: None,
            })
            .await?;
        let mut by_name: BTreeMap<(String, String), IndexInfo> = BTreeMap::new();
        for (shard, answer) in answers {
            for ix in answer.indexes {
                if !msg.collection.is_empty() && ix.collection != msg.collection {
                    continue;
                }
                let info = by_name
                    .entry((ix.collection.clone(), ix.name.clone()))
                    .or_insert_with(|| IndexInfo {
                        collection: ix.collection.clone(),
                        name: ix.name.clone(),
                        paths: ix.paths.clone(),
                        shards: Vec::new(),
                    });
                info.shards.push(IndexShardState {
                    shard,
                    ready: ix.ready,
                    documents: ix.documents,
                });
            }
        }
        Ok(Response::new(ListIndexesResponse {
            indexes: by_name.into_values().collect(),
        }))
    }

    /// Sends `make(shard)` to every shard's leader in parallel; fails when any shard does.
    async fn on_every_shard(
        &self,
        database: &str,
        hops: u32,
        make: impl Fn(u32) -> ShardIndexesRequest,
    ) -> Result<Vec<(u32, ShardIndexesResponse)>, Status> {
        let shards = self
            .host
            .meta_state()
            .databases
            .get(database)
            .map(|db| db.shards.len())
            .ok_or_else(|| NodeError::database_not_found(database))?;
        let asks = (0..shards as u32).map(|s| {
            let req = make(s);
            async move { (s, self.shard_indexes_at(req, hops).await) }
        });
        let mut out = Vec::with_capacity(shards);
        for (s, answer) in futures::future::join_all(asks).await {
            let answer =
                answer.map_err(|e| Status::new(e.code(), format!("shard {s}: {}", e.message())))?;
            out.push((s, answer));
        }
        Ok(out)
    }

    /// Applies the request's index command through the shard's log (at its leader), then
    /// answers the shard's indexes as that leader holds them.
    pub(super) async fn shard_indexes_at(
        &self,
        msg: ShardIndexesRequest,
        hops: u32,
    ) -> Result<ShardIndexesResponse, Status> {
        let database = msg.database.clone();
        let shard = msg.shard as usize;
        let resp = self
            .serve(
                msg,
                hops,
                &database,
                Some(shard),
                |_| Ok(shard),
                |host, group, route, msg: ShardIndexesRequest| {
                    Box::pin(async move {
                        let cmd = match (msg.create, msg.drop) {
                            (Some(c), _) => Some(IndexCommand::Create {
                                collection: c.collection,
                                name: c.name,
                                paths: c.paths,
                            }),
                            (None, Some(d)) => Some(IndexCommand::Drop {
                                collection: d.collection,
                                name: d.name,
                            }),
                            (None, None) => None,
                        };
                        match cmd {
                            Some(cmd) => {
                                match host.write(&group, route.gid, Command::Index(cmd)).await? {
                                    (Applied::Index(IndexOutcome::Refused(why)), _) => {
                                        return Err(invalid_index(why));
                                    }
                                    (Applied::Index(_), _) => {}
                                    (other, _) => {
                                        return Err(NodeError::Internal(format!(
                                            "unexpected response {other:?}"
                                        )));
                                    }
                                }
                            }
                            None => {
                                host.read_barrier(
                                    &group,
                                    crate::host::ReadConsistency::Linearizable,
                                )
                                .await?;
                            }
                        }
                        let indexes = group
                            .sm
                            .index_status()?
                            .into_iter()
                            .map(|s| ShardIndex {
                                collection: s.collection,
                                name: s.name,
                                paths: s.paths,
                                ready: s.ready,
                                documents: s.done,
                            })
                            .collect();
                        NodeResult::Ok(ShardIndexesResponse { indexes })
                    })
                },
                |mut c, r| Box::pin(async move { c.shard_indexes(r).await }),
            )
            .await?;
        Ok(resp.into_inner())
    }
}
