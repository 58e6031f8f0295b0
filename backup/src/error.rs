//! What can go wrong with a backup, in variants a caller acts on.

/// A backup's failure.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The target URL cannot name a backup target.
    #[error("bad backup target {url:?}: {reason}")]
    BadTarget { url: String, reason: String },
    /// The backup has no `complete` marker: interrupted, or still being written.
    #[error(
        "backup {0} is incomplete (no complete marker): it was interrupted or is still being written"
    )]
    Incomplete(String),
    /// A file the manifest lists is missing.
    #[error("backup file {0} is missing")]
    MissingFile(String),
    /// A file's size differs from the manifest's.
    #[error("backup file {name} has {actual} bytes, the manifest says {expected}")]
    SizeMismatch {
        name: String,
        expected: u64,
        actual: u64,
    },
    /// A file's checksum differs from the manifest's (or the manifest's from the marker's).
    #[error("backup file {name} is corrupt: SHA-256 {actual}, expected {expected}")]
    ChecksumMismatch {
        name: String,
        expected: String,
        actual: String,
    },
    /// Written by a newer (or unknown) version of the format.
    #[error("backup format version {0} is not supported (this build reads version {1})")]
    UnsupportedVersion(u32, u32),
    /// The manifest contradicts itself (for example a shard listed twice).
    #[error("backup manifest is invalid: {0}")]
    InvalidManifest(String),
    /// A line of a shard file is not a document.
    #[error("backup file {name}, line {line}: {reason}")]
    BadDocument {
        name: String,
        line: u64,
        reason: String,
    },
    /// The URL names something that is not a backup (nothing, or other files): refused,
    /// nothing deleted.
    #[error("{url} is not a backup ({reason}); nothing was deleted")]
    NotABackup { url: String, reason: String },
    /// The target already holds a backup under this id.
    #[error("backup {0} already exists at the target")]
    AlreadyExists(String),
    /// A backup of an incremental chain (the one named, or a base it leads to) cannot be
    /// used: missing, incomplete or corrupt. Nothing was restored.
    #[error("backup chain link {link} is broken: {source}")]
    BrokenLink {
        link: String,
        #[source]
        source: Box<BackupError>,
    },
    /// An incremental backup does not follow on from the backup its manifest names as its
    /// base (another backup, another database, other revisions). Nothing was restored.
    #[error("backup chain link {link} does not follow on from its base: {reason}")]
    ChainMismatch { link: String, reason: String },
    /// Reading or writing the target failed.
    #[error("backup storage: {0}")]
    Store(#[from] object_store::Error),
    #[error("backup I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("backup encoding: {0}")]
    Json(#[from] serde_json::Error),
}

pub type Result<T, E = BackupError> = std::result::Result<T, E>;
