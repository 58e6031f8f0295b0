//! Flotilla client library: talks to a cluster through any of its nodes, fails over across the
//! endpoint list, and retries with exponential backoff while the cluster has no leader.
//!
//! ```no_run
//! # async fn example() -> Result<(), flotilla_client::Error> {
//! use flotilla_client::{Client, Consistency};
//!
//! let client = Client::connect(vec!["127.0.0.1:7100".into(), "127.0.0.1:7110".into()])?;
//! client.create_database("shop", None, None).await?;
//! client
//!     .wait_for_database("shop", std::time::Duration::from_secs(30), |_| {})
//!     .await?;
//! let put = client.put("shop", "users", "alice", r#"{"name":"Alice"}"#, None).await?;
//! let doc = client.get("shop", "users", "alice", Consistency::Linearizable).await?;
//! assert_eq!(doc.map(|d| d.version), Some(put.version));
//! # Ok(())
//! # }
//! ```
//!
//! See [`client`] for what is retried and what a write that timed out means.

mod auth;
pub mod client;
mod coalesce;
mod endpoints;
pub mod error;
pub mod options;
mod request_id;
pub mod types;

pub use auth::Credentials;
pub use client::live::{LiveEvent, LiveQueryOptions, LiveStream};
pub use client::query::{
    CollectionInfo, IndexInfo, QueryBuilder, QueryExplain, QueryPage, ShardExplain, index_name,
};
pub use client::users::{NewToken, Permission, RoleInfo, TokenInfo, UserInfo};
pub use client::{
    Client, CommitOutcome, CommittedWrite, Cut, DatabaseOptions, DatabaseUpdate, ListOptions,
    Session, Transaction, TransactionInfo, WatchStream,
};
pub use error::{Error, Result};
pub use flotilla_query::{Field, Predicate, parse_text};
pub use options::{ClientOptions, ClientTls};
pub use types::{
    BatchOp, BatchOutcome, BatchResult, ChangeKind, ClusterEvent, ClusterStatus, Consistency,
    DatabaseInfo, DatabaseStatus, DeleteResult, Document, Group, Health, IndexCheck, ListPage,
    MetaRole, NodeStatus, PutResult, RemoveNodeProgress, ReplicaDigest, ReplicaMove, ReplicaState,
    ReplicaStatus, ShardStatus, WatchEvent,
};
