//! The three ways to change part of an object: server-side apply, JSON merge patch (and
//! strategic merge patch, treated as a merge patch) and JSON patch.
//!
//! Server-side apply is simplified but keeps the property controllers rely on: a field
//! manager owns exactly the fields of its last applied configuration. Applying merges the
//! new configuration into the object (maps merge, lists and scalars are replaced whole) and
//! removes the fields the manager applied before but no longer gives. Fields set by other
//! managers stay; there are no conflicts (every apply acts as if forced).

use serde_json::{Map, Value};

/// Every leaf path of `value` (maps are walked, lists and scalars are leaves).
fn leaf_paths(value: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                prefix.push(key.clone());
                leaf_paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => out.push(prefix.clone()),
    }
}

fn contains_path(value: &Value, path: &[String]) -> bool {
    let mut current = value;
    for key in path {
        match current.get(key) {
            Some(child) => current = child,
            None => return false,
        }
    }
    true
}

/// Removes `path` from `value`, and the maps it leaves empty.
fn remove_path(value: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(map) = value.as_object_mut() else {
        return;
    };
    if rest.is_empty() {
        map.remove(first);
        return;
    }
    if let Some(child) = map.get_mut(first) {
        remove_path(child, rest);
        if child.as_object().is_some_and(Map::is_empty) {
            map.remove(first);
        }
    }
}

/// Merges `patch` into `target`: maps recursively, everything else replaced; `null`
/// removes the field (RFC 7386).
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// The object after `manager` applied `applied`, given the configuration it applied last.
pub fn server_side_apply(live: &Value, applied: &Value, previous: Option<&Value>) -> Value {
    let mut result = live.clone();
    if let Some(previous) = previous {
        let mut paths = Vec::new();
        leaf_paths(previous, &mut Vec::new(), &mut paths);
        for path in paths {
            let identity = matches!(
                path.first().map(String::as_str),
                Some("apiVersion" | "kind")
            ) || path == ["metadata", "name"]
                || path == ["metadata", "namespace"];
            if !identity && !contains_path(applied, &path) {
                remove_path(&mut result, &path);
            }
        }
    }
    merge(&mut result, applied);
    result
}

/// Applies a JSON patch (RFC 6902). A `test` of `null` passes on a missing field, as it
/// does on a real API server (kube-rs's finalizer helper relies on it).
pub fn json_patch(target: &mut Value, operations: &Value) -> Result<(), String> {
    let operations = operations
        .as_array()
        .ok_or("a JSON patch must be a list of operations")?;
    let kept: Vec<Value> = operations
        .iter()
        .filter(|op| {
            let missing_null_test = op["op"] == "test"
                && op["value"].is_null()
                && op["path"]
                    .as_str()
                    .is_some_and(|path| target.pointer(path).is_none());
            !missing_null_test
        })
        .cloned()
        .collect();
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(kept))
        .map_err(|e| format!("invalid JSON patch: {e}"))?;
    json_patch::patch(target, &patch).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn apply_removes_only_the_fields_the_manager_stopped_giving() {
        let live = json!({"status": {"a": 1, "scaleDown": {"from": 5}, "other": "kept"}});
        let previous = json!({"status": {"a": 1, "scaleDown": {"from": 5}}});
        let applied = json!({"status": {"a": 2}});
        let result = server_side_apply(&live, &applied, Some(&previous));
        assert_eq!(result, json!({"status": {"a": 2, "other": "kept"}}));
    }

    #[test]
    fn apply_replaces_lists_and_merges_maps() {
        let live = json!({"metadata": {"labels": {"x": "1"}}, "spec": {"ports": [1, 2]}});
        let applied = json!({"metadata": {"labels": {"y": "2"}}, "spec": {"ports": [3]}});
        let result = server_side_apply(&live, &applied, None);
        assert_eq!(
            result,
            json!({"metadata": {"labels": {"x": "1", "y": "2"}}, "spec": {"ports": [3]}})
        );
    }

    #[test]
    fn a_null_test_passes_on_a_missing_field() {
        let mut object = json!({"metadata": {"name": "a"}});
        let ops = json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}
        ]);
        assert_eq!(json_patch(&mut object, &ops), Ok(()));
        assert_eq!(object["metadata"]["finalizers"], json!(["f"]));
        let failing = json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "g"}]);
        assert!(json_patch(&mut object, &failing).is_err());
    }

    #[test]
    fn merge_patch_null_removes() {
        let mut object = json!({"a": {"b": 1, "c": 2}});
        merge(&mut object, &json!({"a": {"b": null}}));
        assert_eq!(object, json!({"a": {"c": 2}}));
    }
}
