//! What applying a write answered, as the caller's results: each batch's outcome and the
//! revision it applied at (an earlier one when the write repeated a request the shard had
//! applied, see `store::dedup`), and a rejected batch as the error its caller gets.

use flotilla_proto::v1 as pb;
use flotilla_proto::v1::ErrorReason;

use crate::command::{OpOutcome, Rejection, RequestId, Response as Applied};
use crate::error::{NodeError, NodeResult, Refusal};

/// The outcome of one batch and the revision it applied at.
pub(super) type Answer = NodeResult<(Vec<OpOutcome>, u64)>;

/// The revision a batch applied at and its outcome, a rejection as the state machine gave it.
pub(super) type Outcome = (u64, Result<Vec<OpOutcome>, Rejection>);

/// The error a caller gets for a batch that was not applied.
pub(super) fn rejected(rejection: Rejection) -> NodeError {
    match rejection {
        Rejection::VersionMismatch { .. } => NodeError::VersionMismatch(rejection.to_string()),
        Rejection::RequestExpired { .. } => NodeError::refused(
            Refusal::Aborted,
            ErrorReason::RequestExpired,
            rejection.to_string(),
        ),
        // A write meets a transaction's intent only where it does not wait for it.
        Rejection::Intent { .. } => NodeError::refused(
            Refusal::Aborted,
            ErrorReason::TxnConflict,
            rejection.to_string(),
        ),
    }
}

fn answer(revision: u64, result: Result<Vec<OpOutcome>, Rejection>) -> Answer {
    result.map(|ops| (ops, revision)).map_err(rejected)
}

/// The answer of the single batch of an entry proposed at `revision`.
pub(super) fn single(applied: Applied, revision: u64) -> Answer {
    match applied {
        Applied::Data(result) => answer(revision, result),
        Applied::Repeated(mut answers) if answers.len() == 1 => match answers.pop() {
            Some((first, result)) => answer(first, result),
            None => Err(unexpected(&Applied::Repeated(answers))),
        },
        other => Err(unexpected(&other)),
    }
}

/// The outcomes of the `n` batches of an entry proposed at `revision`, in order, each with
/// the revision it applied at, rejections as the state machine gave them.
pub(super) fn many_raw(applied: Applied, revision: u64, n: usize) -> NodeResult<Vec<Outcome>> {
    match applied {
        Applied::DataMany(results) if results.len() == n => {
            Ok(results.into_iter().map(|r| (revision, r)).collect())
        }
        Applied::Repeated(answers) if answers.len() == n => Ok(answers),
        other => Err(unexpected(&other)),
    }
}

fn unexpected(applied: &Applied) -> NodeError {
    NodeError::Internal(format!("unexpected response {applied:?}"))
}

/// The request id of a write, as the state machine keeps it.
pub(super) fn request_id(id: Option<&pb::RequestId>) -> Option<RequestId> {
    id.map(|id| RequestId {
        client: id.client,
        seq: id.seq,
    })
}

/// The request id of a write, as the protocol carries it.
pub(super) fn request_id_proto(id: Option<RequestId>) -> Option<pb::RequestId> {
    id.map(|id| pb::RequestId {
        client: id.client,
        seq: id.seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::status::to_status;

    #[test]
    fn a_repeated_write_answers_its_first_revision() {
        let first = vec![OpOutcome::Put { version: 1 }];
        let applied = Applied::Repeated(vec![(7, Ok(first.clone()))]);
        assert_eq!(single(applied, 12).ok(), Some((first, 7)));
    }

    #[test]
    fn an_expired_request_is_aborted_with_its_reason() {
        let e = rejected(Rejection::RequestExpired { client: 1, seq: 2 });
        let status = to_status(e);
        assert_eq!(status.code(), tonic::Code::Aborted);
        assert_eq!(
            flotilla_proto::reason_of(&status),
            Some(ErrorReason::RequestExpired)
        );
    }

    #[test]
    fn answers_of_many_follow_the_batches() {
        let applied = Applied::Repeated(vec![
            (3, Ok(vec![OpOutcome::Delete { existed: true }])),
            (
                9,
                Err(Rejection::VersionMismatch {
                    collection: "c".into(),
                    id: "a".into(),
                    expected: 1,
                    current: 2,
                }),
            ),
        ]);
        let answers = many_raw(applied, 9, 2).unwrap_or_default();
        assert_eq!(answers.len(), 2);
        assert!(matches!(answers[0], (3, Ok(_))));
        assert!(matches!(
            answers[1],
            (9, Err(Rejection::VersionMismatch { .. }))
        ));
        assert!(many_raw(Applied::DataMany(vec![]), 9, 2).is_err());
    }
}
