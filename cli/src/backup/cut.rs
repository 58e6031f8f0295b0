//! Reading every shard of a database at one consistent cut (the cluster's side is described in
//! the node's `txn::fence`): begin a cut (a fence on every shard), open one read of every
//! shard at once and wait until each has sent its first chunk (its read is open, with the
//! shard's pending intents and transaction records), lift the cut, then drain the reads into
//! the shard files, one after the other. Whatever fails before the cut is lifted, it is lifted anyway; a cut that
//! could not be read whole (a shard with no replica answering, the fence lifted under a slow
//! read, a stream broken while draining) is begun again, at most [`ATTEMPTS`] times.
//!
//! The restore's side ([`CutTxns`]): the intents of transactions whose record, in any shard,
//! says committed are applied; every other intent is dropped.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use flotilla_backup::cut::{TxnLine, committed, txn_file, txn_file_bytes};
use flotilla_backup::{
    BackupDoc, BackupIntent, BackupRecord, BackupWriter, CutInfo, IntentWrite, Manifest, Resolver,
    ShardBackup, ShardTxns,
};
use flotilla_client::{Client, Cut, DatabaseStatus, Error as ClientError};
use flotilla_proto::v1 as pb;

use super::pace::{Pace, Reading, throttle};

/// Cuts begun before a backup gives up.
pub const ATTEMPTS: u32 = 5;

/// One shard's read, open (its first chunk received).
struct OpenRead {
    shard: u32,
    addr: String,
    stream: tonic::Streaming<pb::ShardChunk>,
    head: pb::ShardChunk,
}

/// What a backup read at a cut gives: each shard's part, and the cut's transactions.
pub struct Taken {
    pub shards: Vec<ShardBackup>,
    pub cut: CutInfo,
}

/// Reads every shard of `database` at one cut into `writer`'s files.
pub async fn take(
    client: &Client,
    writer: &BackupWriter,
    database: &str,
    status: &DatabaseStatus,
    reading: &Reading,
) -> Result<Taken> {
    let mut last = None;
    for attempt in 1..=ATTEMPTS {
        if attempt > 1 {
            eprintln!("beginning the cut again (attempt {attempt}/{ATTEMPTS})");
        }
        match take_once(client, writer, database, status, reading).await {
            Ok(taken) => return Ok(taken),
            Err(e) => {
                eprintln!("the cut could not be read whole: {e:#}");
                last = Some(e);
            }
        }
    }
    Err(last
        .unwrap_or_else(|| anyhow!("no attempt"))
        .context(format!(
            "no consistent cut of {database} after {ATTEMPTS} attempts"
        )))
}

async fn take_once(
    client: &Client,
    writer: &BackupWriter,
    database: &str,
    status: &DatabaseStatus,
    reading: &Reading,
) -> Result<Taken> {
    let stagger = reading.stagger;
    let cut = client
        .begin_cut(database)
        .await
        .context("beginning a cut")?;
    if cut.fence_indexes.len() != status.shards.len() {
        // The database changed shape: lift and start over with its new status.
        lift(client, database, &cut).await;
        bail!(
            "the cut fenced {} shards, the database has {}",
            cut.fence_indexes.len(),
            status.shards.len()
        );
    }
    let fenced = &cut;
    let opens = status
        .shards
        .iter()
        .enumerate()
        .map(|(n, shard)| async move {
            if let Some(step) = stagger {
                tokio::time::sleep(step * n as u32).await;
            }
            open_shard(client, database, shard, fenced).await
        });
    let opened = futures::future::join_all(opens).await;
    // Every read that will be taken is open (or failed): the fences have done their work.
    lift(client, database, &cut).await;
    let mut reads = Vec::with_capacity(opened.len());
    for r in opened {
        reads.push(r?);
    }
    eprintln!(
        "cut {:016x}: every shard's read is open; reading {} shards",
        cut.id,
        reads.len()
    );
    let heads: Vec<(u32, pb::ShardChunk)> =
        reads.iter().map(|r| (r.shard, r.head.clone())).collect();
    // One after the other (each read stays open on its replica meanwhile, held by the
    // stream's flow control): a backup loads its target and the nodes as one shard read does.
    let count = reads.len();
    let mut shards = Vec::with_capacity(count);
    let mut pace = reading.pace();
    for read in reads {
        shards.push(drain(writer, read, count, &mut pace).await?);
    }
    let info = write_txns(writer, cut.id, &heads).await?;
    Ok(Taken { shards, cut: info })
}

/// Lifts the cut; a failure is reported and left to the shard leaders (they lift a fence up
/// longer than their bound).
async fn lift(client: &Client, database: &str, cut: &Cut) {
    if let Err(e) = client.end_cut(database, cut.id).await {
        eprintln!(
            "lifting cut {:016x} failed ({e}); the shard leaders lift it after their \
             --backup-fence-max",
            cut.id
        );
    }
}

/// Opens shard `shard`'s read at the cut on one of its replicas (caught-up followers first).
async fn open_shard(
    client: &Client,
    database: &str,
    shard: &flotilla_client::ShardStatus,
    cut: &Cut,
) -> Result<OpenRead> {
    let at = cut.at(shard.shard);
    let mut last = anyhow!("shard {} has no replica", shard.shard);
    for addr in super::replica_order(shard) {
        let opened = async {
            let mut stream = client
                .read_shard_at(&addr, database, shard.shard, at)
                .await?;
            match stream.message().await {
                Ok(Some(head)) => Ok(OpenRead {
                    shard: shard.shard,
                    addr: addr.clone(),
                    stream,
                    head,
                }),
                Ok(None) => Err(ClientError::Protocol("the stream ended at once".into())),
                Err(status) => Err(ClientError::Server {
                    code: status.code(),
                    message: status.message().to_string(),
                }),
            }
        };
        match opened.await {
            Ok(read) => return Ok(read),
            // The fence is gone: no replica can serve this cut.
            Err(e @ ClientError::CutLifted(_)) => {
                return Err(anyhow::Error::from(e).context(format!("shard {}", shard.shard)));
            }
            Err(e) => {
                eprintln!(
                    "shard {}: {addr} could not open its read ({e}); trying another replica",
                    shard.shard
                );
                last = anyhow::Error::from(e).context(format!("reading from {addr}"));
            }
        }
    }
    Err(last.context(format!("opening shard {}", shard.shard)))
}

/// How often a shard's drain reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Drains an open read into its shard file, no faster than `pace` allows.
async fn drain(
    writer: &BackupWriter,
    read: OpenRead,
    count: usize,
    pace: &mut Option<Pace>,
) -> Result<ShardBackup> {
    let OpenRead {
        shard,
        addr,
        mut stream,
        head,
    } = read;
    let revision = head.revision;
    eprintln!("shard {}/{count}: reading from {addr}", shard + 1);
    let mut file = writer.shard(shard);
    let started = Instant::now();
    let mut reported = started;
    let mut read_bytes = 0u64;
    let mut chunk = Some(head);
    while let Some(c) = chunk.take() {
        let mut bytes = 0u64;
        for d in c.documents {
            bytes += (d.collection.len() + d.id.len() + d.json.len()) as u64;
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
        read_bytes += bytes;
        throttle(pace, bytes).await;
        if reported.elapsed() >= PROGRESS_EVERY {
            reported = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            let mib = read_bytes as f64 / f64::from(1u32 << 20);
            eprintln!(
                "shard {}/{count}: {} documents, {mib:.1} MiB read ({:.1} MiB/s)",
                shard + 1,
                file.documents(),
                mib / secs.max(f64::MIN_POSITIVE)
            );
        }
        match stream.message().await {
            Ok(next) => chunk = next,
            Err(e) => {
                file.abort().await;
                return Err(anyhow::Error::from(e).context(format!("shard {shard} from {addr}")));
            }
        }
    }
    let documents = file.documents();
    eprintln!(
        "shard {}/{count} done at revision {revision}: {documents} documents (from {addr})",
        shard + 1
    );
    Ok(ShardBackup {
        shard,
        revision,
        documents,
        file: file.finish().await?,
    })
}

/// The transaction lines of one shard's first chunk.
fn txn_lines(head: &pb::ShardChunk) -> Vec<TxnLine> {
    let intents = head.intents.iter().map(|i| {
        TxnLine::Intent(BackupIntent {
            txn: i.txn.clone(),
            collection: i.collection.clone(),
            id: i.id.clone(),
            write: if i.delete {
                IntentWrite::Delete
            } else {
                IntentWrite::Put {
                    json: i.json.clone(),
                }
            },
            version: i.version,
        })
    });
    let records = head.records.iter().map(|r| {
        TxnLine::Record(BackupRecord {
            txn: r.txn.clone(),
            committed: r.committed,
        })
    });
    intents.chain(records).collect()
}

/// Writes each shard's transaction file; the cut's part of the manifest.
async fn write_txns(
    writer: &BackupWriter,
    cut: u64,
    heads: &[(u32, pb::ShardChunk)],
) -> Result<CutInfo> {
    let records: Vec<BackupRecord> = heads
        .iter()
        .flat_map(|(_, h)| &h.records)
        .map(|r| BackupRecord {
            txn: r.txn.clone(),
            committed: r.committed,
        })
        .collect();
    let committed: BTreeSet<String> = committed(&records);
    let committed_intents = heads
        .iter()
        .flat_map(|(_, h)| h.intents.iter())
        .filter(|i| committed.contains(&i.txn))
        .count() as u64;
    let mut shards = Vec::with_capacity(heads.len());
    for (shard, head) in heads {
        let bytes = txn_file_bytes(&txn_lines(head))?;
        let file = writer.put_file(&txn_file(*shard), bytes).await?;
        shards.push(ShardTxns {
            shard: *shard,
            intents: head.intents.len() as u64,
            records: head.records.len() as u64,
            file,
        });
    }
    eprintln!(
        "cut {cut:016x}: {} pending intents, {committed_intents} of committed transactions \
         (applied at restore)",
        heads.iter().map(|(_, h)| h.intents.len()).sum::<usize>()
    );
    Ok(CutInfo {
        cut: format!("{cut:016x}"),
        committed_intents,
        shards,
    })
}

/// The transactions of a backup taken at a cut, as its restore uses them: the intents of each
/// shard and the transactions the records of all shards say committed. Empty for a backup of
/// format 2 or older (it kept no transactions).
pub struct CutTxns {
    committed: BTreeSet<String>,
    intents: std::collections::BTreeMap<u32, Vec<BackupIntent>>,
    applied: Option<u64>,
}

impl CutTxns {
    /// Reads the transaction files the manifest lists (verified with the rest).
    pub async fn read(backup: &flotilla_backup::Target, manifest: &Manifest) -> Result<CutTxns> {
        let mut out = CutTxns {
            committed: BTreeSet::new(),
            intents: Default::default(),
            applied: None,
        };
        let Some(cut) = &manifest.cut else {
            return Ok(out);
        };
        out.applied = Some(0);
        let mut records = Vec::new();
        for s in &cut.shards {
            for line in flotilla_backup::cut::read_txns(backup, &s.file.name).await? {
                match line {
                    TxnLine::Intent(i) => out.intents.entry(s.shard).or_default().push(i),
                    TxnLine::Record(r) => records.push(r),
                }
            }
        }
        out.committed = committed(&records);
        Ok(out)
    }

    /// The resolver of shard `shard`'s documents, read at `revision`.
    pub fn resolver(&mut self, shard: u32, revision: u64) -> Resolver {
        let intents = self.intents.remove(&shard).unwrap_or_default();
        Resolver::new(&intents, &self.committed, revision)
    }

    /// The documents committed intents of a shard create, once its documents went through
    /// `resolver`; counts the committed intents applied.
    pub fn created(&mut self, resolver: Resolver) -> Vec<BackupDoc> {
        let (docs, applied) = resolver.rest();
        if let Some(total) = &mut self.applied {
            *total += applied;
        }
        docs
    }

    /// The committed intents applied so far (`None`: the backup kept no transactions).
    pub fn applied(&self) -> Option<u64> {
        self.applied
    }
}
