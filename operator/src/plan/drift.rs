//! Drift: where a live child of a `Cluster` differs from what the operator applies, after
//! a hand edit (`kubectl scale`, `kubectl edit`) or another writer.
//!
//! Only the fields the operator sets count: those present in the desired object, under
//! `spec`, `data` and `metadata.labels`. Fields the API server adds (defaults, cluster IPs,
//! status) are not drift. Quantities compare by value, since the API server rewrites them
//! in canonical form (`0.5` becomes `500m`).

use serde_json::Value;
use std::fmt;

/// One field whose live value differs from the desired one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    /// Path of the field, such as `spec.replicas` or `spec.template.spec.containers[0].image`.
    pub path: String,
    /// The live value, as JSON (`<none>` when the field is missing).
    pub live: String,
    /// The value the operator applies, as JSON.
    pub desired: String,
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.path, self.live, self.desired)
    }
}

/// The fields of `desired` (an object as the operator applies it) whose value in `live`
/// differs, in document order.
pub fn drift(desired: &Value, live: &Value) -> Vec<Drift> {
    let mut found = Vec::new();
    for section in ["spec", "data"] {
        if let Some(wanted) = desired.get(section) {
            compare(section, wanted, live.get(section), &mut found);
        }
    }
    if let Some(labels) = desired.pointer("/metadata/labels") {
        compare(
            "metadata.labels",
            labels,
            live.pointer("/metadata/labels"),
            &mut found,
        );
    }
    found
}

/// Summary of drifts for an Event: every path with its values, at most `limit` of them.
pub fn describe(drifts: &[Drift], limit: usize) -> String {
    let mut shown: Vec<String> = drifts.iter().take(limit).map(Drift::to_string).collect();
    if drifts.len() > limit {
        shown.push(format!("and {} more", drifts.len() - limit));
    }
    shown.join("; ")
}

fn compare(path: &str, desired: &Value, live: Option<&Value>, found: &mut Vec<Drift>) {
    match (desired, live) {
        (Value::Object(wanted), Some(Value::Object(_)) | None) => {
            for (key, value) in wanted {
                let actual = live.and_then(|l| l.get(key));
                compare(&join(path, key), value, actual, found);
            }
        }
        (Value::Array(wanted), Some(Value::Array(actual))) if wanted.len() == actual.len() => {
            for (i, (value, live)) in wanted.iter().zip(actual).enumerate() {
                compare(&format!("{path}[{i}]"), value, Some(live), found);
            }
        }
        // Nothing asked for, nothing there: the API server drops empty values.
        (Value::Null, None | Some(Value::Null)) => {}
        (Value::Array(wanted), None) if wanted.is_empty() => {}
        (wanted, Some(actual)) if same_scalar(wanted, actual) => {}
        (wanted, actual) => found.push(Drift {
            path: path.to_owned(),
            live: actual.map_or_else(|| "<none>".to_owned(), Value::to_string),
            desired: wanted.to_string(),
        }),
    }
}

fn join(path: &str, key: &str) -> String {
    if key.contains('.') || key.contains('/') {
        format!("{path}[{key}]")
    } else {
        format!("{path}.{key}")
    }
}

fn same_scalar(desired: &Value, live: &Value) -> bool {
    if desired == live {
        return true;
    }
    match (desired.as_str(), live.as_str()) {
        (Some(a), Some(b)) => {
            matches!((quantity(a), quantity(b)), (Some(x), Some(y)) if (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()))
        }
        _ => false,
    }
}

/// The value of a Kubernetes quantity (`500m`, `0.5`, `10Gi`, `1e3`), if `text` is one.
pub fn quantity(text: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    let text = text.trim();
    let starts_like_a_number = text
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || matches!(c, '.' | '+' | '-'));
    if !starts_like_a_number {
        return None;
    }
    let (number, scale) = SUFFIXES
        .iter()
        .find_map(|(suffix, scale)| text.strip_suffix(suffix).map(|n| (n, *scale)))
        .or_else(|| text.strip_suffix('P').map(|n| (n, 1e15)))
        .or_else(|| text.strip_suffix('E').map(|n| (n, 1e18)))
        .unwrap_or((text, 1.0));
    number.parse::<f64>().ok().map(|n| n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_hand_scaled_statefulset_drifts_on_its_replicas() {
        let desired = json!({"spec": {"replicas": 3, "serviceName": "db-peers"}});
        let live =
            json!({"spec": {"replicas": 5, "serviceName": "db-peers", "revisionHistoryLimit": 10}});
        assert_eq!(
            drift(&desired, &live),
            vec![Drift {
                path: "spec.replicas".to_owned(),
                live: "5".to_owned(),
                desired: "3".to_owned(),
            }]
        );
    }

    #[test]
    fn fields_the_api_server_adds_are_not_drift() {
        let desired = json!({
            "metadata": {"name": "db", "labels": {"app": "db"}},
            "spec": {"template": {"spec": {"containers": [{"name": "node", "image": "i:1"}]}}}
        });
        let live = json!({
            "metadata": {"name": "db", "uid": "u", "labels": {"app": "db", "extra": "x"}},
            "spec": {"template": {"spec": {"containers": [{
                "name": "node", "image": "i:1", "terminationMessagePath": "/dev/termination-log"
            }], "dnsPolicy": "ClusterFirst"}}},
            "status": {"replicas": 3}
        });
        assert_eq!(drift(&desired, &live), Vec::new());
    }

    #[test]
    fn an_edited_image_deep_in_the_template_is_found() {
        let desired = json!({"spec": {"template": {"spec": {"containers": [{"image": "i:1"}]}}}});
        let live = json!({"spec": {"template": {"spec": {"containers": [{"image": "i:2"}]}}}});
        let found = drift(&desired, &live);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, "spec.template.spec.containers[0].image");
        assert_eq!(
            found[0].to_string(),
            "spec.template.spec.containers[0].image \"i:2\" -> \"i:1\""
        );
    }

    #[test]
    fn a_removed_or_added_element_is_drift_of_the_whole_list() {
        let desired = json!({"spec": {"tolerations": [{"key": "a"}]}});
        let live = json!({"spec": {"tolerations": [{"key": "a"}, {"key": "b"}]}});
        let found = drift(&desired, &live);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, "spec.tolerations");
    }

    #[test]
    fn a_changed_configmap_value_and_a_removed_label_are_drift() {
        let desired = json!({
            "metadata": {"labels": {"app.kubernetes.io/name": "flotilla"}},
            "data": {"initial-cluster-state": "existing"}
        });
        let live = json!({"metadata": {}, "data": {"initial-cluster-state": "new"}});
        let paths: Vec<String> = drift(&desired, &live).into_iter().map(|d| d.path).collect();
        assert_eq!(
            paths,
            [
                "data.initial-cluster-state",
                "metadata.labels[app.kubernetes.io/name]"
            ]
        );
    }

    #[test]
    fn quantities_compare_by_value() {
        let desired = json!({"spec": {"resources": {"limits": {"cpu": "0.5", "memory": "1Gi"}}}});
        let live = json!({"spec": {"resources": {"limits": {"cpu": "500m", "memory": "1024Mi"}}}});
        assert_eq!(drift(&desired, &live), Vec::new());
        let bigger = json!({"spec": {"resources": {"limits": {"cpu": "1", "memory": "1024Mi"}}}});
        assert_eq!(drift(&desired, &bigger).len(), 1);
        assert_eq!(quantity("10Gi"), Some(10.0 * 1_073_741_824.0));
        assert_eq!(quantity("http"), None);
        assert_eq!(quantity("existing"), None);
    }

    #[test]
    fn empty_desired_values_match_missing_live_ones() {
        let desired = json!({"spec": {"selector": {}, "ports": [], "x": null}});
        assert_eq!(drift(&desired, &json!({"spec": {}})), Vec::new());
    }

    #[test]
    fn a_long_list_of_drifts_is_cut_short() {
        let drifts: Vec<Drift> = (0..5)
            .map(|i| Drift {
                path: format!("spec.f{i}"),
                live: "1".to_owned(),
                desired: "2".to_owned(),
            })
            .collect();
        assert_eq!(
            describe(&drifts, 2),
            "spec.f0 1 -> 2; spec.f1 1 -> 2; and 3 more"
        );
    }
}
