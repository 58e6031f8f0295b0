//! `flotilla-operator render`: the manifests the operator would apply for Cluster
//! manifests, computed with no cluster at hand (for review and diffs).

use crate::crd::{Cluster, GROUP};
use crate::desired::{Shape, desired_objects};
use crate::error::{Error, Result};
use crate::manifests::{from_yaml_stream, to_yaml_stream};

/// Renders every `Cluster` in the YAML stream `text` (other documents are skipped).
/// `source_name` names the input in errors; a Cluster without a namespace is rendered
/// in `namespace` (`default` when that is unset too).
///
/// A Cluster without status renders as it is first applied: one pod that initialises
/// the Raft cluster; the operator scales it to `spec.replicas` once bootstrapped.
pub fn render(text: &str, source_name: &str, namespace: Option<&str>) -> Result<String> {
    let documents: Vec<serde_json::Value> = from_yaml_stream(text, source_name)?;
    let mut objects = Vec::new();
    for document in documents {
        if !is_cluster(&document) {
            continue;
        }
        let mut cluster: Cluster =
            serde_json::from_value(document).map_err(|e| Error::InvalidManifest {
                source_name: source_name.to_owned(),
                message: e.to_string(),
            })?;
        if cluster.metadata.namespace.is_none() {
            cluster.metadata.namespace = namespace.map(str::to_owned);
        }
        // Until `render` learns the steady state, it prints what a new cluster's first
        // apply gives, and what a recorded status gives otherwise.
        let shape = if cluster.recorded_cluster_id().is_some() {
            Shape::steady(&cluster)
        } else {
            Shape::first_apply()
        };
        objects.extend(desired_objects(&cluster, &shape)?);
    }
    to_yaml_stream(&objects)
}

fn is_cluster(document: &serde_json::Value) -> bool {
    let api_version = document.get("apiVersion").and_then(|v| v.as_str());
    let kind = document.get("kind").and_then(|v| v.as_str());
    kind == Some("Cluster") && api_version.is_some_and(|v| v.split('/').next() == Some(GROUP))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSet;

    const CLUSTER: &str = "\
apiVersion: flotilla.dev/v1alpha1
kind: Cluster
metadata:
  name: demo
  namespace: shop
spec:
  replicas: 3
  image: flotilla/flotilla-node:0.1.0
---
apiVersion: flotilla.dev/v1alpha1
kind: DatabaseGroup
metadata:
  name: orders
spec:
  clusterRef:
    name: demo
";

    #[test]
    fn render_prints_the_children_of_every_cluster_and_skips_other_kinds() {
        let out = render(CLUSTER, "cluster.yaml", None).unwrap_or_default();
        let objects: Vec<serde_json::Value> = from_yaml_stream(&out, "out").unwrap_or_default();
        let kinds: Vec<_> = objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(
            kinds,
            ["ConfigMap", "Service", "Service", "StatefulSet"].map(str::to_owned)
        );
        for object in &objects {
            assert_eq!(object["metadata"]["namespace"], "shop");
            assert!(object["apiVersion"].is_string());
        }
    }

    #[test]
    fn a_new_cluster_renders_as_a_single_bootstrapping_pod() {
        let out = render(CLUSTER, "cluster.yaml", None).unwrap_or_default();
        let objects: Vec<serde_json::Value> = from_yaml_stream(&out, "out").unwrap_or_default();
        let statefulset: Option<StatefulSet> = objects
            .into_iter()
            .find(|o| o["kind"] == "StatefulSet")
            .and_then(|o| serde_json::from_value(o).ok());
        assert_eq!(
            statefulset.and_then(|s| s.spec).and_then(|s| s.replicas),
            Some(1)
        );
    }

    #[test]
    fn a_cluster_without_namespace_renders_in_the_given_one() {
        let cluster = "apiVersion: flotilla.dev/v1alpha1\nkind: Cluster\nmetadata: {name: x}\nspec: {replicas: 1, image: i}\n";
        let out = render(cluster, "c.yaml", Some("prod")).unwrap_or_default();
        let objects: Vec<serde_json::Value> = from_yaml_stream(&out, "out").unwrap_or_default();
        assert!(!objects.is_empty());
        assert!(objects.iter().all(|o| o["metadata"]["namespace"] == "prod"));
        let args = objects
            .iter()
            .find(|o| o["kind"] == "StatefulSet")
            .map(|o| o["spec"]["template"]["spec"]["containers"][0]["args"].to_string())
            .unwrap_or_default();
        assert!(args.contains("x-peers.prod.svc:7100"), "{args}");
    }

    #[test]
    fn an_invalid_cluster_is_reported_with_its_file() {
        let bad = "apiVersion: flotilla.dev/v1alpha1\nkind: Cluster\nmetadata: {name: x}\nspec: {replicas: three}\n";
        let message = render(bad, "bad.yaml", None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("bad.yaml"), "{message}");
    }
}
