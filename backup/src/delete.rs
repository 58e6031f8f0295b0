//! Deleting a backup from its target, refusing anything that is not one.
//!
//! A backup is a directory holding backup files only (`complete`, `manifest.json`,
//! `shard-NNNN.jsonl`, or an incremental backup's `changes-NNNN.jsonl`); a URL naming anything else (a root holding backups, a directory with
//! other files, nothing at all) is refused and nothing is deleted. The `complete` marker goes
//! first, so that a deletion cut short never leaves a backup that is listed or restored as
//! complete; the manifest goes last, so that what remains is still recognised as a backup
//! and a second `delete` finishes the work.

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;

use crate::error::{BackupError, Result};
use crate::manifest::{COMPLETE, MANIFEST};
use crate::target::Target;

/// What [`delete`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The backup's files were deleted; this many.
    Files(usize),
    /// Nothing was there (and the caller accepts that).
    Missing,
}

/// Whether `name` is the name of a file a backup holds.
pub fn is_backup_file(name: &str) -> bool {
    if name == COMPLETE || name == MANIFEST {
        return true;
    }
    name.strip_prefix("shard-")
        .or_else(|| name.strip_prefix("changes-"))
        .and_then(|rest| rest.strip_suffix(".jsonl"))
        .is_some_and(|n| n.len() >= 4 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The target holding the backup `url` names, and the backup's id in it.
fn split(url: &str) -> Result<(Target, String)> {
    let bad = |reason: &str| BackupError::BadTarget {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = url.trim_end_matches('/');
    let (root, id) = trimmed
        .rsplit_once('/')
        .ok_or_else(|| bad("names no backup directory"))?;
    if id.is_empty() || id == "." || id == ".." || root.is_empty() || root.ends_with(':') {
        return Err(bad("names no backup directory"));
    }
    let root = match root {
        "s3:/" | "file:/" => return Err(bad("names no backup directory")),
        // `file:///x`: the root of the file system holds it.
        "file://" => "/",
        other => other,
    };
    Ok((Target::open(root)?, id.to_string()))
}

/// Deletes the backup at `url`: refused ([`BackupError::NotABackup`]) when the URL holds
/// anything but backup files, or nothing at all unless `missing_ok`.
pub async fn delete(url: &str, missing_ok: bool) -> Result<Deleted> {
    let (root, id) = split(url)?;
    let prefix = root.path(&[&id]);
    let objects: Vec<Path> = root
        .store
        .list(Some(&prefix))
        .map_ok(|meta| meta.location)
        .try_collect()
        .await?;
    if objects.is_empty() {
        return if missing_ok {
            Ok(Deleted::Missing)
        } else {
            Err(BackupError::NotABackup {
                url: url.to_string(),
                reason: "nothing is there".to_string(),
            })
        };
    }
    for object in &objects {
        let name = object
            .prefix_match(&prefix)
            .map(|parts| parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>())
            .unwrap_or_default();
        if name.len() != 1 || !is_backup_file(&name[0]) {
            return Err(BackupError::NotABackup {
                url: url.to_string(),
                reason: format!("it holds {object}, which is not a backup file"),
            });
        }
    }
    // The marker first, the manifest last.
    let rank = |p: &Path| match p.filename() {
        Some(COMPLETE) => 0,
        Some(MANIFEST) => 2,
        _ => 1,
    };
    let mut ordered = objects;
    ordered.sort_by_key(|p| rank(p));
    for object in &ordered {
        match root.store.delete(object).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Deleted::Files(ordered.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::list;

    /// A complete backup `id` under the directory `root`, written as the writer lays it out.
    fn write_backup(root: &std::path::Path, id: &str) {
        let dir = root.join(id);
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["shard-0000.jsonl", "shard-0001.jsonl", MANIFEST, COMPLETE] {
            std::fs::write(dir.join(name), b"{}").unwrap();
        }
    }

    #[test]
    fn backup_files_are_recognised_by_name() {
        assert!(is_backup_file("complete"));
        assert!(is_backup_file("manifest.json"));
        assert!(is_backup_file("shard-0012.jsonl"));
        assert!(!is_backup_file("shard-12.jsonl"));
        assert!(!is_backup_file("notes.txt"));
    }

    #[tokio::test]
    async fn a_backup_is_deleted_with_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        write_backup(dir.path(), "b1");
        write_backup(dir.path(), "b2");
        let url = format!("file://{}/b1", dir.path().display());
        assert_eq!(delete(&url, false).await.unwrap(), Deleted::Files(4));
        assert!(!dir.path().join("b1").exists());
        assert!(dir.path().join("b2").join(COMPLETE).exists());
        // Gone: refused, unless missing is fine.
        assert!(matches!(
            delete(&url, false).await,
            Err(BackupError::NotABackup { .. })
        ));
        assert_eq!(delete(&url, true).await.unwrap(), Deleted::Missing);
    }

    #[tokio::test]
    async fn a_root_of_backups_or_a_directory_of_other_files_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        write_backup(&dir.path().join("root"), "b1");
        let root = format!("file://{}/root", dir.path().display());
        assert!(matches!(
            delete(&root, true).await,
            Err(BackupError::NotABackup { .. })
        ));
        std::fs::write(dir.path().join("root/b1/notes.txt"), b"mine").unwrap();
        let backup = format!("{root}/b1");
        assert!(matches!(
            delete(&backup, true).await,
            Err(BackupError::NotABackup { .. })
        ));
        assert!(dir.path().join("root/b1").join(COMPLETE).exists());
        assert!(matches!(
            delete("s3://bucket", true).await,
            Err(BackupError::BadTarget { .. })
        ));
    }

    #[tokio::test]
    async fn a_deletion_cut_short_leaves_no_complete_backup_and_is_finished_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        write_backup(dir.path(), "b1");
        // As a deletion stopped after its first file: the marker is gone, the rest is there.
        std::fs::remove_file(dir.path().join("b1").join(COMPLETE)).unwrap();
        let root = Target::open(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(list(&root).await.unwrap(), Vec::new());
        let url = format!("{}/b1", dir.path().display());
        assert_eq!(delete(&url, false).await.unwrap(), Deleted::Files(3));
        assert!(!dir.path().join("b1").exists());
    }
}
