//! A database's change feed as server-sent events (`text/event-stream`): one event per change,
//! named `put` or `delete`, whose `id` is the [`Cursor`] a client resumes from with
//! `Last-Event-ID` (browsers' `EventSource` does so by itself). A watch that fails after it
//! started (its revision was compacted, the node stops) ends with an `error` event carrying
//! the JSON error body.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use flotilla_proto::v1;
use futures::{Stream, StreamExt};

use super::cursor::{Cursor, Received};
use super::error::{ApiError, ErrorBody};
use super::extract::{Params, QueryParams};
use super::gateway::request;
use super::types::{Document, EventType, WatchEvent, WatchQuery};
use super::{Api, TAG_DOCUMENTS};

/// How often an idle watch sends a comment, so that proxies keep the connection open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Follows the changes of a database (or one collection) as server-sent events.
#[utoipa::path(
    get,
    path = "/v1/databases/{db}/watch",
    tag = TAG_DOCUMENTS,
    params(
        ("db" = String, Path, description = "Database"),
        WatchQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event (the id of the last event received)"),
    ),
    responses(
        (status = 200, description = "Server-sent events: `put` and `delete` events whose data is a WatchEvent, and an `error` event whose data is an ErrorBody before the stream ends on a failure", content_type = "text/event-stream", body = WatchEvent),
        (status = 400, description = "Malformed request or Last-Event-ID", body = ErrorBody),
        (status = 404, description = "No such database", body = ErrorBody),
        (status = 503, description = "A shard cannot serve now", body = ErrorBody),
    )
)]
pub async fn watch(
    State(api): State<Api>,
    Params(db): Params<String>,
    QueryParams(query): QueryParams<WatchQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let resumed = match headers.get("last-event-id") {
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| ApiError::invalid("Last-Event-ID is not text"))?;
            Cursor::parse(text).map_err(|e| ApiError::invalid(e.to_string()))?
        }
        None => Cursor::default(),
    };
    let cursor = if resumed != Cursor::default() {
        resumed
    } else {
        // A position for every shard from the start (the revision before `from_revision`,
        // else each shard's commit index now: only new changes), so that a resumed watch
        // reads again only from where its slowest shard stood.
        let status = api
            .gateway
            .admin()
            .database_status(request(
                v1::DatabaseStatusRequest { name: db.clone() },
                &headers,
            ))
            .await?
            .into_inner();
        let from = query.from_revision.filter(|r| *r > 0);
        Cursor::after(status.shards.iter().map(|s| {
            let behind = from.map_or(s.commit_index, |from| from - 1);
            (s.shard, behind)
        }))
    };
    let (after, from_revision) = cursor.resume_after();
    let msg = v1::WatchRequest {
        database: db,
        collection: query.collection.unwrap_or_default(),
        from_revision,
        with_prev: false,
        after: after
            .into_iter()
            .map(|(shard, revision)| v1::ShardRevision { shard, revision })
            .collect(),
    };
    let changes = api
        .gateway
        .documents()
        .watch(request(msg, &headers))
        .await?
        .into_inner();
    Ok(Sse::new(events(changes, cursor))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// The events of a watch: the changes the cursor has not seen, each with its cursor as id;
/// after an error, one `error` event and the end.
fn events(
    changes: impl Stream<Item = Result<v1::WatchEvent, tonic::Status>> + Send + 'static,
    cursor: Cursor,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    sse_events(changes, cursor, event)
}

/// Server-sent events of a stream of gRPC messages, each made by `event` (which may drop one
/// the cursor had seen) with the cursor and what the stream received so far; after an error,
/// one `error` event and the end.
pub(super) fn sse_events<M, F>(
    messages: impl Stream<Item = Result<M, tonic::Status>> + Send + 'static,
    cursor: Cursor,
    event: F,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static
where
    M: Send + 'static,
    F: Fn(M, &mut Cursor, &mut Received) -> Result<Option<Event>, ApiError> + Send + 'static,
{
    let state = (cursor, Received::new(), false);
    messages
        .scan(state, move |(cursor, received, failed), message| {
            let out = if *failed {
                None
            } else {
                match message
                    .map_err(ApiError::from)
                    .and_then(|m| event(m, cursor, received))
                {
                    Ok(out) => Some(out),
                    Err(e) => {
                        *failed = true;
                        Some(Some(error_event(&e.body)))
                    }
                }
            };
            futures::future::ready(out)
        })
        .filter_map(|out| futures::future::ready(out.map(Ok)))
}

/// The event of one change, or none when the cursor had seen it.
fn event(
    change: v1::WatchEvent,
    cursor: &mut Cursor,
    received: &mut Received,
) -> Result<Option<Event>, ApiError> {
    let kind = match v1::EventType::try_from(change.r#type) {
        Ok(v1::EventType::Delete) => EventType::Delete,
        _ => EventType::Put,
    };
    let document = Document::from_proto(change.document.unwrap_or_default())?;
    if !cursor.advance(received, document.shard, document.revision) {
        return Ok(None);
    }
    let name = match kind {
        EventType::Put => "put",
        EventType::Delete => "delete",
    };
    let data = serde_json::to_string(&WatchEvent { kind, document })
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok(Some(
        Event::default()
            .event(name)
            .id(cursor.to_string())
            .data(data),
    ))
}

fn error_event(body: &ErrorBody) -> Event {
    let data = serde_json::to_string(body).unwrap_or_else(|_| "{}".to_owned());
    Event::default().event("error").data(data)
}
