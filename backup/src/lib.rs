//! Flotilla backups: the format and its targets, apart from the cluster (the `flotilla` CLI
//! drives a backup through the nodes' `Backup` service and writes it with this crate).
//!
//! A backup is a directory (a prefix in object storage) under a target root:
//!
//! ```text
//! ROOT/<backup id>/shard-0000.jsonl   one per shard: its documents, one JSON object a line
//! ROOT/<backup id>/txn-0000.jsonl     one per shard (format 3): its pending transaction
//!                                     intents and records at the cut (see [`cut`])
//! ROOT/<backup id>/manifest.json      format version, cluster id, the database record with its
//!                                     shards, per-shard revision, every file's size and SHA-256
//! ROOT/<backup id>/complete           written last: the SHA-256 of manifest.json
//! ```
//!
//! An incremental backup has the same layout with `changes-0000.jsonl` files (each shard's
//! changes since its base, one JSON object a line) and names its base in its manifest (see
//! [`incremental`]).
//!
//! A backup without its `complete` marker (interrupted, or still being written) is never listed
//! and never restored. Targets are named by URL ([`target`]): a local directory path,
//! `file:///path`, or `s3://bucket/prefix` (credentials, region and endpoint from the
//! environment, as the AWS tools read them).

pub mod cluster;
pub mod cut;
pub mod delete;
pub mod error;
pub mod incremental;
pub mod manifest;
pub mod read;
pub mod target;
pub mod write;

pub use cluster::{
    ClusterBackupWriter, ClusterDatabase, ClusterManifest, RoleSpec, UserSpec, VerifiedDatabase,
    is_cluster_backup, list_clusters, verify_cluster,
};
pub use cut::{BackupIntent, BackupRecord, CutInfo, IntentWrite, Resolver, ShardTxns, TxnLine};
pub use delete::{Deleted, delete};
pub use error::{BackupError, Result};
pub use incremental::{
    BaseRef, ChangeLine, INCREMENTAL_VERSION, Incremental, Link, ShardFold, ShardRange,
};
pub use manifest::{
    BackupDoc, CollectionSpec, CompleteMarker, DatabaseSpec, FORMAT_VERSION, FileEntry, IndexSpec,
    Manifest, ShardBackup, ShardSpec,
};
pub use read::{BackupSummary, list, open_verified, read_shard, verify};
pub use target::Target;
pub use write::{BackupWriter, ShardWriter};
