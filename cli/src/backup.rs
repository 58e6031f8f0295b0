//! `flotilla backup`: create, list, verify and restore backups of a database (format and
//! targets in `flotilla-backup`).
//!
//! What a backup guarantees: each shard's documents are those of one revision of that shard
//! (its `revision` in the manifest), read on a replica that had applied a read index confirmed
//! by the shard leader after the backup started, so every write acknowledged before
//! `backup create` started is in it. Shards are read one after the other, each at its own
//! revision: writes to different shards while a backup runs may be in it for one shard and not
//! for another (no cross-shard point yet). A backup copies committed documents only, never a
//! transaction's intents. A shard whose replica fails mid-stream is read again from the start
//! on another replica. Restore: see [`restore`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use clap::Subcommand;
use flotilla_backup::{
    BackupDoc, BackupWriter, CollectionSpec, DatabaseSpec, FORMAT_VERSION, IndexSpec, Manifest,
    ShardBackup, ShardSpec, Target,
};
use flotilla_client::{Client, ReplicaState, ShardStatus};

mod restore;

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back up a database to a target: a directory, file:///path or s3://bucket/prefix
    /// (credentials from the AWS environment variables). Prints the backup's URL.
    Create {
        database: String,
        /// Where: the backup goes in a new directory under it.
        #[arg(long)]
        to: String,
        /// Name of that directory (the backup's id): letters, digits, '.', '-' and '_';
        /// `<database>-<unix milliseconds>` when unset. A backup of that id under the target
        /// is never overwritten.
        #[arg(long, value_parser = parse_id)]
        id: Option<String>,
    },
    /// The complete backups under a target.
    List { url: String },
    /// Re-check every file of a backup against its manifest's checksums.
    Verify { url: String },
    /// Delete a backup (its `complete` marker first, so that a deletion cut short never
    /// leaves one that is listed as complete). A URL holding anything but backup files is
    /// refused and nothing is deleted.
    Delete {
        url: String,
        /// Succeed when nothing is there (deleted already).
        #[arg(long)]
        missing_ok: bool,
    },
    /// Restore a backup into a new database (verified first; nothing is created when it is
    /// corrupt or incomplete), with its collections, indexes and every document's version.
    Restore {
        url: String,
        /// The database to create.
        #[arg(long)]
        database: String,
        /// Longest wait for the new database's shards to get leaders.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        wait_timeout: Duration,
    },
}

pub async fn run(client: &Client, command: BackupCommand) -> Result<()> {
    match command {
        BackupCommand::Create { database, to, id } => {
            create(client, &database, &to, id.as_deref()).await
        }
        BackupCommand::List { url } => {
            let root = Target::open(&url)?;
            for b in flotilla_backup::list(&root).await? {
                let m = &b.manifest;
                println!(
                    "{}\tdatabase={}\tshards={}\tdocuments={}\tbytes={}\tstarted_unix={}",
                    b.url,
                    m.database.name,
                    m.shards.len(),
                    m.total_documents(),
                    m.total_bytes(),
                    m.started_unix
                );
            }
            Ok(())
        }
        BackupCommand::Verify { url } => {
            let backup = Target::open(&url)?;
            let m = flotilla_backup::verify(&backup, |done, all| {
                eprintln!("verified {done}/{all} files");
            })
            .await?;
            println!(
                "backup {} is complete and intact: {} shards, {} documents, {} bytes",
                m.backup_id,
                m.shards.len(),
                m.total_documents(),
                m.total_bytes()
            );
            Ok(())
        }
        BackupCommand::Delete { url, missing_ok } => {
            match flotilla_backup::delete(&url, missing_ok).await? {
                flotilla_backup::Deleted::Files(n) => println!("deleted backup {url} ({n} files)"),
                flotilla_backup::Deleted::Missing => {
                    println!("no backup at {url}: nothing to delete")
                }
            }
            Ok(())
        }
        BackupCommand::Restore {
            url,
            database,
            wait_timeout,
        } => restore::restore(client, &url, &database, wait_timeout).await,
    }
}

/// Replicas of a shard in the order they are asked: caught-up followers first (sparing the
/// leader), then the leader, then the rest.
fn replica_order(shard: &ShardStatus) -> Vec<String> {
    let rank = |r: &flotilla_client::ReplicaStatus| {
        let leader = Some(r.node_id) == shard.leader_id;
        match (r.state, leader, r.lag) {
            (ReplicaState::Member, false, 0) => 0,
            (_, true, _) => 1,
            (ReplicaState::Member, false, _) => 2,
            _ => 3,
        }
    };
    let mut replicas: Vec<_> = shard.replicas.iter().collect();
    replicas.sort_by_key(|r| rank(r));
    replicas
        .into_iter()
        .map(|r| r.client_addr.clone())
        .collect()
}

/// A backup id given on the command line.
fn parse_id(text: &str) -> std::result::Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 200
        && !text.starts_with('.')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if valid {
        Ok(text.to_owned())
    } else {
        Err("1-200 letters, digits, '.', '-' or '_', not starting with '.'".to_owned())
    }
}

async fn create(client: &Client, database: &str, to: &str, id: Option<&str>) -> Result<()> {
    let started = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let cluster = client.cluster_status().await?;
    let status = client.database_status(database).await?;
    let id = match id {
        Some(id) => id.to_owned(),
        None => format!("{database}-{}", started.as_millis()),
    };
    let collections = collections_of(client, database).await?;
    let writer = BackupWriter::start(Target::open(to)?, &id).await?;
    let count = status.shards.len();
    let mut shards = Vec::with_capacity(count);
    let mut total = 0u64;
    for shard in &status.shards {
        let mut last_error = None;
        let mut done = None;
        for addr in replica_order(shard) {
            eprintln!("shard {}/{count}: reading from {addr}", shard.shard + 1);
            match backup_shard(client, &writer, &addr, database, shard.shard).await {
                Ok(s) => {
                    done = Some(s);
                    break;
                }
                Err(e) => {
                    eprintln!(
                        "shard {}/{count}: {addr} failed ({e:#}); trying another replica",
                        shard.shard + 1
                    );
                    last_error = Some(e.context(format!("reading from {addr}")));
                }
            }
        }
        let Some(s) = done else {
            return Err(last_error
                .unwrap_or_else(|| anyhow::anyhow!("no replica"))
                .context(format!("backing up shard {}", shard.shard)));
        };
        total += s.documents;
        eprintln!(
            "shard {}/{count} done at revision {}: {} documents ({total} in all)",
            shard.shard + 1,
            s.revision,
            s.documents
        );
        shards.push(s);
    }
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        backup_id: id,
        cluster_id: cluster.cluster_id,
        started_unix: started.as_secs(),
        database: DatabaseSpec {
            name: database.to_string(),
            replication_factor: status.database.replication_factor,
            shards: status
                .shards
                .iter()
                .map(|s| ShardSpec {
                    shard: s.shard,
                    group_id: s.group_id,
                })
                .collect(),
            collections,
        },
        shards,
    };
    let url = writer.url();
    writer.complete(&manifest).await?;
    println!("{url}");
    Ok(())
}

/// Streams shard `shard` from the node at client address `addr` into its file.
async fn backup_shard(
    client: &Client,
    writer: &BackupWriter,
    addr: &str,
    database: &str,
    shard: u32,
) -> Result<ShardBackup> {
    let mut stream = client.read_shard(addr, database, shard).await?;
    let mut file = writer.shard(shard);
    let mut revision = None;
    loop {
        let chunk = match stream.message().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                file.abort().await;
                return Err(e.into());
            }
        };
        revision = Some(chunk.revision);
        for d in chunk.documents {
            let doc = BackupDoc {
                collection: d.collection,
                id: d.id,
                version: d.version,
                revision: d.revision,
                json: d.json,
            };
            if let Err(e) = file.write(&doc).await {
                file.abort().await;
                return Err(e.into());
            }
        }
    }
    let Some(revision) = revision else {
        file.abort().await;
        bail!("the stream ended without naming its revision");
    };
    let documents = file.documents();
    Ok(ShardBackup {
        shard,
        revision,
        documents,
        file: file.finish().await?,
    })
}

/// The declared collections of `database`, with their shard keys and indexes.
async fn collections_of(client: &Client, database: &str) -> Result<Vec<CollectionSpec>> {
    let indexes = client.list_indexes(database, None).await?;
    let mut out = Vec::new();
    for c in client.list_collections(database).await? {
        let indexes = indexes
            .iter()
            .filter(|ix| ix.collection == c.name)
            .map(|ix| IndexSpec {
                name: ix.name.clone(),
                paths: ix.paths.clone(),
            })
            .collect();
        out.push(CollectionSpec {
            name: c.name,
            shard_key: c.shard_key,
            indexes,
        });
    }
    Ok(out)
}
