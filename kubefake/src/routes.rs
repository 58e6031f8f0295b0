//! The HTTP side of the fake API server: Kubernetes REST paths to store operations.
//!
//! `/api/v1/...` (core group) and `/apis/{group}/{version}/...`, namespaced
//! (`namespaces/{ns}/{plural}[/{name}[/status]]`) or not; GET (object, list, and
//! `?watch=true` streaming one JSON event per line), POST, PUT, PATCH (by content type) and
//! DELETE. Errors are `Status` objects with the code a real server would give.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::resources::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{ApiError, ApiResult, DeleteOptions, Filter, PatchKind, Store, WatchRecord};

/// Longest a watch lasts when the client names no timeout.
const DEFAULT_WATCH_SECONDS: u64 = 300;

/// What a path names.
struct Target {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error_response(error: &ApiError) -> Response {
    let code = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &error.status())
}

fn parse_target(store: &Store, path: &str) -> ApiResult<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("no route for {path}"),
            ));
        }
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, more @ ..] => (Some((*ns).to_owned()), {
            let mut v = vec![*plural];
            v.extend_from_slice(more);
            v
        }),
        other => (None, other.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some((*name).to_owned()), None),
        [plural, name, sub] => (*plural, Some((*name).to_owned()), Some(*sub)),
        _ => {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("no route for {path}"),
            ));
        }
    };
    let rt = store.resolve(group, version, plural).ok_or_else(|| {
        ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    })?;
    let status = match sub {
        None => false,
        Some("status") if rt.status_subresource => true,
        Some(other) => {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("{} has no subresource {other}", rt.plural),
            ));
        }
    };
    Ok(Target {
        rt,
        namespace,
        name,
        status,
    })
}

fn filter(target: &Target, query: &HashMap<String, String>) -> ApiResult<Filter> {
    let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::new(400, "BadRequest", e))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::new(400, "BadRequest", e))?;
    Ok(Filter {
        namespace: target.namespace.clone(),
        labels,
        fields,
    })
}

fn parse_body(body: &Bytes) -> ApiResult<Value> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, "BadRequest", format!("invalid JSON body: {e}")))
}

/// Answers one request.
pub async fn handle(
    State(store): State<Store>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match answer(&store, &method, uri.path(), &query, &headers, &body) {
        Ok(Answer::Object(code, object)) => json_response(code, &object),
        Ok(Answer::Watch(watched, from, timeout)) => {
            let (target, filter) = *watched;
            watch(&store, target, filter, from, timeout)
        }
        Err(error) => error_response(&error),
    }
}

enum Answer {
    Object(StatusCode, Value),
    Watch(Box<(Target, Filter)>, Option<u64>, Duration),
}

fn answer(
    store: &Store,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Answer> {
    if path == "/version" {
        return Ok(Answer::Object(
            StatusCode::OK,
            json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-flotilla-fake"}),
        ));
    }
    store.hooks().record(method, path);
    let target = parse_target(store, path)?;
    store.hooks().check(method, path, &target.rt)?;
    let ns = target.namespace.as_deref();
    let ok = |object| Ok(Answer::Object(StatusCode::OK, object));
    match (method, target.name.clone()) {
        (&Method::GET, None) => {
            let filter = filter(&target, query)?;
            if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
                let from = match query.get("resourceVersion").map(String::as_str) {
                    None | Some("" | "0") => None,
                    Some(rv) => Some(rv.parse().map_err(|_| {
                        ApiError::new(400, "BadRequest", format!("invalid resourceVersion {rv:?}"))
                    })?),
                };
                let timeout = query
                    .get("timeoutSeconds")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(DEFAULT_WATCH_SECONDS);
                return Ok(Answer::Watch(
                    Box::new((target, filter)),
                    from,
                    Duration::from_secs(timeout),
                ));
            }
            let (items, revision) = store.list(&target.rt, &filter);
            ok(json!({
                "apiVersion": target.rt.api_version(),
                "kind": format!("{}List", target.rt.kind),
                "metadata": {"resourceVersion": revision.to_string()},
                "items": items,
            }))
        }
        (&Method::GET, Some(name)) => ok(store.get(&target.rt, ns, &name)?),
        (&Method::POST, None) => Ok(Answer::Object(
            StatusCode::CREATED,
            store.create(&target.rt, ns, parse_body(body)?)?,
        )),
        (&Method::PUT, Some(name)) => {
            ok(store.replace(&target.rt, ns, &name, parse_body(body)?, target.status)?)
        }
        (&Method::PATCH, Some(name)) => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let kind = match content_type.split(';').next().unwrap_or_default().trim() {
                "application/apply-patch+yaml" => PatchKind::Apply,
                "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                    PatchKind::Merge
                }
                "application/json-patch+json" => PatchKind::Json,
                other => {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        format!("unsupported patch type {other:?}"),
                    ));
                }
            };
            let manager = query.get("fieldManager").map_or("unknown", String::as_str);
            // Apply patches are YAML, of which JSON is a subset; clients send JSON.
            let patch = parse_body(body)?;
            ok(store.patch(&target.rt, ns, &name, target.status, kind, &patch, manager)?)
        }
        (&Method::DELETE, Some(name)) => {
            let options = parse_body(body)?;
            let grace = options["gracePeriodSeconds"]
                .as_i64()
                .or_else(|| query.get("gracePeriodSeconds").and_then(|g| g.parse().ok()));
            let policy = options["propagationPolicy"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| query.get("propagationPolicy").cloned());
            let options = DeleteOptions {
                grace_period_seconds: grace,
                orphan: policy.as_deref() == Some("Orphan"),
            };
            ok(store.delete(&target.rt, ns, &name, options)?)
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on {path}"),
        )),
    }
}

fn event_line(record: &WatchRecord) -> Bytes {
    let mut line = json!({"type": record.event, "object": record.object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// Streams the changes as JSON lines until the timeout, or ends the stream with a
/// `410 Gone` error event when the watcher fell too far behind.
fn watch(
    store: &Store,
    target: Target,
    filter: Filter,
    from: Option<u64>,
    timeout: Duration,
) -> Response {
    let start = match store.watch(&target.rt, &filter, from) {
        Ok(start) => start,
        Err(error) => {
            // A real server answers an expired resourceVersion with an ERROR event.
            let line = format!("{}\n", json!({"type": "ERROR", "object": error.status()}));
            return Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(line))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
        }
    };
    let initial = futures::stream::iter(
        start
            .initial
            .iter()
            .map(|r| Ok::<_, Infallible>(event_line(r)))
            .collect::<Vec<_>>(),
    );
    let rt = target.rt;
    let live = futures::stream::unfold(Some(start.live), move |receiver| {
        let rt = rt.clone();
        let filter = filter.clone();
        async move {
            let mut receiver = receiver?;
            loop {
                match receiver.recv().await {
                    Ok(record) if filter.wants(&record, &rt) => {
                        return Some((Ok::<_, Infallible>(event_line(&record)), Some(receiver)));
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => {
                        let gone = ApiError::new(410, "Expired", "the watch fell behind");
                        let line =
                            format!("{}\n", json!({"type": "ERROR", "object": gone.status()}));
                        return Some((Ok(Bytes::from(line)), None));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    });
    let stream = initial.chain(live).take_until(tokio::time::sleep(timeout));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
