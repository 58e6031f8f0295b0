//! Queries over HTTP: one page of the documents of a collection that match a predicate, in
//! order, projected, or their count; with `explain`, which index and shards served it. One
//! call of the `Documents` service's `Query`.

use axum::extract::State;
use axum::http::HeaderMap;
use flotilla_proto::v1::{self, ErrorReason};
use serde::{Deserialize, Serialize};
use tonic::Code;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Params};
use super::gateway::request;
use super::types::{Consistency, Document};
use super::{Api, TAG_DOCUMENTS};

/// One ordering of a query's results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderBy {
    /// A JSON path such as `/createdAt`.
    pub path: String,
    #[serde(default)]
    pub descending: bool,
}

/// A query of one collection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    /// The predicate in the JSON selector form (MongoDB / Mango style), keyed by JSON path:
    /// `{"/status": "open", "/total": {"$gt": 1000}}`, with `$eq $ne $lt $lte $gt $gte $in
    /// $exists $prefix` and `$and $or $not`. Every document matches when neither this nor
    /// `where` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<serde_json::Value>,
    /// The predicate in the short text form instead: `/total > 1000 and /status = "open"`.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub where_text: Option<String>,
    /// Results are ordered by these paths, then by document id.
    #[serde(default)]
    pub order_by: Vec<OrderBy>,
    /// Most results over all pages (no limit when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Paths kept in each result (the whole document when empty).
    #[serde(default)]
    pub projection: Vec<String>,
    /// Answer the number of matches instead of the documents.
    #[serde(default)]
    pub count: bool,
    /// Say which index and shards served the query.
    #[serde(default)]
    pub explain: bool,
    /// Most results of this page (default 100, at most 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10000)]
    pub page_size: Option<u32>,
    /// Most bytes of documents in this page (default 4 MiB); a page holds at least one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub max_page_bytes: Option<u64>,
    /// The `next_page_token` of the previous page of the same query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_token: Option<String>,
    /// How the shards are read (default `linearizable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Consistency>,
    /// Deadline of the whole query in milliseconds (the node's request timeout when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
    /// A session's floor: each shard is read from a replica that applied at least the
    /// revision named for it (the highest the client saw of it; see the `at_least` parameter
    /// of reads). A replica behind answers 503, reason `ERROR_REASON_REPLICA_BEHIND`.
    #[serde(default)]
    pub at_least: Vec<ShardRevision>,
}

impl QueryBody {
    /// The gRPC request of this query; the text form becomes the selector form here, so that a
    /// malformed one is refused before any shard is asked.
    pub fn into_proto(
        self,
        database: String,
        collection: String,
    ) -> Result<v1::QueryRequest, ApiError> {
        let selector = selector_text(self.selector.map(|s| s.to_string()), self.where_text)?;
        Ok(v1::QueryRequest {
            database,
            collection,
            selector,
            order_by: self
                .order_by
                .into_iter()
                .map(|o| v1::OrderBy {
                    path: o.path,
                    descending: o.descending,
                })
                .collect(),
            limit: self.limit.unwrap_or(0),
            projection: self.projection,
            count: self.count,
            explain: self.explain,
            page_size: self.page_size.unwrap_or(0),
            max_page_bytes: self.max_page_bytes.unwrap_or(0),
            page_token: self.page_token.unwrap_or_default(),
            consistency: v1::Consistency::from(self.consistency.unwrap_or_default()) as i32,
            timeout_ms: self.timeout_ms.unwrap_or(0),
            at_least: self
                .at_least
                .into_iter()
                .map(|a| v1::ShardRevision {
                    shard: a.shard,
                    revision: a.revision,
                })
                .collect(),
        })
    }
}

fn query_error(message: impl Into<String>) -> ApiError {
    ApiError::new(Code::InvalidArgument, ErrorReason::InvalidQuery, message)
}

/// The selector (JSON text) of a predicate given as a selector or in the text form (`where`;
/// parsed here, so that a malformed one is refused before any shard is asked); empty for
/// every document.
pub fn selector_text(
    selector: Option<String>,
    where_text: Option<String>,
) -> Result<String, ApiError> {
    match (selector, where_text) {
        (Some(_), Some(_)) => Err(query_error("give either selector or where, not both")),
        (Some(selector), None) => Ok(selector),
        (None, Some(text)) => Ok(flotilla_query::parse_text(&text)
            .map_err(|e| query_error(format!("where: {e}")))?
            .to_selector()
            .to_string()),
        (None, None) => Ok(String::new()),
    }
}

/// The revision (applied log position) a shard answered at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ShardRevision {
    pub shard: u32,
    pub revision: u64,
}

/// How one shard served a query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ShardExplain {
    pub shard: u32,
    /// The index the shard read (`null` for a scan of the collection).
    pub index: Option<String>,
    /// Documents the shard read.
    pub examined: u64,
    /// Documents it answered.
    pub returned: u64,
}

/// How a query was served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Explain {
    /// The index the planner chose (`null` for a scan of the collection).
    pub index: Option<String>,
    /// Key ranges of the index read.
    pub ranges: u32,
    /// True when the predicate pinned the shard key, so that one shard was asked.
    pub pinned: bool,
    pub shards: Vec<ShardExplain>,
    /// Documents read over every shard.
    pub examined: u64,
}

fn named(index: String) -> Option<String> {
    (!index.is_empty()).then_some(index)
}

impl From<v1::Explain> for Explain {
    fn from(e: v1::Explain) -> Explain {
        Explain {
            index: named(e.index),
            ranges: e.ranges,
            pinned: e.pinned,
            shards: e
                .shards
                .into_iter()
                .map(|s| ShardExplain {
                    shard: s.shard,
                    index: named(s.index),
                    examined: s.examined,
                    returned: s.returned,
                })
                .collect(),
            examined: e.examined,
        }
    }
}

/// One page of a query's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueryResult {
    /// The matching documents of this page, in order (projected when asked), each with its
    /// version and the revision of the write that produced it; empty for a count.
    pub documents: Vec<Document>,
    /// Pass as `page_token` with the same query for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
    /// The number of matches, when `count` was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// The revision each shard answered at.
    pub shards: Vec<ShardRevision>,
    /// How the query was served, when `explain` was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explain: Option<Explain>,
}

/// Queries a collection: the documents matching a predicate, in order, one page at a time.
#[utoipa::path(
    post,
    path = "/v1/databases/{db}/collections/{coll}/query",
    tag = TAG_DOCUMENTS,
    params(
        ("db" = String, Path, description = "Database"),
        ("coll" = String, Path, description = "Collection"),
    ),
    request_body = QueryBody,
    responses(
        (status = 200, description = "One page of results, with the revision each shard answered at", body = QueryResult),
        (status = 400, description = "Malformed query: the message names the position and the reason (reason ERROR_REASON_INVALID_QUERY)", body = ErrorBody),
        (status = 404, description = "No such database", body = ErrorBody),
        (status = 429, description = "The query is over a size limit", body = ErrorBody),
        (status = 503, description = "A shard cannot answer now; the query fails rather than answer part of the results", body = ErrorBody),
        (status = 504, description = "The query's deadline passed", body = ErrorBody),
    )
)]
pub async fn query(
    State(api): State<Api>,
    Params((db, coll)): Params<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<QueryBody>,
) -> Result<axum::Json<QueryResult>, ApiError> {
    let count = body.count;
    let msg = body.into_proto(db, coll)?;
    let answer = api
        .gateway
        .documents()
        .query(request(msg, &headers))
        .await?
        .into_inner();
    Ok(axum::Json(QueryResult {
        documents: answer
            .documents
            .into_iter()
            .map(Document::from_proto)
            .collect::<Result<_, _>>()?,
        next_page_token: named(answer.next_page_token),
        count: count.then_some(answer.count),
        shards: answer
            .shards
            .into_iter()
            .map(|s| ShardRevision {
                shard: s.shard,
                revision: s.revision,
            })
            .collect(),
        explain: answer.explain.map(Explain::from),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_form_becomes_the_selector_form_and_both_at_once_are_refused() {
        let body = QueryBody {
            where_text: Some(r#"/total > 1000 and /status = "open""#.to_owned()),
            ..QueryBody::default()
        };
        let msg = body.into_proto("db".into(), "orders".into());
        let selector: serde_json::Value = match msg {
            Ok(msg) => serde_json::from_str(&msg.selector).unwrap_or_default(),
            Err(e) => panic!("{}", e.body.message),
        };
        let parsed = flotilla_query::parse_selector(&selector).map(|p| p.to_selector());
        assert_eq!(parsed.ok(), Some(selector));

        let both = QueryBody {
            selector: Some(serde_json::json!({"/a": 1})),
            where_text: Some("/a = 1".to_owned()),
            ..QueryBody::default()
        };
        let error = both.into_proto("db".into(), "c".into()).err();
        assert_eq!(
            error.map(|e| (e.status.as_u16(), e.body.reason)),
            Some((400, Some("ERROR_REASON_INVALID_QUERY".to_owned())))
        );
    }

    #[test]
    fn a_malformed_text_form_is_an_invalid_query_naming_where() {
        let body = QueryBody {
            where_text: Some("/total >> 3".to_owned()),
            ..QueryBody::default()
        };
        match body.into_proto("db".into(), "c".into()) {
            Ok(msg) => panic!("accepted as {:?}", msg.selector),
            Err(e) => {
                assert_eq!(e.body.reason.as_deref(), Some("ERROR_REASON_INVALID_QUERY"));
                assert!(e.body.message.starts_with("where: "), "{}", e.body.message);
            }
        }
    }
}
