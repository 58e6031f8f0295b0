//! The fake's `Documents` service.

use super::*;

#[tonic::async_trait]
impl Documents for Fake {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        self.enter("get").await?;
        let r = request.into_inner();
        self.database(&r.database)?;
        let key = (r.database, r.collection, r.id);
        // Like a node: a missing document is an empty answer.
        Ok(Response::new(pb::GetResponse {
            document: self.state().docs.get(&key).map(|v| Fake::document(&key, v)),
        }))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        self.enter("put").await?;
        let r = request.into_inner();
        self.database(&r.database)?;
        let (version, _, revision) = self.write(
            &r.database,
            &r.collection,
            &r.id,
            Some(&r.json),
            r.if_version,
        )?;
        Ok(Response::new(pb::PutResponse {
            version,
            revision,
            shard: Fake::shard(&r.id),
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        self.enter("delete").await?;
        let r = request.into_inner();
        self.database(&r.database)?;
        let (_, deleted, revision) =
            self.write(&r.database, &r.collection, &r.id, None, r.if_version)?;
        Ok(Response::new(pb::DeleteResponse {
            deleted,
            revision,
            shard: 0,
        }))
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        self.enter("list").await?;
        let r = request.into_inner();
        self.database(&r.database)?;
        let limit = if r.limit == 0 { 100 } else { r.limit as usize };
        let s = self.state();
        let mut matching = s.docs.iter().filter(|(k, _)| {
            k.0 == r.database
                && k.1 == r.collection
                && k.2.starts_with(&r.prefix)
                && k.2 > r.page_token
        });
        let documents: Vec<pb::Document> = matching
            .by_ref()
            .take(limit)
            .map(|(k, v)| Fake::document(k, v))
            .collect();
        let next_page_token = match (matching.next(), documents.last()) {
            (Some(_), Some(last)) => last.id.clone(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListResponse {
            documents,
            next_page_token,
        }))
    }

    async fn batch(
        &self,
        request: Request<pb::BatchRequest>,
    ) -> Result<Response<pb::BatchResponse>, Status> {
        self.enter("batch").await?;
        let r = request.into_inner();
        self.database(&r.database)?;
        let mut results = Vec::new();
        let mut revision = 0;
        for op in r.ops {
            let (version, deleted, rev) = match op.op {
                Some(pb::batch_op::Op::Put(p)) => self.write(
                    &r.database,
                    &p.collection,
                    &p.id,
                    Some(&p.json),
                    p.if_version,
                )?,
                Some(pb::batch_op::Op::Delete(d)) => {
                    self.write(&r.database, &d.collection, &d.id, None, d.if_version)?
                }
                None => return Err(Status::invalid_argument("empty op")),
            };
            results.push(pb::BatchResult { version, deleted });
            revision = rev;
        }
        Ok(Response::new(pb::BatchResponse {
            results,
            revision,
            shard: 0,
            repeated: false,
        }))
    }

    /// Each call as the single call it stands for: a batch of one put is a put, of one delete
    /// a delete (that is how the client sends those).
    // Queries, collections and indexes are not faked: the client's tests of them run against
    // real nodes.
    async fn query(
        &self,
        _: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::QueryResponse>, Status> {
        Err(Status::unimplemented("the fake node has no queries"))
    }

    type LiveQueryStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<pb::LiveQueryEvent, Status>>>;

    async fn live_query(
        &self,
        _: Request<pb::LiveQueryRequest>,
    ) -> Result<Response<Self::LiveQueryStream>, Status> {
        Err(Status::unimplemented("the fake node has no live queries"))
    }

    async fn create_collection(
        &self,
        _: Request<pb::CreateCollectionRequest>,
    ) -> Result<Response<pb::CreateCollectionResponse>, Status> {
        Err(Status::unimplemented("the fake node has no collections"))
    }

    async fn list_collections(
        &self,
        _: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        Err(Status::unimplemented("the fake node has no collections"))
    }

    async fn create_index(
        &self,
        _: Request<pb::CreateIndexRequest>,
    ) -> Result<Response<pb::CreateIndexResponse>, Status> {
        Err(Status::unimplemented("the fake node has no indexes"))
    }

    async fn drop_index(
        &self,
        _: Request<pb::DropIndexRequest>,
    ) -> Result<Response<pb::DropIndexResponse>, Status> {
        Err(Status::unimplemented("the fake node has no indexes"))
    }

    async fn list_indexes(
        &self,
        _: Request<pb::ListIndexesRequest>,
    ) -> Result<Response<pb::ListIndexesResponse>, Status> {
        Err(Status::unimplemented("the fake node has no indexes"))
    }

    async fn query_shard(
        &self,
        _: Request<pb::QueryShardRequest>,
    ) -> Result<Response<pb::QueryShardResponse>, Status> {
        Err(Status::unimplemented("the fake node has no queries"))
    }

    async fn shard_indexes(
        &self,
        _: Request<pb::ShardIndexesRequest>,
    ) -> Result<Response<pb::ShardIndexesResponse>, Status> {
        Err(Status::unimplemented("the fake node has no indexes"))
    }

    async fn multi(
        &self,
        request: Request<pb::MultiRequest>,
    ) -> Result<Response<pb::MultiResponse>, Status> {
        {
            let mut s = self.state();
            if s.no_multi {
                return Err(Status::unimplemented("unknown method Multi"));
            }
            s.multis += 1;
        }
        let mut results = Vec::new();
        for call in request.into_inner().calls {
            let result = match call.call {
                Some(pb::call::Call::Get(g)) => self
                    .get(Request::new(g))
                    .await
                    .map(|r| pb::call_result::Result::Get(r.into_inner())),
                Some(pb::call::Call::Batch(b)) => self
                    .single_write(b)
                    .await
                    .map(pb::call_result::Result::Batch),
                None => Err(Status::invalid_argument("empty call")),
            };
            let result = result.unwrap_or_else(|s| {
                pb::call_result::Result::Error(pb::CallError {
                    code: s.code() as i32,
                    message: s.message().to_string(),
                    reason: s
                        .metadata()
                        .get(flotilla_proto::REASON_KEY)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string(),
                })
            });
            results.push(pb::CallResult {
                result: Some(result),
            });
        }
        Ok(Response::new(pb::MultiResponse { results }))
    }

    type WatchStream = tokio_stream::Iter<std::vec::IntoIter<Result<pb::WatchEvent, Status>>>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.enter("watch").await?;
        let r = request.into_inner();
        self.database(&r.database)?;
        let events: Vec<Result<pb::WatchEvent, Status>> = self
            .state()
            .watch_events
            .iter()
            .filter(|e| {
                let doc = e.document.clone().unwrap_or_default();
                (r.collection.is_empty() || doc.collection == r.collection)
                    && doc.revision >= r.from_revision
            })
            .cloned()
            .map(Ok)
            .collect();
        Ok(Response::new(tokio_stream::iter(events)))
    }
}
