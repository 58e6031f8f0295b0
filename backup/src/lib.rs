//! Flotilla backups: the format and its targets, apart from the cluster (the `flotilla` CLI
//! drives a backup through the nodes' `Backup` service and writes it with this crate).
//!
//! A backup is a directory (a prefix in object storage) under a target root:
//!
//! ```text
//! ROOT/<backup id>/shard-0000.jsonl   one per shard: its documents, one JSON object a line
//! ROOT/<backup id>/manifest.json      format version, cluster id, the database record with its
//!                                     shards, per-shard revision, every file's size and SHA-256
//! ROOT/<backup id>/complete           written last: the SHA-256 of manifest.json
//! ```
//!
//! A backup without its `complete` marker (interrupted, or still being written) is never listed
//! and never restored. Targets are named by URL ([`target`]): a local directory path,
//! `file:///path`, or `s3://bucket/prefix` (credentials, region and endpoint from the
//! environment, as the AWS tools read them).

pub mod delete;
pub mod error;
pub mod manifest;
pub mod read;
pub mod target;
pub mod write;

pub use delete::{Deleted, delete};
pub use error::{BackupError, Result};
pub use manifest::{
    BackupDoc, CollectionSpec, CompleteMarker, DatabaseSpec, FORMAT_VERSION, FileEntry, IndexSpec,
    Manifest, ShardBackup, ShardSpec,
};
pub use read::{BackupSummary, list, open_verified, read_shard, verify};
pub use target::Target;
pub use write::{BackupWriter, ShardWriter};
