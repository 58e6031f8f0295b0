//! The one mapping from node errors to gRPC status codes and the [`ErrorReason`] a caller acts
//! on (in the `x-flotilla-reason` metadata).

use flotilla_proto::v1::{CallError, ErrorReason};
use flotilla_proto::{REASON_KEY, with_reason};
use tonic::{Code, Status};

use crate::error::{NodeError, Refusal};
use crate::meta::MetaError;
use crate::meta::auth::AuthError;

pub fn to_status(e: NodeError) -> Status {
    let (code, reason) = match &e {
        NodeError::NotLeader { .. } | NodeError::Unavailable(_) => {
            (Code::Unavailable, ErrorReason::Unspecified)
        }
        NodeError::InvalidArgument(_) => (Code::InvalidArgument, ErrorReason::Unspecified),
        NodeError::NotFound(_) => (Code::NotFound, ErrorReason::Unspecified),
        NodeError::AlreadyExists(_) => (Code::AlreadyExists, ErrorReason::Unspecified),
        NodeError::FailedPrecondition(_) => (Code::FailedPrecondition, ErrorReason::Unspecified),
        NodeError::VersionMismatch(_) => (Code::FailedPrecondition, ErrorReason::VersionMismatch),
        NodeError::ResourceExhausted(_) => (Code::ResourceExhausted, ErrorReason::Unspecified),
        NodeError::OutOfRange(_) => (Code::OutOfRange, ErrorReason::Unspecified),
        NodeError::DeadlineExceeded(_) => (Code::DeadlineExceeded, ErrorReason::Unspecified),
        NodeError::OutcomeUnknown(_) => (Code::Aborted, ErrorReason::Unspecified),
        NodeError::Internal(_) => (Code::Internal, ErrorReason::Unspecified),
        NodeError::Meta(m) => meta(m),
        NodeError::Refused { code, reason, .. } => (
            match code {
                Refusal::NotFound => Code::NotFound,
                Refusal::FailedPrecondition => Code::FailedPrecondition,
                Refusal::InvalidArgument => Code::InvalidArgument,
                Refusal::Aborted => Code::Aborted,
                Refusal::OutOfRange => Code::OutOfRange,
                Refusal::ResourceExhausted => Code::ResourceExhausted,
                Refusal::Unavailable => Code::Unavailable,
            },
            *reason,
        ),
    };
    with_reason(Status::new(code, e.to_string()), reason)
}

/// The code and reason of a command the meta state refused.
fn meta(e: &MetaError) -> (Code, ErrorReason) {
    match e {
        MetaError::NodeRemoved(_) => (Code::FailedPrecondition, ErrorReason::NodeRemoved),
        MetaError::NodeNotMember(_) => (Code::NotFound, ErrorReason::NodeNotFound),
        MetaError::DatabaseExists(_) => (Code::AlreadyExists, ErrorReason::DatabaseExists),
        MetaError::DatabaseNotFound(_) => (Code::NotFound, ErrorReason::DatabaseNotFound),
        MetaError::GroupNotFound(_) => (Code::NotFound, ErrorReason::ShardNotFound),
        MetaError::NotMetaGroup => (Code::Internal, ErrorReason::Unspecified),
        MetaError::ShardKeyFixed { .. } => (Code::FailedPrecondition, ErrorReason::ShardKeyFixed),
        MetaError::InvalidIndex(_) => (Code::InvalidArgument, ErrorReason::InvalidIndex),
        MetaError::Auth(a) => auth(a),
    }
}

/// The code and reason of a user or role change the meta state refused.
fn auth(e: &AuthError) -> (Code, ErrorReason) {
    match e {
        AuthError::UserNotFound(_) => (Code::NotFound, ErrorReason::UserNotFound),
        AuthError::UserExists(_) => (Code::AlreadyExists, ErrorReason::UserExists),
        AuthError::RoleNotFound(_) | AuthError::GrantNotFound { .. } => {
            (Code::NotFound, ErrorReason::RoleNotFound)
        }
        AuthError::RoleExists(_) => (Code::AlreadyExists, ErrorReason::RoleExists),
        AuthError::RootRequired | AuthError::RootRoleBuiltIn => {
            (Code::FailedPrecondition, ErrorReason::RootRequired)
        }
        AuthError::TokenNotFound(_) => (Code::NotFound, ErrorReason::TokenNotFound),
        AuthError::TooManyTokens(_) => (Code::ResourceExhausted, ErrorReason::LimitExceeded),
    }
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

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Self {
        to_status(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::reason_of;

    #[test]
    fn a_refused_meta_command_carries_its_reason() {
        let status = to_status(NodeError::Meta(MetaError::DatabaseExists("orders".into())));
        assert_eq!(status.code(), Code::AlreadyExists);
        assert_eq!(reason_of(&status), Some(ErrorReason::DatabaseExists));
        let status = to_status(NodeError::database_not_found("orders"));
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(reason_of(&status), Some(ErrorReason::DatabaseNotFound));
    }

    #[test]
    fn a_version_conflict_carries_its_reason_in_a_multi_answer_too() {
        let status = to_status(NodeError::VersionMismatch("version mismatch".into()));
        assert_eq!(reason_of(&status), Some(ErrorReason::VersionMismatch));
        assert_eq!(call_error(&status).reason, "ERROR_REASON_VERSION_MISMATCH");
    }

    #[test]
    fn an_error_without_a_reason_names_none() {
        let status = to_status(NodeError::Unavailable("no quorum".into()));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(reason_of(&status), None);
    }
}
