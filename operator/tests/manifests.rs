//! Every manifest in the repository parses; the examples are valid `Cluster` and
//! `DatabaseGroup` objects (CEL rules included); the kustomize base is the chart's
//! defaults.

use flotilla_operator::crd::validation::validate_cel;
use flotilla_operator::crd::{Cluster, DatabaseGroup};
use flotilla_operator::manifests::from_yaml_stream;
use kube::CustomResourceExt;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => panic!("reading {}: {e}", path.display()),
    }
}

fn documents(path: &Path) -> Vec<Value> {
    match from_yaml_stream(&read(path), &path.display().to_string()) {
        Ok(documents) => documents,
        Err(e) => panic!("{e}"),
    }
}

fn yaml_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            yaml_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            found.push(path);
        }
    }
}

fn only(documents: Vec<Value>, kind: &str) -> Value {
    documents
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn every_yaml_file_in_crds_deploy_and_the_chart_parses() {
    let mut files = Vec::new();
    for dir in ["crds", "deploy", "charts/flotilla-operator/crds"] {
        yaml_files(&root().join(dir), &mut files);
    }
    files.push(root().join("charts/flotilla-operator/values.yaml"));
    files.push(root().join("charts/flotilla-operator/Chart.yaml"));
    assert!(files.len() >= 14, "{files:?}");
    for file in files {
        let parsed = documents(&file);
        assert!(!parsed.is_empty(), "{} holds no document", file.display());
    }
}

#[test]
fn every_kubernetes_manifest_in_deploy_has_a_kind_and_a_name() {
    let mut files = Vec::new();
    yaml_files(&root().join("deploy/base"), &mut files);
    yaml_files(&root().join("deploy/examples"), &mut files);
    for file in files {
        if file.ends_with("kustomization.yaml") {
            continue;
        }
        for document in documents(&file) {
            assert!(document["kind"].is_string(), "{}", file.display());
            assert!(document["apiVersion"].is_string(), "{}", file.display());
            assert!(
                document["metadata"]["name"].is_string(),
                "{}",
                file.display()
            );
        }
    }
}

#[test]
fn the_examples_are_valid_clusters_and_database_groups() {
    let examples = root().join("deploy/examples");
    let mut files = Vec::new();
    yaml_files(&examples, &mut files);
    let (mut clusters, mut groups) = (Vec::new(), Vec::new());
    for file in &files {
        for document in documents(file) {
            match document["kind"].as_str() {
                Some("Cluster") => {
                    if let Err(e) = validate_cel(&Cluster::crd(), &document, None) {
                        panic!("{}: {e}", file.display());
                    }
                    match serde_json::from_value::<Cluster>(document) {
                        Ok(cluster) => clusters.push(cluster),
                        Err(e) => panic!("{}: {e}", file.display()),
                    }
                }
                Some("DatabaseGroup") => {
                    if let Err(e) = validate_cel(&DatabaseGroup::crd(), &document, None) {
                        panic!("{}: {e}", file.display());
                    }
                    match serde_json::from_value::<DatabaseGroup>(document) {
                        Ok(group) => groups.push(group),
                        Err(e) => panic!("{}: {e}", file.display()),
                    }
                }
                other => panic!("{}: unexpected kind {other:?}", file.display()),
            }
        }
    }
    assert_eq!(clusters.len(), 1);
    assert_eq!(clusters[0].spec.replicas, 3);
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].spec.replication_factor, 3);
    assert_eq!(
        groups[0].cluster_name(),
        clusters[0].metadata.name.as_deref().unwrap_or_default()
    );
}

#[test]
fn the_examples_render_with_no_cluster_at_hand() {
    let path = root().join("deploy/examples/cluster.yaml");
    let rendered = match flotilla_operator::render::render(
        &read(&path),
        "cluster.yaml",
        None,
        &flotilla_operator::render::Mode::Steady,
    ) {
        Ok(text) => text,
        Err(e) => panic!("{e}"),
    };
    let kinds: Vec<String> = from_yaml_stream::<Value>(&rendered, "rendered")
        .unwrap_or_default()
        .into_iter()
        .map(|d| d["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "Service",
            "Service",
            "StatefulSet",
            "PodDisruptionBudget"
        ]
    );
}

/// A named template of the chart's `_rules.tpl`: plain YAML.
fn chart_rules(name: &str) -> Value {
    let text = read(&root().join("charts/flotilla-operator/templates/_rules.tpl"));
    let define = format!(r#"{{{{- define "{name}" -}}}}"#);
    let Some(start) = text.find(&define).map(|i| i + define.len()) else {
        panic!("no template {name}");
    };
    let Some(end) = text[start..].find("{{- end }}").map(|i| start + i) else {
        panic!("template {name} has no end");
    };
    let rules: Vec<Value> = match from_yaml_stream::<Value>(&text[start..end], "_rules.tpl") {
        Ok(documents) => documents,
        Err(e) => panic!("{e}"),
    };
    rules.into_iter().next().unwrap_or_default()
}

#[test]
fn the_kustomize_base_carries_the_charts_default_values() {
    let values = documents(&root().join("charts/flotilla-operator/values.yaml"))
        .into_iter()
        .next()
        .unwrap_or_default();
    let chart = documents(&root().join("charts/flotilla-operator/Chart.yaml"))
        .into_iter()
        .next()
        .unwrap_or_default();
    let deployment = only(
        documents(&root().join("deploy/base/deployment.yaml")),
        "Deployment",
    );
    let spec = &deployment["spec"];
    let pod = &spec["template"]["spec"];
    let container = &pod["containers"][0];

    let tag = match values["image"]["tag"].as_str() {
        Some("") | None => chart["appVersion"].as_str().unwrap_or_default().to_owned(),
        Some(tag) => tag.to_owned(),
    };
    let image = format!(
        "{}:{tag}",
        values["image"]["repository"].as_str().unwrap_or_default()
    );
    assert_eq!(container["image"], Value::String(image));
    assert_eq!(container["imagePullPolicy"], values["image"]["pullPolicy"]);
    assert_eq!(spec["replicas"], values["replicaCount"]);
    assert_eq!(spec["strategy"]["type"], "RollingUpdate");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    assert_eq!(container["resources"], values["resources"]);
    assert_eq!(container["securityContext"], values["securityContext"]);
    assert_eq!(pod["securityContext"], values["podSecurityContext"]);
    let port = values["metrics"]["port"].clone();
    assert_eq!(container["ports"][0]["containerPort"], port);
    let args: Vec<String> = serde_json::from_value(container["args"].clone()).unwrap_or_default();
    assert_eq!(
        args,
        [
            "run".to_owned(),
            format!("--metrics-addr=0.0.0.0:{port}"),
            format!(
                "--log-format={}",
                values["logFormat"].as_str().unwrap_or_default()
            ),
            // Namespaced by default: the operator watches only its own namespace.
            "--watch-namespace=$(POD_NAMESPACE)".to_owned(),
            "--operator-pod-labels=app.kubernetes.io/name=flotilla-operator,app.kubernetes.io/instance=flotilla-operator".to_owned(),
        ]
    );
    assert_eq!(values["rbac"]["scope"], "namespace");
    // Nodes are read, by name, through the one cluster-wide role (deploy/base has it).
    assert_eq!(values["rbac"]["readNodes"], Value::Bool(true));
    let service = only(
        documents(&root().join("deploy/base/service.yaml")),
        "Service",
    );
    assert_eq!(service["spec"]["ports"][0]["port"], port);
}

/// The object of `kind` named `name`.
fn named(documents: &[Value], kind: &str, name: &str) -> Value {
    documents
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn the_kustomize_base_has_the_charts_rbac_rules() {
    let manifests = documents(&root().join("deploy/base/rbac.yaml"));
    // Scoped to the operator's namespace.
    let role = named(&manifests, "Role", "flotilla-operator");
    let rules = chart_rules("flotilla-operator.rules");
    assert!(rules.as_array().is_some_and(|r| r.len() >= 5), "{rules}");
    assert_eq!(role["rules"], rules);
    let binding = named(&manifests, "RoleBinding", "flotilla-operator");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    // Nodes are read only, by name, through a ClusterRole of their own.
    let node_reader = named(&manifests, "ClusterRole", "flotilla-operator-node-reader");
    let rules = chart_rules("flotilla-operator.nodeRules");
    assert_eq!(
        rules,
        serde_json::json!([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}])
    );
    assert_eq!(node_reader["rules"], rules);
    let binding = named(
        &manifests,
        "ClusterRoleBinding",
        "flotilla-operator-node-reader",
    );
    assert_eq!(binding["roleRef"]["name"], "flotilla-operator-node-reader");
    assert_eq!(binding["subjects"][0]["name"], "flotilla-operator");
    let leases = named(&manifests, "Role", "flotilla-operator-leader-election");
    let rules = chart_rules("flotilla-operator.leaderElectionRules");
    assert!(rules.as_array().is_some_and(|r| r.len() == 1), "{rules}");
    assert_eq!(leases["rules"], rules);
}

#[test]
fn kubectl_kustomize_builds_the_operator_manifests() {
    let output = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(root().join("deploy"))
        .output();
    let output = match output {
        Ok(output) => output,
        Err(e) => {
            eprintln!("skipped: kubectl is not available ({e})");
            return;
        }
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let built: Vec<Value> =
        from_yaml_stream(&String::from_utf8_lossy(&output.stdout), "kustomize").unwrap_or_default();
    let kinds: Vec<&str> = built.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    for document in &built {
        if document["kind"] == "Deployment" || document["kind"] == "ServiceAccount" {
            assert_eq!(document["metadata"]["namespace"], "flotilla-system");
        }
    }
}
