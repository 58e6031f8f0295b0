//! `flotilla-operator render`: the manifests the operator would apply for Cluster
//! manifests, computed with no cluster at hand (for review and GitOps diffs).
//!
//! By default it prints the steady state: what a running cluster at its spec has (every
//! replica, nodes joining the existing Raft cluster, the PodDisruptionBudget). The first
//! apply of a new cluster (one pod that initialises the Raft cluster) is shown with
//! [`Mode::FirstApply`], and the next step of a live cluster with [`Mode::Status`].

use crate::crd::{Cluster, ClusterStatus, GROUP};
use crate::desired::{OperatorPods, Shape, desired_objects};
use crate::error::{Error, Result};
use crate::manifests::{from_yaml_stream, to_yaml_stream};
use crate::plan::{self, Observed};

/// Which state of a cluster to render.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Mode {
    /// The cluster running at its spec.
    #[default]
    Steady,
    /// The first apply of a new cluster: one pod, which initialises the Raft cluster.
    FirstApply,
    /// What the operator applies next for a cluster with this live status (a scale-down
    /// in progress keeps its pods; no recorded cluster id means the first apply).
    Status(Box<ClusterStatus>),
}

/// Reads a live status: a `Cluster` with its `status` (`kubectl get flc NAME -o yaml`),
/// or the status alone.
pub fn parse_status(text: &str, source_name: &str) -> Result<ClusterStatus> {
    let invalid = |message: String| Error::InvalidManifest {
        source_name: source_name.to_owned(),
        message,
    };
    let documents: Vec<serde_json::Value> = from_yaml_stream(text, source_name)?;
    let [document] = documents.as_slice() else {
        return Err(invalid(format!(
            "expected one document, found {}",
            documents.len()
        )));
    };
    let status = if is_cluster(document) {
        document
            .get("status")
            .cloned()
            .ok_or_else(|| invalid("the Cluster has no status".to_owned()))?
    } else {
        document.clone()
    };
    serde_json::from_value(status).map_err(|e| invalid(e.to_string()))
}

/// Renders every `Cluster` in the YAML stream `text` (other documents are skipped) in
/// `mode`. `source_name` names the input in errors; a Cluster without a namespace is
/// rendered in `namespace` (`default` when that is unset too).
pub fn render(
    text: &str,
    source_name: &str,
    namespace: Option<&str>,
    mode: &Mode,
) -> Result<String> {
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
        let shape = match mode {
            Mode::Steady => Shape::steady(&cluster),
            Mode::FirstApply => Shape::first_apply(),
            Mode::Status(status) => {
                cluster.status = Some((**status).clone());
                plan::shape(&cluster, &Observed::default())
            }
        };
        objects.extend(desired_objects(&cluster, &shape, &OperatorPods::default())?);
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

    fn objects(mode: &Mode) -> Vec<serde_json::Value> {
        let out = match render(CLUSTER, "cluster.yaml", None, mode) {
            Ok(out) => out,
            Err(error) => panic!("render: {error}"),
        };
        match from_yaml_stream(&out, "out") {
            Ok(objects) => objects,
            Err(error) => panic!("rendered YAML: {error}"),
        }
    }

    fn kinds(objects: &[serde_json::Value]) -> Vec<String> {
        objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// StatefulSet replicas and the ConfigMap's `initial-cluster-state`.
    fn shape_of(objects: &[serde_json::Value]) -> (Option<i32>, Option<String>) {
        let statefulset: Option<StatefulSet> = objects
            .iter()
            .find(|o| o["kind"] == "StatefulSet")
            .and_then(|o| serde_json::from_value(o.clone()).ok());
        let state = objects
            .iter()
            .find(|o| o["kind"] == "ConfigMap")
            .and_then(|o| {
                o["data"]["initial-cluster-state"]
                    .as_str()
                    .map(str::to_owned)
            });
        (
            statefulset.and_then(|s| s.spec).and_then(|s| s.replicas),
            state,
        )
    }

    #[test]
    fn render_prints_the_children_of_every_cluster_and_skips_other_kinds() {
        let objects = objects(&Mode::Steady);
        assert_eq!(
            kinds(&objects),
            [
                "ConfigMap",
                "Service",
                "Service",
                "StatefulSet",
                "PodDisruptionBudget"
            ]
            .map(str::to_owned)
        );
        for object in &objects {
            assert_eq!(object["metadata"]["namespace"], "shop");
            assert!(object["apiVersion"].is_string());
        }
    }

    #[test]
    fn render_prints_the_steady_state_by_default() {
        assert_eq!(
            shape_of(&objects(&Mode::Steady)),
            (Some(3), Some("existing".to_owned()))
        );
    }

    #[test]
    fn first_apply_renders_a_single_bootstrapping_pod_without_a_budget() {
        let objects = objects(&Mode::FirstApply);
        assert_eq!(shape_of(&objects), (Some(1), Some("new".to_owned())));
        assert!(!kinds(&objects).contains(&"PodDisruptionBudget".to_owned()));
    }

    #[test]
    fn a_live_status_renders_the_next_step() {
        let draining = "\
clusterId: c-1
scaleDown:
  from: 5
  to: 3
  pods: [demo-4, demo-3]
  phase: Draining
";
        let status = match parse_status(draining, "status.yaml") {
            Ok(status) => status,
            Err(error) => panic!("status: {error}"),
        };
        // The pods leaving are still there while they are drained.
        assert_eq!(
            shape_of(&objects(&Mode::Status(Box::new(status)))),
            (Some(5), Some("existing".to_owned()))
        );
        // A status without a cluster id: the operator starts with the first apply.
        let fresh = Mode::Status(Box::default());
        assert_eq!(
            shape_of(&objects(&fresh)),
            (Some(1), Some("new".to_owned()))
        );
    }

    #[test]
    fn a_status_is_read_from_a_whole_cluster_too() {
        let live = "apiVersion: flotilla.dev/v1alpha1\nkind: Cluster\nmetadata: {name: demo}\nspec: {replicas: 3, image: i}\nstatus: {clusterId: c-9}\n";
        let status = parse_status(live, "live.yaml").ok();
        assert_eq!(status.and_then(|s| s.cluster_id).as_deref(), Some("c-9"));
        let without = "apiVersion: flotilla.dev/v1alpha1\nkind: Cluster\nmetadata: {name: demo}\nspec: {replicas: 3, image: i}\n";
        assert!(parse_status(without, "live.yaml").is_err());
    }

    #[test]
    fn a_cluster_without_namespace_renders_in_the_given_one() {
        let cluster = "apiVersion: flotilla.dev/v1alpha1\nkind: Cluster\nmetadata: {name: x}\nspec: {replicas: 1, image: i}\n";
        let out = crate::desired::built(render(cluster, "c.yaml", Some("prod"), &Mode::Steady));
        let objects: Vec<serde_json::Value> = crate::desired::built(from_yaml_stream(&out, "out"));
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
        let message = render(bad, "bad.yaml", None, &Mode::Steady)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("bad.yaml"), "{message}");
    }
}
