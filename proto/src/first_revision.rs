//! The oldest revision a shard still keeps, carried in the metadata of the `OUT_OF_RANGE`
//! status that answers a watch from a compacted revision (reason
//! `ERROR_REASON_REVISION_COMPACTED`), so that a program resumes without reading the message.

use tonic::Status;
use tonic::metadata::MetadataValue;

/// Metadata key holding the oldest revision kept.
pub const FIRST_REVISION_KEY: &str = "x-flotilla-first-revision";

/// `status` carrying `first` as the oldest revision kept.
pub fn with_first_revision(mut status: Status, first: u64) -> Status {
    if let Ok(value) = MetadataValue::try_from(first.to_string()) {
        status.metadata_mut().insert(FIRST_REVISION_KEY, value);
    }
    status
}

/// The oldest revision kept that `status` carries, if any.
pub fn first_revision_of(status: &Status) -> Option<u64> {
    status
        .metadata()
        .get(FIRST_REVISION_KEY)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_revision_reads_back() {
        let status = with_first_revision(Status::out_of_range("compacted"), 4097);
        assert_eq!(first_revision_of(&status), Some(4097));
        assert_eq!(first_revision_of(&Status::out_of_range("none")), None);
    }
}
