//! What can go wrong serving a request, in terms a caller can act on. Mapped to gRPC status codes
//! in one place (`grpc::status`).

use flotilla_proto::v1::ErrorReason;

use crate::meta::MetaError;
use crate::types::NodeId;

#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    /// This node cannot serve the request itself; `leader` is where to send it, when known.
    #[error("not the leader{}", leader.as_ref().map(|(id, a)| format!(" (leader is node {id} at {a})")).unwrap_or_default())]
    NotLeader { leader: Option<(NodeId, String)> },
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// An `if_version` condition did not hold (optimistic concurrency).
    #[error("{0}")]
    VersionMismatch(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    OutOfRange(String),
    /// A write was proposed but its fate is not known (it may still be applied).
    #[error("write outcome unknown: {0}")]
    OutcomeUnknown(String),
    #[error("request deadline exceeded: {0}")]
    DeadlineExceeded(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// The meta state refused the command.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// Refused for a reason a caller acts on (a status code and an [`ErrorReason`]).
    #[error("{message}")]
    Refused {
        code: Refusal,
        reason: ErrorReason,
        message: String,
    },
}

/// The status code of a [`NodeError::Refused`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotFound,
    FailedPrecondition,
    InvalidArgument,
    /// Not served, and nothing of it applied now: a transaction that aborted (a conflict, its
    /// timeout), or a retry too late to tell whether its first attempt applied.
    Aborted,
    /// Asked for what is no longer kept (a compacted revision).
    OutOfRange,
    /// Asked for more than a request may carry (a result over its limit).
    ResourceExhausted,
    /// Not served here now: another replica, or this one a moment later, serves it.
    Unavailable,
}

impl NodeError {
    /// A refusal with its reason.
    pub fn refused(code: Refusal, reason: ErrorReason, message: impl Into<String>) -> Self {
        NodeError::Refused {
            code,
            reason,
            message: message.into(),
        }
    }

    /// The database `name` does not exist.
    pub fn database_not_found(name: &str) -> Self {
        NodeError::Meta(MetaError::DatabaseNotFound(name.to_string()))
    }
}

impl From<std::io::Error> for NodeError {
    fn from(e: std::io::Error) -> Self {
        // A corrupt replica: another replica of the group can serve the request.
        if let Some(c) = crate::store::Corruption::of(&e) {
            return NodeError::Unavailable(format!("{c}; this replica no longer serves the group"));
        }
        NodeError::Internal(e.to_string())
    }
}

pub type NodeResult<T> = Result<T, NodeError>;
