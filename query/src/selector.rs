//! The JSON selector form (CouchDB Mango / MongoDB style):
//!
//! ```json
//! {"/status": "open", "/total": {"$gt": 1000, "$lte": 5000},
//!  "$or": [{"/tag": {"$in": ["a", "b"]}}, {"/note": {"$exists": true}}],
//!  "$not": {"/name": {"$prefix": "tmp-"}}}
//! ```
//!
//! Keys of an object are JSON pointers (fields) or operators; the members of one object are
//! and-ed. A field's value is either a literal (equality) or an object of operators, all of
//! whose keys start with `$`. Operators: `$eq $ne $lt $lte $gt $gte $in $nin $exists $prefix
//! $not` on a field; `$and $or $nor $not` at the top.

use serde_json::Value;

use crate::error::{Position, QueryError, Reason};
use crate::path::Path;
use crate::predicate::{CmpOp, Predicate, check_range_literal};

/// Deepest nesting of a selector.
pub const MAX_NESTING: usize = 64;

/// Parses a selector.
pub fn parse_selector(v: &Value) -> Result<Predicate, QueryError> {
    parse_object(v, "", 0)
}

/// Parses a selector given as JSON text.
pub fn parse_selector_str(text: &str) -> Result<Predicate, QueryError> {
    let v: Value = serde_json::from_str(text).map_err(|e| {
        QueryError::new(
            Position::Selector(String::new()),
            Reason::InvalidValue(e.to_string()),
        )
    })?;
    parse_selector(&v)
}

fn err(at: &str, reason: Reason) -> QueryError {
    QueryError::new(Position::Selector(at.to_string()), reason)
}

fn child(at: &str, key: &str) -> String {
    format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"))
}

fn unexpected(at: &str, expected: &str, found: &Value) -> QueryError {
    err(
        at,
        Reason::Unexpected {
            expected: expected.to_string(),
            found: crate::order::Bracket::of(Some(found)).name().to_string(),
        },
    )
}

fn parse_object(v: &Value, at: &str, depth: usize) -> Result<Predicate, QueryError> {
    if depth > MAX_NESTING {
        return Err(err(
            at,
            Reason::TooLarge(format!("nesting deeper than {MAX_NESTING}")),
        ));
    }
    let Value::Object(map) = v else {
        return Err(unexpected(at, "an object", v));
    };
    let mut parts = Vec::new();
    for (key, val) in map {
        let here = child(at, key);
        if key.starts_with('/') {
            let path = parse_path(key, &here)?;
            parts.extend(parse_field(&path, val, &here, depth + 1)?);
            continue;
        }
        match key.as_str() {
            "$and" | "$or" | "$nor" => {
                let Value::Array(items) = val else {
                    return Err(unexpected(&here, "an array of selectors", val));
                };
                let subs = items
                    .iter()
                    .enumerate()
                    .map(|(i, s)| parse_object(s, &child(&here, &i.to_string()), depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                parts.push(match key.as_str() {
                    "$and" => Predicate::And(subs),
                    "$or" => Predicate::Or(subs),
                    _ => Predicate::Or(subs).negate(),
                });
            }
            "$not" => parts.push(parse_object(val, &here, depth + 1)?.negate()),
            k if k.starts_with('$') => {
                return Err(err(&here, Reason::UnknownOperator(k.to_string())));
            }
            k => {
                return Err(err(
                    &here,
                    Reason::MalformedPath {
                        path: k.to_string(),
                        why: "a field is a JSON pointer starting with '/'".into(),
                    },
                ));
            }
        }
    }
    Ok(match parts.len() {
        0 => Predicate::All,
        1 => parts.pop().unwrap_or(Predicate::All),
        _ => Predicate::And(parts),
    })
}

fn parse_path(key: &str, at: &str) -> Result<Path, QueryError> {
    Path::parse(key).map_err(|e| {
        err(
            at,
            Reason::MalformedPath {
                path: key.to_string(),
                why: e.to_string(),
            },
        )
    })
}

/// True when `v` is an object of operators (every key starts with `$`, at least one key).
fn is_operator_object(v: &Value) -> bool {
    matches!(v, Value::Object(m) if !m.is_empty() && m.keys().all(|k| k.starts_with('$')))
}

fn parse_field(
    path: &Path,
    v: &Value,
    at: &str,
    depth: usize,
) -> Result<Vec<Predicate>, QueryError> {
    if depth > MAX_NESTING {
        return Err(err(
            at,
            Reason::TooLarge(format!("nesting deeper than {MAX_NESTING}")),
        ));
    }
    if !is_operator_object(v) {
        if let Value::Object(m) = v
            && m.keys().any(|k| k.starts_with('$'))
        {
            return Err(err(
                at,
                Reason::Unexpected {
                    expected: "either operators only or a literal object".into(),
                    found: "operators mixed with fields".into(),
                },
            ));
        }
        return Ok(vec![Predicate::Cmp {
            path: path.clone(),
            op: CmpOp::Eq,
            value: v.clone(),
        }]);
    }
    let Value::Object(ops) = v else {
        return Ok(vec![]);
    };
    let mut out = Vec::new();
    for (op, arg) in ops {
        let here = child(at, op);
        let cmp = |op: CmpOp| -> Result<Predicate, QueryError> {
            check_range_literal(op, arg).map_err(|found| {
                err(
                    &here,
                    Reason::IncompatibleComparison {
                        op: op.selector_name().to_string(),
                        found,
                    },
                )
            })?;
            Ok(Predicate::Cmp {
                path: path.clone(),
                op,
                value: arg.clone(),
            })
        };
        out.push(match op.as_str() {
            "$eq" => cmp(CmpOp::Eq)?,
            "$ne" => cmp(CmpOp::Ne)?,
            "$lt" => cmp(CmpOp::Lt)?,
            "$lte" => cmp(CmpOp::Le)?,
            "$gt" => cmp(CmpOp::Gt)?,
            "$gte" => cmp(CmpOp::Ge)?,
            "$in" | "$nin" => {
                let Value::Array(values) = arg else {
                    return Err(unexpected(&here, "an array", arg));
                };
                let p = Predicate::In {
                    path: path.clone(),
                    values: values.clone(),
                };
                if op == "$in" { p } else { p.negate() }
            }
            "$exists" => match arg {
                Value::Bool(true) => Predicate::Exists { path: path.clone() },
                Value::Bool(false) => Predicate::Exists { path: path.clone() }.negate(),
                _ => return Err(unexpected(&here, "true or false", arg)),
            },
            "$prefix" => match arg {
                Value::String(s) => Predicate::Prefix {
                    path: path.clone(),
                    prefix: s.clone(),
                },
                _ => {
                    return Err(err(
                        &here,
                        Reason::IncompatibleComparison {
                            op: "$prefix".into(),
                            found: crate::order::Bracket::of(Some(arg)).name().to_string(),
                        },
                    ));
                }
            },
            "$not" => {
                let inner = parse_field(path, arg, &here, depth + 1)?;
                let inner = if inner.len() == 1 {
                    inner.into_iter().next().unwrap_or(Predicate::All)
                } else {
                    Predicate::And(inner)
                };
                inner.negate()
            }
            other => return Err(err(&here, Reason::UnknownOperator(other.to_string()))),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_fields_operators_and_combinators() {
        let p = parse_selector(&json!({
            "/status": "open",
            "/total": {"$gt": 1000},
            "$or": [{"/a": {"$in": [1, 2]}}, {"/b": {"$exists": false}}]
        }))
        .unwrap();
        assert!(p.matches(&json!({"status": "open", "total": 1001, "a": 2, "b": 0})));
        assert!(!p.matches(&json!({"status": "open", "total": 1000, "a": 2})));
        assert!(p.matches(&json!({"status": "open", "total": 2000})));
        assert!(!p.matches(&json!({"status": "open", "total": 2000, "a": 3, "b": 1})));
    }

    #[test]
    fn names_position_and_reason() {
        let e = parse_selector(&json!({"$or": [{"/a": {"$gtt": 1}}]})).unwrap_err();
        assert_eq!(e.position, Position::Selector("/$or/0/~1a/$gtt".into()));
        assert_eq!(e.reason, Reason::UnknownOperator("$gtt".into()));
        let e = parse_selector(&json!({"a": 1})).unwrap_err();
        assert!(matches!(e.reason, Reason::MalformedPath { .. }));
        let e = parse_selector(&json!({"/a": {"$lt": [1]}})).unwrap_err();
        assert!(matches!(e.reason, Reason::IncompatibleComparison { .. }));
    }

    #[test]
    fn round_trips_through_the_selector_form() {
        let p = parse_selector(&json!({"/a": {"$nin": [1]}, "/b": {"$not": {"$prefix": "x"}}}))
            .unwrap();
        assert_eq!(parse_selector(&p.to_selector()).unwrap(), p);
    }
}
