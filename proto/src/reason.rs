//! The one place where an [`ErrorReason`] is put into, and read out of, a gRPC status.

use tonic::Status;
use tonic::metadata::MetadataValue;

use crate::v1::ErrorReason;

/// Metadata key naming the [`ErrorReason`] of a failed call.
pub const REASON_KEY: &str = "x-flotilla-reason";

/// `status` with `reason` recorded in its metadata.
pub fn with_reason(mut status: Status, reason: ErrorReason) -> Status {
    if reason != ErrorReason::Unspecified
        && let Ok(value) = MetadataValue::try_from(reason.as_str_name())
    {
        status.metadata_mut().insert(REASON_KEY, value);
    }
    status
}

/// The reason recorded in `status`, if any (an unknown name reads as none).
pub fn reason_of(status: &Status) -> Option<ErrorReason> {
    let name = status.metadata().get(REASON_KEY)?.to_str().ok()?;
    ErrorReason::from_str_name(name).filter(|r| *r != ErrorReason::Unspecified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn a_reason_put_into_a_status_reads_back() {
        let status = with_reason(
            Status::new(Code::NotFound, "database x does not exist"),
            ErrorReason::DatabaseNotFound,
        );
        assert_eq!(reason_of(&status), Some(ErrorReason::DatabaseNotFound));
        assert_eq!(reason_of(&Status::not_found("no reason")), None);
    }

    #[test]
    fn an_unknown_reason_name_reads_as_none() {
        let mut status = Status::aborted("x");
        status
            .metadata_mut()
            .insert(REASON_KEY, MetadataValue::from_static("SOMETHING_ELSE"));
        assert_eq!(reason_of(&status), None);
    }
}
