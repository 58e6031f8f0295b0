//! Databases and the cluster over HTTP: list / create / get / update / drop a database, the
//! cluster's status and members. Each handler makes one call of the `Admin` service.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use flotilla_proto::v1;

use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Params, QueryParams};
use super::gateway::request;
use super::types::{
    ClusterStatus, CreateDatabase, Database, DatabaseList, DatabaseStatus, DropQuery, MemberList,
    UpdateDatabase,
};
use super::{Api, TAG_CLUSTER, TAG_DATABASES};

fn created(database: Option<v1::DatabaseInfo>) -> Result<Database, ApiError> {
    database.map(Database::from).ok_or_else(|| {
        ApiError::new(
            tonic::Code::Internal,
            v1::ErrorReason::Unspecified,
            "the node's answer names no database",
        )
    })
}

/// Lists the databases.
#[utoipa::path(
    get,
    path = "/v1/databases",
    tag = TAG_DATABASES,
    responses(
        (status = 200, description = "Every database", body = DatabaseList),
        (status = 503, description = "The cluster cannot answer now", body = ErrorBody),
    )
)]
pub async fn list_databases(
    State(api): State<Api>,
    headers: HeaderMap,
) -> Result<axum::Json<DatabaseList>, ApiError> {
    let answer = api
        .gateway
        .admin()
        .list_databases(request(v1::ListDatabasesRequest {}, &headers))
        .await?
        .into_inner();
    Ok(axum::Json(DatabaseList {
        databases: answer.databases.into_iter().map(Database::from).collect(),
    }))
}

/// Creates a database.
#[utoipa::path(
    post,
    path = "/v1/databases",
    tag = TAG_DATABASES,
    request_body = CreateDatabase,
    responses(
        (status = 201, description = "Created", body = Database),
        (status = 400, description = "Malformed request or settings", body = ErrorBody),
        (status = 409, description = "A database of that name exists (reason ERROR_REASON_DATABASE_EXISTS)", body = ErrorBody),
        (status = 412, description = "Not enough eligible nodes", body = ErrorBody),
        (status = 503, description = "The cluster cannot answer now", body = ErrorBody),
    )
)]
pub async fn create_database(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(create): Json<CreateDatabase>,
) -> Result<(StatusCode, axum::Json<Database>), ApiError> {
    let answer = api
        .gateway
        .admin()
        .create_database(request(create.into_proto(), &headers))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, axum::Json(created(answer.database)?)))
}

/// A database with the live state of its shards.
#[utoipa::path(
    get,
    path = "/v1/databases/{db}",
    tag = TAG_DATABASES,
    params(("db" = String, Path, description = "Database")),
    responses(
        (status = 200, description = "The database and its shards", body = DatabaseStatus),
        (status = 400, description = "Malformed name", body = ErrorBody),
        (status = 404, description = "No such database (reason ERROR_REASON_DATABASE_NOT_FOUND)", body = ErrorBody),
        (status = 503, description = "The cluster cannot answer now", body = ErrorBody),
    )
)]
pub async fn get_database(
    State(api): State<Api>,
    Params(db): Params<String>,
    headers: HeaderMap,
) -> Result<axum::Json<DatabaseStatus>, ApiError> {
    let answer = api
        .gateway
        .admin()
        .database_status(request(v1::DatabaseStatusRequest { name: db }, &headers))
        .await?
        .into_inner();
    Ok(axum::Json(DatabaseStatus::from_proto(answer)?))
}

/// Changes a database's settings.
#[utoipa::path(
    patch,
    path = "/v1/databases/{db}",
    tag = TAG_DATABASES,
    params(("db" = String, Path, description = "Database")),
    request_body = UpdateDatabase,
    responses(
        (status = 200, description = "The database as it is now", body = Database),
        (status = 400, description = "Malformed request or settings", body = ErrorBody),
        (status = 404, description = "No such database", body = ErrorBody),
        (status = 412, description = "Not enough eligible nodes", body = ErrorBody),
        (status = 503, description = "The cluster cannot answer now", body = ErrorBody),
    )
)]
pub async fn update_database(
    State(api): State<Api>,
    Params(db): Params<String>,
    headers: HeaderMap,
    Json(update): Json<UpdateDatabase>,
) -> Result<axum::Json<Database>, ApiError> {
    let answer = api
        .gateway
        .admin()
        .update_database(request(update.into_proto(db), &headers))
        .await?
        .into_inner();
    Ok(axum::Json(created(answer.database)?))
}

/// Drops a database and its documents.
#[utoipa::path(
    delete,
    path = "/v1/databases/{db}",
    tag = TAG_DATABASES,
    params(("db" = String, Path, description = "Database"), DropQuery),
    responses(
        (status = 204, description = "Dropped"),
        (status = 400, description = "Malformed name", body = ErrorBody),
        (status = 404, description = "No such database", body = ErrorBody),
        (status = 412, description = "`confirm` does not name the database", body = ErrorBody),
        (status = 503, description = "The cluster cannot answer now", body = ErrorBody),
    )
)]
pub async fn drop_database(
    State(api): State<Api>,
    Params(db): Params<String>,
    QueryParams(query): QueryParams<DropQuery>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let confirm = query.confirm.unwrap_or_default();
    api.gateway
        .admin()
        .drop_database(request(
            v1::DropDatabaseRequest { name: db, confirm },
            &headers,
        ))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The cluster: its id, meta leader and members.
#[utoipa::path(
    get,
    path = "/v1/cluster",
    tag = TAG_CLUSTER,
    responses(
        (status = 200, description = "The cluster's status", body = ClusterStatus),
        (status = 503, description = "The cluster cannot answer now", body = ErrorBody),
    )
)]
pub async fn cluster_status(
    State(api): State<Api>,
    headers: HeaderMap,
) -> Result<axum::Json<ClusterStatus>, ApiError> {
    let answer = api
        .gateway
        .admin()
        .cluster_status(request(v1::ClusterStatusRequest {}, &headers))
        .await?
        .into_inner();
    Ok(axum::Json(answer.into()))
}

/// The cluster's nodes, their roles and health.
#[utoipa::path(
    get,
    path = "/v1/cluster/members",
    tag = TAG_CLUSTER,
    responses(
        (status = 200, description = "The members", body = MemberList),
        (status = 503, description = "The cluster cannot answer now", body = ErrorBody),
    )
)]
pub async fn members(
    State(api): State<Api>,
    headers: HeaderMap,
) -> Result<axum::Json<MemberList>, ApiError> {
    let status = cluster_status(State(api), headers).await?.0;
    Ok(axum::Json(MemberList {
        members: status.members,
    }))
}
