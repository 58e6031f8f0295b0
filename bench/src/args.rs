//! Command line of `flotilla-bench` and the run plan derived from it (durations, client counts,
//! trials). Pure: parsed and planned without I/O, so both are unit-tested.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use flotilla_node::config::NodeConfig;

#[derive(Debug, Parser)]
#[command(
    name = "flotilla-bench",
    about = "Benchmark a 3-node Flotilla cluster against a 3-member etcd cluster on this machine"
)]
pub struct Cli {
    /// Shorter run (under 3 minutes): shorter windows, one failover trial.
    #[arg(long)]
    pub quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Parent directory of both clusters' data directories (emptied first). It must be on a
    /// real disk: both systems fsync before they acknowledge a write.
    #[arg(long, default_value = "target/flotilla-bench")]
    pub data_dir: PathBuf,
    /// Keep both clusters' data directories after the run (they are deleted by default).
    #[arg(long)]
    pub keep_data: bool,
    /// Raft groups the idle-cost measurement brings the Flotilla cluster to (0 skips it).
    #[arg(long, default_value_t = 1000)]
    pub idle_groups: usize,
    /// Run only these parts, comma-separated: steps such as `put:64` or `get:1` (any number of
    /// clients), `failover`, `idle-groups`, `queries` (queries and puts with indexes beside
    /// PostgreSQL), `transactions` (transfers beside PostgreSQL), `backups` (backup and
    /// restore throughput, puts during a backup). Everything runs by default.
    #[arg(long, value_delimiter = ',', value_parser = parse_part, value_name = "PARTS")]
    pub only: Vec<Part>,
    /// The `flotilla` command line the backup rows run (default: beside this binary).
    #[arg(long, value_name = "PATH")]
    pub flotilla_cli: Option<PathBuf>,
    /// The backup rows measure puts during a backup unlimited and during one taken with
    /// `backup create --max-rate` this many MiB/s.
    #[arg(long, value_name = "MIB_PER_SEC", default_value_t = DEFAULT_BACKUP_MAX_RATE, value_parser = positive_rate)]
    pub backup_max_rate: f64,
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Runs one Flotilla node (the benchmark starts its cluster by re-executing itself).
    #[command(hide = true)]
    Node(Box<NodeConfig>),
}

/// What one workload does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// 1 KiB puts to random keys.
    Put,
    /// Linearizable gets of random keys.
    Get,
    /// 90 % linearizable gets, 10 % 1 KiB puts.
    Mixed,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Mixed => "mixed-90/10",
        }
    }
}

/// A part of the run that `--only` can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Step(Step),
    Failover,
    IdleGroups,
    Queries,
    Transactions,
    Backups,
}

fn parse_part(s: &str) -> Result<Part, String> {
    match s {
        "failover" => return Ok(Part::Failover),
        "idle-groups" => return Ok(Part::IdleGroups),
        "queries" => return Ok(Part::Queries),
        "transactions" => return Ok(Part::Transactions),
        "backups" => return Ok(Part::Backups),
        _ => {}
    }
    let usage = || {
        format!(
            "`{s}`: expected WORKLOAD:CLIENTS (put, get or mixed, e.g. put:64), failover, idle-groups, queries, transactions or backups"
        )
    };
    let (workload, clients) = s.split_once(':').ok_or_else(usage)?;
    let workload = match workload {
        "put" => Workload::Put,
        "get" => Workload::Get,
        "mixed" => Workload::Mixed,
        _ => return Err(usage()),
    };
    let clients: usize = clients.parse().map_err(|_| usage())?;
    if !(1..=1024).contains(&clients) {
        return Err(format!("`{s}`: clients must be between 1 and 1024"));
    }
    Ok(Part::Step(Step { workload, clients }))
}

/// One measured step: a workload at a number of concurrent clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub workload: Workload,
    pub clients: usize,
}

/// Durations and counts of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Load before the measured window (connections, caches, leader lease settle).
    pub warmup: Duration,
    /// The measured window of each step.
    pub window: Duration,
    pub steps: Vec<Step>,
    /// Leader kills per system.
    pub failover_trials: usize,
    /// How long idle CPU is measured.
    pub idle_interval: Duration,
    /// Longest the idle-group measurement may take in all.
    pub idle_budget: Duration,
    /// Longest one step of it may wait for its new groups to elect leaders.
    pub group_step_timeout: Duration,
    /// Raft groups for the idle-cost measurement (0 = skipped).
    pub idle_groups: usize,
    /// Distinct keys written and read.
    pub keys: usize,
    /// The query and put-with-indexes rows beside PostgreSQL.
    pub queries: bool,
    /// The transaction rows beside PostgreSQL.
    pub transactions: bool,
    /// Documents the query rows load (1 KiB each).
    pub docs: usize,
    /// The backup and restore rows: only when named (`--only backups`), since they run the
    /// `flotilla` command line, which the default run does not need built.
    pub backups: bool,
    /// MiB of documents the backup rows back up.
    pub backup_mib: usize,
    /// The `--max-rate` of the backup rows' limited backups (MiB/s).
    pub backup_max_rate: f64,
}

/// A rate in MiB per second: a positive number.
fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{text:?}: a positive number of MiB per second")),
    }
}

/// The `--max-rate` of the backup rows' limited backups unless told (MiB/s).
pub const DEFAULT_BACKUP_MAX_RATE: f64 = 16.0;

impl Plan {
    /// The plan of a run limited to `only` (everything when it is empty).
    pub fn of(quick: bool, idle_groups: usize, only: &[Part]) -> Plan {
        let mut plan = Plan::all(quick, idle_groups);
        if !only.is_empty() {
            plan.steps = only
                .iter()
                .filter_map(|p| match p {
                    Part::Step(s) => Some(*s),
                    _ => None,
                })
                .collect();
            if !only.contains(&Part::Failover) {
                plan.failover_trials = 0;
            }
            if !only.contains(&Part::IdleGroups) {
                plan.idle_groups = 0;
            }
            plan.queries = only.contains(&Part::Queries);
            plan.transactions = only.contains(&Part::Transactions);
            plan.backups = only.contains(&Part::Backups);
        }
        plan
    }

    fn all(quick: bool, idle_groups: usize) -> Plan {
        let step = |workload, clients| Step { workload, clients };
        let steps = vec![
            step(Workload::Put, 1),
            step(Workload::Put, 16),
            step(Workload::Put, 64),
            step(Workload::Get, 1),
            step(Workload::Get, 64),
            step(Workload::Mixed, 64),
        ];
        if quick {
            Plan {
                warmup: Duration::from_millis(700),
                window: Duration::from_secs(3),
                steps,
                failover_trials: 1,
                idle_interval: Duration::from_secs(4),
                idle_budget: Duration::from_secs(60),
                group_step_timeout: Duration::from_secs(30),
                idle_groups,
                keys: 1000,
                queries: true,
                transactions: true,
                docs: 10_000,
                backups: false,
                backup_mib: 64,
                backup_max_rate: DEFAULT_BACKUP_MAX_RATE,
            }
        } else {
            Plan {
                warmup: Duration::from_secs(2),
                window: Duration::from_secs(12),
                steps,
                failover_trials: 3,
                idle_interval: Duration::from_secs(10),
                idle_budget: Duration::from_secs(200),
                group_step_timeout: Duration::from_secs(60),
                idle_groups,
                keys: 1000,
                queries: true,
                transactions: true,
                docs: 100_000,
                backups: false,
                backup_mib: 1024,
                backup_max_rate: DEFAULT_BACKUP_MAX_RATE,
            }
        }
    }

    /// Row-modes of the PostgreSQL rows: (queries and puts, transactions), each measured on
    /// both systems (the shared-mode transactions on Flotilla only).
    fn peer_windows(&self) -> u32 {
        let queries = if self.queries {
            2 * (1 + 2 * 4 + 2 * 3)
        } else {
            0
        };
        let transactions = if self.transactions { 2 + 3 * 3 } else { 0 };
        queries + transactions
    }

    /// Time the measured steps take for both systems.
    pub fn steps_time(&self) -> Duration {
        (self.warmup + self.window) * (2 * self.steps.len() as u32 + self.peer_windows())
    }

    /// Loading the documents and accounts of the PostgreSQL rows into both systems.
    fn load_time(&self) -> Duration {
        let mut t = Duration::ZERO;
        if self.queries {
            // Two Flotilla databases at a few thousand documents a second, then index builds.
            t += Duration::from_millis(self.docs as u64 / 2) + Duration::from_secs(20);
        }
        if self.transactions {
            t += Duration::from_secs(15);
        }
        if self.backups {
            // Loading at about 6 MiB/s, three unlimited backups and a restore at about
            // 10 MiB/s together (measured: 150 s and 100 s for 1 GiB), two backups at the
            // limited rate, and eight windows of puts alone, each after up to a few seconds
            // of settling.
            let mib = self.backup_mib as f64;
            t += Duration::from_secs_f64(
                mib / 6.0 + mib / 10.0 + 2.0 * mib / self.backup_max_rate.max(1.0),
            ) + Duration::from_secs(8 * 15);
        }
        t
    }

    /// An upper estimate of the whole run: start-up and preload, idle measurement, steps,
    /// failover trials (a kill, a restart and catching up) and the idle-group phase.
    pub fn estimate(&self) -> Duration {
        Duration::from_secs(20)
            + self.idle_interval
            + self.steps_time()
            + Duration::from_secs(15) * (2 * self.failover_trials as u32)
            + if self.idle_groups > 0 {
                self.idle_budget
            } else {
                Duration::ZERO
            }
            + self.load_time()
            + Duration::from_secs(10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_arguments_means_the_full_run_without_json() {
        let cli = Cli::try_parse_from(["flotilla-bench"]).unwrap();
        assert!(!cli.quick);
        assert!(!cli.keep_data);
        assert!(cli.json.is_none());
        assert!(cli.command.is_none());
        assert_eq!(cli.idle_groups, 1000);
        assert_eq!(cli.data_dir, PathBuf::from("target/flotilla-bench"));
    }

    #[test]
    fn quick_and_json_are_read() {
        let cli = Cli::try_parse_from(["flotilla-bench", "--quick", "--json", "out.json"]).unwrap();
        assert!(cli.quick);
        assert_eq!(cli.json, Some(PathBuf::from("out.json")));
    }

    #[test]
    fn unknown_flags_are_refused() {
        assert!(Cli::try_parse_from(["flotilla-bench", "--fast"]).is_err());
        assert!(Cli::try_parse_from(["flotilla-bench", "--json"]).is_err());
    }

    #[test]
    fn the_hidden_node_subcommand_takes_the_node_flags() {
        let cli = Cli::try_parse_from([
            "flotilla-bench",
            "node",
            "--name",
            "n0",
            "--data-dir",
            "/tmp/x",
            "--client-addr",
            "127.0.0.1:1",
            "--initial-cluster-state",
            "new",
        ])
        .unwrap();
        let Some(Cmd::Node(config)) = cli.command else {
            panic!("expected the node subcommand");
        };
        assert_eq!(config.name, "n0");
        assert_eq!(config.client_addr.port(), 1);
    }

    #[test]
    fn every_required_workload_is_planned() {
        let plan = Plan::of(false, 1000, &[]);
        let has = |w, c| {
            plan.steps.contains(&Step {
                workload: w,
                clients: c,
            })
        };
        for c in [1, 16, 64] {
            assert!(has(Workload::Put, c), "put at {c} clients");
        }
        assert!(plan.steps.iter().any(|s| s.workload == Workload::Get));
        assert!(plan.steps.iter().any(|s| s.workload == Workload::Mixed));
        assert!(plan.failover_trials >= 1);
    }

    #[test]
    fn a_run_fits_its_time_budget() {
        assert!(Plan::of(false, 1000, &[]).estimate() < Duration::from_secs(25 * 60));
        assert!(Plan::of(true, 1000, &[]).estimate() < Duration::from_secs(7 * 60));
        let etcd_only = [Part::Failover, Part::IdleGroups]
            .into_iter()
            .chain(Plan::of(false, 0, &[]).steps.into_iter().map(Part::Step))
            .collect::<Vec<_>>();
        assert!(Plan::of(false, 1000, &etcd_only).estimate() < Duration::from_secs(10 * 60));
        assert!(Plan::of(true, 1000, &etcd_only).estimate() < Duration::from_secs(3 * 60));
    }

    #[test]
    fn the_postgresql_parts_are_named_or_run_by_default() {
        let all = Plan::of(true, 0, &[]);
        assert!(all.queries && all.transactions);
        let cli = Cli::try_parse_from(["flotilla-bench", "--only", "queries"]).unwrap();
        let plan = Plan::of(true, 0, &cli.only);
        assert!(plan.queries && !plan.transactions);
        assert!(plan.steps.is_empty());
        assert_eq!(plan.failover_trials, 0);
        let cli = Cli::try_parse_from(["flotilla-bench", "--only", "transactions,put:1"]).unwrap();
        let plan = Plan::of(true, 0, &cli.only);
        assert!(!plan.queries && plan.transactions);
        assert_eq!(plan.steps.len(), 1);
        assert_eq!(Plan::of(false, 0, &[]).docs, 100_000);
    }

    #[test]
    fn the_backup_rows_run_only_when_named_and_fit_their_budget() {
        assert!(!Plan::of(false, 0, &[]).backups);
        let cli = Cli::try_parse_from(["flotilla-bench", "--only", "backups"]).unwrap();
        let plan = Plan::of(false, 0, &cli.only);
        assert!(plan.backups && !plan.queries && plan.steps.is_empty());
        assert_eq!(plan.backup_mib, 1024);
        assert!(plan.estimate() < Duration::from_secs(10 * 60));
        assert_eq!(Plan::of(true, 0, &cli.only).backup_mib, 64);
        assert_eq!(cli.backup_max_rate, DEFAULT_BACKUP_MAX_RATE);
        let cli = Cli::try_parse_from(["flotilla-bench", "--backup-max-rate", "8.5"]).unwrap();
        assert_eq!(cli.backup_max_rate, 8.5);
        for bad in ["0", "-3", "fast"] {
            assert!(Cli::try_parse_from(["flotilla-bench", "--backup-max-rate", bad]).is_err());
        }
    }

    #[test]
    fn only_runs_the_parts_named() {
        let cli =
            Cli::try_parse_from(["flotilla-bench", "--only", "put:64,get:7,failover"]).unwrap();
        let plan = Plan::of(false, 1000, &cli.only);
        assert_eq!(
            plan.steps,
            vec![
                Step {
                    workload: Workload::Put,
                    clients: 64
                },
                Step {
                    workload: Workload::Get,
                    clients: 7
                },
            ]
        );
        assert_eq!(plan.failover_trials, 3);
        assert_eq!(plan.idle_groups, 0);
        let groups = Plan::of(true, 1000, &[Part::IdleGroups]);
        assert!(groups.steps.is_empty());
        assert_eq!(groups.failover_trials, 0);
        assert_eq!(groups.idle_groups, 1000);
    }

    #[test]
    fn bad_parts_are_refused() {
        for bad in ["put", "put:0", "write:4", "put:x", "failovers"] {
            assert!(
                Cli::try_parse_from(["flotilla-bench", "--only", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn quick_is_shorter_than_the_default() {
        let quick = Plan::of(true, 0, &[]);
        let full = Plan::of(false, 0, &[]);
        assert!(quick.window < full.window);
        assert!(quick.failover_trials <= full.failover_trials);
        assert_eq!(quick.steps, full.steps);
    }
}
