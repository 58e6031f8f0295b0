//! The manifest, the completion marker and the document lines: the format itself, and the pure
//! checks on it (no I/O here).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{BackupError, Result};

/// The version of the format this build writes. Version 2 added the collections, version 3
/// the consistent cut (each shard's pending intents and transaction records, see
/// [`crate::cut`]); this build reads versions 1 to 3.
pub const FORMAT_VERSION: u32 = 3;
/// The oldest version this build reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// The manifest's file name in a backup.
pub const MANIFEST: &str = "manifest.json";
/// The completion marker's file name, written after everything else.
pub const COMPLETE: &str = "complete";

/// The database as it was when backed up: enough to create it again with the same shards
/// (documents hash onto a fixed shard count, so a shard's file restores onto the same shard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseSpec {
    pub name: String,
    pub replication_factor: u32,
    pub shards: Vec<ShardSpec>,
    /// The declared collections: shard keys (placement) and secondary indexes. Empty in a
    /// backup of format 1, which did not keep them.
    #[serde(default)]
    pub collections: Vec<CollectionSpec>,
}

/// A declared collection: its shard key (a JSON path; `None` places documents by id) and
/// indexes, created again by a restore before any document is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionSpec {
    pub name: String,
    pub shard_key: Option<String>,
    pub indexes: Vec<IndexSpec>,
}

/// A secondary index: its name and the JSON paths of its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexSpec {
    pub name: String,
    pub paths: Vec<String>,
}

/// One shard of the database record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSpec {
    pub shard: u32,
    /// The shard's Raft group in the source cluster.
    pub group_id: u64,
}

/// One file of a backup: its name within the backup, size and SHA-256 (lower-case hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// One shard's part of a backup: the revision (applied log index) its documents were read at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardBackup {
    pub shard: u32,
    /// Every write of the shard up to this revision is in the file, none after it.
    pub revision: u64,
    pub documents: u64,
    pub file: FileEntry,
}

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub backup_id: String,
    pub cluster_id: String,
    /// When the backup started, in seconds since the Unix epoch.
    pub started_unix: u64,
    pub database: DatabaseSpec,
    pub shards: Vec<ShardBackup>,
    /// The cut the shards were read at, with their intents and records (format 3; absent
    /// before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut: Option<crate::cut::CutInfo>,
    /// Present in an incremental backup only (see [`crate::incremental`]): its base and each
    /// shard's range of revisions; each shard's file then holds that range's changes, not
    /// documents. Absent (and not written) in a full backup, whose format it leaves as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<crate::incremental::Incremental>,
}

/// The content of the `complete` marker: the SHA-256 of the manifest's bytes, so a manifest
/// changed after the backup completed is caught too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompleteMarker {
    pub manifest_sha256: String,
}

/// One document as a shard file stores it (one JSON object a line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupDoc {
    pub collection: String,
    pub id: String,
    pub version: u64,
    pub revision: u64,
    /// The document body, JSON text.
    pub json: String,
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of a digest.
pub fn hex(digest: &[u8]) -> String {
    use std::fmt::Write;
    digest.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The shard file's name for shard `shard`.
pub fn shard_file(shard: u32) -> String {
    format!("shard-{shard:04}.jsonl")
}

impl CompleteMarker {
    pub fn for_manifest(manifest_bytes: &[u8]) -> CompleteMarker {
        CompleteMarker {
            manifest_sha256: sha256_hex(manifest_bytes),
        }
    }

    /// Checks that `manifest_bytes` are the manifest this marker completed.
    pub fn check(&self, manifest_bytes: &[u8]) -> Result<()> {
        let actual = sha256_hex(manifest_bytes);
        if actual != self.manifest_sha256 {
            return Err(BackupError::ChecksumMismatch {
                name: MANIFEST.into(),
                expected: self.manifest_sha256.clone(),
                actual,
            });
        }
        Ok(())
    }
}

impl FileEntry {
    /// Checks a file read back (its size and SHA-256) against this entry.
    pub fn check(&self, size: u64, sha256: &str) -> Result<()> {
        if size != self.size {
            return Err(BackupError::SizeMismatch {
                name: self.name.clone(),
                expected: self.size,
                actual: size,
            });
        }
        if sha256 != self.sha256 {
            return Err(BackupError::ChecksumMismatch {
                name: self.name.clone(),
                expected: self.sha256.clone(),
                actual: sha256.to_string(),
            });
        }
        Ok(())
    }
}

impl Manifest {
    /// Decodes a manifest and checks it is one this build can restore.
    pub fn decode(bytes: &[u8]) -> Result<Manifest> {
        let manifest: Manifest = serde_json::from_slice(bytes)?;
        manifest.check()?;
        Ok(manifest)
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        Ok(serde_json::to_vec_pretty(self)?)
    }

    /// The format version is known, every shard of the database is backed up exactly once,
    /// and no two shards share a file.
    pub fn check(&self) -> Result<()> {
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&self.format_version) {
            return Err(BackupError::UnsupportedVersion(
                self.format_version,
                FORMAT_VERSION,
            ));
        }
        let expected: BTreeSet<u32> = (0..self.database.shards.len() as u32).collect();
        let specs: BTreeSet<u32> = self.database.shards.iter().map(|s| s.shard).collect();
        if specs != expected || self.database.shards.len() != expected.len() {
            return Err(BackupError::InvalidManifest(
                "the database's shards are not numbered 0..n".into(),
            ));
        }
        let backed: BTreeSet<u32> = self.shards.iter().map(|s| s.shard).collect();
        if backed != expected || self.shards.len() != expected.len() {
            return Err(BackupError::InvalidManifest(format!(
                "shards backed up {backed:?}, the database has {}",
                expected.len()
            )));
        }
        if let Some(cut) = &self.cut {
            let with_txns: BTreeSet<u32> = cut.shards.iter().map(|s| s.shard).collect();
            if !with_txns.is_subset(&expected) || with_txns.len() != cut.shards.len() {
                return Err(BackupError::InvalidManifest(format!(
                    "transaction files for shards {with_txns:?}, the database has {}",
                    expected.len()
                )));
            }
        }
        let files = self.files();
        let names: BTreeSet<&str> = files.iter().map(|f| f.name.as_str()).collect();
        if names.len() != files.len() {
            return Err(BackupError::InvalidManifest(
                "two shards share a file".into(),
            ));
        }
        for f in files {
            if f.name.contains('/') || f.name == MANIFEST || f.name == COMPLETE {
                return Err(BackupError::InvalidManifest(format!(
                    "file name {:?} is not allowed",
                    f.name
                )));
            }
        }
        if let Some(incremental) = &self.incremental {
            incremental.check(self)?;
        }
        Ok(())
    }

    /// Every file the manifest lists: the shards' documents, then their transactions.
    pub fn files(&self) -> Vec<&FileEntry> {
        let txns = self
            .cut
            .iter()
            .flat_map(|c| c.shards.iter().map(|s| &s.file));
        self.shards.iter().map(|s| &s.file).chain(txns).collect()
    }

    /// Total size of the shard files.
    pub fn total_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.file.size).sum()
    }

    pub fn total_documents(&self) -> u64 {
        self.shards.iter().map(|s| s.documents).sum()
    }
}

impl BackupDoc {
    /// One line of a shard file (with its newline).
    pub fn to_line(&self) -> Result<Vec<u8>> {
        let mut line = serde_json::to_vec(self)?;
        line.push(b'\n');
        Ok(line)
    }

    /// Parses line `line` (1-based) of file `name`.
    pub fn from_line(name: &str, line: u64, text: &str) -> Result<BackupDoc> {
        serde_json::from_str(text).map_err(|e| BackupError::BadDocument {
            name: name.to_string(),
            line,
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(shards: u32) -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            backup_id: "shop-1".into(),
            cluster_id: "c1".into(),
            started_unix: 1,
            database: DatabaseSpec {
                name: "shop".into(),
                collections: vec![],
                replication_factor: 3,
                shards: (0..shards)
                    .map(|s| ShardSpec {
                        shard: s,
                        group_id: 100 + s as u64,
                    })
                    .collect(),
            },
            shards: (0..shards)
                .map(|s| ShardBackup {
                    shard: s,
                    revision: 10 * s as u64,
                    documents: 2,
                    file: FileEntry {
                        name: shard_file(s),
                        size: 5,
                        sha256: sha256_hex(b"hello"),
                    },
                })
                .collect(),
            cut: None,
            incremental: None,
        }
    }

    #[test]
    fn a_manifest_round_trips_and_checks() {
        let m = manifest(3);
        let bytes = m.encode().unwrap();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        assert_eq!(m.total_bytes(), 15);
        assert_eq!(m.total_documents(), 6);
    }

    #[test]
    fn an_unknown_format_version_is_refused() {
        let mut m = manifest(1);
        m.format_version = FORMAT_VERSION + 1;
        let bytes = serde_json::to_vec(&m).unwrap();
        assert!(matches!(
            Manifest::decode(&bytes),
            Err(BackupError::UnsupportedVersion(v, FORMAT_VERSION)) if v == FORMAT_VERSION + 1
        ));
    }

    #[test]
    fn a_manifest_missing_a_shard_or_listing_one_twice_is_refused() {
        let mut m = manifest(3);
        m.shards.pop();
        assert!(matches!(m.check(), Err(BackupError::InvalidManifest(_))));
        let mut m = manifest(3);
        m.shards[2].shard = 1;
        assert!(matches!(m.check(), Err(BackupError::InvalidManifest(_))));
        let mut m = manifest(2);
        m.shards[1].file.name = m.shards[0].file.name.clone();
        assert!(matches!(m.check(), Err(BackupError::InvalidManifest(_))));
        let mut m = manifest(1);
        m.shards[0].file.name = "../escape".into();
        assert!(matches!(m.check(), Err(BackupError::InvalidManifest(_))));
    }

    #[test]
    fn file_checks_catch_size_and_checksum() {
        let entry = FileEntry {
            name: "f".into(),
            size: 5,
            sha256: sha256_hex(b"hello"),
        };
        entry.check(5, &sha256_hex(b"hello")).unwrap();
        assert!(matches!(
            entry.check(4, &sha256_hex(b"hell")),
            Err(BackupError::SizeMismatch {
                expected: 5,
                actual: 4,
                ..
            })
        ));
        assert!(matches!(
            entry.check(5, &sha256_hex(b"jello")),
            Err(BackupError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn the_complete_marker_names_its_manifest() {
        let bytes = manifest(2).encode().unwrap();
        let marker = CompleteMarker::for_manifest(&bytes);
        marker.check(&bytes).unwrap();
        let mut changed = bytes.clone();
        changed[10] ^= 1;
        assert!(matches!(
            marker.check(&changed),
            Err(BackupError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn sha256_is_the_standard_one() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn document_lines_round_trip_and_name_a_bad_line() {
        let doc = BackupDoc {
            collection: "users".into(),
            id: "a\nb".into(),
            version: 3,
            revision: 7,
            json: r#"{"x":"y\n"}"#.into(),
        };
        let line = doc.to_line().unwrap();
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let text = std::str::from_utf8(&line).unwrap().trim_end();
        assert_eq!(BackupDoc::from_line("f", 1, text).unwrap(), doc);
        assert!(matches!(
            BackupDoc::from_line("f", 9, "{"),
            Err(BackupError::BadDocument { line: 9, .. })
        ));
    }
}
