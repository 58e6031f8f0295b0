//! Queries: the node that receives one parses it, plans it (`flotilla_query::plan`), asks the
//! shards the plan names in parallel under one deadline (each served by its leader, or by any
//! replica for a stale read, through the same routing as a get), and merges their pages in
//! order. A shard that fails or misses the deadline fails the query: never a partial answer.

use std::time::Duration;

use flotilla_proto::v1::{
    Document, ErrorReason, Explain, QueryRequest, QueryResponse, QueryShardRequest,
    QueryShardResponse, ShardExplain, ShardHit, ShardRevision,
};
use flotilla_proto::with_reason;
use flotilla_query::{
    Access, Cursor, Hit, OrderKey, PageLimits, Path, Query, QueryError, ShardPage, SortKey,
};
use tonic::Status;

use super::{DocumentsService, consistency};
use crate::error::{NodeError, NodeResult, Refusal};
use crate::network::forward::Effect;
use crate::validate;

impl Effect for QueryShardRequest {
    const WRITES: bool = false;
}

impl Effect for QueryRequest {
    const WRITES: bool = false;
}

/// Results of a page when the request names no page size.
pub const DEFAULT_PAGE_SIZE: usize = 100;
pub const MAX_PAGE_SIZE: usize = 10_000;
/// Bytes of documents in a page (query or list) when the request names none, and the most.
pub const DEFAULT_PAGE_BYTES: usize = 4 << 20;
pub const MAX_PAGE_BYTES: usize = 32 << 20;
/// Longest selector accepted.
pub const MAX_SELECTOR_BYTES: usize = 64 << 10;

fn invalid(e: QueryError) -> NodeError {
    NodeError::refused(
        Refusal::InvalidArgument,
        ErrorReason::InvalidQuery,
        e.to_string(),
    )
}

fn invalid_path(field: &str, text: &str) -> NodeResult<Path> {
    Path::parse(text).map_err(|e| {
        NodeError::refused(
            Refusal::InvalidArgument,
            ErrorReason::InvalidQuery,
            format!("{field}: malformed path {text:?}: {e}"),
        )
    })
}

/// The query a request asks for.
pub(super) fn parse_query(msg: &QueryRequest) -> NodeResult<Query> {
    if msg.selector.len() > MAX_SELECTOR_BYTES {
        return Err(NodeError::refused(
            Refusal::InvalidArgument,
            ErrorReason::InvalidQuery,
            format!("selector is over {MAX_SELECTOR_BYTES} bytes"),
        ));
    }
    let filter = if msg.selector.trim().is_empty() {
        flotilla_query::Predicate::All
    } else {
        flotilla_query::parse_selector_str(&msg.selector).map_err(invalid)?
    };
    let mut q = Query::new(filter);
    q.order_by = msg
        .order_by
        .iter()
        .map(|o| {
            Ok(OrderKey {
                path: invalid_path("order_by", &o.path)?,
                descending: o.descending,
            })
        })
        .collect::<NodeResult<_>>()?;
    q.limit = (msg.limit > 0).then_some(msg.limit);
    q.projection = msg
        .projection
        .iter()
        .map(|p| invalid_path("projection", p))
        .collect::<NodeResult<_>>()?;
    q.count = msg.count;
    Ok(q)
}

pub(super) fn page_limits(page_size: u32, max_bytes: u64) -> PageLimits {
    PageLimits {
        max_items: match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => (n as usize).min(MAX_PAGE_SIZE),
        },
        max_bytes: match max_bytes {
            0 => DEFAULT_PAGE_BYTES,
            n => (n as usize).min(MAX_PAGE_BYTES),
        },
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> NodeResult<String> {
    serde_json::to_string(v).map_err(|e| NodeError::Internal(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> NodeResult<T> {
    serde_json::from_str(text).map_err(|e| NodeError::InvalidArgument(format!("{what}: {e}")))
}

impl DocumentsService {
    /// Serves a query received from a client (or forwarded for an unknown database).
    pub(super) async fn query_at(
        &self,
        msg: QueryRequest,
        hops: u32,
    ) -> Result<QueryResponse, Status> {
        validate::database(&msg.database)?;
        validate::collection(&msg.collection)?;
        let query = parse_query(&msg)?;
        let Some(db) = self.host.meta_state().databases.get(&msg.database).cloned() else {
            let database = msg.database.clone();
            return Ok(self
                .unknown_database(&database, msg, hops, None, |mut c, r| {
                    Box::pin(async move { c.query(r).await })
                })
                .await?
                .into_inner());
        };
        let cursor = match msg.page_token.as_str() {
            "" => None,
            token => Some(Cursor::from_token(token, &query).map_err(invalid)?),
        };
        let plan = flotilla_query::plan(
            &query.filter,
            &db.index_defs(&msg.collection),
            db.shard_key(&msg.collection).as_ref(),
            db.shards.len() as u32,
        );
        let limits = page_limits(msg.page_size, msg.max_page_bytes);
        let access_json = to_json(&plan.access)?;
        let after_json = match &cursor {
            Some(c) => to_json(&c.after)?,
            None => String::new(),
        };
        let deadline = match msg.timeout_ms {
            0 => self.host.config.request_timeout,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let asks = plan.shards.iter().map(|&shard| {
            let req = QueryShardRequest {
                query: Some(msg.clone()),
                shard,
                access_json: access_json.clone(),
                after_json: after_json.clone(),
                max_items: limits.max_items as u32,
                max_bytes: limits.max_bytes as u64,
            };
            async move { (shard, self.query_shard_at(req, hops).await) }
        });
        let answers = tokio::time::timeout(deadline, futures::future::join_all(asks))
            .await
            .map_err(|_| {
                with_reason(
                    Status::deadline_exceeded(format!(
                        "not every shard answered within {deadline:?}; no partial answer is given"
                    )),
                    ErrorReason::ShardUnavailable,
                )
            })?;
        let mut pages = Vec::with_capacity(answers.len());
        let mut shards = Vec::with_capacity(answers.len());
        let mut explained = Vec::new();
        for (shard, answer) in answers {
            let answer = answer.map_err(|s| {
                let reason = if s.code() == tonic::Code::Unavailable {
                    ErrorReason::ShardUnavailable
                } else {
                    flotilla_proto::reason_of(&s).unwrap_or(ErrorReason::Unspecified)
                };
                with_reason(
                    Status::new(
                        s.code(),
                        format!("shard {shard} could not answer: {}", s.message()),
                    ),
                    reason,
                )
            })?;
            shards.push(ShardRevision {
                shard,
                revision: answer.revision,
            });
            let page = shard_page_of(&answer)?;
            explained.push(ShardExplain {
                shard,
                index: answer.index.clone(),
                examined: answer.examined,
                returned: page.hits.len() as u64,
            });
            pages.push(page);
        }
        let returned = cursor.as_ref().map_or(0, |c| c.returned);
        let merged = flotilla_query::merge(&query, pages, limits, returned);
        let documents = merged
            .hits
            .into_iter()
            .map(|h: Hit| Document {
                collection: msg.collection.clone(),
                id: h.key.id,
                json: h.json,
                version: h.version,
                revision: 0,
                shard: h.key.shard,
            })
            .collect();
        let explain = msg.explain.then(|| Explain {
            index: plan.index_name().unwrap_or_default().to_string(),
            ranges: match &plan.access {
                Access::Scan => 0,
                Access::Index { ranges, .. } => ranges.len() as u32,
            },
            pinned: plan.pinned,
            shards: explained,
            examined: merged.examined,
        });
        Ok(QueryResponse {
            documents,
            next_page_token: merged.next.map(|c| c.to_token()).unwrap_or_default(),
            count: merged.count,
            shards,
            explain,
        })
    }

    /// One shard's page: served here when this node holds a replica that may answer at the
    /// query's consistency, otherwise forwarded to one that does.
    pub(super) async fn query_shard_at(
        &self,
        msg: QueryShardRequest,
        hops: u32,
    ) -> Result<QueryShardResponse, Status> {
        let Some(q) = &msg.query else {
            return Err(Status::invalid_argument(
                "query shard request without a query",
            ));
        };
        let database = q.database.clone();
        let shard = msg.shard as usize;
        let resp = self
            .serve(
                msg,
                hops,
                &database,
                Some(shard),
                |_| Ok(shard),
                |host, group, route, msg: QueryShardRequest| {
                    Box::pin(async move {
                        let q = msg.query.unwrap_or_default();
                        host.read_barrier(&group, consistency(q.consistency))
                            .await?;
                        let query = parse_query(&q)?;
                        let access: Access = from_json("access_json", &msg.access_json)?;
                        let after: Option<SortKey> = match msg.after_json.as_str() {
                            "" => None,
                            text => Some(from_json("after_json", text)?),
                        };
                        let limits = PageLimits {
                            max_items: (msg.max_items as usize).clamp(1, MAX_PAGE_SIZE),
                            max_bytes: (msg.max_bytes as usize).min(MAX_PAGE_BYTES),
                        };
                        let revision = group.sm.state().applied_index();
                        let sm = group.sm.clone();
                        let collection = q.collection.clone();
                        let shard = route.shard as u32;
                        let answer = tokio::task::spawn_blocking(move || {
                            sm.query_page(
                                &collection,
                                &query,
                                &access,
                                shard,
                                after.as_ref(),
                                limits,
                            )
                        })
                        .await
                        .map_err(|e| NodeError::Internal(e.to_string()))??;
                        let hits = answer
                            .page
                            .hits
                            .iter()
                            .map(|h| {
                                Ok(ShardHit {
                                    id: h.key.id.clone(),
                                    version: h.version,
                                    json: h.json.clone(),
                                    sort_json: to_json(&h.key)?,
                                })
                            })
                            .collect::<NodeResult<_>>()?;
                        Ok(QueryShardResponse {
                            hits,
                            complete: answer.page.complete,
                            examined: answer.page.examined,
                            count: answer.page.count,
                            revision,
                            index: answer.index.unwrap_or_default(),
                        })
                    })
                },
                |mut c, r| Box::pin(async move { c.query_shard(r).await }),
            )
            .await?;
        Ok(resp.into_inner())
    }
}

/// A shard's answer as the merge takes it.
fn shard_page_of(answer: &QueryShardResponse) -> Result<ShardPage, Status> {
    let hits = answer
        .hits
        .iter()
        .map(|h| {
            let key: SortKey = serde_json::from_str(&h.sort_json)
                .map_err(|e| Status::internal(format!("malformed shard answer: {e}")))?;
            Ok(Hit {
                key,
                version: h.version,
                json: h.json.clone(),
            })
        })
        .collect::<Result<_, Status>>()?;
    Ok(ShardPage {
        hits,
        complete: answer.complete,
        examined: answer.examined,
        count: answer.count,
    })
}
