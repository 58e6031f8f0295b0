//! Collections and their secondary indexes over HTTP: declare a collection (with a shard key),
//! list them; create an index (built in the background), list indexes with their build
//! progress per shard, drop one. Each handler makes one call of the `Documents` service.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use flotilla_proto::v1;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Params, QueryParams};
use super::gateway::request;
use super::{Api, TAG_DATABASES};

/// A collection to declare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCollection {
    pub name: String,
    /// JSON path (`/customerId`) whose value places each document; documents are placed by
    /// their id when absent. Fixed once declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_key: Option<String>,
}

/// A declared collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Collection {
    pub name: String,
    /// Absent when documents are placed by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_key: Option<String>,
    /// Names of its secondary indexes.
    pub indexes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CollectionList {
    pub collections: Vec<Collection>,
}

/// An index to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIndex {
    pub name: String,
    /// The JSON paths it keys on, in order (more than one: a compound index).
    pub paths: Vec<String>,
}

/// An index's state on one shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IndexShard {
    pub shard: u32,
    /// False while the shard still builds the index over its existing documents.
    pub ready: bool,
    /// Documents indexed so far.
    pub documents: u64,
}

/// An index and its build progress on every shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Index {
    pub collection: String,
    pub name: String,
    pub paths: Vec<String>,
    /// True once every shard has built it: queries use it from then on.
    pub ready: bool,
    pub shards: Vec<IndexShard>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IndexList {
    pub indexes: Vec<Index>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct IndexQuery {
    /// Only the indexes of this collection.
    pub collection: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DroppedIndex {
    /// False when there was no such index.
    pub dropped: bool,
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

impl From<v1::IndexInfo> for Index {
    fn from(i: v1::IndexInfo) -> Index {
        Index {
            ready: i.shards.iter().all(|s| s.ready),
            collection: i.collection,
            name: i.name,
            paths: i.paths,
            shards: i
                .shards
                .into_iter()
                .map(|s| IndexShard {
                    shard: s.shard,
                    ready: s.ready,
                    documents: s.documents,
                })
                .collect(),
        }
    }
}

/// Lists the declared collections of a database.
#[utoipa::path(
    get,
    path = "/v1/databases/{db}/collections",
    tag = TAG_DATABASES,
    params(("db" = String, Path, description = "Database")),
    responses(
        (status = 200, description = "Every declared collection", body = CollectionList),
        (status = 400, description = "Malformed name", body = ErrorBody),
        (status = 404, description = "No such database", body = ErrorBody),
        (status = 503, description = "The cluster cannot answer now", body = ErrorBody),
    )
)]
pub async fn list_collections(
    State(api): State<Api>,
    Params(db): Params<String>,
    headers: HeaderMap,
) -> Result<axum::Json<CollectionList>, ApiError> {
    let answer = api
        .gateway
        .documents()
        .list_collections(request(
            v1::ListCollectionsRequest { database: db },
            &headers,
        ))
        .await?
        .into_inner();
    Ok(axum::Json(CollectionList {
        collections: answer
            .collections
            .into_iter()
            .map(|c| Collection {
                name: c.name,
                shard_key: non_empty(c.shard_key),
                indexes: c.indexes,
            })
            .collect(),
    }))
}

/// Declares a collection, with a shard key or placed by id. Declaring it again with the same
/// shard key changes nothing; with another one it is refused.
#[utoipa::path(
    post,
    path = "/v1/databases/{db}/collections",
    tag = TAG_DATABASES,
    params(("db" = String, Path, description = "Database")),
    request_body = CreateCollection,
    responses(
        (status = 201, description = "Declared", body = Collection),
        (status = 200, description = "Declared already, with the same shard key", body = Collection),
        (status = 400, description = "Malformed name or shard key", body = ErrorBody),
        (status = 404, description = "No such database", body = ErrorBody),
        (status = 412, description = "Declared already with another shard key", body = ErrorBody),
        (status = 503, description = "The cluster cannot answer now", body = ErrorBody),
    )
)]
pub async fn create_collection(
    State(api): State<Api>,
    Params(db): Params<String>,
    headers: HeaderMap,
    Json(create): Json<CreateCollection>,
) -> Result<(StatusCode, axum::Json<Collection>), ApiError> {
    let msg = v1::CreateCollectionRequest {
        database: db,
        collection: create.name.clone(),
        shard_key: create.shard_key.clone().unwrap_or_default(),
    };
    let answer = api
        .gateway
        .documents()
        .create_collection(request(msg, &headers))
        .await?
        .into_inner();
    let status = if answer.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        axum::Json(Collection {
            name: create.name,
            shard_key: create.shard_key.filter(|k| !k.is_empty()),
            indexes: Vec::new(),
        }),
    ))
}

/// Lists the secondary indexes of a database (or one collection), with their build progress.
#[utoipa::path(
    get,
    path = "/v1/databases/{db}/indexes",
    tag = TAG_DATABASES,
    params(("db" = String, Path, description = "Database"), IndexQuery),
    responses(
        (status = 200, description = "The indexes and their state on every shard", body = IndexList),
        (status = 400, description = "Malformed name", body = ErrorBody),
        (status = 404, description = "No such database", body = ErrorBody),
        (status = 503, description = "A shard cannot answer now", body = ErrorBody),
    )
)]
pub async fn list_indexes(
    State(api): State<Api>,
    Params(db): Params<String>,
    QueryParams(query): QueryParams<IndexQuery>,
    headers: HeaderMap,
) -> Result<axum::Json<IndexList>, ApiError> {
    let msg = v1::ListIndexesRequest {
        database: db,
        collection: query.collection.unwrap_or_default(),
    };
    let answer = api
        .gateway
        .documents()
        .list_indexes(request(msg, &headers))
        .await?
        .into_inner();
    Ok(axum::Json(IndexList {
        indexes: answer.indexes.into_iter().map(Index::from).collect(),
    }))
}

/// Creates a secondary index: every shard builds it over its existing documents in the
/// background (`GET .../indexes` shows the progress), and keeps it in step with every write.
/// Creating it again on the same paths changes nothing.
#[utoipa::path(
    post,
    path = "/v1/databases/{db}/collections/{coll}/indexes",
    tag = TAG_DATABASES,
    params(
        ("db" = String, Path, description = "Database"),
        ("coll" = String, Path, description = "Collection"),
    ),
    request_body = CreateIndex,
    responses(
        (status = 202, description = "Created; the shards build it in the background", body = CreateIndex),
        (status = 400, description = "Malformed name or path, an index of that name on other paths, or too many indexes (reason ERROR_REASON_INVALID_INDEX)", body = ErrorBody),
        (status = 404, description = "No such database", body = ErrorBody),
        (status = 503, description = "The cluster cannot answer now", body = ErrorBody),
    )
)]
pub async fn create_index(
    State(api): State<Api>,
    Params((db, coll)): Params<(String, String)>,
    headers: HeaderMap,
    Json(create): Json<CreateIndex>,
) -> Result<(StatusCode, axum::Json<CreateIndex>), ApiError> {
    let msg = v1::CreateIndexRequest {
        database: db,
        collection: coll,
        name: create.name.clone(),
        paths: create.paths.clone(),
    };
    api.gateway
        .documents()
        .create_index(request(msg, &headers))
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(create)))
}

/// Drops a secondary index and frees its space.
#[utoipa::path(
    delete,
    path = "/v1/databases/{db}/collections/{coll}/indexes/{name}",
    tag = TAG_DATABASES,
    params(
        ("db" = String, Path, description = "Database"),
        ("coll" = String, Path, description = "Collection"),
        ("name" = String, Path, description = "Index"),
    ),
    responses(
        (status = 200, description = "Dropped, or there was no such index (`dropped: false`)", body = DroppedIndex),
        (status = 400, description = "Malformed name", body = ErrorBody),
        (status = 404, description = "No such database", body = ErrorBody),
        (status = 503, description = "The cluster cannot answer now", body = ErrorBody),
    )
)]
pub async fn drop_index(
    State(api): State<Api>,
    Params((db, coll, name)): Params<(String, String, String)>,
    headers: HeaderMap,
) -> Result<axum::Json<DroppedIndex>, ApiError> {
    let msg = v1::DropIndexRequest {
        database: db,
        collection: coll,
        name,
    };
    let answer = api
        .gateway
        .documents()
        .drop_index(request(msg, &headers))
        .await?
        .into_inner();
    Ok(axum::Json(DroppedIndex {
        dropped: answer.dropped,
    }))
}
