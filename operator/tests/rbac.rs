//! The operator's RBAC grants exactly what its code uses: a table of every Kubernetes API
//! verb the code calls, checked against the operator's sources (every `Api` call found in
//! them is in the table) and against the chart's rules and `deploy/base/rbac.yaml` (which
//! grant the table, nothing more, nothing less).

use flotilla_operator::manifests::from_yaml_stream;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Every verb the operator uses, by API group and resource, with where it comes from.
const USED: &[(&str, &str, &[&str], &str)] = &[
    (
        "flotilla.dev",
        "clusters",
        &["get", "list", "watch"],
        "watched; a DatabaseGroup's Cluster",
    ),
    (
        "flotilla.dev",
        "databasegroups",
        &["list", "watch", "patch"],
        "watched; finalizer",
    ),
    (
        "flotilla.dev",
        "clusters/status",
        &["patch"],
        "status by server-side apply",
    ),
    (
        "flotilla.dev",
        "databasegroups/status",
        &["patch"],
        "status by server-side apply",
    ),
    (
        "flotilla.dev",
        "clusters/finalizers",
        &["update"],
        "blockOwnerDeletion on children",
    ),
    (
        "apps",
        "statefulsets",
        &["get", "list", "watch", "create", "patch", "delete"],
        "applied child; re-created when volumes grow",
    ),
    (
        "",
        "services",
        &["get", "list", "watch", "create", "patch"],
        "applied child",
    ),
    (
        "",
        "configmaps",
        &["get", "list", "watch", "create", "patch"],
        "applied child",
    ),
    (
        "policy",
        "poddisruptionbudgets",
        &["get", "list", "watch", "create", "patch", "delete"],
        "applied child; removed below 3 nodes",
    ),
    (
        "",
        "secrets",
        &["get", "create", "patch"],
        "the cluster CA and the certificates the operator issues; its client certificate",
    ),
    (
        "networking.k8s.io",
        "networkpolicies",
        &["get", "create", "patch", "delete"],
        "applied child; removed when disabled",
    ),
    (
        "cert-manager.io",
        "certificates",
        &["get", "create", "patch", "delete"],
        "applied child with spec.tls.issuerRef; removed without",
    ),
    (
        "",
        "pods",
        &["list", "watch", "patch", "delete"],
        "watched; rolling restarts, replacements; hand-over requests cleared",
    ),
    (
        "",
        "persistentvolumeclaims",
        &["list", "watch", "patch", "delete"],
        "watched (volume growth); cluster id annotation; volumes of removed nodes",
    ),
    (
        "flotilla.dev",
        "backups",
        &["list", "watch", "create", "delete"],
        "watched; created on schedule, deleted when expired",
    ),
    (
        "flotilla.dev",
        "scheduledbackups",
        &["list", "watch"],
        "watched",
    ),
    (
        "flotilla.dev",
        "scheduledbackups/status",
        &["patch"],
        "status by server-side apply",
    ),
    (
        "flotilla.dev",
        "backups/status",
        &["patch"],
        "status by server-side apply",
    ),
    (
        "flotilla.dev",
        "backups/finalizers",
        &["update"],
        "blockOwnerDeletion on the Job of a Backup",
    ),
    (
        "batch",
        "jobs",
        &["get", "list", "watch", "create", "patch"],
        "the Job of a Backup, applied once then read; the Job deleting an expired backup",
    ),
    (
        "events.k8s.io",
        "events",
        &["create", "patch"],
        "kube-runtime's event Recorder",
    ),
    (
        "",
        "nodes",
        &["get"],
        "placement labels, NotReady Kubernetes nodes",
    ),
    (
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
        "leader election: read, take and renew by resourceVersion",
    ),
];

/// Group and resource of each kind the sources name.
const KINDS: &[(&str, &str, &str)] = &[
    ("Cluster", "flotilla.dev", "clusters"),
    ("DatabaseGroup", "flotilla.dev", "databasegroups"),
    ("Backup", "flotilla.dev", "backups"),
    ("ScheduledBackup", "flotilla.dev", "scheduledbackups"),
    ("Job", "batch", "jobs"),
    ("StatefulSet", "apps", "statefulsets"),
    ("Service", "", "services"),
    ("ConfigMap", "", "configmaps"),
    ("PodDisruptionBudget", "policy", "poddisruptionbudgets"),
    ("Pod", "", "pods"),
    ("PersistentVolumeClaim", "", "persistentvolumeclaims"),
    ("Node", "", "nodes"),
    ("Lease", "coordination.k8s.io", "leases"),
    ("Secret", "", "secrets"),
    ("NetworkPolicy", "networking.k8s.io", "networkpolicies"),
    // The only objects the operator handles as dynamic ones: cert-manager's Certificates.
    ("DynamicObject", "cert-manager.io", "certificates"),
];

/// Client calls and the verbs they need; a watch needs `list` and `watch`.
const CALLS: &[(&str, &[&str])] = &[
    (".get_opt(", &["get"]),
    (".get(", &["get"]),
    (".list(", &["list"]),
    (".patch_status(", &["patch status"]),
    (".patch(", &["patch"]),
    (".delete(", &["delete"]),
    (".create(", &["create"]),
    (".replace(", &["update"]),
    ("watcher(", &["list", "watch"]),
    (".owns(", &["list", "watch"]),
    (".watches(", &["list", "watch"]),
    ("finalizer(&", &["patch"]),
];

type Grant = (String, String, String);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn table() -> BTreeSet<Grant> {
    let mut grants = BTreeSet::new();
    for (group, resource, verbs, _) in USED {
        for verb in *verbs {
            grants.insert((group.to_string(), resource.to_string(), verb.to_string()));
        }
    }
    grants
}

fn flatten(rules: &Value) -> BTreeSet<Grant> {
    let mut grants = BTreeSet::new();
    let strings = |v: &Value| -> Vec<String> {
        serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"))
    };
    for rule in rules
        .as_array()
        .unwrap_or_else(|| panic!("no rules: {rules}"))
    {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    grants.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    grants
}

/// The rules of every named template of the chart's `_rules.tpl` (plain YAML in each).
fn chart_grants() -> BTreeSet<Grant> {
    let text = read(&root().join("charts/flotilla-operator/templates/_rules.tpl"));
    let mut grants = BTreeSet::new();
    for block in text.split("{{- define ").skip(1) {
        let Some((_, body)) = block.split_once("-}}") else {
            panic!("{block}")
        };
        let Some((body, _)) = body.split_once("{{- end }}") else {
            panic!("{block}")
        };
        let rules: Vec<Value> = from_yaml_stream(body, "_rules.tpl").unwrap_or_default();
        grants.extend(flatten(&rules.into_iter().next().unwrap_or_default()));
    }
    grants
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        // Tests and the kubectl plugin (bin/ and plugin.rs: it runs with the user's rights).
        if matches!(
            name,
            "tests" | "tests.rs" | "fixtures.rs" | "bin" | "plugin.rs"
        ) {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, found);
        } else if name.ends_with(".rs") {
            found.push(path);
        }
    }
}

/// The verbs a source file's `Api` calls use, as (kind, verb), with `patch status` for
/// the status subresource. An `Api::<K>` / `scoped::<K>` expression counts the first call
/// of its statement; one bound by `let NAME = ...;` counts every `NAME.call(` and every
/// `call(NAME` / `call(&NAME` until NAME is bound again.
fn calls_in(text: &str) -> Vec<(String, String)> {
    let text = text
        .split("#[cfg(test)]\nmod tests {")
        .next()
        .unwrap_or_default();
    let mut found = Vec::new();
    for pattern in ["Api::<", "scoped::<", "Api<"] {
        for (at, _) in text.match_indices(pattern) {
            let rest = &text[at + pattern.len()..];
            let kind: String = rest.chars().take_while(|c| c.is_alphanumeric()).collect();
            if kind.len() < 2 {
                continue; // a type parameter
            }
            let statement_start = text[..at].rfind([';', '{', '}']).map_or(0, |i| i + 1);
            let statement_end = at + rest.find(';').unwrap_or(rest.len());
            let statement = &text[statement_start..statement_end];
            if statement.contains("fn ") {
                continue; // a parameter's or a return type
            }
            let (before, after) = (&text[statement_start..at], &text[at..statement_end]);
            // The call the expression is an argument of, else the first one after it.
            let around = CALLS
                .iter()
                .find(|(call, _)| before.trim_end().ends_with(call.trim_end_matches('&')));
            let first_after = CALLS
                .iter()
                .filter_map(|c| after.find(c.0).map(|i| (i, c)))
                .min_by_key(|(i, _)| *i)
                .map(|(_, c)| c);
            let direct: Vec<_> = around.or(first_after).into_iter().collect();
            let binding = statement
                .trim_start()
                .strip_prefix("let ")
                .and_then(|s| s.split([' ', ':', '=']).next())
                .filter(|name| !name.is_empty());
            let uses = match binding {
                Some(name) if direct.is_empty() => {
                    let after = &text[statement_end..];
                    let scope = after
                        .find(&format!("let {name} "))
                        .map_or(after, |i| &after[..i]);
                    // Without whitespace: `secrets\n    .get_opt(` is a call of `secrets`.
                    let scope: String = scope.split_whitespace().collect();
                    CALLS
                        .iter()
                        .filter(|(call, _)| {
                            scope.contains(&format!("{name}{call}"))
                                || scope.contains(&format!("{call}{name}"))
                                || scope.contains(&format!("{call}&{name}"))
                        })
                        .collect()
                }
                _ => direct,
            };
            assert!(!uses.is_empty(), "no call found for `{}`", statement.trim());
            for (_, verbs) in uses {
                for verb in *verbs {
                    found.push((kind.clone(), verb.to_string()));
                }
            }
        }
    }
    found
}

#[test]
fn every_kubernetes_api_call_of_the_operator_is_in_the_verb_table() {
    let mut files = Vec::new();
    rust_files(&root().join("operator/src"), &mut files);
    let table = table();
    let mut seen = BTreeSet::new();
    for file in &files {
        for (kind, verb) in calls_in(&read(file)) {
            let Some((_, group, resource)) = KINDS.iter().find(|(k, _, _)| *k == kind) else {
                panic!("{}: kind {kind} is not in KINDS", file.display());
            };
            let (resource, verb) = match verb.strip_suffix(" status") {
                Some(verb) => (format!("{resource}/status"), verb.to_owned()),
                None => (resource.to_string(), verb),
            };
            let grant = (group.to_string(), resource, verb);
            assert!(
                table.contains(&grant),
                "{}: {grant:?} is not in USED",
                file.display()
            );
            seen.insert(grant);
        }
    }
    // The search is not blind: it finds the calls of every controller.
    for expected in [
        ("", "pods", "delete"),
        ("", "persistentvolumeclaims", "patch"),
        ("flotilla.dev", "clusters/status", "patch"),
        ("flotilla.dev", "databasegroups", "patch"),
        ("apps", "statefulsets", "watch"),
        ("", "nodes", "get"),
        ("", "secrets", "get"),
        ("networking.k8s.io", "networkpolicies", "delete"),
        ("cert-manager.io", "certificates", "delete"),
    ] {
        let expected = (expected.0.into(), expected.1.into(), expected.2.into());
        assert!(
            seen.contains(&expected),
            "{expected:?} not found in {seen:?}"
        );
    }
}

#[test]
fn the_charts_rules_grant_exactly_the_verb_table() {
    let chart = chart_grants();
    let table = table();
    let extra: Vec<_> = chart.difference(&table).collect();
    let missing: Vec<_> = table.difference(&chart).collect();
    assert!(extra.is_empty(), "granted but never used: {extra:?}");
    assert!(missing.is_empty(), "used but not granted: {missing:?}");
}

#[test]
fn the_kustomize_base_grants_exactly_the_verb_table() {
    let text = read(&root().join("deploy/base/rbac.yaml"));
    let documents: Vec<Value> = from_yaml_stream(&text, "rbac.yaml").unwrap_or_default();
    let mut grants = BTreeSet::new();
    for document in documents
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
    {
        grants.extend(flatten(&document["rules"]));
    }
    assert_eq!(grants, table());
}
