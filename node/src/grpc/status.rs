//! The one mapping from node errors to gRPC status codes.

use flotilla_proto::v1::CallError;
use tonic::{Code, Status};

use crate::error::NodeError;

pub fn to_status(e: NodeError) -> Status {
    let code = match &e {
        NodeError::NotLeader { .. } | NodeError::Unavailable(_) => Code::Unavailable,
        NodeError::InvalidArgument(_) => Code::InvalidArgument,
        NodeError::NotFound(_) => Code::NotFound,
        NodeError::AlreadyExists(_) => Code::AlreadyExists,
        NodeError::FailedPrecondition(_) | NodeError::VersionMismatch(_) => {
            Code::FailedPrecondition
        }
        NodeError::ResourceExhausted(_) => Code::ResourceExhausted,
        NodeError::OutOfRange(_) => Code::OutOfRange,
        NodeError::DeadlineExceeded(_) => Code::DeadlineExceeded,
        NodeError::OutcomeUnknown(_) => Code::Aborted,
        NodeError::Internal(_) => Code::Internal,
    };
    let version_mismatch = matches!(e, NodeError::VersionMismatch(_));
    let mut status = Status::new(code, e.to_string());
    if version_mismatch && let Ok(v) = REASON_VERSION_MISMATCH.parse() {
        status.metadata_mut().insert(REASON_KEY, v);
    }
    status
}

/// The status of one call of a Multi request, as the message that carries it.
pub fn call_error(status: &Status) -> CallError {
    CallError {
        code: status.code() as i32,
        message: status.message().to_string(),
        reason: status
            .metadata()
            .get(REASON_KEY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
    }
}

/// Metadata key naming the kind of failure (the client library reads it).
pub const REASON_KEY: &str = "x-flotilla-reason";
/// [`REASON_KEY`] value of an `if_version` conflict.
pub const REASON_VERSION_MISMATCH: &str = "version-mismatch";

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Self {
        to_status(e)
    }
}
