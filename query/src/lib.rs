//! Flotilla's queries, without I/O: predicates on JSON paths in two forms that parse into one
//! AST (the JSON selector form of the API, [`parse_selector`], and the short text form of the
//! command line, [`parse_text`]), their evaluation over `serde_json` values under one total
//! order of values ([`order`]), the order-preserving keys of secondary indexes, the planner
//! that picks an index or a scan and the shards to ask ([`plan()`]), and what a shard answers
//! and how the answers of several shards merge into pages ([`exec`]).
//!
//! Every type an API carries is `serde`-serializable (a predicate as its selector form).

pub mod builder;
pub mod error;
pub mod exec;
pub mod live;
pub mod order;
pub mod path;
pub mod plan;
pub mod predicate;
pub mod selector;
pub mod text;

pub use builder::Field;
pub use error::{Position, QueryError, Reason};
pub use exec::{
    Candidate, Cursor, Hit, Merged, OrderKey, PageLimits, Query, ShardPage, SortKey, merge,
    project, shard_page,
};
pub use live::{LiveChange, classify};
pub use order::{compare, compare_opt, index_key};
pub use path::{Path, PathError};
pub use plan::{
    Access, IndexDef, KeyRange, Plan, is_shard_key_value, plan, shard_of_id, shard_of_value,
};
pub use predicate::{CmpOp, Predicate};
pub use selector::{parse_selector, parse_selector_str};
pub use text::parse_text;
