//! Building predicates in code: `Field::new("/total")?.gt(1000).and(Field::new("/status")?.eq("open"))`.

use serde_json::Value;

use crate::path::{Path, PathError};
use crate::predicate::{CmpOp, Predicate};

/// A field of the documents, to compare.
#[derive(Debug, Clone)]
pub struct Field(Path);

impl Field {
    pub fn new(path: &str) -> Result<Field, PathError> {
        Path::parse(path).map(Field)
    }

    fn cmp(&self, op: CmpOp, v: impl Into<Value>) -> Predicate {
        Predicate::Cmp {
            path: self.0.clone(),
            op,
            value: v.into(),
        }
    }

    pub fn eq(&self, v: impl Into<Value>) -> Predicate {
        self.cmp(CmpOp::Eq, v)
    }
    pub fn ne(&self, v: impl Into<Value>) -> Predicate {
        self.cmp(CmpOp::Ne, v)
    }
    pub fn lt(&self, v: impl Into<Value>) -> Predicate {
        self.cmp(CmpOp::Lt, v)
    }
    pub fn le(&self, v: impl Into<Value>) -> Predicate {
        self.cmp(CmpOp::Le, v)
    }
    pub fn gt(&self, v: impl Into<Value>) -> Predicate {
        self.cmp(CmpOp::Gt, v)
    }
    pub fn ge(&self, v: impl Into<Value>) -> Predicate {
        self.cmp(CmpOp::Ge, v)
    }
    pub fn is_in<V: Into<Value>>(&self, values: impl IntoIterator<Item = V>) -> Predicate {
        Predicate::In {
            path: self.0.clone(),
            values: values.into_iter().map(Into::into).collect(),
        }
    }
    pub fn exists(&self) -> Predicate {
        Predicate::Exists {
            path: self.0.clone(),
        }
    }
    pub fn prefix(&self, prefix: &str) -> Predicate {
        Predicate::Prefix {
            path: self.0.clone(),
            prefix: prefix.to_string(),
        }
    }
}

impl Predicate {
    /// Both this and `other`.
    pub fn and_also(self, other: Predicate) -> Predicate {
        match self {
            Predicate::And(mut ps) => {
                ps.push(other);
                Predicate::And(ps)
            }
            p => Predicate::And(vec![p, other]),
        }
    }

    /// This or `other`.
    pub fn or_else(self, other: Predicate) -> Predicate {
        match self {
            Predicate::Or(mut ps) => {
                ps.push(other);
                Predicate::Or(ps)
            }
            p => Predicate::Or(vec![p, other]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builds_what_the_text_form_says() {
        let built = Field::new("/total")
            .unwrap()
            .gt(1000)
            .and_also(Field::new("/status").unwrap().eq("open"));
        let parsed = crate::parse_text(r#"/total > 1000 and /status = "open""#).unwrap();
        assert_eq!(built, parsed);
        assert!(built.matches(&json!({"total": 1001, "status": "open"})));
    }
}
