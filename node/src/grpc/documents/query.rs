//! Queries: the node that receives one parses it, plans it (`flotilla_query::plan`), asks the
//! shards the plan names in parallel under one deadline (each served by its leader, or by any
//! replica for a stale read, through the same routing as a get), and merges their pages in
//! order. A shard that fails or misses the deadline fails the query: never a partial answer.

use std::collections::BTreeMap;
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
use crate::store::{PageError, ReadAt};
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

/// What a paged query keeps across its pages, per shard (see `crate::store::held`): the number
/// of the read a shard holds while it has more than a page, then, once a shard answered its
/// last matches, those matches (the merge may take them over several pages), so that every
/// page of a shard comes from one revision and a shard is not asked again once done.
#[derive(Debug, Default)]
pub(super) struct HeldReads {
    shards: BTreeMap<u32, Held>,
}

#[derive(Debug)]
enum Held {
    Read { id: u64 },
    Done { revision: u64, rest: ShardPage },
}

impl HeldReads {
    /// How the next page asks `shard`: `(hold, held_read)`, or `None` when it is done.
    fn ask(&self, shard: u32) -> Option<(bool, u64)> {
        match self.shards.get(&shard) {
            None => Some((true, 0)),
            Some(Held::Read { id }) => Some((false, *id)),
            Some(Held::Done { .. }) => None,
        }
    }

    /// The rest of a done shard after `after`, and the revision it was read at.
    fn rest(&self, query: &Query, shard: u32, after: Option<&SortKey>) -> Option<(u64, ShardPage)> {
        let Some(Held::Done { revision, rest }) = self.shards.get(&shard) else {
            return None;
        };
        let mut page = rest.clone();
        page.examined = 0;
        page.hits.retain(|h| {
            after.is_none_or(|a| query.compare(&h.key, a) == std::cmp::Ordering::Greater)
        });
        Some((*revision, page))
    }

    fn record(&mut self, shard: u32, answer: &QueryShardResponse, page: &ShardPage) {
        let held = match (page.complete, answer.held_read) {
            (true, _) => Held::Done {
                revision: answer.revision,
                rest: page.clone(),
            },
            (false, 0) => return,
            (false, id) => Held::Read { id },
        };
        self.shards.insert(shard, held);
    }
}

impl DocumentsService {
    /// Serves a query received from a client (or forwarded for an unknown database).
    pub(super) async fn query_at(
        &self,
        msg: QueryRequest,
        hops: u32,
    ) -> Result<QueryResponse, Status> {
        self.query_held(msg, hops, None).await
    }

    /// Serves one page of a query; with `held`, each shard's read is held for the next pages
    /// (the first page) or taken from the read an earlier page held, so that every page of a
    /// shard is read at one revision.
    pub(super) async fn query_held(
        &self,
        msg: QueryRequest,
        hops: u32,
        held: Option<&mut HeldReads>,
    ) -> Result<QueryResponse, Status> {
        validate::database(&msg.database)?;
        validate::collection(&msg.collection)?;
        let query = parse_query(&msg)?;
        let Some(db) = self.host.meta_state().databases.get(&msg.database).cloned() else {
            if held.is_some() {
                // Held reads are kept by the node that plans the query: it must know the
                // database.
                return Err(NodeError::database_not_found(&msg.database).into());
            }
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
        let mut held = held;
        let asked: Vec<(u32, bool, u64)> = plan
            .shards
            .iter()
            .filter_map(|&shard| match held.as_deref() {
                None => Some((shard, false, 0)),
                Some(h) => h.ask(shard).map(|(hold, id)| (shard, hold, id)),
            })
            .collect();
        let asks = asked.iter().map(|&(shard, hold, held_read)| {
            let req = QueryShardRequest {
                query: Some(msg.clone()),
                shard,
                access_json: access_json.clone(),
                after_json: after_json.clone(),
                max_items: limits.max_items as u32,
                max_bytes: limits.max_bytes as u64,
                hold,
                held_read,
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
        if let Some(h) = held.as_deref() {
            for &shard in &plan.shards {
                if let Some((revision, rest)) =
                    h.rest(&query, shard, cursor.as_ref().map(|c| &c.after))
                {
                    shards.push(ShardRevision { shard, revision });
                    pages.push(rest);
                }
            }
        }
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
            if let Some(held) = held.as_deref_mut() {
                held.record(shard, &answer, &page);
            }
            explained.push(ShardExplain {
                shard,
                index: answer.index.clone(),
                examined: answer.examined,
                returned: page.hits.len() as u64,
            });
            pages.push(page);
        }
        shards.sort_by_key(|s| s.shard);
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
                revision: h.revision,
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
                        let at = match msg.held_read {
                            0 => ReadAt::Now { hold: msg.hold },
                            id => ReadAt::Held(id),
                        };
                        // A held read is served where it is held; elsewhere the barrier sends
                        // the page to the leader (where a linearizable first page was read).
                        let held_here = msg.held_read != 0
                            && host
                                .storage
                                .held_reads()
                                .get(route.gid, msg.held_read)
                                .is_some();
                        if !held_here {
                            host.read_barrier(&group, consistency(q.consistency))
                                .await?;
                            host.session_floor(&group, route.shard, &q.at_least).await?;
                        }
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
                                at,
                            )
                        })
                        .await
                        .map_err(|e| NodeError::Internal(e.to_string()))?
                        .map_err(page_error)?;
                        let hits = answer
                            .page
                            .hits
                            .iter()
                            .map(|h| {
                                Ok(ShardHit {
                                    id: h.key.id.clone(),
                                    version: h.version,
                                    revision: h.revision,
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
                            revision: answer.revision,
                            index: answer.index.unwrap_or_default(),
                            held_read: answer.held.unwrap_or(0),
                        })
                    })
                },
                |mut c, r| Box::pin(async move { c.query_shard(r).await }),
            )
            .await?;
        Ok(resp.into_inner())
    }
}

fn page_error(e: PageError) -> NodeError {
    match e {
        PageError::Io(e) => e.into(),
        PageError::HeldReadGone => NodeError::refused(
            Refusal::Aborted,
            ErrorReason::HeldReadGone,
            format!("{e}: start again"),
        ),
        PageError::TooManyHeld(e) => NodeError::ResourceExhausted(e.to_string()),
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
                revision: h.revision,
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
