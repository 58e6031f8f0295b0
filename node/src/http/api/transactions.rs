//! Serializable transactions over HTTP, call by call as in gRPC: begin one on a database, read,
//! query, write and delete documents in it (reads see its own writes), then commit (every write
//! applies on every shard, or none does) or roll back. Any node takes any call: a call for a
//! transaction another node coordinates goes on to that node. Each handler makes one call of
//! the `Transactions` service.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use flotilla_proto::v1::{self, ErrorReason};
use serde::{Deserialize, Serialize};
use tonic::Code;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{Body, Json, Params, QueryParams};
use super::gateway::request;
use super::types::{DeleteQuery, Document, shard_key_json};
use super::{Api, TAG_TRANSACTIONS};

/// A transaction to begin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BeginTransaction {
    /// Milliseconds the transaction may stay open before it is aborted (the node's default
    /// when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Transaction {
    /// The transaction's id, for its calls.
    pub txn: String,
}

/// A write of a transaction to be done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnPut {
    /// The document's JSON body.
    pub body: serde_json::Value,
    /// Write only over this version (0: only if the document does not exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_version: Option<u64>,
}

/// A delete of a transaction to be done.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnDelete {
    /// Delete only this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_version: Option<u64>,
}

/// A query inside a transaction: every document of the collection the predicate matches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnQuery {
    /// The predicate in the JSON selector form, as for a plain query (every document when
    /// neither this nor `where` is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<serde_json::Value>,
    /// The predicate in the short text form instead: `/balance < 0`.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub where_text: Option<String>,
}

/// What a query inside a transaction found, ordered by id (at most 1,000 documents).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TxnQueryResult {
    pub documents: Vec<Document>,
}

/// One write a commit made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CommittedWrite {
    pub collection: String,
    pub id: String,
    /// The document's new version (0 for a delete).
    pub version: u64,
    pub deleted: bool,
    /// The shard the document lives on.
    pub shard: u32,
}

/// A committed transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Committed {
    pub writes: Vec<CommittedWrite>,
    /// Shards the transaction wrote to.
    pub shards: u32,
}

/// An open (or recovering) transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TransactionInfo {
    pub txn: String,
    pub database: String,
    /// `open`, `recovering` (intents whose coordinator is gone) or `decided` (only its
    /// record is left).
    pub state: String,
    /// Node that coordinates it.
    pub coordinator: u64,
    pub age_ms: u64,
    pub reads: u32,
    pub writes: u32,
    pub shards: Vec<u32>,
    /// `committed` or `aborted` while its record is kept (until no intent can need it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TransactionList {
    pub transactions: Vec<TransactionInfo>,
}

type TxnDocPath = (String, String, String);

/// Begins a transaction on a database.
#[utoipa::path(
    post,
    path = "/v1/databases/{db}/transactions",
    tag = TAG_TRANSACTIONS,
    params(("db" = String, Path, description = "Database")),
    request_body = BeginTransaction,
    responses(
        (status = 201, description = "Begun", body = Transaction),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 404, description = "No such database", body = ErrorBody),
        (status = 429, description = "Too many open transactions", body = ErrorBody),
        (status = 503, description = "The node cannot serve now", body = ErrorBody),
    )
)]
pub async fn begin(
    State(api): State<Api>,
    Params(db): Params<String>,
    headers: HeaderMap,
    Json(begin): Json<BeginTransaction>,
) -> Result<(StatusCode, axum::Json<Transaction>), ApiError> {
    let msg = v1::BeginRequest {
        database: db,
        timeout_ms: begin.timeout_ms.unwrap_or(0),
    };
    let answer = api
        .gateway
        .transactions()
        .begin(request(msg, &headers))
        .await?
        .into_inner();
    Ok((
        StatusCode::CREATED,
        axum::Json(Transaction { txn: answer.txn }),
    ))
}

/// The open and recovering transactions of a database, over every node.
#[utoipa::path(
    get,
    path = "/v1/databases/{db}/transactions",
    tag = TAG_TRANSACTIONS,
    params(("db" = String, Path, description = "Database")),
    responses(
        (status = 200, description = "The transactions", body = TransactionList),
        (status = 400, description = "Malformed name", body = ErrorBody),
        (status = 404, description = "No such database", body = ErrorBody),
        (status = 503, description = "The cluster cannot answer now", body = ErrorBody),
    )
)]
pub async fn list(
    State(api): State<Api>,
    Params(db): Params<String>,
    headers: HeaderMap,
) -> Result<axum::Json<TransactionList>, ApiError> {
    let msg = v1::ListTransactionsRequest {
        database: db,
        local_only: false,
    };
    let answer = api
        .gateway
        .transactions()
        .list(request(msg, &headers))
        .await?
        .into_inner();
    Ok(axum::Json(TransactionList {
        transactions: answer
            .transactions
            .into_iter()
            .map(|t| TransactionInfo {
                txn: t.txn,
                database: t.database,
                state: t.state,
                coordinator: t.coordinator,
                age_ms: t.age_ms,
                reads: t.reads,
                writes: t.writes,
                shards: t.shards,
                decision: (!t.decision.is_empty()).then_some(t.decision),
            })
            .collect(),
    }))
}

/// Reads a document inside a transaction (its own writes included).
#[utoipa::path(
    get,
    path = "/v1/transactions/{txn}/collections/{coll}/documents/{id}",
    tag = TAG_TRANSACTIONS,
    params(
        ("txn" = String, Path, description = "Transaction"),
        ("coll" = String, Path, description = "Collection"),
        ("id" = String, Path, description = "Document id"),
        DeleteQuery,
    ),
    responses(
        (status = 200, description = "The document as the transaction sees it", body = Document),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 404, description = "No such document (reason ERROR_REASON_DOCUMENT_NOT_FOUND) or transaction (ERROR_REASON_TXN_NOT_FOUND)", body = ErrorBody),
        (status = 409, description = "The transaction conflicted and was aborted (reason ERROR_REASON_TXN_CONFLICT or ERROR_REASON_TXN_TIMEOUT)", body = ErrorBody),
        (status = 503, description = "A shard cannot serve now", body = ErrorBody),
    )
)]
pub async fn get(
    State(api): State<Api>,
    Params((txn, coll, id)): Params<TxnDocPath>,
    QueryParams(query): QueryParams<DeleteQuery>,
    headers: HeaderMap,
) -> Result<axum::Json<Document>, ApiError> {
    let msg = v1::TxnGetRequest {
        txn,
        collection: coll,
        id: id.clone(),
        shard_key: shard_key_json(query.shard_key),
    };
    let answer = api
        .gateway
        .transactions()
        .get(request(msg, &headers))
        .await?
        .into_inner();
    match answer.document {
        Some(document) => Ok(axum::Json(Document::from_proto(document)?)),
        None => Err(ApiError::new(
            Code::NotFound,
            ErrorReason::DocumentNotFound,
            format!("document {id} does not exist"),
        )),
    }
}

/// Writes a document inside a transaction; it applies at commit.
#[utoipa::path(
    put,
    path = "/v1/transactions/{txn}/collections/{coll}/documents/{id}",
    tag = TAG_TRANSACTIONS,
    params(
        ("txn" = String, Path, description = "Transaction"),
        ("coll" = String, Path, description = "Collection"),
        ("id" = String, Path, description = "Document id"),
    ),
    request_body = TxnPut,
    responses(
        (status = 204, description = "Recorded in the transaction"),
        (status = 400, description = "Malformed request or body", body = ErrorBody),
        (status = 404, description = "No such transaction (reason ERROR_REASON_TXN_NOT_FOUND)", body = ErrorBody),
        (status = 409, description = "The transaction conflicted and was aborted", body = ErrorBody),
        (status = 412, description = "The if_version condition did not hold", body = ErrorBody),
        (status = 429, description = "Document over the size limit", body = ErrorBody),
        (status = 503, description = "A shard cannot serve now", body = ErrorBody),
    )
)]
pub async fn put(
    State(api): State<Api>,
    Params((txn, coll, id)): Params<TxnDocPath>,
    headers: HeaderMap,
    Json(put): Json<TxnPut>,
) -> Result<StatusCode, ApiError> {
    let msg = v1::TxnPutRequest {
        txn,
        collection: coll,
        id,
        json: put.body.to_string(),
        if_version: put.if_version,
    };
    api.gateway
        .transactions()
        .put(request(msg, &headers))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a document inside a transaction; it applies at commit.
#[utoipa::path(
    delete,
    path = "/v1/transactions/{txn}/collections/{coll}/documents/{id}",
    tag = TAG_TRANSACTIONS,
    params(
        ("txn" = String, Path, description = "Transaction"),
        ("coll" = String, Path, description = "Collection"),
        ("id" = String, Path, description = "Document id"),
        DeleteQuery,
    ),
    request_body(content = Option<TxnDelete>, description = "An optional condition", content_type = "application/json"),
    responses(
        (status = 204, description = "Recorded in the transaction"),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 404, description = "No such transaction (reason ERROR_REASON_TXN_NOT_FOUND)", body = ErrorBody),
        (status = 409, description = "The transaction conflicted and was aborted", body = ErrorBody),
        (status = 412, description = "The if_version condition did not hold", body = ErrorBody),
        (status = 503, description = "A shard cannot serve now", body = ErrorBody),
    )
)]
pub async fn delete(
    State(api): State<Api>,
    Params((txn, coll, id)): Params<TxnDocPath>,
    QueryParams(query): QueryParams<DeleteQuery>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<StatusCode, ApiError> {
    let condition: TxnDelete = if body.iter().all(u8::is_ascii_whitespace) {
        TxnDelete::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::invalid(format!("the request body is not the JSON expected: {e}"))
        })?
    };
    let msg = v1::TxnDeleteRequest {
        txn,
        collection: coll,
        id,
        if_version: condition.if_version,
        shard_key: shard_key_json(query.shard_key),
    };
    api.gateway
        .transactions()
        .delete(request(msg, &headers))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Queries a collection inside a transaction: the documents as it sees them (its own writes
/// included). Serializable: the commit aborts (409, ERROR_REASON_TXN_CONFLICT) when another
/// transaction changed what the predicate matches before it, a new match included.
#[utoipa::path(
    post,
    path = "/v1/transactions/{txn}/collections/{coll}/query",
    tag = TAG_TRANSACTIONS,
    params(
        ("txn" = String, Path, description = "Transaction"),
        ("coll" = String, Path, description = "Collection"),
    ),
    request_body = TxnQuery,
    responses(
        (status = 200, description = "The matching documents, by id", body = TxnQueryResult),
        (status = 400, description = "Malformed request or predicate (reason ERROR_REASON_INVALID_QUERY)", body = ErrorBody),
        (status = 404, description = "No such transaction (reason ERROR_REASON_TXN_NOT_FOUND)", body = ErrorBody),
        (status = 409, description = "The transaction conflicted and was aborted", body = ErrorBody),
        (status = 429, description = "More than 1,000 matches (reason ERROR_REASON_LIMIT_EXCEEDED)", body = ErrorBody),
        (status = 503, description = "A shard cannot serve now", body = ErrorBody),
    )
)]
pub async fn query(
    State(api): State<Api>,
    Params((txn, coll)): Params<(String, String)>,
    headers: HeaderMap,
    Json(query): Json<TxnQuery>,
) -> Result<axum::Json<TxnQueryResult>, ApiError> {
    let selector =
        super::query::selector_text(query.selector.map(|s| s.to_string()), query.where_text)?;
    let msg = v1::TxnQueryRequest {
        txn,
        collection: coll,
        selector,
    };
    let answer = api
        .gateway
        .transactions()
        .query(request(msg, &headers))
        .await?
        .into_inner();
    Ok(axum::Json(TxnQueryResult {
        documents: answer
            .documents
            .into_iter()
            .map(Document::from_proto)
            .collect::<Result<_, _>>()?,
    }))
}

/// Commits a transaction: every write applies on every shard, or none does.
#[utoipa::path(
    post,
    path = "/v1/transactions/{txn}/commit",
    tag = TAG_TRANSACTIONS,
    params(("txn" = String, Path, description = "Transaction")),
    responses(
        (status = 200, description = "Committed", body = Committed),
        (status = 400, description = "Malformed transaction id", body = ErrorBody),
        (status = 404, description = "No such transaction (reason ERROR_REASON_TXN_NOT_FOUND)", body = ErrorBody),
        (status = 409, description = "Aborted: it conflicted (ERROR_REASON_TXN_CONFLICT) or timed out (ERROR_REASON_TXN_TIMEOUT); nothing applied. Without a reason: the outcome is unknown (the connection to its coordinator broke)", body = ErrorBody),
        (status = 503, description = "A shard cannot serve now", body = ErrorBody),
    )
)]
pub async fn commit(
    State(api): State<Api>,
    Params(txn): Params<String>,
    headers: HeaderMap,
) -> Result<axum::Json<Committed>, ApiError> {
    let answer = api
        .gateway
        .transactions()
        .commit(request(v1::CommitRequest { txn }, &headers))
        .await?
        .into_inner();
    Ok(axum::Json(Committed {
        writes: answer
            .writes
            .into_iter()
            .map(|w| CommittedWrite {
                collection: w.collection,
                id: w.id,
                version: w.version,
                deleted: w.deleted,
                shard: w.shard,
            })
            .collect(),
        shards: answer.shards,
    }))
}

/// Rolls a transaction back: none of its writes applies.
#[utoipa::path(
    post,
    path = "/v1/transactions/{txn}/rollback",
    tag = TAG_TRANSACTIONS,
    params(("txn" = String, Path, description = "Transaction")),
    responses(
        (status = 204, description = "Rolled back"),
        (status = 400, description = "Malformed transaction id", body = ErrorBody),
        (status = 404, description = "No such transaction (reason ERROR_REASON_TXN_NOT_FOUND)", body = ErrorBody),
        (status = 503, description = "The node cannot serve now", body = ErrorBody),
    )
)]
pub async fn rollback(
    State(api): State<Api>,
    Params(txn): Params<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    api.gateway
        .transactions()
        .rollback(request(v1::RollbackRequest { txn }, &headers))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
