//! Reading backups: listing the complete ones under a root, verifying one (the marker, the
//! manifest, then every file's size and SHA-256, streamed), and reading a shard's documents.

use futures::{Stream, StreamExt, TryStreamExt};
use object_store::{ObjectStoreExt, path::Path};
use sha2::{Digest, Sha256};
use tokio::io::AsyncBufReadExt;
use tokio_util::io::StreamReader;

use crate::error::{BackupError, Result};
use crate::manifest::{BackupDoc, COMPLETE, CompleteMarker, MANIFEST, Manifest, hex};
use crate::target::Target;

/// A complete backup found under a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    pub url: String,
    pub manifest: Manifest,
}

/// Every complete backup directly under `root` (those without a `complete` marker are left out:
/// interrupted or still being written), oldest first.
pub async fn list(root: &Target) -> Result<Vec<BackupSummary>> {
    let listing = root.store.list_with_delimiter(Some(&root.prefix)).await?;
    let mut found = Vec::new();
    for dir in listing.common_prefixes {
        let Some(id) = dir.filename().map(str::to_string) else {
            continue;
        };
        let backup = Target {
            store: root.store.clone(),
            prefix: dir.clone(),
            url: root.child_url(&id),
        };
        match manifest_of(&backup).await {
            Ok(manifest) => found.push(BackupSummary {
                url: backup.url,
                manifest,
            }),
            Err(BackupError::Incomplete(_)) => {}
            Err(e) => return Err(e),
        }
    }
    found.sort_by(|a, b| {
        (a.manifest.started_unix, &a.manifest.backup_id)
            .cmp(&(b.manifest.started_unix, &b.manifest.backup_id))
    });
    Ok(found)
}

/// The manifest of the backup at `backup`, checked against its `complete` marker.
pub(crate) async fn manifest_of(backup: &Target) -> Result<Manifest> {
    let marker = match get_all(backup, &backup.path(&[COMPLETE])).await {
        Err(BackupError::MissingFile(_)) => {
            return Err(BackupError::Incomplete(backup.url.clone()));
        }
        other => other?,
    };
    let marker: CompleteMarker = serde_json::from_slice(&marker)?;
    let bytes = get_all(backup, &backup.path(&[MANIFEST])).await?;
    marker.check(&bytes)?;
    Manifest::decode(&bytes)
}

pub(crate) async fn get_all(backup: &Target, path: &Path) -> Result<Vec<u8>> {
    match backup.store.get(path).await {
        Ok(got) => Ok(got.bytes().await?.to_vec()),
        Err(object_store::Error::NotFound { .. }) => {
            Err(BackupError::MissingFile(path.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Verifies the backup at `backup`: complete, its manifest intact, every file there with the
/// size and SHA-256 the manifest lists (each read as a stream). `progress` is called after each
/// file with (files checked, files in all).
pub async fn verify(backup: &Target, mut progress: impl FnMut(usize, usize)) -> Result<Manifest> {
    let manifest = manifest_of(backup).await?;
    let files = manifest.files();
    for (i, file) in files.iter().enumerate() {
        let path = backup.path(&[&file.name]);
        let got = match backup.store.get(&path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(BackupError::MissingFile(file.name.clone()));
            }
            Err(e) => return Err(e.into()),
        };
        let mut stream = got.into_stream();
        let mut hash = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            hash.update(&chunk);
        }
        file.check(size, &hex(&hash.finalize()))?;
        progress(i + 1, files.len());
    }
    Ok(manifest)
}

/// Opens the backup at `url` and verifies it (see [`verify`]).
pub async fn open_verified(url: &str) -> Result<(Target, Manifest)> {
    let backup = Target::open(url)?;
    let manifest = verify(&backup, |_, _| {}).await?;
    Ok((backup, manifest))
}

/// The documents of file `name` of the backup at `backup`, in order, streamed.
pub async fn read_shard(
    backup: &Target,
    name: &str,
) -> Result<impl Stream<Item = Result<BackupDoc>> + use<>> {
    let lines = read_lines(backup, name).await?;
    let name = name.to_string();
    Ok(lines.map(move |line| {
        let (number, text) = line?;
        BackupDoc::from_line(&name, number, &text)
    }))
}

/// The lines of file `name` of the backup at `backup`, each with its (1-based) number,
/// streamed.
pub(crate) async fn read_lines(
    backup: &Target,
    name: &str,
) -> Result<impl Stream<Item = Result<(u64, String)>> + use<>> {
    let got = match backup.store.get(&backup.path(&[name])).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(BackupError::MissingFile(name.to_string()));
        }
        Err(e) => return Err(e.into()),
    };
    let reader = StreamReader::new(got.into_stream().map_err(std::io::Error::other));
    let lines = tokio_stream_lines(reader);
    Ok(lines.enumerate().map(|(i, line)| Ok((i as u64 + 1, line?))))
}

fn tokio_stream_lines<R: tokio::io::AsyncBufRead + Unpin>(
    reader: R,
) -> impl Stream<Item = std::io::Result<String>> {
    futures::stream::unfold(reader.lines(), |mut lines| async move {
        match lines.next_line().await {
            Ok(Some(line)) => Some((Ok(line), lines)),
            Ok(None) => None,
            Err(e) => Some((Err(e), lines)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{DatabaseSpec, FORMAT_VERSION, ShardBackup, ShardSpec};
    use crate::write::BackupWriter;

    fn doc(i: u64) -> BackupDoc {
        BackupDoc {
            collection: "c".into(),
            id: format!("d{i}"),
            version: i,
            revision: 10 + i,
            json: format!(r#"{{"n":{i}}}"#),
        }
    }

    /// Writes a two-shard backup `id` under `root`; `complete` decides whether it gets its marker.
    async fn write(root: &Target, id: &str, complete: bool) -> String {
        let w = BackupWriter::start(root.clone(), id).await.unwrap();
        let mut shards = Vec::new();
        for s in 0..2u32 {
            let mut f = w.shard(s);
            for i in 0..(100 * (s as u64 + 1)) {
                f.write(&doc(i)).await.unwrap();
            }
            let documents = f.documents();
            shards.push(ShardBackup {
                shard: s,
                revision: 7,
                documents,
                file: f.finish().await.unwrap(),
            });
        }
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            backup_id: id.into(),
            cluster_id: "c".into(),
            started_unix: 5,
            database: DatabaseSpec {
                name: "db".into(),
                collections: vec![],
                replication_factor: 1,
                shards: (0..2)
                    .map(|s| ShardSpec {
                        shard: s,
                        group_id: s as u64,
                    })
                    .collect(),
            },
            shards,
            cut: None,
            incremental: None,
        };
        let url = w.url();
        if complete {
            w.complete(&manifest).await.unwrap();
        }
        url
    }

    #[tokio::test]
    async fn a_written_backup_lists_verifies_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let root = Target::open(dir.path().to_str().unwrap()).unwrap();
        let url = write(&root, "b1", true).await;
        let listed = list(&root).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].url, url);
        let (backup, manifest) = open_verified(&url).await.unwrap();
        assert_eq!(manifest.total_documents(), 300);
        let docs: Vec<BackupDoc> = read_shard(&backup, &manifest.shards[1].file.name)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(docs, (0..200).map(doc).collect::<Vec<_>>());
        assert!(matches!(
            BackupWriter::start(root.clone(), "b1").await,
            Err(BackupError::AlreadyExists(_))
        ));
    }

    #[tokio::test]
    async fn a_backup_without_its_marker_is_not_listed_nor_verified() {
        let dir = tempfile::tempdir().unwrap();
        let root = Target::open(dir.path().to_str().unwrap()).unwrap();
        write(&root, "done", true).await;
        let url = write(&root, "interrupted", false).await;
        let listed = list(&root).await.unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|b| b.manifest.backup_id.as_str())
                .collect::<Vec<_>>(),
            ["done"]
        );
        assert!(matches!(
            open_verified(&url).await,
            Err(BackupError::Incomplete(_))
        ));
    }

    #[tokio::test]
    async fn a_flipped_byte_or_a_missing_file_fails_verification() {
        let dir = tempfile::tempdir().unwrap();
        let root = Target::open(dir.path().to_str().unwrap()).unwrap();
        let url = write(&root, "b", true).await;
        let file = dir.path().join("b").join("shard-0001.jsonl");
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[17] ^= 0x20;
        std::fs::write(&file, &bytes).unwrap();
        assert!(matches!(
            open_verified(&url).await,
            Err(BackupError::ChecksumMismatch { name, .. }) if name == "shard-0001.jsonl"
        ));
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(
            open_verified(&url).await,
            Err(BackupError::MissingFile(name)) if name == "shard-0001.jsonl"
        ));
        let manifest = dir.path().join("b").join(MANIFEST);
        let mut bytes = std::fs::read(&manifest).unwrap();
        bytes[3] ^= 1;
        std::fs::write(&manifest, &bytes).unwrap();
        assert!(matches!(
            open_verified(&url).await,
            Err(BackupError::ChecksumMismatch { name, .. }) if name == MANIFEST
        ));
    }
}
