//! The one mapping from a gRPC status to an HTTP answer: the status code that matches the gRPC
//! code, and a JSON body naming the code, the [`ErrorReason`] a program acts on (the
//! `x-flotilla-reason` of the status) and the message.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flotilla_proto::reason_of;
use flotilla_proto::v1::ErrorReason;
use serde::{Deserialize, Serialize};
use tonic::Code;
use utoipa::ToSchema;

/// A failed request, as every endpoint answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The gRPC status code's name, e.g. `NOT_FOUND`, `FAILED_PRECONDITION`.
    #[schema(example = "FAILED_PRECONDITION")]
    pub code: String,
    /// Why, in terms a program acts on (never match on the message): the `ErrorReason` name
    /// that gRPC callers read in `x-flotilla-reason`; absent when the code says it all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "ERROR_REASON_VERSION_MISMATCH")]
    pub reason: Option<String>,
    /// For people.
    pub message: String,
}

/// An HTTP error answer: its status and body.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(code: Code, reason: ErrorReason, message: impl Into<String>) -> ApiError {
        // A leader whose storage is full answers as WebDAV's servers do when theirs is.
        let status = if reason == ErrorReason::StorageFull {
            StatusCode::INSUFFICIENT_STORAGE
        } else {
            http_status(code)
        };
        ApiError {
            status,
            body: ErrorBody {
                code: code_name(code).to_owned(),
                reason: (reason != ErrorReason::Unspecified)
                    .then(|| reason.as_str_name().to_owned()),
                message: message.into(),
            },
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::InvalidArgument, ErrorReason::Unspecified, message)
    }

    /// A request axum could not read (path, query or body), keeping axum's status where it
    /// says more than 400 (413 too large, 415 not JSON).
    pub fn rejected(status: StatusCode, message: String) -> ApiError {
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => Code::ResourceExhausted,
            _ => Code::InvalidArgument,
        };
        let mut error = ApiError::new(code, ErrorReason::Unspecified, message);
        if status == StatusCode::PAYLOAD_TOO_LARGE || status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            error.status = status;
        }
        error
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> ApiError {
        ApiError::new(
            status.code(),
            reason_of(&status).unwrap_or(ErrorReason::Unspecified),
            status.message(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthenticated = self.status == StatusCode::UNAUTHORIZED;
        let mut response = (self.status, Json(self.body)).into_response();
        if unauthenticated {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The HTTP status of a gRPC code, as gRPC-gateway maps them, except that a failed
/// precondition (an `If-Match` that did not hold) is 412 Precondition Failed.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        // What nginx and gRPC-gateway answer for a request the client gave up on.
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The name of a gRPC code as the gRPC specification spells it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::with_reason;

    #[test]
    fn a_version_mismatch_is_412_and_names_its_reason() {
        let status = with_reason(
            tonic::Status::failed_precondition("version mismatch"),
            ErrorReason::VersionMismatch,
        );
        let error = ApiError::from(status);
        assert_eq!(error.status, StatusCode::PRECONDITION_FAILED);
        assert_eq!(error.body.code, "FAILED_PRECONDITION");
        assert_eq!(
            error.body.reason.as_deref(),
            Some("ERROR_REASON_VERSION_MISMATCH")
        );
        assert_eq!(error.body.message, "version mismatch");
    }

    #[test]
    fn every_code_maps_to_an_error_status_and_its_own_name() {
        let codes = [
            (Code::NotFound, 404),
            (Code::InvalidArgument, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::Unavailable, 503),
            (Code::ResourceExhausted, 429),
            (Code::Aborted, 409),
            (Code::AlreadyExists, 409),
            (Code::DeadlineExceeded, 504),
            (Code::Internal, 500),
            (Code::Cancelled, 499),
        ];
        for (code, http) in codes {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
        let error = ApiError::from(tonic::Status::unavailable("no quorum"));
        assert_eq!(error.body.code, "UNAVAILABLE");
        assert_eq!(error.body.reason, None);
    }

    #[test]
    fn a_write_refused_for_a_full_storage_is_507() {
        let status = with_reason(
            tonic::Status::resource_exhausted("storage full"),
            ErrorReason::StorageFull,
        );
        let error = ApiError::from(status);
        assert_eq!(error.status, StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(error.body.code, "RESOURCE_EXHAUSTED");
        assert_eq!(
            error.body.reason.as_deref(),
            Some("ERROR_REASON_STORAGE_FULL")
        );
    }

    #[test]
    fn an_unauthenticated_answer_asks_for_a_bearer_token() {
        let response = ApiError::from(tonic::Status::unauthenticated("no token")).into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers().get(header::WWW_AUTHENTICATE),
            Some(&HeaderValue::from_static("Bearer"))
        );
    }
}
