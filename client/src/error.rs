//! The client's error type and the one place where gRPC statuses are mapped onto it.
//!
//! Every variant is something a caller can act on: a final answer from the cluster
//! ([`Error::NotFound`], [`Error::VersionMismatch`], ...), a condition worth retrying later
//! ([`Error::Unavailable`], [`Error::Transport`]), or a write whose outcome is not known
//! ([`Error::OutcomeUnknown`]).

use std::error::Error as StdError;

use tonic::{Code, Status};

/// Result alias used throughout the client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use flotilla_proto::REASON_KEY;
pub use flotilla_proto::v1::ErrorReason;

fn is_version_mismatch(status: &Status) -> bool {
    flotilla_proto::reason_of(status) == Some(ErrorReason::VersionMismatch)
}

/// What went wrong with a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The database, document or node does not exist.
    #[error("{}", labelled("not found", .0))]
    NotFound(String),
    /// The object to create exists already (for example a database of the same name).
    #[error("{}", labelled("already exists", .0))]
    AlreadyExists(String),
    /// An `if_version` condition did not hold. Never retried: read the document again and decide.
    #[error("{}", labelled("version mismatch", .0))]
    VersionMismatch(String),
    /// The cluster is not in a state that allows the operation (e.g. removing a node that
    /// still holds replicas); the message says why.
    #[error("{}", labelled("failed precondition", .0))]
    FailedPrecondition(String),
    /// The request is malformed (bad JSON, empty id, bad endpoint address, ...).
    #[error("{}", labelled("invalid argument", .0))]
    InvalidArgument(String),
    /// The call needs credentials (the cluster has auth enabled), or the ones given were
    /// refused (wrong password, a token that expired or was revoked and could not be renewed).
    #[error("{}", labelled("unauthenticated", .0))]
    Unauthenticated(String),
    /// The user's roles do not grant what the call needs.
    #[error("{}", labelled("permission denied", .0))]
    PermissionDenied(String),
    /// The request is over a limit of the cluster (document size, batch size, ...).
    #[error("{}", labelled("resource exhausted", .0))]
    ResourceExhausted(String),
    /// The shard's leader has too little free storage to take a write that adds data (the
    /// reason `STORAGE_FULL`); nothing of it applied. The client asks again while its retries
    /// last (the leadership usually moves to a replica with room); after that, free space on
    /// the node or add storage, then write again. Reads, deletes and transactions under way
    /// go on.
    #[error("{}", labelled("storage full", .0))]
    StorageFull(String),
    /// The cluster has no leader or no quorum for the request right now; retrying later may
    /// succeed. Returned once the client's own retries are used up.
    #[error("{}", labelled("unavailable", .0))]
    Unavailable(String),
    /// A deadline passed before an answer came (a read, or a write known not to have applied).
    #[error("{}", labelled("deadline exceeded", .0))]
    DeadlineExceeded(String),
    /// No node could be reached (connection refused, reset, ...). Returned once the client's
    /// own retries over every endpoint are used up.
    #[error("transport error ({endpoint}): {message}")]
    Transport {
        /// The endpoint of the last attempt.
        endpoint: String,
        /// What the transport reported.
        message: String,
    },
    /// A write was sent but no answer came back (timeout, connection lost, or no quorum after
    /// it was sent): it may or may not have been applied. Read the document to find out, or
    /// write with `if_version` so that a repeated write cannot apply twice.
    #[error("{}", labelled("write outcome unknown", .0))]
    OutcomeUnknown(String),
    /// A watch asked for changes a shard no longer keeps (compacted, or older than the
    /// snapshot its replica was installed from): nothing was skipped silently. Read the
    /// current state and watch again from `first_revision` (the oldest kept), or from 0 for
    /// new changes only.
    #[error("{}", labelled("revision compacted", message))]
    RevisionCompacted {
        first_revision: u64,
        message: String,
    },
    /// The server answered with a status the client has no better name for.
    #[error("server error ({code:?}): {message}")]
    Server {
        /// The gRPC status code.
        code: Code,
        /// The status message.
        message: String,
    },
    /// The transaction met another one and was aborted; nothing of it applied. Run it again
    /// ([`crate::Client::transaction`] does).
    #[error("{}", labelled("transaction conflict", .0))]
    TxnConflict(String),
    /// The transaction was aborted or lost before it committed: it outlived its timeout, or
    /// its coordinating node is gone. Nothing of it applied; it may be run again.
    #[error("{}", labelled("transaction aborted", .0))]
    TxnAborted(String),
    /// A backup read named a cut whose fence is no longer up on its shard (the cut was
    /// lifted, by its backup or by the shard leader after its bound): begin a new cut.
    #[error("{}", labelled("cut lifted", .0))]
    CutLifted(String),
    /// The server's answer lacks a field the protocol promises.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// `label: message`, or the message alone when it already starts with the label (nodes often
/// say "version mismatch on ..." themselves).
fn labelled(label: &str, message: &str) -> String {
    let starts_with_label = message
        .get(..label.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(label));
    if starts_with_label {
        message.to_string()
    } else {
        format!("{label}: {message}")
    }
}

/// How an attempt failed, as far as the retry loop is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// A final answer: return it to the caller.
    Final,
    /// The request never left this process (the connection could not be made): safe to retry
    /// anywhere, reads and writes alike.
    NotSent,
    /// The cluster said it cannot serve the request now (no leader, no quorum).
    Unavailable,
    /// The request was sent but its fate is unknown (timeout, connection lost mid-call).
    Uncertain,
}

impl Error {
    /// True for errors that say the cluster or the network is unavailable right now, as opposed
    /// to an answer about the request itself.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable(_) | Error::Transport { .. } | Error::DeadlineExceeded(_)
        )
    }

    /// True for the end of an attempt whose deadline ran out: no answer in time, or the call
    /// cancelled on the way (a server cancels a call when the deadline it carries expires).
    pub(crate) fn is_cut_short(&self) -> bool {
        matches!(
            self,
            Error::DeadlineExceeded(_)
                | Error::Server {
                    code: Code::Cancelled,
                    ..
                }
        )
    }

    /// The gRPC status code this error corresponds to (for logging and exit codes).
    pub fn code(&self) -> Code {
        match self {
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::VersionMismatch(_) | Error::FailedPrecondition(_) | Error::CutLifted(_) => {
                Code::FailedPrecondition
            }
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::ResourceExhausted(_) | Error::StorageFull(_) => Code::ResourceExhausted,
            Error::Unavailable(_) | Error::Transport { .. } | Error::OutcomeUnknown(_) => {
                Code::Unavailable
            }
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::RevisionCompacted { .. } => Code::OutOfRange,
            Error::TxnConflict(_) | Error::TxnAborted(_) => Code::Aborted,
            Error::Server { code, .. } => *code,
            Error::Protocol(_) => Code::Internal,
        }
    }
}

/// Maps a status returned by a call to `endpoint` onto an [`Error`] and says how the retry loop
/// should treat it. This is the only place where gRPC codes are interpreted.
pub(crate) fn classify(status: &Status, endpoint: &str) -> (Error, Failure) {
    let message = status.message().to_string();
    if let Some(source) = StdError::source(status) {
        // A status carrying a source was made by tonic on this side from an I/O or HTTP/2
        // error, or from the request's own deadline; a status sent by a node has none.
        if has_source::<tonic::TimeoutExpired>(source) {
            let error = Error::DeadlineExceeded(format!("no answer from {endpoint} in time"));
            return (error, Failure::Uncertain);
        }
        let detail = error_chain(source);
        let error = Error::Transport {
            endpoint: endpoint.to_string(),
            message: if detail.is_empty() { message } else { detail },
        };
        let failure = if is_connect_error(source) {
            Failure::NotSent
        } else {
            Failure::Uncertain
        };
        return (error, failure);
    }
    match (status.code(), flotilla_proto::reason_of(status)) {
        (Code::Aborted, Some(ErrorReason::TxnConflict)) => {
            return (Error::TxnConflict(message), Failure::Final);
        }
        (Code::Aborted, Some(ErrorReason::TxnTimeout))
        | (Code::NotFound, Some(ErrorReason::TxnNotFound)) => {
            return (Error::TxnAborted(message), Failure::Final);
        }
        _ => {}
    }
    match status.code() {
        Code::NotFound => (Error::NotFound(message), Failure::Final),
        Code::AlreadyExists => (Error::AlreadyExists(message), Failure::Final),
        // A node marks optimistic-concurrency conflicts; other preconditions are general.
        Code::FailedPrecondition if is_version_mismatch(status) => {
            (Error::VersionMismatch(message), Failure::Final)
        }
        Code::FailedPrecondition
            if flotilla_proto::reason_of(status) == Some(ErrorReason::CutLifted) =>
        {
            (Error::CutLifted(message), Failure::Final)
        }
        // A write forwarded by a node whose view of the collection's shard key is a meta apply
        // behind: refused before it was proposed, so asking again (once that view caught up)
        // is safe.
        Code::FailedPrecondition
            if flotilla_proto::reason_of(status) == Some(ErrorReason::WrongShard) =>
        {
            (Error::FailedPrecondition(message), Failure::Unavailable)
        }
        Code::FailedPrecondition => (Error::FailedPrecondition(message), Failure::Final),
        Code::OutOfRange
            if flotilla_proto::reason_of(status) == Some(ErrorReason::RevisionCompacted) =>
        {
            let error = Error::RevisionCompacted {
                first_revision: flotilla_proto::first_revision_of(status).unwrap_or(0),
                message,
            };
            (error, Failure::Final)
        }
        Code::InvalidArgument | Code::OutOfRange => {
            (Error::InvalidArgument(message), Failure::Final)
        }
        // Refused before it was proposed: asking again (the leadership moves off a full node)
        // is safe.
        Code::ResourceExhausted
            if flotilla_proto::reason_of(status) == Some(ErrorReason::StorageFull) =>
        {
            (Error::StorageFull(message), Failure::Unavailable)
        }
        Code::ResourceExhausted => (Error::ResourceExhausted(message), Failure::Final),
        Code::Unauthenticated => (Error::Unauthenticated(message), Failure::Final),
        Code::PermissionDenied => (Error::PermissionDenied(message), Failure::Final),
        Code::Unavailable => (Error::Unavailable(message), Failure::Unavailable),
        Code::DeadlineExceeded => (Error::DeadlineExceeded(message), Failure::Uncertain),
        // A node answers Aborted for a write whose fate it cannot know (its leadership changed,
        // or the connection to the leader it forwarded to broke while the write was in flight).
        // A repeat of a write the shard no longer remembers: not applied now, and whether its
        // first attempt applied cannot be known any more; repeating it again would not tell.
        Code::Aborted if flotilla_proto::reason_of(status) == Some(ErrorReason::RequestExpired) => {
            (Error::OutcomeUnknown(message), Failure::Final)
        }
        Code::Aborted => (Error::OutcomeUnknown(message), Failure::Uncertain),
        // A request cancelled on the way (for example by a node shutting down) is uncertain.
        Code::Cancelled => (
            Error::Server {
                code: status.code(),
                message,
            },
            Failure::Uncertain,
        ),
        code => (Error::Server { code, message }, Failure::Final),
    }
}

/// True when the error chain says the request never left this process: the connection could
/// not be made, or it closed while the request still waited in the connection's queue (hyper
/// reports that as "canceled" and hands the request back unsent).
fn is_connect_error(err: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(err) = next {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        if err
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        next = err.source();
    }
    false
}

/// True when the error chain holds an error of type `E`.
fn has_source<E: StdError + 'static>(err: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(err) = next {
        if err.is::<E>() {
            return true;
        }
        next = err.source();
    }
    false
}

/// The messages of an error and its sources, joined with `: `.
fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_statuses_map_to_actionable_variants() {
        let cases = [
            (Code::NotFound, Failure::Final),
            (Code::FailedPrecondition, Failure::Final),
            (Code::InvalidArgument, Failure::Final),
            (Code::ResourceExhausted, Failure::Final),
            (Code::Unavailable, Failure::Unavailable),
            (Code::DeadlineExceeded, Failure::Uncertain),
            (Code::Internal, Failure::Final),
        ];
        for (code, failure) in cases {
            let (error, got) = classify(&Status::new(code, "m"), "127.0.0.1:1");
            assert_eq!(got, failure, "{code:?}");
            assert_eq!(error.code(), code, "{code:?}");
        }
        let (error, _) = classify(&Status::failed_precondition("node 3 holds replicas"), "e");
        assert_eq!(
            error,
            Error::FailedPrecondition("node 3 holds replicas".into())
        );
        let mut marked = Status::failed_precondition("v2 != v1");
        marked.metadata_mut().insert(
            REASON_KEY,
            tonic::metadata::MetadataValue::from_static(ErrorReason::VersionMismatch.as_str_name()),
        );
        let (error, _) = classify(&marked, "e");
        assert_eq!(error, Error::VersionMismatch("v2 != v1".into()));
        let misrouted = flotilla_proto::with_reason(
            Status::failed_precondition("a write forwarded to shard 3, for documents of shard 2"),
            ErrorReason::WrongShard,
        );
        let (error, failure) = classify(&misrouted, "e");
        assert_eq!(
            failure,
            Failure::Unavailable,
            "refused before proposing: asked again"
        );
        assert_eq!(error.code(), Code::FailedPrecondition);
        // A leader out of storage refused before proposing: asked again (the leadership moves).
        let full = flotilla_proto::with_reason(
            Status::resource_exhausted("node 2's storage is full"),
            ErrorReason::StorageFull,
        );
        assert_eq!(
            classify(&full, "e"),
            (
                Error::StorageFull("node 2's storage is full".into()),
                Failure::Unavailable
            )
        );
        let conflict =
            flotilla_proto::with_reason(Status::aborted("locked"), ErrorReason::TxnConflict);
        assert_eq!(
            classify(&conflict, "e"),
            (Error::TxnConflict("locked".into()), Failure::Final)
        );
        let gone = flotilla_proto::with_reason(Status::not_found("gone"), ErrorReason::TxnNotFound);
        assert_eq!(classify(&gone, "e").0, Error::TxnAborted("gone".into()));
        // A node that cannot know a write's fate says so with Aborted.
        let (error, failure) = classify(&Status::aborted("leadership changed"), "e");
        assert_eq!(error, Error::OutcomeUnknown("leadership changed".into()));
        assert_eq!(failure, Failure::Uncertain);
        // A repeat the shard no longer remembers: unknown, and not worth repeating again.
        let expired =
            flotilla_proto::with_reason(Status::aborted("too old"), ErrorReason::RequestExpired);
        let (error, failure) = classify(&expired, "e");
        assert_eq!(error, Error::OutcomeUnknown("too old".into()));
        assert_eq!(failure, Failure::Final);
        // A watch from a compacted revision names the oldest one kept.
        let compacted = flotilla_proto::with_first_revision(
            flotilla_proto::with_reason(
                Status::out_of_range("compacted"),
                ErrorReason::RevisionCompacted,
            ),
            4097,
        );
        let (error, failure) = classify(&compacted, "e");
        assert_eq!(failure, Failure::Final);
        assert_eq!(
            error,
            Error::RevisionCompacted {
                first_revision: 4097,
                message: "compacted".into()
            }
        );
    }

    #[test]
    fn messages_are_labelled_once() {
        let e = Error::VersionMismatch("version mismatch on c/1: expected 2, current 3".into());
        assert_eq!(
            e.to_string(),
            "version mismatch on c/1: expected 2, current 3"
        );
        let e = Error::NotFound("database x does not exist".into());
        assert_eq!(e.to_string(), "not found: database x does not exist");
        assert_eq!(
            Error::Unavailable(String::new()).to_string(),
            "unavailable: "
        );
    }

    #[test]
    fn the_requests_own_deadline_is_a_deadline_exceeded() {
        let status = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        let (error, failure) = classify(&status, "e");
        assert_eq!(failure, Failure::Uncertain);
        assert!(matches!(error, Error::DeadlineExceeded(_)), "{error:?}");
    }

    #[test]
    fn a_connect_error_is_a_transport_error_that_was_not_sent() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let status = Status::from_error(Box::new(tonic::ConnectError(Box::new(io))));
        let (error, failure) = classify(&status, "127.0.0.1:9");
        assert_eq!(failure, Failure::NotSent);
        match error {
            Error::Transport { endpoint, message } => {
                assert_eq!(endpoint, "127.0.0.1:9");
                assert!(message.contains("refused"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
