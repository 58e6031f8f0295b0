//! The HTTP/JSON API: a gateway over the node's own gRPC services, on the HTTP port under
//! `/v1`, with its OpenAPI 3.1 document at [`OPENAPI_PATH`], generated from the handlers and
//! types here (utoipa) and never written by hand.
//!
//! Every handler turns its request into one gRPC call through the client port's own service
//! stack, in process ([`gateway`]): the same validation, routing, metrics and (once there)
//! authentication and limits as a gRPC client gets; a failure answers with the HTTP status of
//! its gRPC code and a JSON [`ErrorBody`] ([`error`]).
//!
//! Adding an rpc as an endpoint takes a handler annotated with `#[utoipa::path]` (its path,
//! parameters, body and answers), `ToSchema` types for what it reads and writes (in
//! [`types`] or a file of its own), and one `.routes(routes!(handler))` line in [`router`];
//! its path goes into [`crate::http::ROUTES`] so that metrics name it. The OpenAPI document,
//! its tests and the schemathesis run pick it up by themselves.

pub mod admin;
pub mod collections;
pub mod conditions;
pub mod cursor;
pub mod documents;
pub mod error;
pub mod extract;
pub mod gateway;
pub mod live;
pub mod query;
pub mod session;
pub mod transactions;
pub mod types;
pub mod watch;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use utoipa::openapi::OpenApi;
use utoipa::openapi::{InfoBuilder, OpenApiBuilder};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::NodeConfig;
pub use error::{ApiError, ErrorBody};
pub use gateway::Gateway;

/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";

pub const TAG_DOCUMENTS: &str = "documents";
pub const TAG_DATABASES: &str = "databases";
pub const TAG_CLUSTER: &str = "cluster";
pub const TAG_TRANSACTIONS: &str = "transactions";

/// What every handler holds.
#[derive(Clone)]
pub struct Api {
    pub gateway: Gateway,
}

/// Request size limits of the API, from the node's own limits on documents and batches.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub body_bytes: usize,
}

impl Limits {
    pub fn of(config: &NodeConfig) -> Limits {
        // A batch's JSON is larger than its documents' bytes (field names, escaping); the
        // node refuses an oversized document or batch itself with a clear error.
        let largest = config.max_document_bytes.max(config.max_batch_bytes);
        Limits {
            body_bytes: largest.saturating_mul(2).saturating_add(64 << 10),
        }
    }
}

/// The API's routes and their OpenAPI description, from the same declarations.
pub fn api_routes() -> OpenApiRouter<Api> {
    OpenApiRouter::with_openapi(document_base())
        .routes(routes!(
            documents::get_document,
            documents::put_document,
            documents::delete_document
        ))
        .routes(routes!(documents::list_documents))
        .routes(routes!(documents::batch))
        .routes(routes!(query::query))
        .routes(routes!(live::live))
        .routes(routes!(watch::watch))
        .routes(routes!(
            collections::list_collections,
            collections::create_collection
        ))
        .routes(routes!(collections::list_indexes))
        .routes(routes!(collections::create_index))
        .routes(routes!(collections::drop_index))
        .routes(routes!(transactions::begin, transactions::list))
        .routes(routes!(
            transactions::get,
            transactions::put,
            transactions::delete
        ))
        .routes(routes!(transactions::query))
        .routes(routes!(transactions::commit))
        .routes(routes!(transactions::rollback))
        .routes(routes!(admin::list_databases, admin::create_database))
        .routes(routes!(
            admin::get_database,
            admin::update_database,
            admin::drop_database
        ))
        .routes(routes!(admin::cluster_status))
        .routes(routes!(admin::members))
}

/// The OpenAPI document of the API.
pub fn openapi() -> OpenApi {
    api_routes().into_openapi()
}

/// The API's router, with `/openapi.json`.
pub fn router(gateway: Gateway, limits: Limits) -> Router {
    let (routes, document) = api_routes().split_for_parts();
    let document = std::sync::Arc::new(document);
    routes
        .route(
            OPENAPI_PATH,
            get(move || {
                let document = document.clone();
                async move { axum::Json(document.as_ref().clone()) }
            }),
        )
        .fallback(|| async {
            ApiError::new(
                tonic::Code::NotFound,
                flotilla_proto::v1::ErrorReason::Unspecified,
                "no such endpoint (the API is described at /openapi.json)",
            )
        })
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .with_state(Api { gateway })
}

fn document_base() -> OpenApi {
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Flotilla HTTP API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Documents, databases and the cluster of a Flotilla node, as JSON over HTTP. \
                     Errors answer with the HTTP status of their gRPC code and a JSON body \
                     {code, reason, message}; reason is what a program matches on.",
                ))
                .build(),
        )
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_path_is_a_route_the_metrics_name_and_every_api_route_is_documented() {
        let document = openapi();
        let documented: std::collections::BTreeSet<&str> =
            document.paths.paths.keys().map(String::as_str).collect();
        let routes: std::collections::BTreeSet<&str> = crate::http::ROUTES
            .iter()
            .copied()
            .filter(|r| r.starts_with("/v1/"))
            .collect();
        assert_eq!(documented, routes);
    }

    #[test]
    fn the_document_is_openapi_3_1_with_its_error_schema() {
        let json = match serde_json::to_value(openapi()) {
            Ok(json) => json,
            Err(e) => panic!("serializing the document: {e}"),
        };
        assert_eq!(json["openapi"], "3.1.0");
        assert!(
            json["components"]["schemas"]["ErrorBody"].is_object(),
            "{json:#}"
        );
        if let Err(e) = oas3::from_json(json.to_string()) {
            panic!("not an OpenAPI 3.1 document: {e}\n{json:#}");
        }
        // Every schema compiles as JSON Schema 2020-12, the dialect of OpenAPI 3.1.
        let schemas = json["components"]["schemas"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert!(schemas.len() > 10, "{schemas:?}");
        for (name, schema) in schemas {
            let mut root = schema.clone();
            if let Some(object) = root.as_object_mut() {
                object.insert("components".into(), json["components"].clone());
            }
            if let Err(e) = jsonschema::validator_for(&root) {
                panic!("schema {name} does not compile: {e}");
            }
        }
    }
}
