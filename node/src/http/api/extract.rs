//! Axum's extractors, answering a request they cannot read with the API's JSON error body
//! (code `INVALID_ARGUMENT`) instead of axum's plain text.

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// What axum's rejection says, as an [`ApiError`].
macro_rules! rejected {
    ($rejection:expr) => {{
        let rejection = $rejection;
        ApiError::rejected(rejection.status(), rejection.body_text())
    }};
}

/// A JSON body, whatever its `Content-Type` says (`curl -d` sends a form's).
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let Body(bytes) = Body::from_request(request, state).await?;
        serde_json::from_slice(&bytes).map(Json).map_err(|e| {
            ApiError::invalid(format!("the request body is not the JSON expected: {e}"))
        })
    }
}

/// A raw body (a document).
pub struct Body(pub bytes::Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match bytes::Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(Body(bytes)),
            Err(e) => Err(rejected!(e)),
        }
    }
}

/// Path parameters.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Params(value)),
            Err(e) => Err(rejected!(e)),
        }
    }
}

/// Query parameters.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(QueryParams(value)),
            Err(e) => Err(rejected!(e)),
        }
    }
}
