//! The Flotilla storage node: hosts the meta group and data groups (one per database shard) as
//! openraft instances over two shared redb files (Raft logs; state machines), serves the
//! client, admin and peer gRPC APIs and HTTP metrics and health.

pub mod auth;
pub mod codec;
pub mod command;
pub mod compaction;
pub mod config;
pub mod consensus;
pub mod crash_point;
pub mod dev;
pub mod error;
pub mod failover;
pub mod fuzzing;
pub mod grpc;
pub mod hibernation;
pub mod host;
pub mod http;
pub mod labels;
pub mod meta;
pub mod metrics;
pub mod network;
pub mod observer;
pub mod placement;
pub mod replication;
pub mod serve;
pub mod snapshot_file;
pub mod store;
pub mod tls;
pub mod topology;
pub mod txn;
pub mod types;
pub mod validate;
