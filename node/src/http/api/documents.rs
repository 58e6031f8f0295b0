//! Documents over HTTP: GET / PUT / DELETE of one document (its version is its `ETag`), a
//! listing by id prefix in pages, and atomic batches. Each handler makes one call of the
//! `Documents` service.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flotilla_proto::v1::{self, ErrorReason};
use tonic::Code;

use super::conditions::{etag, not_modified, write_condition};
use super::error::{ApiError, ErrorBody};
use super::extract::{Body, Json, Params, QueryParams};
use super::gateway::request;
use super::types::{
    BatchRequest, BatchResponse, DeleteQuery, DeleteResult, Document, DocumentPage, ListQuery,
    PutResult, ReadQuery, shard_key_json,
};
use super::{Api, TAG_DOCUMENTS, session};

type DocPath = (String, String, String);

fn header_text<'a>(
    headers: &'a HeaderMap,
    name: &header::HeaderName,
) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::invalid(format!("{name} is not text")))
        })
        .transpose()
}

fn with_etag(mut response: Response, version: u64) -> Response {
    if let Ok(value) = HeaderValue::from_str(&etag(version)) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// The write condition of a request's `If-Match` / `If-None-Match`.
fn condition(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    write_condition(
        header_text(headers, &header::IF_MATCH)?,
        header_text(headers, &header::IF_NONE_MATCH)?,
    )
    .map_err(|e| ApiError::invalid(e.to_string()))
}

/// Reads one document.
#[utoipa::path(
    get,
    path = "/v1/databases/{db}/collections/{coll}/documents/{id}",
    tag = TAG_DOCUMENTS,
    params(
        ("db" = String, Path, description = "Database"),
        ("coll" = String, Path, description = "Collection"),
        ("id" = String, Path, description = "Document id"),
        ReadQuery,
        ("If-None-Match" = Option<String>, Header, description = "Answer 304 when the document's version is this entity tag"),
    ),
    responses(
        (status = 200, description = "The document; its ETag is its version", body = Document,
            headers(("ETag" = String, description = "\"<version>\""))),
        (status = 304, description = "The document's version is the one in If-None-Match"),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 404, description = "No such document (reason ERROR_REASON_DOCUMENT_NOT_FOUND) or database (ERROR_REASON_DATABASE_NOT_FOUND)", body = ErrorBody),
        (status = 503, description = "The shard cannot serve now", body = ErrorBody),
    )
)]
pub async fn get_document(
    State(api): State<Api>,
    Params((db, coll, id)): Params<DocPath>,
    QueryParams(query): QueryParams<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let msg = v1::GetRequest {
        database: db,
        collection: coll,
        id: id.clone(),
        consistency: v1::Consistency::from(query.consistency.unwrap_or_default()) as i32,
        shard_key: shard_key_json(query.shard_key),
        at_least: session::at_least(query.at_least.as_deref())?,
    };
    let answer = api
        .gateway
        .documents()
        .get(request(msg, &headers))
        .await?
        .into_inner();
    let Some(document) = answer.document else {
        return Err(ApiError::new(
            Code::NotFound,
            ErrorReason::DocumentNotFound,
            format!("document {id} does not exist"),
        ));
    };
    let version = document.version;
    if not_modified(header_text(&headers, &header::IF_NONE_MATCH)?, version) {
        return Ok(with_etag(StatusCode::NOT_MODIFIED.into_response(), version));
    }
    let document = Document::from_proto(document)?;
    Ok(with_etag(axum::Json(document).into_response(), version))
}

/// Writes one document (its JSON body is the request body).
#[utoipa::path(
    put,
    path = "/v1/databases/{db}/collections/{coll}/documents/{id}",
    tag = TAG_DOCUMENTS,
    params(
        ("db" = String, Path, description = "Database"),
        ("coll" = String, Path, description = "Collection"),
        ("id" = String, Path, description = "Document id"),
        ("If-Match" = Option<String>, Header, description = "Write only over this version: \"<version>\""),
        ("If-None-Match" = Option<String>, Header, description = "`*`: create only"),
    ),
    request_body(content = serde_json::Value, description = "The document: any JSON value", content_type = "application/json"),
    responses(
        (status = 200, description = "Replaced; the ETag is the new version", body = PutResult,
            headers(("ETag" = String, description = "\"<version>\""))),
        (status = 201, description = "Created", body = PutResult,
            headers(("ETag" = String, description = "\"<version>\""))),
        (status = 400, description = "Malformed request or body", body = ErrorBody),
        (status = 404, description = "No such database", body = ErrorBody),
        (status = 412, description = "The If-Match / If-None-Match condition did not hold (reason ERROR_REASON_VERSION_MISMATCH)", body = ErrorBody),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
        (status = 429, description = "Document over the size limit", body = ErrorBody),
        (status = 503, description = "The shard cannot serve now", body = ErrorBody),
    )
)]
pub async fn put_document(
    State(api): State<Api>,
    Params((db, coll, id)): Params<DocPath>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let if_version = condition(&headers)?;
    let json = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::invalid("the document body is not UTF-8"))?;
    let msg = v1::PutRequest {
        database: db,
        collection: coll,
        id,
        json,
        if_version,
        request_id: None,
    };
    let answer = api
        .gateway
        .documents()
        .put(request(msg, &headers))
        .await?
        .into_inner();
    let status = if answer.version == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let result = PutResult {
        version: answer.version,
        revision: answer.revision,
        shard: answer.shard,
    };
    Ok(with_etag(
        (status, axum::Json(result)).into_response(),
        answer.version,
    ))
}

/// Deletes one document.
#[utoipa::path(
    delete,
    path = "/v1/databases/{db}/collections/{coll}/documents/{id}",
    tag = TAG_DOCUMENTS,
    params(
        ("db" = String, Path, description = "Database"),
        ("coll" = String, Path, description = "Collection"),
        ("id" = String, Path, description = "Document id"),
        DeleteQuery,
        ("If-Match" = Option<String>, Header, description = "Delete only this version: \"<version>\""),
    ),
    responses(
        (status = 200, description = "Deleted, or there was nothing to delete (`deleted: false`)", body = DeleteResult),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 404, description = "No such database", body = ErrorBody),
        (status = 412, description = "The If-Match condition did not hold", body = ErrorBody),
        (status = 503, description = "The shard cannot serve now", body = ErrorBody),
    )
)]
pub async fn delete_document(
    State(api): State<Api>,
    Params((db, coll, id)): Params<DocPath>,
    QueryParams(query): QueryParams<DeleteQuery>,
    headers: HeaderMap,
) -> Result<axum::Json<DeleteResult>, ApiError> {
    let msg = v1::DeleteRequest {
        database: db,
        collection: coll,
        id,
        if_version: condition(&headers)?,
        request_id: None,
        shard_key: shard_key_json(query.shard_key),
    };
    let answer = api
        .gateway
        .documents()
        .delete(request(msg, &headers))
        .await?
        .into_inner();
    Ok(axum::Json(DeleteResult {
        deleted: answer.deleted,
        revision: answer.revision,
    }))
}

/// Lists a collection's documents in id order, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/databases/{db}/collections/{coll}/documents",
    tag = TAG_DOCUMENTS,
    params(
        ("db" = String, Path, description = "Database"),
        ("coll" = String, Path, description = "Collection"),
        ListQuery,
    ),
    responses(
        (status = 200, description = "A page of documents", body = DocumentPage),
        (status = 400, description = "Malformed request or page token", body = ErrorBody),
        (status = 404, description = "No such database", body = ErrorBody),
        (status = 503, description = "A shard cannot serve now", body = ErrorBody),
    )
)]
pub async fn list_documents(
    State(api): State<Api>,
    Params((db, coll)): Params<(String, String)>,
    QueryParams(query): QueryParams<ListQuery>,
    headers: HeaderMap,
) -> Result<axum::Json<DocumentPage>, ApiError> {
    let msg = v1::ListRequest {
        database: db,
        collection: coll,
        prefix: query.prefix.unwrap_or_default(),
        limit: query.limit.unwrap_or(0),
        page_token: query.page_token.unwrap_or_default(),
        consistency: v1::Consistency::from(query.consistency.unwrap_or_default()) as i32,
        at_least: session::at_least(query.at_least.as_deref())?,
    };
    let answer = api
        .gateway
        .documents()
        .list(request(msg, &headers))
        .await?
        .into_inner();
    let documents = answer
        .documents
        .into_iter()
        .map(Document::from_proto)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(DocumentPage {
        documents,
        next_page_token: (!answer.next_page_token.is_empty()).then_some(answer.next_page_token),
    }))
}

/// Applies an atomic batch of writes: all or none.
#[utoipa::path(
    post,
    path = "/v1/databases/{db}/batch",
    tag = TAG_DOCUMENTS,
    params(("db" = String, Path, description = "Database")),
    request_body = BatchRequest,
    responses(
        (status = 200, description = "Every operation applied", body = BatchResponse),
        (status = 400, description = "Malformed batch, or documents on several shards", body = ErrorBody),
        (status = 404, description = "No such database", body = ErrorBody),
        (status = 412, description = "An if_version did not hold: nothing applied", body = ErrorBody),
        (status = 429, description = "Batch over the limits", body = ErrorBody),
        (status = 503, description = "The shard cannot serve now", body = ErrorBody),
    )
)]
pub async fn batch(
    State(api): State<Api>,
    Params(db): Params<String>,
    headers: HeaderMap,
    Json(batch): Json<BatchRequest>,
) -> Result<axum::Json<BatchResponse>, ApiError> {
    let answer = api
        .gateway
        .documents()
        .batch(request(batch.into_proto(db), &headers))
        .await?
        .into_inner();
    Ok(axum::Json(answer.into()))
}
