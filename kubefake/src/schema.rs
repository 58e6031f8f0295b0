//! What the API server does with a custom resource's body before it stores it, from the
//! `openAPIV3Schema` of its CustomResourceDefinition: nulls in fields that are not nullable are
//! dropped, unknown fields are pruned, defaults are filled in, and the result is validated
//! (types, required fields, enums, bounds, and the `x-kubernetes-validations` CEL rules through
//! `kube-cel`, with `oldSelf` on updates). A body that fails is refused with `422 Invalid`,
//! naming every field at fault, as a real server answers.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// The schema of `version` in a CustomResourceDefinition object, if it has one.
pub(crate) fn of_version<'a>(crd: &'a Value, version: &str) -> Option<&'a Value> {
    crd["spec"]["versions"]
        .as_array()?
        .iter()
        .find(|v| v["name"].as_str() == Some(version))
        .map(|v| &v["schema"]["openAPIV3Schema"])
        .filter(|s| s.is_object())
}

/// The body as the server would store it: pruned, defaulted and checked against `schema`
/// (and, on an update, the transition rules against `old`).
pub(crate) fn admit(
    schema: &Value,
    kind: &str,
    name: &str,
    body: Value,
    old: Option<&Value>,
) -> Result<Value, ApiError> {
    let mut body = body;
    prune(schema, &mut body, true);
    let body = kube_cel::apply_defaults(schema, &body);
    let mut problems = Vec::new();
    check(schema, &body, "", &mut problems, true);
    if problems.is_empty()
        && let Err(errors) = kube_cel::Validator::new().validate(schema, &body, old)
    {
        problems.extend(
            errors
                .iter()
                .map(|e| format!("{}: Invalid value: {}", e.field_path, e.message)),
        );
    }
    if problems.is_empty() {
        return Ok(body);
    }
    Err(ApiError::new(
        422,
        "Invalid",
        format!("{kind}.{name} is invalid: {}", problems.join(", ")),
    ))
}

fn preserves_unknown(schema: &Value) -> bool {
    schema["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true)
}

/// Drops unknown fields and nulls where the schema does not allow them. At the root,
/// `apiVersion`, `kind` and `metadata` are the server's and stay.
fn prune(schema: &Value, value: &mut Value, root: bool) {
    match value {
        Value::Object(map) => {
            let properties = schema["properties"].as_object();
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let keep_unknown = preserves_unknown(schema);
            map.retain(|key, field| {
                if root && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    return true;
                }
                let field_schema = properties.and_then(|p| p.get(key)).or(additional);
                match field_schema {
                    Some(s) => !(field.is_null() && s["nullable"].as_bool() != Some(true)),
                    None => keep_unknown,
                }
            });
            for (key, field) in map.iter_mut() {
                if root && key == "metadata" {
                    continue;
                }
                if let Some(s) = properties.and_then(|p| p.get(key)).or(additional) {
                    prune(s, field, false);
                }
            }
        }
        Value::Array(items) => {
            let item_schema = &schema["items"];
            if item_schema.is_object() {
                for item in items {
                    prune(item_schema, item, false);
                }
            }
        }
        _ => {}
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_fits(schema: &Value, value: &Value) -> bool {
    if value.is_null() {
        return schema["nullable"].as_bool() == Some(true);
    }
    if schema["x-kubernetes-int-or-string"].as_bool() == Some(true) {
        return matches!(type_name(value), "integer" | "string");
    }
    match schema["type"].as_str() {
        None => true,
        Some("number") => value.is_number(),
        Some(expected) => type_name(value) == expected,
    }
}

/// Checks types, required fields, enums and bounds; adds one line per problem.
fn check(schema: &Value, value: &Value, path: &str, problems: &mut Vec<String>, root: bool) {
    let here = if path.is_empty() { "<root>" } else { path };
    if !type_fits(schema, value) {
        let expected = schema["type"].as_str().unwrap_or("int-or-string");
        problems.push(format!(
            "{here}: Invalid value: \"{}\": {here} in body must be of type {expected}",
            type_name(value)
        ));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !value.is_null()
        && !allowed.contains(value)
    {
        problems.push(format!(
            "{here}: Unsupported value: {value}: supported values: {}",
            allowed
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    bounds(schema, value, here, problems);
    match value {
        Value::Object(map) => check_object(schema, map, path, problems, root),
        Value::Array(items) => {
            let item_schema = &schema["items"];
            if item_schema.is_object() {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"), problems, false);
                }
            }
        }
        _ => {}
    }
}

fn check_object(
    schema: &Value,
    map: &Map<String, Value>,
    path: &str,
    problems: &mut Vec<String>,
    root: bool,
) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    for required in schema["required"].as_array().into_iter().flatten() {
        if let Some(key) = required.as_str()
            && !map.contains_key(key)
        {
            problems.push(format!("{}: Required value", join(key)));
        }
    }
    let properties = schema["properties"].as_object();
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (key, field) in map {
        if root && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(s) = properties.and_then(|p| p.get(key)).or(additional) {
            check(s, field, &join(key), problems, false);
        }
    }
}

fn bounds(schema: &Value, value: &Value, here: &str, problems: &mut Vec<String>) {
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema["minimum"].as_f64()
            && n < min
        {
            problems.push(format!(
                "{here}: Invalid value: {value}: {here} in body should be greater than or equal to {min}"
            ));
        }
        if let Some(max) = schema["maximum"].as_f64()
            && n > max
        {
            problems.push(format!(
                "{here}: Invalid value: {value}: {here} in body should be less than or equal to {max}"
            ));
        }
    }
    let length = match value {
        Value::String(s) => Some((s.chars().count(), "minLength", "maxLength")),
        Value::Array(a) => Some((a.len(), "minItems", "maxItems")),
        Value::Object(o) => Some((o.len(), "minProperties", "maxProperties")),
        _ => None,
    };
    if let Some((len, min_key, max_key)) = length {
        if let Some(min) = schema[min_key].as_u64()
            && (len as u64) < min
        {
            problems.push(format!(
                "{here}: Invalid value: {here} must have at least {min} ({min_key})"
            ));
        }
        if let Some(max) = schema[max_key].as_u64()
            && (len as u64) > max
        {
            problems.push(format!(
                "{here}: Too long: {here} may have at most {max} ({max_key})"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["replicas"],
                    "properties": {
                        "replicas": {"type": "integer", "minimum": 1},
                        "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                        "size": {
                            "type": "string",
                            "x-kubernetes-validations": [{
                                "rule": "self == oldSelf || quantity(self).isGreaterThan(quantity(oldSelf))",
                                "message": "size may only grow"
                            }]
                        },
                        "note": {"type": "string", "nullable": true},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    }
                },
                "status": {"type": "object", "properties": {"phase": {"type": "string"}}}
            }
        })
    }

    fn admitted(body: Value, old: Option<&Value>) -> Result<Value, String> {
        admit(&schema(), "Thing", "t", body, old).map_err(|e| e.message)
    }

    #[test]
    fn unknown_fields_are_pruned_and_defaults_filled_in() {
        let body = json!({
            "apiVersion": "x/v1", "kind": "Thing", "metadata": {"name": "t", "extra": 1},
            "spec": {"replicas": 2, "typo": true, "free": {"anything": [1]}},
            "stray": "gone"
        });
        let stored = admitted(body, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stored["spec"]["mode"], "a");
        assert!(stored["spec"].get("typo").is_none());
        assert!(stored.get("stray").is_none());
        assert_eq!(stored["spec"]["free"]["anything"], json!([1]));
        assert_eq!(
            stored["metadata"]["extra"], 1,
            "metadata is the server's, not pruned"
        );
    }

    #[test]
    fn nulls_are_dropped_where_not_nullable_and_kept_where_nullable() {
        let stored = admitted(
            json!({"spec": {"replicas": 1, "mode": null, "note": null}}),
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            stored["spec"]["mode"], "a",
            "a null is dropped, then defaulted"
        );
        assert!(stored["spec"]["note"].is_null() && stored["spec"].get("note").is_some());
    }

    #[test]
    fn wrong_types_missing_required_fields_enums_and_bounds_are_refused_together() {
        let error = admitted(json!({"spec": {"mode": "c", "size": 3}}), None)
            .err()
            .unwrap_or_default();
        assert!(error.contains("spec.replicas: Required value"), "{error}");
        assert!(error.contains("spec.mode: Unsupported value"), "{error}");
        assert!(
            error.contains("spec.size: Invalid value: \"integer\""),
            "{error}"
        );
        let error = admitted(json!({"spec": {"replicas": 0}}), None)
            .err()
            .unwrap_or_default();
        assert!(error.contains("greater than or equal to 1"), "{error}");
    }

    #[test]
    fn cel_transition_rules_see_the_old_object() {
        let old = json!({"spec": {"replicas": 1, "size": "2Gi"}});
        assert!(admitted(json!({"spec": {"replicas": 1, "size": "3Gi"}}), Some(&old)).is_ok());
        let error = admitted(json!({"spec": {"replicas": 1, "size": "1Gi"}}), Some(&old))
            .err()
            .unwrap_or_default();
        assert!(error.contains("size may only grow"), "{error}");
    }
}
