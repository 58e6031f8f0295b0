//! Checks of client input, before anything is proposed: names, sizes and JSON bodies.

use crate::config::NodeConfig;
use crate::error::{NodeError, NodeResult};

const MAX_NAME_BYTES: usize = 256;
const MAX_ID_BYTES: usize = 512;

fn check_name(kind: &str, value: &str, max: usize) -> NodeResult<()> {
    if value.is_empty() {
        return Err(NodeError::InvalidArgument(format!(
            "{kind} must not be empty"
        )));
    }
    if value.len() > max {
        return Err(NodeError::InvalidArgument(format!(
            "{kind} is longer than {max} bytes"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(NodeError::InvalidArgument(format!(
            "{kind} contains control characters"
        )));
    }
    Ok(())
}

pub fn database(name: &str) -> NodeResult<()> {
    check_name("database", name, MAX_NAME_BYTES)
}

/// A database name that can be created: lowercase letters, digits, '-' and '_', at most 63.
pub fn new_database(name: &str) -> NodeResult<()> {
    database(name)?;
    let ok = name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if !ok {
        return Err(NodeError::InvalidArgument(format!(
            "invalid database name {name:?}: use 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit"
        )));
    }
    Ok(())
}

pub fn collection(name: &str) -> NodeResult<()> {
    check_name("collection", name, MAX_NAME_BYTES)
}

pub fn document_id(id: &str) -> NodeResult<()> {
    check_name("document id", id, MAX_ID_BYTES)
}

/// A document body: within the size limit and valid JSON.
pub fn body(json: &str, config: &NodeConfig) -> NodeResult<()> {
    if json.len() > config.max_document_bytes {
        return Err(NodeError::ResourceExhausted(format!(
            "document is {} bytes, over the limit of {} bytes",
            json.len(),
            config.max_document_bytes
        )));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(json)
        .map_err(|e| NodeError::InvalidArgument(format!("document body is not valid JSON: {e}")))?;
    Ok(())
}

/// A page size: 0 means the default; larger values are capped.
pub fn limit(limit: u32) -> usize {
    match limit {
        0 => 100,
        n => (n as usize).min(10_000),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        config: NodeConfig,
    }

    fn config(max: usize) -> NodeConfig {
        Wrap::parse_from([
            "x",
            "--name",
            "n",
            "--data-dir",
            "/tmp/x",
            "--max-document-bytes",
            &max.to_string(),
        ])
        .config
    }

    #[test]
    fn bodies_must_be_json_and_within_the_limit() {
        let c = config(16);
        assert!(body(r#"{"a":1}"#, &c).is_ok());
        assert!(matches!(
            body("{not json", &c),
            Err(NodeError::InvalidArgument(_))
        ));
        assert!(matches!(
            body(r#"{"a":"0123456789abcdef"}"#, &c),
            Err(NodeError::ResourceExhausted(_))
        ));
    }

    #[test]
    fn names_and_ids_are_checked() {
        assert!(matches!(
            document_id(""),
            Err(NodeError::InvalidArgument(_))
        ));
        assert!(matches!(
            collection("a\u{0}b"),
            Err(NodeError::InvalidArgument(_))
        ));
        assert!(new_database("orders-2").is_ok());
        assert!(new_database("Orders").is_err());
        assert!(new_database("-x").is_err());
        assert_eq!(limit(0), 100);
        assert_eq!(limit(50_000), 10_000);
    }
}
