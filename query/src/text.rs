//! The short text form of a predicate, for the command line:
//!
//! ```text
//! /total > 1000 and /status = "open"
//! (/tag in ["a", "b"] or /note exists) and not /name prefix "tmp-"
//! ```
//!
//! Grammar (keywords in lower or upper case; `and` binds tighter than `or`):
//!
//! ```text
//! expr    := and ("or" and)*
//! and     := unary ("and" unary)*
//! unary   := "not" unary | "(" expr ")" | "true" | "false" | PATH test
//! test    := OP JSON | "in" JSON-ARRAY | "exists" | "prefix" JSON-STRING
//! OP      := "=" | "==" | "!=" | "<" | "<=" | ">" | ">="
//! ```
//!
//! A PATH is a JSON pointer written without spaces or any of `=!<>()[],"`; a literal is JSON.

use serde_json::Value;

use crate::error::{QueryError, Reason};
use crate::path::Path;
use crate::predicate::{CmpOp, Predicate, check_range_literal};

/// Longest text form accepted.
pub const MAX_TEXT: usize = 64 * 1024;

/// Parses the text form of a predicate. An empty (or blank) text matches every document.
pub fn parse_text(text: &str) -> Result<Predicate, QueryError> {
    if text.len() > MAX_TEXT {
        return Err(QueryError::at(
            0,
            Reason::TooLarge(format!("a predicate of more than {MAX_TEXT} bytes")),
        ));
    }
    let mut p = Parser {
        s: text,
        pos: 0,
        depth: 0,
    };
    p.skip_ws();
    if p.pos == text.len() {
        return Ok(Predicate::All);
    }
    let pred = p.expr()?;
    p.skip_ws();
    if p.pos < text.len() {
        return Err(p.unexpected("'and', 'or' or the end"));
    }
    Ok(pred)
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
    depth: usize,
}

const PATH_STOP: &[char] = &['=', '!', '<', '>', '(', ')', '[', ']', ',', '"'];

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.s[self.pos..]
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.s.len() - trimmed.len();
    }

    fn unexpected(&self, expected: &str) -> QueryError {
        let found = match self.rest().chars().next() {
            None => "the end".to_string(),
            Some(_) => {
                let word: String = self
                    .rest()
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .take(20)
                    .collect();
                format!("{word:?}")
            }
        };
        QueryError::at(
            self.pos,
            Reason::Unexpected {
                expected: expected.to_string(),
                found,
            },
        )
    }

    /// The next word (letters, `_`) without consuming it.
    fn peek_word(&self) -> &str {
        let r = self.rest();
        let end = r
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(r.len());
        &r[..end]
    }

    /// Consumes the keyword `kw` (any case) when it is next.
    fn keyword(&mut self, kw: &str) -> bool {
        self.skip_ws();
        let w = self.peek_word();
        if w.eq_ignore_ascii_case(kw) {
            self.pos += w.len();
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Result<Predicate, QueryError> {
        self.depth += 1;
        if self.depth > crate::selector::MAX_NESTING {
            return Err(QueryError::at(
                self.pos,
                Reason::TooLarge("nesting too deep".into()),
            ));
        }
        let mut parts = vec![self.and()?];
        while self.keyword("or") {
            parts.push(self.and()?);
        }
        self.depth -= 1;
        Ok(if parts.len() == 1 {
            parts.pop().unwrap_or(Predicate::All)
        } else {
            Predicate::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Predicate, QueryError> {
        let mut parts = vec![self.unary()?];
        while self.keyword("and") {
            parts.push(self.unary()?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().unwrap_or(Predicate::All)
        } else {
            Predicate::And(parts)
        })
    }

    fn unary(&mut self) -> Result<Predicate, QueryError> {
        self.skip_ws();
        if self.keyword("not") {
            self.depth += 1;
            if self.depth > crate::selector::MAX_NESTING {
                return Err(QueryError::at(
                    self.pos,
                    Reason::TooLarge("nesting too deep".into()),
                ));
            }
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(inner.negate());
        }
        if self.keyword("true") {
            return Ok(Predicate::All);
        }
        if self.keyword("false") {
            return Ok(Predicate::Or(vec![]));
        }
        self.skip_ws();
        if self.rest().starts_with('(') {
            self.pos += 1;
            let inner = self.expr()?;
            self.skip_ws();
            if !self.rest().starts_with(')') {
                return Err(self.unexpected("')'"));
            }
            self.pos += 1;
            return Ok(inner);
        }
        if self.rest().starts_with('/') {
            let path = self.path()?;
            return self.test(path);
        }
        Err(self.unexpected("a path (/field), 'not' or '('"))
    }

    fn path(&mut self) -> Result<Path, QueryError> {
        let start = self.pos;
        let r = self.rest();
        let end = r
            .find(|c: char| c.is_whitespace() || PATH_STOP.contains(&c))
            .unwrap_or(r.len());
        let text = &r[..end];
        let path = Path::parse(text).map_err(|e| {
            QueryError::at(
                start,
                Reason::MalformedPath {
                    path: text.to_string(),
                    why: e.to_string(),
                },
            )
        })?;
        self.pos += end;
        Ok(path)
    }

    fn test(&mut self, path: Path) -> Result<Predicate, QueryError> {
        self.skip_ws();
        let op_at = self.pos;
        let r = self.rest();
        let op = [
            ("==", CmpOp::Eq),
            ("!=", CmpOp::Ne),
            ("<=", CmpOp::Le),
            (">=", CmpOp::Ge),
            ("=", CmpOp::Eq),
            ("<", CmpOp::Lt),
            (">", CmpOp::Gt),
        ]
        .into_iter()
        .find(|(sym, _)| r.starts_with(sym));
        if let Some((sym, op)) = op {
            self.pos += sym.len();
            let value = self.value()?;
            check_range_literal(op, &value).map_err(|found| {
                QueryError::at(
                    op_at,
                    Reason::IncompatibleComparison {
                        op: op.symbol().to_string(),
                        found,
                    },
                )
            })?;
            return Ok(Predicate::Cmp { path, op, value });
        }
        if self.keyword("in") {
            let at = self.pos;
            return match self.value()? {
                Value::Array(values) => Ok(Predicate::In { path, values }),
                _ => Err(QueryError::at(
                    at,
                    Reason::Unexpected {
                        expected: "a JSON array after 'in'".into(),
                        found: "another value".into(),
                    },
                )),
            };
        }
        if self.keyword("exists") {
            return Ok(Predicate::Exists { path });
        }
        if self.keyword("prefix") {
            return match self.value()? {
                Value::String(prefix) => Ok(Predicate::Prefix { path, prefix }),
                other => Err(QueryError::at(
                    op_at,
                    Reason::IncompatibleComparison {
                        op: "prefix".into(),
                        found: crate::order::Bracket::of(Some(&other)).name().to_string(),
                    },
                )),
            };
        }
        if !self.peek_word().is_empty() {
            return Err(QueryError::at(
                self.pos,
                Reason::UnknownOperator(self.peek_word().to_string()),
            ));
        }
        let sym: String = self
            .rest()
            .chars()
            .take_while(|c| !c.is_whitespace() && !c.is_alphanumeric() && *c != '"')
            .collect();
        if !sym.is_empty() {
            return Err(QueryError::at(self.pos, Reason::UnknownOperator(sym)));
        }
        Err(self.unexpected("an operator (= != < <= > >= in exists prefix)"))
    }

    /// A JSON literal.
    fn value(&mut self) -> Result<Value, QueryError> {
        self.skip_ws();
        let at = self.pos;
        let r = self.rest();
        let invalid =
            |e: serde_json::Error| QueryError::at(at, Reason::InvalidValue(e.to_string()));
        match r.chars().next() {
            Some('"' | '[' | '{') => {
                let mut stream = serde_json::Deserializer::from_str(r).into_iter::<Value>();
                match stream.next() {
                    Some(Ok(v)) => {
                        self.pos += stream.byte_offset();
                        Ok(v)
                    }
                    Some(Err(e)) => Err(invalid(e)),
                    None => Err(self.unexpected("a JSON value")),
                }
            }
            Some(c) if c == '-' || c.is_ascii_digit() => {
                let end = r
                    .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
                    .unwrap_or(r.len());
                let v: Value = serde_json::from_str(&r[..end]).map_err(invalid)?;
                self.pos += end;
                Ok(v)
            }
            _ => {
                for (kw, v) in [
                    ("true", Value::Bool(true)),
                    ("false", Value::Bool(false)),
                    ("null", Value::Null),
                ] {
                    if self.peek_word() == kw {
                        self.pos += kw.len();
                        return Ok(v);
                    }
                }
                Err(self.unexpected("a JSON value (\"text\", 12, true, null, [..])"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Position;
    use serde_json::json;

    #[test]
    fn parses_the_issue_example() {
        let p = parse_text(r#"/total > 1000 and /status = "open""#).unwrap();
        assert!(p.matches(&json!({"total": 1001, "status": "open"})));
        assert!(!p.matches(&json!({"total": 1000, "status": "open"})));
    }

    #[test]
    fn precedence_parentheses_and_keywords() {
        let p = parse_text(r#"/a = 1 or /b = 2 and /c = 3"#).unwrap();
        assert!(p.matches(&json!({"a": 1})));
        assert!(!p.matches(&json!({"b": 2})));
        let p = parse_text(r#"(/a = 1 OR /b = 2) AND NOT /c exists"#).unwrap();
        assert!(p.matches(&json!({"b": 2})));
        assert!(!p.matches(&json!({"b": 2, "c": null})));
        let p = parse_text(r#"/t in ["x", 2] and /n prefix "ab""#).unwrap();
        assert!(p.matches(&json!({"t": 2, "n": "abc"})));
        let p = parse_text("(/a>=1)").unwrap();
        assert!(p.matches(&json!({"a": 1})));
    }

    #[test]
    fn errors_name_offset_and_reason() {
        let e = parse_text("/a ~ 1").unwrap_err();
        assert_eq!(e.position, Position::Offset(3));
        assert_eq!(e.reason, Reason::UnknownOperator("~".into()));
        let e = parse_text("/a like 1").unwrap_err();
        assert_eq!(e.reason, Reason::UnknownOperator("like".into()));
        let e = parse_text("/a = 1 and b = 2").unwrap_err();
        assert_eq!(e.position, Position::Offset(11));
        let e = parse_text("/a~9 = 1").unwrap_err();
        assert!(matches!(e.reason, Reason::MalformedPath { .. }));
        let e = parse_text("/a > null").unwrap_err();
        assert_eq!(e.position, Position::Offset(3));
        assert!(matches!(e.reason, Reason::IncompatibleComparison { .. }));
        let e = parse_text("(/a = 1").unwrap_err();
        assert_eq!(e.position, Position::Offset(7));
    }

    #[test]
    fn display_parses_back() {
        for t in [
            r#"/a = 1 or not (/b in [1, "x"] and /c prefix "p")"#,
            "/x exists and /y <= 3.5",
            "true",
            "false",
        ] {
            let p = parse_text(t).unwrap();
            assert_eq!(parse_text(&p.to_string()).unwrap(), p, "{t}");
        }
    }
}
