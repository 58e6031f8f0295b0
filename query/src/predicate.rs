//! The predicate AST that both the selector form and the text form parse into, and its
//! evaluation over a JSON document.
//!
//! Semantics, one rule each:
//! - a comparison (`=`, `!=`, `<`, `<=`, `>`, `>=`, `in`, prefix) on a missing field is false;
//!   `not` inverts whatever its operand answers, so `not /a = 1` matches a document without `/a`;
//! - `=` and `!=` compare in the total order of [`crate::order`] (`1 = 1.0`, arrays and objects
//!   compare whole; an array is not searched for an element);
//! - `<`, `<=`, `>`, `>=` match only values of the literal's type (numbers with numbers,
//!   strings with strings, booleans with booleans); their literal must be one of those;
//! - prefix matches strings starting with the literal string;
//! - `exists` is true when the path resolves to any value, `null` included.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::order::{Bracket, compare};
use crate::path::Path;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// The selector form's name (`$gt`).
    pub fn selector_name(self) -> &'static str {
        match self {
            CmpOp::Eq => "$eq",
            CmpOp::Ne => "$ne",
            CmpOp::Lt => "$lt",
            CmpOp::Le => "$lte",
            CmpOp::Gt => "$gt",
            CmpOp::Ge => "$gte",
        }
    }

    /// The text form's symbol (`>`).
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    pub fn is_range(self) -> bool {
        matches!(self, CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge)
    }
}

/// A predicate over one document.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    /// Every document (the empty selector `{}`).
    All,
    And(Vec<Predicate>),
    Or(Vec<Predicate>),
    Not(Box<Predicate>),
    Cmp {
        path: Path,
        op: CmpOp,
        value: Value,
    },
    In {
        path: Path,
        values: Vec<Value>,
    },
    Exists {
        path: Path,
    },
    Prefix {
        path: Path,
        prefix: String,
    },
}

/// Checks that a range comparison's literal is of a comparable type.
pub(crate) fn check_range_literal(op: CmpOp, value: &Value) -> Result<(), String> {
    if op.is_range() && !matches!(value, Value::Number(_) | Value::String(_) | Value::Bool(_)) {
        return Err(Bracket::of(Some(value)).name().to_string());
    }
    Ok(())
}

impl Predicate {
    pub fn and(parts: Vec<Predicate>) -> Predicate {
        Predicate::And(parts)
    }

    pub fn or(parts: Vec<Predicate>) -> Predicate {
        Predicate::Or(parts)
    }

    pub fn negate(self) -> Predicate {
        Predicate::Not(Box::new(self))
    }

    /// True when `doc` satisfies the predicate.
    pub fn matches(&self, doc: &Value) -> bool {
        match self {
            Predicate::All => true,
            Predicate::And(ps) => ps.iter().all(|p| p.matches(doc)),
            Predicate::Or(ps) => ps.iter().any(|p| p.matches(doc)),
            Predicate::Not(p) => !p.matches(doc),
            Predicate::Cmp { path, op, value } => match path.resolve(doc) {
                None => false,
                Some(v) => compare_matches(*op, v, value),
            },
            Predicate::In { path, values } => match path.resolve(doc) {
                None => false,
                Some(v) => values.iter().any(|x| compare(v, x) == Ordering::Equal),
            },
            Predicate::Exists { path } => path.resolve(doc).is_some(),
            Predicate::Prefix { path, prefix } => {
                matches!(path.resolve(doc), Some(Value::String(s)) if s.starts_with(prefix.as_str()))
            }
        }
    }

    /// The selector form (MongoDB / Mango style) of this predicate.
    pub fn to_selector(&self) -> Value {
        match self {
            Predicate::All => Value::Object(Default::default()),
            Predicate::And(ps) => {
                serde_json::json!({ "$and": ps.iter().map(Predicate::to_selector).collect::<Vec<_>>() })
            }
            Predicate::Or(ps) => {
                serde_json::json!({ "$or": ps.iter().map(Predicate::to_selector).collect::<Vec<_>>() })
            }
            Predicate::Not(p) => serde_json::json!({ "$not": p.to_selector() }),
            Predicate::Cmp { path, op, value } => {
                field(path, serde_json::json!({ op.selector_name(): value }))
            }
            Predicate::In { path, values } => field(path, serde_json::json!({ "$in": values })),
            Predicate::Exists { path } => field(path, serde_json::json!({ "$exists": true })),
            Predicate::Prefix { path, prefix } => {
                field(path, serde_json::json!({ "$prefix": prefix }))
            }
        }
    }
}

fn field(path: &Path, ops: Value) -> Value {
    let mut m = serde_json::Map::new();
    m.insert(path.as_str().to_string(), ops);
    Value::Object(m)
}

fn compare_matches(op: CmpOp, v: &Value, lit: &Value) -> bool {
    if op.is_range() && Bracket::of(Some(v)) != Bracket::of(Some(lit)) {
        return false;
    }
    let o = compare(v, lit);
    match op {
        CmpOp::Eq => o == Ordering::Equal,
        CmpOp::Ne => o != Ordering::Equal,
        CmpOp::Lt => o == Ordering::Less,
        CmpOp::Le => o != Ordering::Greater,
        CmpOp::Gt => o == Ordering::Greater,
        CmpOp::Ge => o != Ordering::Less,
    }
}

impl fmt::Display for Predicate {
    /// The text form, which [`crate::parse_text`] parses back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list(
            f: &mut fmt::Formatter<'_>,
            ps: &[Predicate],
            sep: &str,
            empty: &str,
        ) -> fmt::Result {
            if ps.is_empty() {
                return f.write_str(empty);
            }
            f.write_str("(")?;
            for (i, p) in ps.iter().enumerate() {
                if i > 0 {
                    write!(f, " {sep} ")?;
                }
                write!(f, "{p}")?;
            }
            f.write_str(")")
        }
        match self {
            Predicate::All => f.write_str("true"),
            Predicate::And(ps) => list(f, ps, "and", "true"),
            Predicate::Or(ps) => list(f, ps, "or", "false"),
            Predicate::Not(p) => write!(f, "not ({p})"),
            Predicate::Cmp { path, op, value } => write!(f, "{path} {} {value}", op.symbol()),
            Predicate::In { path, values } => {
                write!(f, "{path} in {}", Value::Array(values.clone()))
            }
            Predicate::Exists { path } => write!(f, "{path} exists"),
            Predicate::Prefix { path, prefix } => {
                write!(f, "{path} prefix {}", Value::String(prefix.clone()))
            }
        }
    }
}

/// Serialized as its selector form, so that an HTTP API carries the form users write.
impl Serialize for Predicate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_selector().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Predicate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Predicate, D::Error> {
        let v = Value::deserialize(d)?;
        crate::selector::parse_selector(&v).map_err(serde::de::Error::custom)
    }
}
