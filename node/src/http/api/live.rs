//! Live queries as server-sent events: `initial` events (the documents of the result, no id),
//! a `current` event (the result is complete; its id is where to resume), then `enter`,
//! `change` and `leave` events as writes move documents into, within and out of the result,
//! each with the [`Cursor`] to resume from as its id (`Last-Event-ID`: only the changes after
//! it, no initial result again). A live query that fails after it started (a revision it
//! needs was compacted, the node stops) ends with an `error` event.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use flotilla_proto::v1::{self, ErrorReason, LiveEventType};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tonic::Code;
use utoipa::{IntoParams, ToSchema};

use super::cursor::{Cursor, Received};
use super::error::{ApiError, ErrorBody};
use super::extract::{Params, QueryParams};
use super::gateway::request;
use super::query::ShardRevision;
use super::types::{Consistency, Document};
use super::watch::sse_events;
use super::{Api, TAG_DOCUMENTS, session};

/// How often an idle live query sends a comment, so that proxies keep the connection open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LiveQueryParams {
    /// The predicate in the JSON selector form (`{"/status":"open"}`), URL-encoded.
    pub selector: Option<String>,
    /// The predicate in the short text form (`/status = "open"`), instead of `selector`.
    #[serde(rename = "where")]
    #[param(rename = "where")]
    pub where_text: Option<String>,
    /// How the initial result is read (default `linearizable`).
    pub consistency: Option<Consistency>,
    /// Documents per page of the initial result (default 1000): a larger result comes in as
    /// many pages as it needs, each shard's part read at the revision the `current` event
    /// names.
    pub page_size: Option<u32>,
    /// A session's floor for the initial result, `shard:revision,…` (as for reads).
    pub at_least: Option<String>,
}

/// How a change moved a document with respect to the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LiveChangeKind {
    Enter,
    Change,
    Leave,
}

/// The `data` of an `enter`, `change` or `leave` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LiveEvent {
    #[serde(rename = "type")]
    pub kind: LiveChangeKind,
    /// The document after the change (for a delete: its collection, id, revision and shard).
    pub document: Document,
}

/// The `data` of the `current` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LiveCurrent {
    /// The revision each shard's part of the initial result was read at.
    pub shards: Vec<ShardRevision>,
}

/// Follows the documents of a collection matching a predicate as server-sent events.
#[utoipa::path(
    get,
    path = "/v1/databases/{db}/collections/{coll}/live",
    tag = TAG_DOCUMENTS,
    params(
        ("db" = String, Path, description = "Database"),
        ("coll" = String, Path, description = "Collection"),
        LiveQueryParams,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event (the id of the last event received): the changes after it, without the initial result"),
    ),
    responses(
        (status = 200, description = "Server-sent events: `initial` (data: a Document), `current` (data: LiveCurrent), `enter` / `change` / `leave` (data: LiveEvent), and `error` (data: an ErrorBody) before the stream ends on a failure", content_type = "text/event-stream", body = LiveEvent),
        (status = 400, description = "Malformed predicate (reason ERROR_REASON_INVALID_QUERY) or Last-Event-ID", body = ErrorBody),
        (status = 404, description = "No such database", body = ErrorBody),
        (status = 429, description = "The node's watch limit is reached (reason ERROR_REASON_LIMIT_EXCEEDED)", body = ErrorBody),
        (status = 503, description = "A shard cannot serve now", body = ErrorBody),
    )
)]
pub async fn live(
    State(api): State<Api>,
    Params((db, coll)): Params<(String, String)>,
    QueryParams(params): QueryParams<LiveQueryParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let selector = super::query::selector_text(params.selector, params.where_text)?;
    let resumed = match headers.get("last-event-id") {
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| ApiError::invalid("Last-Event-ID is not text"))?;
            Some(Cursor::parse(text).map_err(|e| ApiError::invalid(e.to_string()))?)
        }
        None => None,
    };
    let after = resumed
        .as_ref()
        .map(|cursor| {
            let (after, _) = cursor.resume_after();
            after
                .into_iter()
                .map(|(shard, revision)| v1::ShardRevision { shard, revision })
                .collect()
        })
        .unwrap_or_default();
    let msg = v1::LiveQueryRequest {
        database: db,
        collection: coll,
        selector,
        after,
        consistency: v1::Consistency::from(params.consistency.unwrap_or_default()) as i32,
        page_size: params.page_size.unwrap_or(0),
        at_least: session::at_least(params.at_least.as_deref())?,
    };
    let changes = api
        .gateway
        .documents()
        .live_query(request(msg, &headers))
        .await?
        .into_inner();
    Ok(Sse::new(events(changes, resumed.unwrap_or_default()))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// The events of a live query: each with its cursor as id once the result is current; after
/// an error, one `error` event and the end.
fn events(
    changes: impl Stream<Item = Result<v1::LiveQueryEvent, tonic::Status>> + Send + 'static,
    cursor: Cursor,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    sse_events(changes, cursor, event)
}

fn json<T: Serialize>(value: &T) -> Result<String, ApiError> {
    serde_json::to_string(value).map_err(|e| ApiError::invalid(e.to_string()))
}

/// The server-sent event of one live query event, or none when the cursor had seen it.
fn event(
    change: v1::LiveQueryEvent,
    cursor: &mut Cursor,
    received: &mut Received,
) -> Result<Option<Event>, ApiError> {
    let kind = LiveEventType::try_from(change.r#type).unwrap_or(LiveEventType::Unspecified);
    let kind = match kind {
        LiveEventType::Initial => {
            let document = Document::from_proto(change.document.unwrap_or_default())?;
            return Ok(Some(
                Event::default().event("initial").data(json(&document)?),
            ));
        }
        LiveEventType::Current => {
            *cursor = Cursor::after(change.shards.iter().map(|s| (s.shard, s.revision)));
            let shards = change
                .shards
                .into_iter()
                .map(|s| ShardRevision {
                    shard: s.shard,
                    revision: s.revision,
                })
                .collect();
            return Ok(Some(
                Event::default()
                    .event("current")
                    .id(cursor.to_string())
                    .data(json(&LiveCurrent { shards })?),
            ));
        }
        LiveEventType::Enter => LiveChangeKind::Enter,
        LiveEventType::Change => LiveChangeKind::Change,
        LiveEventType::Leave => LiveChangeKind::Leave,
        LiveEventType::Unspecified => {
            return Err(ApiError::new(
                Code::Internal,
                ErrorReason::Unspecified,
                format!("a live query event of unknown type {}", change.r#type),
            ));
        }
    };
    let document = Document::from_proto(change.document.unwrap_or_default())?;
    if !cursor.advance(received, document.shard, document.revision) {
        return Ok(None);
    }
    let name = match kind {
        LiveChangeKind::Enter => "enter",
        LiveChangeKind::Change => "change",
        LiveChangeKind::Leave => "leave",
    };
    Ok(Some(
        Event::default()
            .event(name)
            .id(cursor.to_string())
            .data(json(&LiveEvent { kind, document })?),
    ))
}
