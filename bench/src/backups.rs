//! Backup and restore throughput, and what a backup costs concurrent writes: a database of
//! `plan.backup_mib` MiB (16 KiB documents, 3 shards, 3 replicas) backed up with the real
//! `flotilla` command line to a directory on the same disk, then restored into a new database;
//! puts of 1 KiB from 16 clients (into another database on the same nodes, see [`WRITES_DB`])
//! are measured alone and while the backup runs, in both client
//! modes (one shared client, one client per worker), with the backup unlimited and with
//! `--max-rate`. Each window of puts alone starts once the nodes' background storage work
//! (snapshots, compactions) has settled. Runs on the benchmark's Flotilla cluster after the
//! etcd rows.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use flotilla_client::Client;
use serde::Serialize;
use tokio::time::Instant;

use crate::args::Plan;
use crate::flotilla::{FlotillaCluster, MetricsSource};
use crate::throughput::round;

/// The directory under the run's data directory that holds the backups.
pub const DIR: &str = "backups";
/// The database backed up, and the one it is restored into.
const DB: &str = "backup_bench";
const RESTORED: &str = "backup_bench_restored";
/// The database the measured puts go to: another one on the same nodes. Puts into the 1 GiB
/// database itself would each 10,000 entries start a snapshot of one of its large shards,
/// which holds the shard in memory and stalls writes for seconds whether a backup runs or not
/// (windows alone then varied tenfold); the backup's cost to the nodes is the same either way.
const WRITES_DB: &str = "backup_bench_writes";
/// Replicas of the database in a benchmark run (one per node).
const REPLICAS: u32 = 3;
/// Bytes of each loaded document's padding.
const DOC_BYTES: usize = 16 << 10;
/// Concurrent writers (loading, and the measured puts).
const WRITERS: usize = 16;
/// The command line's limit per call (a shard of hundreds of MiB streams in one call).
const CLI_TIMEOUT: &str = "1h";

/// What the backup rows run against, and how big.
pub struct BackupRig<'a> {
    pub endpoints: Vec<String>,
    /// Replicas of the backed-up database (one per node).
    pub replicas: u32,
    pub mib: usize,
    /// How long puts are measured alone.
    pub alone: Duration,
    /// Where backups are written (emptied first, removed after).
    pub dir: PathBuf,
    /// The `flotilla` command line.
    pub cli: &'a Path,
    /// The rate limit of the backups measured with it (`backup create --max-rate`, MiB/s).
    pub max_rate: f64,
    /// Each node's metrics, watched for background work to settle (none: not waited for).
    pub metrics: Vec<MetricsSource>,
}

/// Puts per second in one client mode, alone and while a backup runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WritesDuringBackup {
    /// `shared` (one client for every worker) or `per-worker`.
    pub mode: String,
    /// The backup's `--max-rate` (MiB/s), none when unlimited.
    pub max_rate_mib_per_sec: Option<f64>,
    pub alone_ops_per_sec: f64,
    pub during_backup_ops_per_sec: f64,
    /// How much slower puts were during the backup, in percent (goal: under 20).
    pub slowdown_percent: f64,
    /// The backup's own time in this mode.
    pub backup_s: f64,
}

/// The backup rows of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupRows {
    /// Bytes of the backup's files (the documents as the backup keeps them).
    pub backup_mib: f64,
    pub documents: u64,
    /// Backup throughput without concurrent writes.
    pub backup_mib_per_sec: f64,
    pub restore_mib_per_sec: f64,
    pub writes: Vec<WritesDuringBackup>,
}

impl BackupRows {
    /// Lines of the human-readable report.
    pub fn table(&self) -> String {
        let mut out = format!(
            "backup of {:.0} MiB ({} documents, 3 shards): backup {:.1} MiB/s, restore {:.1} MiB/s\n",
            self.backup_mib, self.documents, self.backup_mib_per_sec, self.restore_mib_per_sec
        );
        for w in &self.writes {
            let limit = match w.max_rate_mib_per_sec {
                Some(rate) => format!("--max-rate {rate}"),
                None => "unlimited".into(),
            };
            out.push_str(&format!(
                "puts of 1 KiB, {WRITERS} clients ({}): {:.0}/s alone, {:.0}/s during a backup ({limit}, {:.1} s): {:.1} % slower (goal under 20 %)\n",
                w.mode, w.alone_ops_per_sec, w.during_backup_ops_per_sec, w.backup_s, w.slowdown_percent
            ));
        }
        out
    }
}

/// The `flotilla` binary: `explicit`, else the one beside this benchmark's binary.
pub fn cli_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?.with_file_name("flotilla"),
    };
    if !path.is_file() {
        bail!(
            "the backup rows run the `flotilla` command line, not found at {} (build it with `cargo build --release -p flotilla-cli`, or name it with --flotilla-cli)",
            path.display()
        );
    }
    Ok(path)
}

/// The rig of a benchmark run: its Flotilla cluster, `plan.backup_mib`, 10 s windows.
pub fn rig<'a>(
    flotilla: &FlotillaCluster,
    root: &Path,
    plan: &Plan,
    cli: &'a Path,
) -> BackupRig<'a> {
    BackupRig {
        endpoints: flotilla.endpoints(),
        replicas: REPLICAS,
        mib: plan.backup_mib,
        alone: Duration::from_secs(10),
        dir: root.join(DIR),
        cli,
        max_rate: plan.backup_max_rate,
        metrics: flotilla.metrics_sources(),
    }
}

/// Measures the backup rows (see the module notes).
pub async fn run(rig: &BackupRig<'_>, say: &dyn Fn(String)) -> anyhow::Result<BackupRows> {
    let options = flotilla_client::ClientOptions {
        total_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let admin = Client::with_options(rig.endpoints.clone(), options)?;
    let (endpoints, cli, dir) = (&rig.endpoints, rig.cli, &rig.dir);
    for db in [DB, RESTORED, WRITES_DB] {
        let _ = admin.drop_database(db).await;
    }
    admin
        .create_database(DB, Some(rig.replicas), Some(3))
        .await?;
    admin
        .wait_for_database(DB, Duration::from_secs(60), |_| {})
        .await?;
    admin
        .create_database(WRITES_DB, Some(rig.replicas), Some(3))
        .await?;
    admin
        .wait_for_database(WRITES_DB, Duration::from_secs(60), |_| {})
        .await?;
    let docs = (rig.mib << 20) / DOC_BYTES;
    say(format!(
        "loading {docs} documents of 16 KiB ({} MiB) for the backup rows",
        rig.mib
    ));
    // Loading is set-up, not measured: a put may wait out a snapshot build of a large shard,
    // and is asked again under its request id (so it applies once) rather than failing the run.
    let patient = flotilla_client::ClientOptions {
        total_timeout: Duration::from_secs(300),
        request_timeout: Duration::from_secs(60),
        max_attempts: 20,
        retry_uncertain_writes: true,
        ..Default::default()
    };
    load(&Client::with_options(endpoints.clone(), patient)?, docs).await?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;

    say("backup without concurrent writes".into());
    let (url, backup_s) = backup(cli, endpoints, dir, "quiet", None).await?;
    let summary = flotilla_backup::open_verified(&url).await?.1;
    let bytes = summary.total_bytes() as f64;
    let mib = bytes / f64::from(1u32 << 20);
    say(format!("backup: {mib:.0} MiB in {backup_s:.1} s"));

    say("restore".into());
    let args = ["backup", "restore", &url, "--database", RESTORED];
    let (_, restore_s) = flotilla_cli(cli, endpoints, &args).await?;
    say(format!("restore: {restore_s:.1} s"));
    drop_database(&admin, RESTORED).await?;

    let mut writes = Vec::new();
    for shared in [true, false] {
        let mode = if shared { "shared" } else { "per-worker" };
        let clients = clients(endpoints, shared)?;
        for max_rate in [None, Some(rig.max_rate)] {
            writes.push(writes_during_backup(rig, &clients, mode, max_rate, say).await?);
        }
    }
    for db in [DB, WRITES_DB] {
        drop_database(&admin, db).await?;
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(BackupRows {
        backup_mib: round(mib, 1),
        documents: summary.total_documents(),
        backup_mib_per_sec: round(mib / backup_s, 1),
        restore_mib_per_sec: round(mib / restore_s, 1),
        writes,
    })
}

/// Puts in one client mode alone, during a backup (limited to `max_rate` MiB/s), and alone
/// again. The windows alone, before and after, are averaged, and each starts once the nodes'
/// background work has settled (see [`settle`]).
async fn writes_during_backup(
    rig: &BackupRig<'_>,
    clients: &[Client],
    mode: &str,
    max_rate: Option<f64>,
    say: &dyn Fn(String),
) -> anyhow::Result<WritesDuringBackup> {
    let label = match max_rate {
        Some(rate) => format!("{mode}, backup at --max-rate {rate}"),
        None => format!("{mode}, backup unlimited"),
    };
    let alone_window = async || {
        settle(&rig.metrics, say).await;
        puts_while(clients, mode, async {
            tokio::time::sleep(rig.alone).await;
            Ok(())
        })
        .await
    };
    say(format!("puts alone ({label})"));
    let before = alone_window().await?;
    say(format!("puts during a backup ({label})"));
    let mut backup_s = 0.0;
    let id = format!(
        "{mode}-{}",
        if max_rate.is_some() {
            "limited"
        } else {
            "unlimited"
        }
    );
    let during = puts_while(clients, mode, async {
        backup_s = backup(rig.cli, &rig.endpoints, &rig.dir, &id, max_rate)
            .await?
            .1;
        Ok(())
    })
    .await?;
    say(format!("puts alone again ({label})"));
    let after = alone_window().await?;
    let alone = (before + after) / 2.0;
    let slowdown = 100.0 * (1.0 - during / alone.max(f64::MIN_POSITIVE));
    say(format!(
        "{label}: {before:.0} and {after:.0} puts/s alone, {during:.0} during the backup ({slowdown:.1} % slower)"
    ));
    Ok(WritesDuringBackup {
        mode: mode.into(),
        max_rate_mib_per_sec: max_rate,
        alone_ops_per_sec: round(alone, 0),
        during_backup_ops_per_sec: round(during, 0),
        slowdown_percent: round(slowdown, 1),
        backup_s: round(backup_s, 1),
    })
}

/// How long the nodes' background work must stay still to count as settled.
const SETTLED_FOR: Duration = Duration::from_secs(5);
/// The longest wait for it.
const SETTLE_LIMIT: Duration = Duration::from_secs(120);

/// Waits until no node has finished a snapshot or a compaction for [`SETTLED_FOR`] (at most
/// [`SETTLE_LIMIT`], then says so and goes on): a window of puts alone measures the puts, not
/// the work a load, a restore or a drop left behind.
async fn settle(metrics: &[MetricsSource], say: &dyn Fn(String)) {
    if metrics.is_empty() {
        return;
    }
    let started = Instant::now();
    let mut last = None;
    let mut still_since = Instant::now();
    loop {
        let mut total = 0.0;
        for m in metrics {
            total += m.background_work().await.unwrap_or(f64::NAN);
        }
        let now = Instant::now();
        if last != Some(total) || total.is_nan() {
            last = Some(total);
            still_since = now;
        } else if now - still_since >= SETTLED_FOR {
            return;
        }
        if now - started >= SETTLE_LIMIT {
            say(format!(
                "the nodes' background work did not settle within {SETTLE_LIMIT:?}; measuring anyway"
            ));
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Drops `db`; one that is gone already counts as dropped (a drop asked again after its
/// answer was lost under load finds nothing).
async fn drop_database(admin: &Client, db: &str) -> anyhow::Result<()> {
    match admin.drop_database(db).await {
        Ok(_) | Err(flotilla_client::Error::NotFound(_)) => Ok(()),
        Err(e) => Err(anyhow::Error::from(e).context(format!("dropping {db}"))),
    }
}

/// One client for every worker, or one each.
fn clients(endpoints: &[String], shared: bool) -> anyhow::Result<Vec<Client>> {
    if shared {
        let c = Client::connect(endpoints.to_vec())?;
        Ok(vec![c; WRITERS])
    } else {
        (0..WRITERS)
            .map(|_| Ok(Client::connect(endpoints.to_vec())?))
            .collect()
    }
}

/// Loads `docs` documents of [`DOC_BYTES`] from [`WRITERS`] workers.
async fn load(client: &Client, docs: usize) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let pad = "x".repeat(DOC_BYTES);
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let (client, next, pad) = (client.clone(), next.clone(), pad.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= docs as u64 {
                    return anyhow::Ok(());
                }
                let json = format!(r#"{{"n":{i},"pad":"{pad}"}}"#);
                client
                    .put(DB, "docs", &format!("d{i:08}"), &json, None)
                    .await
                    .with_context(|| format!("loading document {i}"))?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Runs 1 KiB puts from every client until `until` ends; answers puts per second.
async fn puts_while(
    clients: &[Client],
    mode: &str,
    until: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let body = format!(r#"{{"pad":"{}"}}"#, "y".repeat(1000));
    let mut tasks = Vec::new();
    for (w, client) in clients.iter().enumerate() {
        let (client, stop, done, body) = (client.clone(), stop.clone(), done.clone(), body.clone());
        let prefix = format!("w-{mode}-{w}-");
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                if client
                    .put(
                        WRITES_DB,
                        "writes",
                        &format!("{prefix}{}", i % 1000),
                        &body,
                        None,
                    )
                    .await
                    .is_ok()
                {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let started = Instant::now();
    let result = until.await;
    let secs = started.elapsed().as_secs_f64();
    let count = done.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    result?;
    Ok(count as f64 / secs)
}

/// Runs `flotilla backup create` of [`DB`] into `dir` (at most `max_rate` MiB/s); answers the
/// backup's URL and seconds.
async fn backup(
    cli: &Path,
    endpoints: &[String],
    dir: &Path,
    id: &str,
    max_rate: Option<f64>,
) -> anyhow::Result<(String, f64)> {
    let dir = dir.to_string_lossy();
    let mut args = vec!["backup", "create", DB, "--to", &dir, "--id", id];
    let rate = max_rate.map(|r| r.to_string());
    if let Some(rate) = &rate {
        args.extend(["--max-rate", rate]);
    }
    flotilla_cli(cli, endpoints, &args).await
}

/// Runs the command line with `args`; answers its output and how long it took (seconds).
async fn flotilla_cli(
    cli: &Path,
    endpoints: &[String],
    args: &[&str],
) -> anyhow::Result<(String, f64)> {
    let started = Instant::now();
    let out = tokio::process::Command::new(cli)
        .args([
            "--endpoints",
            &endpoints.join(","),
            "--timeout",
            CLI_TIMEOUT,
        ])
        .args(args)
        .output()
        .await?;
    let secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "`flotilla {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        secs,
    ))
}
