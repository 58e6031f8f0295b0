//! Why a query was refused: one error type naming where (a byte offset in the text form, a
//! JSON pointer into the selector form) and a reason a caller can act on.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where in the input a [`QueryError`] was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Position {
    /// Byte offset into the text form (`/total > 1000 and ...`).
    Offset(usize),
    /// JSON pointer into the selector form (`/$or/1//total/$gt`).
    Selector(String),
    /// A part of the query other than its predicate (`order_by`, `projection`, a page token).
    Field(String),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Offset(o) => write!(f, "at offset {o}"),
            Position::Selector(p) if p.is_empty() => write!(f, "at the selector's root"),
            Position::Selector(p) => write!(f, "at selector {p}"),
            Position::Field(name) => write!(f, "in {name}"),
        }
    }
}

/// The reason a query was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Reason {
    #[error("unknown operator {0:?}")]
    UnknownOperator(String),
    #[error("malformed path {path:?}: {why}")]
    MalformedPath { path: String, why: String },
    #[error("incompatible comparison: {op} cannot compare with {found}")]
    IncompatibleComparison { op: String, found: String },
    #[error("expected {expected}, found {found}")]
    Unexpected { expected: String, found: String },
    #[error("invalid JSON value: {0}")]
    InvalidValue(String),
    #[error("invalid page token: {0}")]
    InvalidPageToken(String),
    #[error("over the limit: {0}")]
    TooLarge(String),
}

/// A query refused, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{reason} ({position})")]
pub struct QueryError {
    pub position: Position,
    pub reason: Reason,
}

impl QueryError {
    pub fn new(position: Position, reason: Reason) -> QueryError {
        QueryError { position, reason }
    }

    pub(crate) fn at(offset: usize, reason: Reason) -> QueryError {
        QueryError::new(Position::Offset(offset), reason)
    }

    pub(crate) fn field(name: &str, reason: Reason) -> QueryError {
        QueryError::new(Position::Field(name.to_string()), reason)
    }
}
