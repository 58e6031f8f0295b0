//! Conditional requests on a document: its version is its entity tag (`ETag: "3"`), so
//! `If-Match: "3"` writes only over version 3 and `If-None-Match: *` only creates. Pure.

/// The `ETag` of a document version.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// Why a condition header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    #[error("{header}: {value:?} is not a version entity tag such as \"3\"")]
    Malformed { header: &'static str, value: String },
    #[error(
        "If-Match: * is not supported (a write names the version it replaces: If-Match: \"3\")"
    )]
    AnyVersion,
    #[error("If-None-Match on a write takes only * (create only)")]
    NoneMatchVersion,
    #[error("If-Match and If-None-Match together are contradictory")]
    Both,
}

/// The `if_version` of a write from its `If-Match` and `If-None-Match` headers: the version
/// it must replace, `Some(0)` when the document must not exist, `None` when unconditional.
pub fn write_condition(
    if_match: Option<&str>,
    if_none_match: Option<&str>,
) -> Result<Option<u64>, ConditionError> {
    match (if_match.map(str::trim), if_none_match.map(str::trim)) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(ConditionError::Both),
        (Some("*"), None) => Err(ConditionError::AnyVersion),
        (Some(tag), None) => version_tag("If-Match", tag).map(Some),
        (None, Some("*")) => Ok(Some(0)),
        (None, Some(_)) => Err(ConditionError::NoneMatchVersion),
    }
}

/// Whether a read's `If-None-Match` matches the current `version` (answer 304 then).
pub fn not_modified(if_none_match: Option<&str>, version: u64) -> bool {
    if_none_match.is_some_and(|header| {
        header.split(',').map(str::trim).any(|tag| {
            tag == "*" || version_tag("If-None-Match", tag.trim_start_matches("W/")) == Ok(version)
        })
    })
}

/// One strong entity tag naming a version: `"3"`.
fn version_tag(header: &'static str, tag: &str) -> Result<u64, ConditionError> {
    let malformed = || ConditionError::Malformed {
        header,
        value: tag.to_owned(),
    };
    let inner = tag
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .ok_or_else(malformed)?;
    match inner.parse::<u64>() {
        Ok(v) if v > 0 && !inner.starts_with('+') => Ok(v),
        _ => Err(malformed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn if_match_names_the_version_a_write_replaces() {
        assert_eq!(write_condition(None, None), Ok(None));
        assert_eq!(write_condition(Some("\"7\""), None), Ok(Some(7)));
        assert_eq!(write_condition(None, Some("*")), Ok(Some(0)));
        assert_eq!(
            write_condition(Some("*"), None),
            Err(ConditionError::AnyVersion)
        );
        assert_eq!(
            write_condition(Some("\"1\""), Some("*")),
            Err(ConditionError::Both)
        );
        assert_eq!(
            write_condition(None, Some("\"1\"")),
            Err(ConditionError::NoneMatchVersion)
        );
        for bad in [
            "7",
            "W/\"7\"",
            "\"0\"",
            "\"-1\"",
            "\"+1\"",
            "\"1\", \"2\"",
            "\"\"",
        ] {
            assert!(
                matches!(
                    write_condition(Some(bad), None),
                    Err(ConditionError::Malformed { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_read_is_not_modified_when_a_tag_names_its_version() {
        assert!(not_modified(Some("\"3\""), 3));
        assert!(not_modified(Some("\"1\", W/\"3\""), 3));
        assert!(not_modified(Some("*"), 3));
        assert!(!not_modified(Some("\"2\""), 3));
        assert!(!not_modified(None, 3));
    }

    proptest! {
        #[test]
        fn an_etag_reads_back_as_its_version(version in 1u64..) {
            prop_assert_eq!(write_condition(Some(&etag(version)), None), Ok(Some(version)));
            prop_assert!(not_modified(Some(&etag(version)), version));
        }
    }
}
