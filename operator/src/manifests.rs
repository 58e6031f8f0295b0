//! YAML in and out: the CRD manifests and multi-document streams of objects.

use crate::crd::all_crds;
use crate::error::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Serializes `objects` as one YAML stream, each object a document starting with `---`.
pub fn to_yaml_stream<T: Serialize>(objects: &[T]) -> Result<String> {
    let mut out = String::new();
    for object in objects {
        let value = serde_json::to_value(object).map_err(|e| Error::Serialize {
            what: "object".to_owned(),
            message: e.to_string(),
        })?;
        // Keys in one order whatever serde_json's features in the build (another crate may turn
        // on `preserve_order`), so that the output is the same in every build.
        let document = serde_saphyr::to_string(&sorted(value)).map_err(|e| Error::Serialize {
            what: "object".to_owned(),
            message: e.to_string(),
        })?;
        out.push_str("---\n");
        out.push_str(&document);
        if !document.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// `value` with the keys of every object in sorted order.
fn sorted(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted).collect())
        }
        other => other,
    }
}

/// Every CRD of the operator as one YAML stream: what `flotilla-operator crds` prints
/// and what `crds/` holds.
pub fn crds_yaml() -> Result<String> {
    to_yaml_stream(&all_crds())
}

/// Parses every non-empty document of a YAML stream. `source_name` names the input in errors.
pub fn from_yaml_stream<T: DeserializeOwned>(text: &str, source_name: &str) -> Result<Vec<T>> {
    let documents: Vec<Option<serde_json::Value>> =
        serde_saphyr::from_multiple(text).map_err(|e| Error::InvalidManifest {
            source_name: source_name.to_owned(),
            message: e.to_string(),
        })?;
    documents
        .into_iter()
        .flatten()
        .filter(|v| !v.is_null())
        .map(|value| {
            serde_json::from_value(value).map_err(|e| Error::InvalidManifest {
                source_name: source_name.to_owned(),
                message: e.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Cluster;

    #[test]
    fn a_yaml_stream_round_trips() {
        let clusters = vec![Cluster::test(), Cluster::test().named("other")];
        let text = to_yaml_stream(&clusters).unwrap_or_default();
        let parsed: Vec<Cluster> = from_yaml_stream(&text, "test").unwrap_or_default();
        assert_eq!(parsed, clusters);
    }

    #[test]
    fn empty_documents_are_skipped() {
        let parsed: Vec<serde_json::Value> =
            from_yaml_stream("---\n---\na: 1\n---\n", "test").unwrap_or_default();
        assert_eq!(parsed, vec![serde_json::json!({"a": 1})]);
    }

    #[test]
    fn a_broken_manifest_names_its_source() {
        let result: Result<Vec<Cluster>> = from_yaml_stream("kind: [", "cluster.yaml");
        let message = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("cluster.yaml"), "{message}");
    }
}
