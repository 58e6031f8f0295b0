//! Incremental backups and point-in-time restore (format in `flotilla_backup::incremental`).
//!
//! `backup create DB --to URL --incremental-from BASE`: for every shard, the changes of its
//! feed after the revision the base ends at, up to a revision read now (a read index its
//! leader confirmed, as a full backup reads at), streamed from one replica into the shard's
//! file. Refused ([`Refusal`]), leaving nothing `list` shows, when the base is of another
//! database or shard layout, or when no replica's feed reaches back to the base any more
//! (compacted: take a full backup).
//!
//! `backup restore URL --database NEW [--until TIME]`: the chain from the full backup to URL
//! is resolved and every file of every link verified before anything is created; then each
//! shard's changes are folded into the full backup's documents (`ShardFold`: the last state of
//! each document the changes touch is held in memory, one shard at a time; the base's
//! documents stream through) and loaded with their versions as a full restore loads. Folding
//! client-side keeps the node's restore path (`LoadShard`) one simple, idempotent load of
//! final documents. With `--until`, each shard keeps its changes up to the first one
//! committed after TIME: a state each shard had.
//!
//! Commit times are the proposing leaders' wall clocks: a time cut is as exact as those
//! clocks agree (skew between nodes moves the cut on one shard against another by as much).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use flotilla_backup::incremental::{
    self as inc, BaseRef, ChangeLine, INCREMENTAL_VERSION, Incremental, Link, ShardFold, ShardRange,
};
use flotilla_backup::{BackupWriter, FORMAT_VERSION, Manifest, ShardBackup, Target};
use flotilla_client::{Client, DatabaseStatus, Error as ClientError};
use futures::StreamExt;

/// Why an incremental backup was refused (nothing was written that `list` shows).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No replica of the shard keeps its changes back to the base's revision.
    #[error(
        "shard {shard}: its change feed no longer reaches back to revision {after} of the base \
         (the oldest change kept is at revision {oldest}); take a full backup"
    )]
    Compacted { shard: u32, after: u64, oldest: u64 },
    /// The base is not a backup of this database as it is now.
    #[error("base backup {base} cannot be followed on from: {reason}; take a full backup")]
    BaseMismatch { base: String, reason: String },
}

/// Why one replica could not give a shard's changes.
enum ReplicaFailure {
    Compacted { oldest: u64 },
    Other(anyhow::Error),
}

/// `backup create DB --to URL --incremental-from BASE`.
pub(super) async fn create(
    client: &Client,
    database: &str,
    to: &str,
    id: Option<&str>,
    base_url: &str,
    reading: &super::Reading,
) -> Result<String> {
    let started = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let base = inc::open_manifest(base_url)
        .await
        .with_context(|| format!("opening base backup {base_url}"))?;
    let cluster = client.cluster_status().await?;
    let status = client.database_status(database).await?;
    follows_on(&base, database, &cluster.cluster_id, &status)?;
    let id = match id {
        Some(id) => id.to_owned(),
        None => format!("{database}-{}", started.as_millis()),
    };
    let collections = super::collections_of(client, database).await?;
    let writer = BackupWriter::start(Target::open(to)?, &id).await?;
    let url = writer.url();
    let mut pace = reading.pace();
    let shards = match read_all(client, &writer, database, &base, &status, &mut pace).await {
        Ok(shards) => shards,
        Err(e) => {
            // Nothing of a refused backup is kept (it has no marker, so it is never listed).
            let _ = flotilla_backup::delete(&url, true).await;
            return Err(e);
        }
    };
    let (files, ranges): (Vec<_>, Vec<_>) = shards.into_iter().unzip();
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        backup_id: id,
        cluster_id: cluster.cluster_id,
        started_unix: started.as_secs(),
        database: super::database_spec(database, &status, collections),
        shards: files,
        cut: None,
        incremental: Some(Incremental {
            version: INCREMENTAL_VERSION,
            base: BaseRef {
                url: base.url.clone(),
                backup_id: base.manifest.backup_id.clone(),
                manifest_sha256: base.manifest_sha256.clone(),
            },
            shards: ranges,
        }),
    };
    writer.complete(&manifest).await?;
    Ok(url)
}

/// The base must be a backup of this database in this cluster, with the same shards (the
/// same Raft groups, whose log indexes the revisions are).
fn follows_on(
    base: &Link,
    database: &str,
    cluster_id: &str,
    status: &DatabaseStatus,
) -> Result<(), Refusal> {
    let m = &base.manifest;
    let refuse = |reason: String| Refusal::BaseMismatch {
        base: base.url.clone(),
        reason,
    };
    if m.database.name != database || m.cluster_id != cluster_id {
        return Err(refuse(format!(
            "it backs up database {} of cluster {}, not {database} of {cluster_id}",
            m.database.name, m.cluster_id
        )));
    }
    let groups: Vec<(u32, u64)> = m
        .database
        .shards
        .iter()
        .map(|s| (s.shard, s.group_id))
        .collect();
    let now: Vec<(u32, u64)> = status
        .shards
        .iter()
        .map(|s| (s.shard, s.group_id))
        .collect();
    if groups != now {
        return Err(refuse(format!(
            "its shards (shard, group) {groups:?} are not the database's now {now:?}"
        )));
    }
    Ok(())
}

/// Every shard's changes since the base, each from the first replica that gives them.
async fn read_all(
    client: &Client,
    writer: &BackupWriter,
    database: &str,
    base: &Link,
    status: &DatabaseStatus,
    pace: &mut Option<super::pace::Pace>,
) -> Result<Vec<(ShardBackup, ShardRange)>> {
    let count = status.shards.len();
    let mut out = Vec::with_capacity(count);
    for shard in &status.shards {
        let after = base
            .manifest
            .shards
            .iter()
            .find(|s| s.shard == shard.shard)
            .map(|s| s.revision)
            .ok_or_else(|| anyhow::anyhow!("the base has no shard {}", shard.shard))?;
        let (mut compacted, mut last_error, mut done) = (None, None, None);
        for addr in super::replica_order(shard) {
            eprintln!(
                "shard {}/{count}: reading changes after revision {after} from {addr}",
                shard.shard + 1
            );
            match read_shard_changes(client, writer, &addr, database, shard.shard, after, pace)
                .await
            {
                Ok(s) => {
                    done = Some(s);
                    break;
                }
                Err(ReplicaFailure::Compacted { oldest }) => {
                    compacted = Some(oldest);
                }
                Err(ReplicaFailure::Other(e)) => {
                    eprintln!(
                        "shard {}/{count}: {addr} failed ({e:#}); trying another replica",
                        shard.shard + 1
                    );
                    last_error = Some(e.context(format!("reading from {addr}")));
                }
            }
        }
        let Some((file, range)) = done else {
            return Err(match (compacted, last_error) {
                (Some(oldest), None) => Refusal::Compacted {
                    shard: shard.shard,
                    after,
                    oldest,
                }
                .into(),
                (_, e) => e
                    .unwrap_or_else(|| anyhow::anyhow!("no replica"))
                    .context(format!("backing up the changes of shard {}", shard.shard)),
            });
        };
        eprintln!(
            "shard {}/{count} done: {} changes in revisions ({}, {}]",
            shard.shard + 1,
            file.documents,
            range.after_revision,
            range.to_revision
        );
        out.push((file, range));
    }
    Ok(out)
}

/// Streams the changes of `shard` after revision `after` from the node at `addr` into the
/// shard's file.
async fn read_shard_changes(
    client: &Client,
    writer: &BackupWriter,
    addr: &str,
    database: &str,
    shard: u32,
    after: u64,
    pace: &mut Option<super::pace::Pace>,
) -> Result<(ShardBackup, ShardRange), ReplicaFailure> {
    let mut stream = match client.read_changes(addr, database, shard, after, 0).await {
        Ok(stream) => stream,
        Err(ClientError::RevisionCompacted { first_revision, .. }) => {
            return Err(ReplicaFailure::Compacted {
                oldest: first_revision,
            });
        }
        Err(e) => return Err(ReplicaFailure::Other(e.into())),
    };
    let mut file = writer.changes(shard);
    let (mut to, mut first_ms, mut last_ms) = (None, 0u64, 0u64);
    loop {
        let chunk = match stream.message().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                file.abort().await;
                return Err(ReplicaFailure::Other(e.into()));
            }
        };
        to = Some(chunk.to_revision);
        let mut bytes = 0u64;
        for c in chunk.changes {
            bytes += (c.collection.len() + c.id.len() + c.json.len()) as u64;
            if c.commit_unix_ms > 0 {
                if first_ms == 0 {
                    first_ms = c.commit_unix_ms;
                }
                last_ms = last_ms.max(c.commit_unix_ms);
            }
            let line = ChangeLine {
                revision: c.revision,
                unix_ms: c.commit_unix_ms,
                collection: c.collection,
                id: c.id,
                version: c.version,
                body: (!c.deleted).then_some(c.json),
            };
            if let Err(e) = file.write_change(&line).await {
                file.abort().await;
                return Err(ReplicaFailure::Other(e.into()));
            }
        }
        super::pace::throttle(pace, bytes).await;
    }
    let Some(to) = to else {
        file.abort().await;
        return Err(ReplicaFailure::Other(anyhow::anyhow!(
            "the stream ended without naming its revision"
        )));
    };
    let documents = file.documents();
    let entry = file
        .finish()
        .await
        .map_err(|e| ReplicaFailure::Other(e.into()))?;
    let range = ShardRange {
        shard,
        after_revision: after,
        to_revision: to,
        first_unix_ms: first_ms,
        last_unix_ms: last_ms,
    };
    Ok((
        ShardBackup {
            shard,
            revision: to,
            documents,
            file: entry,
        },
        range,
    ))
}

/// A verified chain and the time it is restored to: what each shard's documents become.
pub(super) struct Chain {
    links: Vec<Link>,
    until_ms: Option<u64>,
}

impl Chain {
    /// The changes of `shard` over every incremental of the chain, folded up to the cut.
    pub(super) async fn fold(&self, shard: u32) -> Result<ShardFold> {
        let mut fold = ShardFold::new(self.until_ms);
        for link in &self.links[1..] {
            let Some(file) = link.manifest.shards.iter().find(|s| s.shard == shard) else {
                anyhow::bail!("backup {} has no shard {shard}", link.url);
            };
            let changes = inc::read_changes(&link.target, &file.file.name).await?;
            let mut changes = std::pin::pin!(changes);
            while let Some(change) = changes.next().await {
                if !fold.apply(change?) {
                    return Ok(fold);
                }
            }
        }
        Ok(fold)
    }
}

/// `backup restore URL --database NEW [--until TIME]` for a chain (a full backup alone is a
/// chain of one).
pub(super) async fn restore(
    client: &Client,
    url: &str,
    database: &str,
    wait: Duration,
    until_ms: Option<u64>,
) -> Result<()> {
    let links = inc::resolve_chain(url, |link| eprintln!("verified {}", link.url))
        .await
        .context("refusing to restore")?;
    let (full, last) = (&links[0], &links[links.len() - 1]);
    if full.manifest.format_version < 2 && full.manifest.database.shards.len() > 1 {
        anyhow::bail!(
            "refusing to restore: the chain's full backup {} is of format 1, which kept no \
             shard keys; take a new full backup",
            full.url
        );
    }
    // The base's shards, with the collections declared as of the last link.
    let mut manifest = full.manifest.clone();
    manifest.database.collections = last.manifest.database.collections.clone();
    let described = match until_ms {
        Some(ms) => format!("chain {} as of {}", last.manifest.backup_id, show_ms(ms)),
        None => format!("chain {}", last.manifest.backup_id),
    };
    let target = full.target.clone();
    let chain = Chain { links, until_ms };
    super::restore::create_database(client, &manifest, database).await?;
    match super::restore::fill(client, &target, &manifest, database, wait, Some(&chain)).await {
        Ok(total) => {
            println!("restored {total} documents of backup {described} into database {database}");
            Ok(())
        }
        Err(e) => Err(e.context(format!(
            "the restore stopped part way: database {database} holds only part of backup \
             {described} and cannot be loaded further; remove it with `flotilla db drop \
             {database}` and restore again"
        ))),
    }
}

/// The extra columns `backup list` shows for an incremental backup.
pub(super) fn list_columns(m: &Manifest) -> String {
    let Some(inc) = &m.incremental else {
        return String::new();
    };
    let times = match inc.time_range() {
        Some((first, last)) => format!(
            "\tfirst_commit={}\tlast_commit={}",
            show_ms(first),
            show_ms(last)
        ),
        None => String::new(),
    };
    format!(
        "\tincremental_from={}\tbase_url={}{times}",
        inc.base.backup_id, inc.base.url
    )
}

/// `backup verify URL` of an incremental: the whole chain.
pub(super) async fn verify_chain(url: &str) -> Result<()> {
    let links = inc::resolve_chain(url, |link| {
        eprintln!(
            "verified {} ({} files)",
            link.url,
            link.manifest.shards.len()
        )
    })
    .await?;
    let ids: Vec<&str> = links
        .iter()
        .map(|l| l.manifest.backup_id.as_str())
        .collect();
    println!(
        "backup chain of {} is complete and intact: full backup {}, then {}",
        ids[ids.len() - 1],
        ids[0],
        ids[1..].join(", ")
    );
    Ok(())
}

/// RFC 3339, in UTC with milliseconds.
fn show_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// An RFC 3339 time (`2026-12-06T19:00:00Z`, `2026-12-06T21:00:00.250+02:00`) as ms since
/// the Unix epoch.
pub(super) fn parse_time(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let bad = || {
        format!("{text:?} is not an RFC 3339 time with an offset (such as 2026-01-02T03:04:05Z)")
    };
    let (local, offset_ms): (&str, i64) =
        if let Some(rest) = t.strip_suffix('Z').or_else(|| t.strip_suffix('z')) {
            (rest, 0)
        } else if t.len() > 6 && t.is_char_boundary(t.len() - 6) {
            let (rest, offset) = t.split_at(t.len() - 6);
            let b = offset.as_bytes();
            let sign = match b[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return Err(bad()),
            };
            let (h, m) = (offset[1..3].parse::<i64>(), offset[4..6].parse::<i64>());
            match (h, m, b[3]) {
                (Ok(h), Ok(m), b':') if h < 24 && m < 60 => (rest, sign * (h * 60 + m) * 60_000),
                _ => return Err(bad()),
            }
        } else {
            return Err(bad());
        };
    let at = humantime::parse_rfc3339_weak(local).map_err(|_| bad())?;
    let local_ms = at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| bad())?
        .as_millis() as i64;
    u64::try_from(local_ms - offset_ms).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_rfc_3339_with_their_offset() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Ok(1000));
        assert_eq!(parse_time("1970-01-01T00:00:01.250Z"), Ok(1250));
        assert_eq!(parse_time("1970-01-01T02:00:01+02:00"), Ok(1000));
        assert_eq!(
            parse_time("1970-01-01T00:00:01-00:30"),
            Ok(1000 + 30 * 60_000)
        );
        assert!(parse_time("1970-01-01T00:00:01").is_err(), "no offset");
        assert!(parse_time("yesterday").is_err());
        assert_eq!(show_ms(1250), "1970-01-01T00:00:01.250Z");
    }
}
