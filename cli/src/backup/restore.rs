//! `flotilla backup restore`: a verified backup into a new database, every document with the
//! version it had, and (a backup taken at a cut, format 3) every pending write of a
//! transaction committed at the cut applied, every other one dropped (see `super::cut`). An
//! incremental backup restores its chain (see `incremental`): its changes are folded over the
//! base as the cut leaves it.
//!
//! The backup is verified first (nothing is created when it is corrupt or incomplete). Then
//! the database is created with the backup's shard count and replication factor, its
//! collections with their shard keys and indexes, and each shard's documents are loaded in
//! batches at the shard's leader through the `Backup` service's `LoadShard` (the restore write
//! path, which sets versions and which a shard accepts only while it is new or being
//! restored); a last `finish` load on each shard ends its restore. A batch whose outcome is
//! lost (leader change, timeout) is sent again: documents loaded identically are skipped.
//! Each load names the shard keys the restore declared, so a leader whose copy of the
//! metadata has not seen them yet answers `Unavailable` (retried) rather than refusing the
//! documents as belonging to another shard.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use flotilla_backup::{BackupDoc, Manifest, Target};
use flotilla_client::{Client, DatabaseOptions, Error as ClientError};
use flotilla_proto::v1 as pb;
use futures::StreamExt;

/// Most documents in one load (a node takes up to `--max-batch-ops`, 1000 by default).
const RESTORE_BATCH: usize = 200;
/// Most bytes of document bodies in one load, under a node's `--max-batch-bytes` (4 MiB by
/// default). A document larger than this (a node takes up to `--max-document-bytes`, 1 MiB
/// by default) is loaded alone.
const RESTORE_BATCH_BYTES: usize = 2 << 20;

/// A shard's documents cut into loads under both limits.
#[derive(Default)]
struct Batches {
    docs: Vec<pb::BackupDocument>,
    bytes: usize,
}

impl Batches {
    /// Adds `doc`; answers the batch gathered before it when `doc` would take that batch
    /// over a limit.
    fn push(&mut self, doc: pb::BackupDocument) -> Option<Vec<pb::BackupDocument>> {
        let n = doc.json.len();
        let full = !self.docs.is_empty()
            && (self.docs.len() >= RESTORE_BATCH || self.bytes + n > RESTORE_BATCH_BYTES);
        let out = full.then(|| {
            self.bytes = 0;
            std::mem::take(&mut self.docs)
        });
        self.bytes += n;
        self.docs.push(doc);
        out
    }

    /// The last batch, if any document is left.
    fn rest(self) -> Option<Vec<pb::BackupDocument>> {
        (!self.docs.is_empty()).then_some(self.docs)
    }
}

pub async fn restore(client: &Client, url: &str, database: &str, wait: Duration) -> Result<()> {
    let backup = Target::open(url)?;
    let manifest = flotilla_backup::verify(&backup, |done, all| {
        eprintln!("verified {done}/{all} files");
    })
    .await
    .context("refusing to restore")?;
    if manifest.incremental.is_some() {
        return super::incremental::restore(client, url, database, wait, None).await;
    }
    if manifest.format_version < 2 && manifest.database.shards.len() > 1 {
        placed_by_id(&backup, &manifest)
            .await
            .context("refusing to restore")?;
    }
    create_database(client, &manifest, database).await?;
    match fill(client, &backup, &manifest, database, wait, None).await {
        Ok(total) => {
            println!(
                "restored {total} documents of backup {} into database {database}",
                manifest.backup_id
            );
            Ok(())
        }
        // The database is left as it is: it may have taken writes since it was created, which
        // a drop would lose, and a shard that took one refuses further loads anyway.
        Err(e) => Err(e.context(format!(
            "the restore stopped part way: database {database} holds only part of backup {} \
             and cannot be loaded further; remove it with `flotilla db drop {database}` and \
             restore again",
            manifest.backup_id
        ))),
    }
}

/// Declares the collections and indexes of the backup in `database` (created already) and
/// loads every shard's documents (with `chain`, as its changes leave them), finishing each
/// shard's restore; answers the documents loaded.
pub(super) async fn fill(
    client: &Client,
    backup: &Target,
    manifest: &Manifest,
    database: &str,
    wait: Duration,
    chain: Option<&super::incremental::Chain>,
) -> Result<u64> {
    create_schema(client, manifest, database, wait).await?;
    let shard_keys: HashMap<String, String> = manifest
        .database
        .collections
        .iter()
        .map(|c| (c.name.clone(), c.shard_key.clone().unwrap_or_default()))
        .collect();
    let load = |shard, docs, finish| load(client, database, shard, docs, finish, &shard_keys, wait);
    let count = manifest.shards.len();
    let mut txns = super::cut::CutTxns::read(backup, manifest).await?;
    let mut total = 0u64;
    for shard in &manifest.shards {
        let mut fold = match chain {
            Some(chain) => Some(chain.fold(shard.shard).await?),
            None => None,
        };
        let docs = flotilla_backup::read_shard(backup, &shard.file.name).await?;
        let mut docs = std::pin::pin!(docs);
        let mut batches = Batches::default();
        let mut resolver = txns.resolver(shard.shard, shard.revision);
        while let Some(doc) = docs.next().await {
            let Some(doc) = resolver.doc(doc?) else {
                continue;
            };
            let doc = match fold.as_mut() {
                Some(fold) => fold.resolve(doc),
                None => Some(doc),
            };
            if let Some(batch) = doc.and_then(|doc| batches.push(to_pb(doc))) {
                total += batch.len() as u64;
                load(shard.shard, batch, false).await?;
            }
        }
        // Documents the cut's committed intents create, as the chain's changes leave them,
        // then those the changes create.
        for doc in txns.created(resolver) {
            let doc = match fold.as_mut() {
                Some(fold) => fold.resolve(doc),
                None => Some(doc),
            };
            if let Some(batch) = doc.and_then(|doc| batches.push(to_pb(doc))) {
                total += batch.len() as u64;
                load(shard.shard, batch, false).await?;
            }
        }
        for doc in fold.into_iter().flat_map(|fold| fold.created()) {
            if let Some(batch) = batches.push(to_pb(doc)) {
                total += batch.len() as u64;
                load(shard.shard, batch, false).await?;
            }
        }
        if let Some(batch) = batches.rest() {
            total += batch.len() as u64;
            load(shard.shard, batch, false).await?;
        }
        load(shard.shard, Vec::new(), true).await?;
        eprintln!(
            "shard {}/{count} restored ({total} documents in all)",
            shard.shard + 1
        );
    }
    if let Some(applied) = txns.applied() {
        println!("applied {applied} pending writes of transactions committed at the backup's cut");
    }
    Ok(total)
}

/// A backup of format 1 kept no collections, so its restore places every document by its id:
/// refused when a document of it was placed otherwise (by a shard key), which would be
/// loaded onto the wrong shard.
async fn placed_by_id(backup: &Target, manifest: &Manifest) -> Result<()> {
    let shards = manifest.database.shards.len() as u32;
    for shard in &manifest.shards {
        let docs = flotilla_backup::read_shard(backup, &shard.file.name).await?;
        let mut docs = std::pin::pin!(docs);
        while let Some(doc) = docs.next().await {
            let doc = doc?;
            let by_id = flotilla_query::shard_of_id(&doc.id, shards);
            if by_id != shard.shard {
                anyhow::bail!(
                    "backup {} is of format {}, which kept no shard keys, and document {}/{} \
                     was placed by one (it is on shard {}, its id places it on shard {by_id}): \
                     a restore would place it by its id. Take a new backup with this version \
                     of flotilla",
                    manifest.backup_id,
                    manifest.format_version,
                    doc.collection,
                    doc.id,
                    shard.shard
                );
            }
        }
    }
    Ok(())
}

fn to_pb(d: BackupDoc) -> pb::BackupDocument {
    pb::BackupDocument {
        collection: d.collection,
        id: d.id,
        json: d.json,
        version: d.version,
        revision: d.revision,
    }
}

/// Creates the database with the backup's shard count and replication factor (refused when
/// it exists).
pub(super) async fn create_database(
    client: &Client,
    manifest: &Manifest,
    database: &str,
) -> Result<()> {
    let options = DatabaseOptions {
        replication_factor: Some(manifest.database.replication_factor),
        shards: Some(manifest.database.shards.len() as u32),
        ..DatabaseOptions::default()
    };
    client
        .create_database_with(database, &options)
        .await
        .with_context(|| format!("creating database {database} (a restore makes a new one)"))?;
    Ok(())
}

/// Waits for every shard of `database` to have a leader, then declares its collections and
/// their indexes.
async fn create_schema(
    client: &Client,
    manifest: &Manifest,
    database: &str,
    wait: Duration,
) -> Result<()> {
    client.wait_for_database(database, wait, |_| {}).await?;
    for c in &manifest.database.collections {
        client
            .create_collection(database, &c.name, c.shard_key.as_deref())
            .await
            .with_context(|| format!("declaring collection {}", c.name))?;
        for ix in &c.indexes {
            let paths: Vec<&str> = ix.paths.iter().map(String::as_str).collect();
            client
                .create_index(database, &c.name, &ix.name, &paths)
                .await
                .with_context(|| format!("creating index {} on {}", ix.name, c.name))?;
        }
    }
    Ok(())
}

/// Loads one batch into `shard` at its leader, finding the leader again and repeating the
/// batch while the answer is a transient failure, until `wait` has passed.
async fn load(
    client: &Client,
    database: &str,
    shard: u32,
    docs: Vec<pb::BackupDocument>,
    finish: bool,
    shard_keys: &HashMap<String, String>,
    wait: Duration,
) -> Result<()> {
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(50);
    loop {
        let status = client.database_status(database).await?;
        let leader = status
            .shards
            .iter()
            .find(|s| s.shard == shard)
            .and_then(|s| s.leader())
            .map(|r| r.client_addr.clone());
        let error = match leader {
            None => anyhow::anyhow!("shard {shard} has no leader"),
            Some(addr) => {
                match client
                    .load_shard(&addr, database, shard, docs.clone(), finish, shard_keys)
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(
                        e @ (ClientError::Unavailable(_)
                        | ClientError::Transport { .. }
                        | ClientError::OutcomeUnknown(_)
                        | ClientError::DeadlineExceeded(_)),
                    ) => anyhow::Error::from(e).context(format!("loading shard {shard} at {addr}")),
                    Err(e) => {
                        return Err(e).with_context(|| format!("loading shard {shard} at {addr}"));
                    }
                }
            }
        };
        if Instant::now() + pause > deadline {
            return Err(error.context(format!("shard {shard}: gave up after {wait:?}")));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(i: usize, bytes: usize) -> pb::BackupDocument {
        pb::BackupDocument {
            collection: "c".into(),
            id: format!("d{i}"),
            json: "x".repeat(bytes),
            version: 1,
            revision: 1,
        }
    }

    /// Cuts `sizes` into batches, answering each batch's document sizes.
    fn cut(sizes: &[usize]) -> Vec<Vec<usize>> {
        let mut batches = Batches::default();
        let mut out: Vec<Vec<pb::BackupDocument>> = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            out.extend(batches.push(doc(i, *n)));
        }
        out.extend(batches.rest());
        out.iter()
            .map(|b| b.iter().map(|d| d.json.len()).collect())
            .collect()
    }

    #[test]
    fn batches_are_cut_by_count_and_by_bytes() {
        assert!(cut(&[]).is_empty());
        let by_count = cut(&[10; 450]);
        assert_eq!(
            by_count.iter().map(Vec::len).collect::<Vec<_>>(),
            [200, 200, 50]
        );
        // Bodies of 900 KiB: two fit under the byte limit, a third does not.
        let big = 900 << 10;
        let by_bytes = cut(&[big, big, big, 10, big]);
        assert_eq!(by_bytes, [vec![big, big], vec![big, 10, big]]);
        for batch in by_bytes {
            assert!(batch.iter().sum::<usize>() <= RESTORE_BATCH_BYTES);
        }
        // A document over the limit alone goes alone.
        let huge = RESTORE_BATCH_BYTES + 1;
        assert_eq!(cut(&[10, huge, 10]), [vec![10], vec![huge], vec![10]]);
    }
}
