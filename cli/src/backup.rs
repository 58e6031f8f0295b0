//! `flotilla backup`: create, list, verify and restore backups of a database (format and
//! targets in `flotilla-backup`).
//!
//! What a backup guarantees: every shard's documents are those of one consistent cut of the
//! database (see [`cut`]): no transaction is half in it, whatever writes and transactions ran
//! meanwhile. Each shard is read on one replica, after a read index confirmed by the shard
//! leader once the backup began, so every write acknowledged before `backup create` started is
//! in it. The backup keeps each shard's pending transaction intents and records of the cut;
//! the restore applies those of committed transactions. A shard whose replica fails before
//! its read opened is read on another; a failure after that begins a new cut. Restore: see
//! [`restore`]. Incremental backups and point-in-time restore: see [`incremental`]. Every
//! database with the roles and users: see [`cluster`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use clap::Subcommand;
use flotilla_backup::{
    BackupWriter, CollectionSpec, DatabaseSpec, FORMAT_VERSION, IndexSpec, Manifest, ShardSpec,
    Target,
};
use flotilla_client::{Client, ReplicaState, ShardStatus};

mod cluster;
mod cut;
mod incremental;
mod pace;
mod restore;

use pace::Reading;

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back up a database to a target: a directory, file:///path or s3://bucket/prefix
    /// (credentials from the AWS environment variables). Prints the backup's URL.
    Create {
        /// The database (or --all).
        #[arg(required_unless_present = "all")]
        database: Option<String>,
        /// Every database, with the cluster's roles and users (a cluster backup, restored
        /// into a new empty cluster with `restore URL --all`).
        #[arg(long, conflicts_with = "database")]
        all: bool,
        /// Where: the backup goes in a new directory under it.
        #[arg(long)]
        to: String,
        /// Name of that directory (the backup's id): letters, digits, '.', '-' and '_';
        /// `<database>-<unix milliseconds>` when unset. A backup of that id under the target
        /// is never overwritten.
        #[arg(long, value_parser = parse_id)]
        id: Option<String>,
        /// Testing only: opens shard N's read N times this after the cut began (the fences
        /// hold commits back meanwhile).
        #[arg(long, hide = true, value_parser = humantime::parse_duration)]
        stagger_reads: Option<Duration>,
        /// Take an incremental backup: each shard's changes since this backup of the same
        /// database (full or incremental, complete) up to now. Refused, writing nothing, when
        /// a shard no longer keeps its changes that far back (take a full backup).
        #[arg(long, value_name = "BASE_URL")]
        incremental_from: Option<String>,
        /// Read the shards no faster than this many MiB per second (e.g. 32), so that a
        /// backup beside production writes slows them less; unlimited when unset. The
        /// commits of the database are never held back by a slow backup.
        #[arg(long, value_name = "MIB_PER_SEC", value_parser = pace::parse_mib_per_sec)]
        max_rate: Option<f64>,
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
        #[arg(long, required_unless_present = "all")]
        database: Option<String>,
        /// The URL is a cluster backup: restore its roles, users and every database under
        /// its own name (into a cluster that has none of them).
        #[arg(long, conflicts_with = "database")]
        all: bool,
        /// Longest wait for the new database's shards to get leaders.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        wait_timeout: Duration,
        /// Restore the database as it was at this time (RFC 3339, e.g. 2026-01-02T03:04:05Z):
        /// each shard with every change committed up to it. URL is then an incremental
        /// backup taken after that time (its chain is restored), or a full backup.
        #[arg(long, value_name = "TIME", value_parser = incremental::parse_time)]
        until: Option<u64>,
    },
}

pub async fn run(client: &Client, command: BackupCommand) -> Result<()> {
    match command {
        BackupCommand::Create {
            database,
            all,
            to,
            id,
            stagger_reads,
            incremental_from,
            max_rate,
        } => {
            let reading = Reading {
                stagger: stagger_reads,
                max_bytes_per_sec: max_rate,
            };
            let url = match (database, all, incremental_from) {
                (Some(database), false, Some(base)) => {
                    incremental::create(client, &database, &to, id.as_deref(), &base, &reading)
                        .await?
                }
                (Some(database), false, None) => {
                    create(
                        client,
                        &database,
                        Target::open(&to)?,
                        id.as_deref(),
                        &reading,
                    )
                    .await?
                }
                (_, _, Some(_)) => {
                    bail!("--incremental-from takes one database: name it instead of --all")
                }
                _ => cluster::create_all(client, &to, id.as_deref(), &reading).await?,
            };
            println!("{url}");
            Ok(())
        }
        BackupCommand::List { url } => {
            let root = Target::open(&url)?;
            for b in flotilla_backup::list(&root).await? {
                let m = &b.manifest;
                println!(
                    "{}\tdatabase={}\tshards={}\tdocuments={}\tbytes={}\tstarted_unix={}{}",
                    b.url,
                    m.database.name,
                    m.shards.len(),
                    m.total_documents(),
                    m.total_bytes(),
                    m.started_unix,
                    incremental::list_columns(m)
                );
            }
            for (url, m) in flotilla_backup::list_clusters(&root).await? {
                println!(
                    "{url}\tcluster={}\tdatabases={}\troles={}\tusers={}\tstarted_unix={}",
                    m.cluster_id,
                    m.databases.len(),
                    m.roles.len(),
                    m.users.len(),
                    m.started_unix
                );
            }
            Ok(())
        }
        BackupCommand::Verify { url } => {
            let backup = Target::open(&url)?;
            if flotilla_backup::is_cluster_backup(&backup).await? {
                let (m, _) = flotilla_backup::verify_cluster(&backup, |done, all| {
                    eprintln!("verified {done}/{all} databases");
                })
                .await?;
                println!(
                    "cluster backup {} is complete and intact: {} databases",
                    m.backup_id,
                    m.databases.len()
                );
                return Ok(());
            }
            let m = flotilla_backup::verify(&backup, |done, all| {
                eprintln!("verified {done}/{all} files");
            })
            .await?;
            if m.incremental.is_some() {
                return incremental::verify_chain(&url).await;
            }
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
            all,
            wait_timeout,
            until,
        } => {
            let is_cluster = flotilla_backup::is_cluster_backup(&Target::open(&url)?).await?;
            match (database, all, is_cluster) {
                (_, true, true) if until.is_some() => bail!(
                    "--until restores one database from its chain: restore each database of the cluster backup with --database NAME"
                ),
                (_, true, true) => cluster::restore_all(client, &url, wait_timeout).await,
                (Some(database), false, false) => match until {
                    None => restore::restore(client, &url, &database, wait_timeout).await,
                    Some(_) => {
                        incremental::restore(client, &url, &database, wait_timeout, until).await
                    }
                },
                (_, true, false) => bail!(
                    "{url} is the backup of one database, not of a cluster: restore it with --database NAME"
                ),
                _ => bail!(
                    "{url} is a cluster backup: restore it whole with --all (or one of its databases from {url}/DATABASE with --database NAME)"
                ),
            }
        }
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

/// The database record a manifest keeps: its name, replication factor, shards and
/// collections.
fn database_spec(
    database: &str,
    status: &flotilla_client::DatabaseStatus,
    collections: Vec<CollectionSpec>,
) -> DatabaseSpec {
    DatabaseSpec {
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
    }
}

/// Backs up `database` under `target`; answers the backup's URL.
async fn create(
    client: &Client,
    database: &str,
    target: Target,
    id: Option<&str>,
    reading: &Reading,
) -> Result<String> {
    let started = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let cluster = client.cluster_status().await?;
    let status = client.database_status(database).await?;
    let id = match id {
        Some(id) => id.to_owned(),
        None => format!("{database}-{}", started.as_millis()),
    };
    let collections = collections_of(client, database).await?;
    let writer = BackupWriter::start(target, &id).await?;
    let taken = cut::take(client, &writer, database, &status, reading).await?;
    let total: u64 = taken.shards.iter().map(|s| s.documents).sum();
    eprintln!(
        "{} shards read at one cut: {total} documents",
        taken.shards.len()
    );
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        backup_id: id,
        cluster_id: cluster.cluster_id,
        started_unix: started.as_secs(),
        database: database_spec(database, &status, collections),
        shards: taken.shards,
        cut: Some(taken.cut),
        incremental: None,
    };
    let url = writer.url();
    writer.complete(&manifest).await?;
    Ok(url)
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
