//! `flotilla-bench`: starts a 3-node Flotilla cluster and a 3-member etcd cluster on this
//! machine, drives both with the same workloads from this process and prints a comparison
//! (table on stdout, optional JSON). See the README section "Benchmarks".

mod args;
mod backups;
mod drive;
mod etcd;
mod flotilla;
mod machine;
mod peer_report;
mod postgres;
mod process;
mod procfs;
mod queries;
mod report;
mod stats;
mod throughput;
mod transfers;
mod versus_postgres;
mod workload;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use flotilla_client::{Client, ClientOptions};

use crate::args::{Cli, Cmd, Plan};
use crate::etcd::{EtcdClient, EtcdCluster};
use crate::flotilla::{FlotillaCluster, MetricsSource};
use crate::machine::{filesystem_of, load_average, machine};
use crate::report::{
    Failover, IdleGroups, IdlePoint, LeaderProfile, Memory, Report, Row, Throughput, round,
};
use crate::workload::Target;

/// mimalloc: a node allocates and frees many small buffers per request (frames, entries,
/// documents), which glibc's allocator served at a few percent of the CPU under load.
/// Built without transparent huge pages (`no_thp`), which more than doubled an idle node's RSS.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Nodes (members) of each cluster.
const NODES: usize = 3;
/// Shards of each database the idle-cost measurement creates (the node allows 256).
const GROUP_STEP: usize = 250;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::Node(config)) => run_node(*config),
        None => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                tokio::select! {
                    r = bench(&cli) => r,
                    _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
                }
            })
        }
    }
}

/// The hidden `node` subcommand: one Flotilla node, exactly as `flotilla-node serve` runs it.
fn run_node(config: flotilla_node::config::NodeConfig) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOTILLA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Runtime::new()?.block_on(flotilla_node::serve::run(config))
}

/// Progress on stderr, with the time since the run started.
struct Progress(Instant);

impl Progress {
    fn say(&self, msg: impl AsRef<str>) {
        eprintln!(
            "[{:>6.1}s] {}",
            self.0.elapsed().as_secs_f64(),
            msg.as_ref()
        );
    }
}

async fn bench(cli: &Cli) -> anyhow::Result<()> {
    let mut plan = Plan::of(cli.quick, cli.idle_groups, &cli.only);
    plan.backup_max_rate = cli.backup_max_rate;
    let p = Progress(Instant::now());
    let load_at_start = load_average();
    let root = &cli.data_dir;
    remove_run_data(root)?;
    p.say(format!(
        "{} run: about {} s at most; data under {} ({})",
        if cli.quick { "quick" } else { "default" },
        plan.estimate().as_secs(),
        root.display(),
        filesystem_of(root)
    ));
    p.say("starting 3 Flotilla nodes");
    let mut flotilla = FlotillaCluster::start(root, NODES).await?;
    p.say("starting 3 etcd members");
    let mut etcd = EtcdCluster::start(root, NODES).await?;

    // Steady-state clients talk to the leader, as a leader-aware client would, for both.
    let fl = Target::Flotilla(Client::connect(vec![
        flotilla.endpoint(flotilla.leader().await?),
    ])?);
    let ed = Target::Etcd(EtcdClient::connect(
        &[etcd.endpoint(etcd.leader().await?)],
        Duration::from_secs(10),
    )?);
    p.say(format!("preloading {} keys of 1 KiB into both", plan.keys));
    workload::preload(&fl, plan.keys, 16).await?;
    workload::preload(&ed, plan.keys, 16).await?;

    tokio::time::sleep(Duration::from_secs(2)).await;
    let (fl_idle_cpu, ed_idle_cpu) = {
        let (f, e) = (flotilla.pids(), etcd.pids());
        let all: Vec<u32> = f.iter().chain(&e).copied().collect();
        let before: HashMap<u32, f64> = all.iter().map(|p| (*p, cpu(*p))).collect();
        tokio::time::sleep(plan.idle_interval).await;
        let used = |pids: &[u32]| -> f64 {
            pids.iter()
                .map(|p| cpu(*p) - before.get(p).copied().unwrap_or(0.0))
                .sum::<f64>()
        };
        let secs = plan.idle_interval.as_secs_f64();
        (
            round(100.0 * used(&f) / secs, 1),
            round(100.0 * used(&e) / secs, 1),
        )
    };
    let mut fl_mem = Memory {
        idle_rss_mib: rss_all(&flotilla.pids()),
        load_rss_mib: vec![0.0; NODES],
        idle_cpu_percent: Some(fl_idle_cpu),
    };
    let mut ed_mem = Memory {
        idle_rss_mib: rss_all(&etcd.pids()),
        load_rss_mib: vec![0.0; NODES],
        idle_cpu_percent: Some(ed_idle_cpu),
    };
    p.say(format!(
        "idle: flotilla RSS {:?} MiB, CPU {fl_idle_cpu}% of a core; etcd RSS {:?} MiB, CPU {ed_idle_cpu}%",
        fl_mem.idle_rss_mib, ed_mem.idle_rss_mib
    ));

    let mut rows = Vec::new();
    for (i, step) in plan.steps.iter().enumerate() {
        let mut results: HashMap<&str, Throughput> = HashMap::new();
        // Alternate which system goes first, so slow drifts of the machine hit both.
        let order = if i % 2 == 0 { [&fl, &ed] } else { [&ed, &fl] };
        for target in order {
            let pids = match target {
                Target::Flotilla(_) => flotilla.pids(),
                Target::Etcd(_) => etcd.pids(),
            };
            let start = Instant::now() + plan.warmup;
            let sampler = tokio::spawn(sample_window(pids, start, plan.window));
            let profiler = match target {
                Target::Flotilla(_) => Some(tokio::spawn(profile_leader(
                    flotilla.leader_metrics_source().await,
                    start,
                    plan.window,
                ))),
                Target::Etcd(_) => None,
            };
            let summary = workload::run(
                target,
                step.workload,
                step.clients,
                plan.keys,
                plan.warmup,
                plan.window,
            )
            .await;
            let (cpu_secs, peak) = sampler.await.unwrap_or((None, vec![]));
            let mem = match target {
                Target::Flotilla(_) => &mut fl_mem,
                Target::Etcd(_) => &mut ed_mem,
            };
            for (slot, v) in mem.load_rss_mib.iter_mut().zip(peak) {
                *slot = slot.max(round(v, 1));
            }
            let mut t = Throughput::new(&summary, cpu_secs);
            if let Some(profiler) = profiler {
                t.leader = profiler.await.ok().flatten();
            }
            p.say(format!(
                "{:<8} {:<11} clients {:>2}: {:>8.0} ops/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}  server CPU {} µs/op",
                target.name(),
                step.workload.name(),
                step.clients,
                t.ops_per_sec,
                t.p50_ms,
                t.p99_ms,
                t.errors,
                t.server_cpu_us_per_op
                    .map_or("-".to_string(), |c| format!("{c:.0}"))
            ));
            results.insert(target.name(), t);
        }
        if let (Some(f), Some(e)) = (results.remove("flotilla"), results.remove("etcd")) {
            rows.push(Row::throughput(step.workload.name(), step.clients, f, e));
        }
    }

    if plan.failover_trials > 0 {
        let fl_failover = failover("flotilla", &mut flotilla, &plan, &p).await;
        let ed_failover = failover("etcd", &mut etcd, &plan, &p).await;
        rows.push(Row::failover(
            Failover::new(fl_failover),
            Failover::new(ed_failover),
        ));
    }

    p.say("stopping etcd");
    etcd.stop().await;
    // A failure there ends the run with an error, after the rest is measured and printed.
    let (postgresql_rows, postgresql_error) = if plan.queries || plan.transactions {
        match versus_postgres::run(&flotilla, root, &plan, &|m| p.say(m)).await {
            Ok(rows) => (rows, None),
            Err(e) => (Vec::new(), Some(e.context("the rows beside PostgreSQL"))),
        }
    } else {
        (Vec::new(), None)
    };
    let (backups, backups_error) = if plan.backups {
        let rows = match backups::cli_binary(cli.flotilla_cli.as_deref()) {
            Ok(bin) => {
                backups::run(&backups::rig(&flotilla, root, &plan, &bin), &|m| p.say(m)).await
            }
            Err(e) => Err(e),
        };
        match rows {
            Ok(rows) => (Some(rows), None),
            Err(e) => (None, Some(e.context("the backup rows"))),
        }
    } else {
        (None, None)
    };
    let idle_groups = if plan.idle_groups > 0 {
        Some(idle_groups(&flotilla, &plan, &p).await)
    } else {
        None
    };
    p.say("stopping Flotilla");
    flotilla.stop().await;
    if !cli.keep_data
        && let Err(e) = remove_run_data(root)
    {
        p.say(format!("removing the data: {e:#}"));
    }

    let report = Report {
        machine: machine(),
        load_average: vec![load_at_start, load_average()],
        mode: if cli.quick { "quick" } else { "default" }.to_string(),
        window_s: plan.window.as_secs_f64(),
        rows,
        flotilla_memory: fl_mem,
        etcd_memory: ed_mem,
        idle_groups,
        postgresql_rows,
        backups,
    };
    print!("{}", report.table());
    if let Some(path) = &cli.json {
        std::fs::write(path, report.to_json()?)
            .with_context(|| format!("writing {}", path.display()))?;
        p.say(format!("JSON written to {}", path.display()));
    }
    if let Some(e) = postgresql_error.or(backups_error) {
        return Err(e);
    }
    p.say("done");
    Ok(())
}

/// Removes the data of a run (only the directories this benchmark creates).
fn remove_run_data(root: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        let ours = name == flotilla::DIR
            || name == postgres::DIR
            || name == backups::DIR
            || ["flotilla-", "etcd-"].iter().any(|prefix| {
                name.strip_prefix(prefix)
                    .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
            });
        if ours {
            std::fs::remove_dir_all(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn cpu(pid: u32) -> f64 {
    procfs::cpu_secs(pid).unwrap_or(0.0)
}

fn rss_all(pids: &[u32]) -> Vec<f64> {
    pids.iter()
        .map(|p| round(procfs::rss_mib(*p).unwrap_or(0.0), 1))
        .collect()
}

/// CPU seconds the processes used during [start, start + window], and the highest RSS of each
/// seen in it.
async fn sample_window(
    pids: Vec<u32>,
    start: Instant,
    window: Duration,
) -> (Option<f64>, Vec<f64>) {
    tokio::time::sleep_until(start.into()).await;
    let before = procfs::total_cpu_secs(&pids);
    let end = start + window;
    let mut peak = vec![0.0f64; pids.len()];
    while Instant::now() < end {
        for (slot, v) in peak.iter_mut().zip(rss_all(&pids)) {
            *slot = slot.max(v);
        }
        tokio::time::sleep(
            Duration::from_millis(250).min(end.saturating_duration_since(Instant::now())),
        )
        .await;
    }
    let used = procfs::total_cpu_secs(&pids) - before;
    (Some(used.max(0.0)), peak)
}

/// The leader's storage and proposal metrics over [start, start + window].
async fn profile_leader(
    source: Option<MetricsSource>,
    start: Instant,
    window: Duration,
) -> Option<LeaderProfile> {
    let source = source?;
    tokio::time::sleep_until(start.into()).await;
    let before = source.fetch().await?;
    tokio::time::sleep_until((start + window).into()).await;
    let after = source.fetch().await?;
    let commits = after.0.1 - before.0.1;
    let proposals = after.1.1 - before.1.1;
    (commits > 0.0 && proposals > 0.0).then(|| LeaderProfile {
        fsync_commits_per_sec: round(commits / window.as_secs_f64(), 1),
        fsync_commit_ms: round(1000.0 * (after.0.0 - before.0.0) / commits, 3),
        proposal_ms: round(1000.0 * (after.1.0 - before.1.0) / proposals, 3),
    })
}

/// A client for failover: every endpoint, short attempts, fast retries.
fn failover_client_options() -> ClientOptions {
    ClientOptions {
        total_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(250),
        connect_timeout: Duration::from_millis(100),
        max_attempts: 20,
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(50),
        retry_uncertain_writes: true,
        ..ClientOptions::default()
    }
}

const FAILOVER_LIMIT: Duration = Duration::from_secs(30);

/// A cluster whose leader can be found, killed and restarted.
trait Members {
    async fn leader(&self) -> anyhow::Result<usize>;
    async fn kill(&mut self, i: usize);
    async fn restart(&mut self, i: usize) -> anyhow::Result<()>;
    /// A client that knows every member and gives up on one quickly.
    fn failover_target(&self) -> anyhow::Result<Target>;
}

impl Members for FlotillaCluster {
    async fn leader(&self) -> anyhow::Result<usize> {
        FlotillaCluster::leader(self).await
    }
    async fn kill(&mut self, i: usize) {
        FlotillaCluster::kill(self, i).await
    }
    async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        FlotillaCluster::restart(self, i).await
    }
    fn failover_target(&self) -> anyhow::Result<Target> {
        Ok(Target::Flotilla(Client::with_options(
            self.endpoints(),
            failover_client_options(),
        )?))
    }
}

impl Members for EtcdCluster {
    async fn leader(&self) -> anyhow::Result<usize> {
        EtcdCluster::leader(self).await
    }
    async fn kill(&mut self, i: usize) {
        EtcdCluster::kill(self, i).await
    }
    async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        EtcdCluster::restart(self, i).await
    }
    fn failover_target(&self) -> anyhow::Result<Target> {
        Ok(Target::Etcd(EtcdClient::connect(
            &self.endpoints(),
            Duration::from_millis(250),
        )?))
    }
}

/// Failover trials: kill the leader, time until a write succeeds again, restart it.
async fn failover<C: Members>(name: &str, cluster: &mut C, plan: &Plan, p: &Progress) -> Vec<f64> {
    let mut times = Vec::new();
    for trial in 1..=plan.failover_trials {
        let result: anyhow::Result<f64> = async {
            let target = cluster.failover_target()?;
            let leader = cluster.leader().await?;
            workload::time_until_write(&target, Instant::now(), FAILOVER_LIMIT)
                .await
                .context("no write before the kill")?;
            cluster.kill(leader).await;
            let killed = Instant::now();
            let took = workload::time_until_write(&target, killed, FAILOVER_LIMIT).await;
            let restarted = cluster.restart(leader).await;
            let took = took.context("writes did not resume")?;
            restarted?;
            Ok(took.as_secs_f64() * 1000.0)
        }
        .await;
        match result {
            Ok(ms) => {
                p.say(format!(
                    "{name} failover trial {trial}: writes resumed after {ms:.0} ms"
                ));
                times.push(ms);
            }
            Err(e) => p.say(format!("{name} failover trial {trial} failed: {e:#}")),
        }
    }
    times
}

/// Grows the Flotilla cluster towards `plan.idle_groups` Raft groups in steps (a database of
/// [`GROUP_STEP`] shards, replicated on all three nodes, per step), and after each step lets it
/// settle and measures the CPU of the idle cluster. Stops early when a step's shards do not all
/// elect a leader in time or the phase's time budget is used up, and reports what it reached.
async fn idle_groups(cluster: &FlotillaCluster, plan: &Plan, p: &Progress) -> IdleGroups {
    let interval = plan.idle_interval;
    let phase_end = Instant::now() + plan.idle_budget;
    let mut result = IdleGroups {
        groups: 0,
        cpu_percent_of_one_core: None,
        interval_s: interval.as_secs_f64(),
        rss_mib: vec![],
        points: vec![],
        note: None,
    };
    let client = match cluster.admin_client() {
        Ok(c) => c,
        Err(e) => {
            result.note = Some(format!("{e:#}"));
            return result;
        }
    };
    let existing = match client.list_databases().await {
        Ok(dbs) => 1 + dbs.iter().map(|d| d.shards as usize).sum::<usize>(),
        Err(e) => {
            result.note = Some(format!("listing databases: {e}"));
            return result;
        }
    };
    result.groups = existing;
    let mut n = 0;
    while result.groups < plan.idle_groups {
        let shards = (plan.idle_groups - result.groups).min(GROUP_STEP);
        let name = format!("idle-{n}");
        n += 1;
        p.say(format!(
            "creating database {name} with {shards} shards ({} groups so far)",
            result.groups
        ));
        let created = client
            .create_database(&name, Some(NODES as u32), Some(shards as u32))
            .await;
        if let Err(e) = created {
            result.note = Some(format!("creating {name}: {e}"));
            break;
        }
        let wait = phase_end
            .saturating_duration_since(Instant::now())
            .min(plan.group_step_timeout);
        let ready = client.wait_for_database(&name, wait, |_| {}).await;
        // The groups exist on every node either way; count them.
        result.groups += shards;
        let point = measure_idle(cluster, interval, result.groups, p).await;
        result.cpu_percent_of_one_core = Some(point.cpu_percent_of_one_core);
        result.rss_mib = point.rss_mib.clone();
        result.points.push(point);
        if let Err(e) = ready {
            result.note = Some(format!(
                "stopped at {} groups: not every shard of {name} elected a leader in {} s ({e})",
                result.groups,
                wait.as_secs()
            ));
            break;
        }
        if Instant::now() + interval >= phase_end && result.groups < plan.idle_groups {
            result.note = Some(format!(
                "stopped at {} groups: the time budget of this measurement ({} s) was used up",
                result.groups,
                plan.idle_budget.as_secs()
            ));
            break;
        }
    }
    if let Some(note) = &result.note {
        p.say(note);
    }
    result
}

/// Lets the cluster settle, then measures its CPU over `interval` and its memory.
async fn measure_idle(
    cluster: &FlotillaCluster,
    interval: Duration,
    groups: usize,
    p: &Progress,
) -> IdlePoint {
    // Idle groups hibernate (`--hibernate-after`, 5 s): measure once they all sleep, or after
    // a bounded wait, and say how many did.
    let sources = cluster.metrics_sources();
    let replicas = (groups - 1) * sources.len();
    let settle_until = Instant::now() + Duration::from_secs(30);
    let asleep = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut asleep = 0;
        for source in &sources {
            asleep += source.hibernating().await.unwrap_or(0);
        }
        if asleep >= replicas || Instant::now() >= settle_until {
            break asleep;
        }
    };
    let pids = cluster.pids();
    let before = procfs::total_cpu_secs(&pids);
    tokio::time::sleep(interval).await;
    let used = procfs::total_cpu_secs(&pids) - before;
    let point = IdlePoint {
        groups,
        cpu_percent_of_one_core: round(100.0 * used / interval.as_secs_f64(), 1),
        rss_mib: rss_all(&pids),
        hibernating_replicas: asleep,
    };
    p.say(format!(
        "{groups} idle groups ({asleep} of {replicas} data replicas hibernating): CPU {:.1}% of one core, RSS {:?} MiB",
        point.cpu_percent_of_one_core, point.rss_mib
    ));
    point
}

#[cfg(test)]
mod smoke;
