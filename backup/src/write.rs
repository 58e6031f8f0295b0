//! Writing a backup: each shard's documents streamed into its file (hashed as they go, never
//! the whole shard in memory), then the manifest, then the `complete` marker.

use object_store::buffered::BufWriter;
use object_store::{ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::{BackupError, Result};
use crate::manifest::{
    BackupDoc, COMPLETE, CompleteMarker, FileEntry, MANIFEST, Manifest, hex, shard_file,
};
use crate::target::Target;

/// A backup being written under `ROOT/<id>/`.
pub struct BackupWriter {
    target: Target,
    id: String,
}

impl BackupWriter {
    /// Starts backup `id` under `target`; refuses an id already used there.
    pub async fn start(target: Target, id: &str) -> Result<BackupWriter> {
        let path = target.path(&[id]);
        let mut listing = target.store.list(Some(&path));
        if futures::StreamExt::next(&mut listing).await.is_some() {
            return Err(BackupError::AlreadyExists(id.to_string()));
        }
        Ok(BackupWriter {
            target,
            id: id.to_string(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The URL of this backup (what `verify` and `restore` take).
    pub fn url(&self) -> String {
        self.target.child_url(&self.id)
    }

    /// A writer for shard `shard`'s file.
    pub fn shard(&self, shard: u32) -> ShardWriter {
        self.file(shard_file(shard))
    }

    /// A writer for shard `shard`'s file of changes (an incremental backup).
    pub fn changes(&self, shard: u32) -> ShardWriter {
        self.file(crate::incremental::changes_file(shard))
    }

    fn file(&self, name: String) -> ShardWriter {
        let path = self.target.path(&[&self.id, &name]);
        ShardWriter {
            name,
            out: BufWriter::new(self.target.store.clone(), path),
            hash: Sha256::new(),
            size: 0,
            documents: 0,
        }
    }

    /// Writes file `name` of the backup whole (a small one); its entry for the manifest.
    pub async fn put_file(&self, name: &str, bytes: Vec<u8>) -> Result<FileEntry> {
        let entry = FileEntry {
            name: name.to_string(),
            size: bytes.len() as u64,
            sha256: crate::manifest::sha256_hex(&bytes),
        };
        let path = self.target.path(&[&self.id, name]);
        self.target
            .store
            .put(&path, PutPayload::from(bytes))
            .await?;
        Ok(entry)
    }

    /// Writes the manifest, then the `complete` marker: only now is the backup listed.
    pub async fn complete(self, manifest: &Manifest) -> Result<()> {
        manifest.check()?;
        let bytes = manifest.encode()?;
        let marker = serde_json::to_vec(&CompleteMarker::for_manifest(&bytes))?;
        let store = &self.target.store;
        store
            .put(
                &self.target.path(&[&self.id, MANIFEST]),
                PutPayload::from(bytes),
            )
            .await?;
        store
            .put(
                &self.target.path(&[&self.id, COMPLETE]),
                PutPayload::from(marker),
            )
            .await?;
        Ok(())
    }
}

/// One shard's file, written a document at a time (uploaded in parts as it grows).
pub struct ShardWriter {
    name: String,
    out: BufWriter,
    hash: Sha256,
    size: u64,
    documents: u64,
}

impl ShardWriter {
    pub async fn write(&mut self, doc: &BackupDoc) -> Result<()> {
        self.write_line(&doc.to_line()?).await
    }

    /// Writes one change (an incremental backup's file).
    pub async fn write_change(&mut self, change: &crate::incremental::ChangeLine) -> Result<()> {
        self.write_line(&change.to_line()?).await
    }

    async fn write_line(&mut self, line: &[u8]) -> Result<()> {
        self.hash.update(line);
        self.size += line.len() as u64;
        self.documents += 1;
        self.out.write_all(line).await?;
        Ok(())
    }

    pub fn documents(&self) -> u64 {
        self.documents
    }

    /// Finishes the upload; the file's entry for the manifest.
    pub async fn finish(mut self) -> Result<FileEntry> {
        self.out.shutdown().await?;
        Ok(FileEntry {
            name: self.name,
            size: self.size,
            sha256: hex(&self.hash.finalize()),
        })
    }

    /// Gives up on the file (a failed backup leaves no marker, so it is never listed).
    pub async fn abort(mut self) {
        let _ = self.out.abort().await;
    }
}
