//! The results of a run: rows (one per workload and client count, both systems side by side),
//! memory and idle cost; printed as a table and written as JSON. Pure.

use std::fmt::Write as _;

use serde::Serialize;

use crate::backups::BackupRows;
use crate::peer_report::{self, PeerRow};
use crate::stats::{median, ratio};
pub use crate::throughput::{LeaderProfile, Throughput, round};

/// One system's leader failover trials.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failover {
    /// Kill -9 of the leader to the first acknowledged write after it, per trial.
    pub trials_ms: Vec<f64>,
    pub median_ms: Option<f64>,
}

impl Failover {
    pub fn new(trials_ms: Vec<f64>) -> Failover {
        let trials_ms: Vec<f64> = trials_ms.into_iter().map(|t| round(t, 1)).collect();
        let median_ms = median(&trials_ms).map(|m| round(m, 1));
        Failover {
            trials_ms,
            median_ms,
        }
    }
}

/// One system's side of a row.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Outcome {
    Throughput(Throughput),
    Failover(Failover),
}

/// One workload at one client count, both systems.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub workload: String,
    pub clients: usize,
    pub flotilla: Outcome,
    pub etcd: Outcome,
    /// Throughput rows: Flotilla ops/s ÷ etcd ops/s (higher is better for Flotilla).
    /// Failover row: Flotilla median time ÷ etcd median time (lower is better for Flotilla).
    pub ratio: Option<f64>,
}

impl Row {
    pub fn throughput(workload: &str, clients: usize, f: Throughput, e: Throughput) -> Row {
        let r = ratio(f.ops_per_sec, e.ops_per_sec).map(|r| round(r, 2));
        Row {
            workload: workload.to_string(),
            clients,
            flotilla: Outcome::Throughput(f),
            etcd: Outcome::Throughput(e),
            ratio: r,
        }
    }

    pub fn failover(f: Failover, e: Failover) -> Row {
        let r = match (f.median_ms, e.median_ms) {
            (Some(a), Some(b)) => ratio(a, b).map(|r| round(r, 2)),
            _ => None,
        };
        Row {
            workload: "failover".to_string(),
            clients: 1,
            flotilla: Outcome::Failover(f),
            etcd: Outcome::Failover(e),
            ratio: r,
        }
    }
}

/// Resident memory of each node of one system, in MiB.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Memory {
    /// After start-up, with no load.
    pub idle_rss_mib: Vec<f64>,
    /// Highest value seen while the measured workloads ran.
    pub load_rss_mib: Vec<f64>,
    /// CPU of the whole idle cluster, in % of one core.
    pub idle_cpu_percent: Option<f64>,
}

/// The cost of a Flotilla cluster holding many idle Raft groups.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdleGroups {
    /// Raft groups in the cluster (meta group and every shard), each on all three nodes.
    pub groups: usize,
    /// CPU of all three nodes together, in % of one core.
    pub cpu_percent_of_one_core: Option<f64>,
    pub interval_s: f64,
    pub rss_mib: Vec<f64>,
    /// Every measurement on the way there.
    pub points: Vec<IdlePoint>,
    /// Set when the groups could not be created or measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The idle cluster's cost at one number of groups.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdlePoint {
    pub groups: usize,
    pub cpu_percent_of_one_core: f64,
    pub rss_mib: Vec<f64>,
    /// Data group replicas (on all nodes) whose Raft timer was stopped while measuring.
    pub hibernating_replicas: usize,
}

/// Everything a run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub machine: String,
    /// `/proc/loadavg` (1, 5, 15 minutes) at the start and at the end of the run: other work
    /// on the machine shows here.
    pub load_average: Vec<String>,
    pub mode: String,
    pub window_s: f64,
    pub rows: Vec<Row>,
    pub flotilla_memory: Memory,
    pub etcd_memory: Memory,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_groups: Option<IdleGroups>,
    /// Queries, puts with indexes and transactions beside PostgreSQL.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub postgresql_rows: Vec<PeerRow>,
    /// Backup and restore throughput, puts during a backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backups: Option<BackupRows>,
}

impl Report {
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Flotilla (3 nodes) vs etcd (3 members), {} run, {} s windows; {}",
            self.mode, self.window_s, self.machine
        );
        if !self.load_average.is_empty() {
            let _ = writeln!(
                out,
                "load average at start / end: {}",
                self.load_average.join(" / ")
            );
        }
        let _ = writeln!(
            out,
            "{:<12} {:>7} | {:>10} {:>8} {:>8} | {:>10} {:>8} {:>8} | {:>6}",
            "workload",
            "clients",
            "flotilla/s",
            "p50 ms",
            "p99 ms",
            "etcd/s",
            "p50 ms",
            "p99 ms",
            "ratio"
        );
        let _ = writeln!(out, "{}", "-".repeat(92));
        for row in &self.rows {
            let cells = |o: &Outcome| match o {
                Outcome::Throughput(t) => format!(
                    "{:>10.0} {:>8.2} {:>8.2}",
                    t.ops_per_sec, t.p50_ms, t.p99_ms
                ),
                Outcome::Failover(f) => format!(
                    "{:>10} {:>17}",
                    "median",
                    f.median_ms
                        .map_or("failed".to_string(), |m| format!("{m:.0} ms"))
                ),
            };
            let ratio = row.ratio.map_or("-".to_string(), |r| format!("{r:.2}"));
            let _ = writeln!(
                out,
                "{:<12} {:>7} | {} | {} | {:>6}",
                row.workload,
                row.clients,
                cells(&row.flotilla),
                cells(&row.etcd),
                ratio
            );
        }
        let _ = writeln!(
            out,
            "ratio = Flotilla ops/s / etcd ops/s (failover: Flotilla time / etcd time, lower is better)"
        );
        for row in &self.rows {
            if let (Outcome::Failover(f), Outcome::Failover(e)) = (&row.flotilla, &row.etcd) {
                let _ = writeln!(
                    out,
                    "failover trials (ms): flotilla {:?}, etcd {:?}",
                    f.trials_ms, e.trials_ms
                );
            }
        }
        let cpu_line = |rows: &[Row], pick: fn(&Row) -> &Outcome| -> String {
            rows.iter()
                .filter_map(|r| match pick(r) {
                    Outcome::Throughput(t) => t
                        .server_cpu_us_per_op
                        .map(|c| format!("{} c{} {c:.0}", r.workload, r.clients)),
                    Outcome::Failover(_) => None,
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "server CPU µs/op: flotilla: {}",
            cpu_line(&self.rows, |r| &r.flotilla)
        );
        let _ = writeln!(
            out,
            "                  etcd:     {}",
            cpu_line(&self.rows, |r| &r.etcd)
        );
        for row in &self.rows {
            if let Outcome::Throughput(Throughput {
                leader: Some(l), ..
            }) = &row.flotilla
            {
                let _ = writeln!(
                    out,
                    "flotilla leader, {} c{}: {:.0} fsync commits/s, {:.2} ms each; proposal to apply {:.2} ms",
                    row.workload,
                    row.clients,
                    l.fsync_commits_per_sec,
                    l.fsync_commit_ms,
                    l.proposal_ms
                );
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<9} | {:<24} | {:<24} | idle CPU (% of a core)",
            "memory", "idle RSS MiB per node", "peak RSS under load"
        );
        for (name, m) in [
            ("flotilla", &self.flotilla_memory),
            ("etcd", &self.etcd_memory),
        ] {
            let _ = writeln!(
                out,
                "{:<9} | {:<24} | {:<24} | {}",
                name,
                mib_list(&m.idle_rss_mib),
                mib_list(&m.load_rss_mib),
                m.idle_cpu_percent
                    .map_or("-".to_string(), |c| format!("{c:.1}"))
            );
        }
        if let Some(g) = &self.idle_groups {
            let _ = writeln!(
                out,
                "flotilla with {} idle Raft groups: CPU {} of one core over {} s, RSS per node {} MiB{}",
                g.groups,
                g.cpu_percent_of_one_core
                    .map_or("-".to_string(), |c| format!("{c:.1}%")),
                g.interval_s,
                mib_list(&g.rss_mib),
                g.note.as_ref().map_or(String::new(), |n| format!(" ({n})"))
            );
            let points: Vec<String> = g
                .points
                .iter()
                .map(|p| format!("{} groups {:.1}%", p.groups, p.cpu_percent_of_one_core))
                .collect();
            if !points.is_empty() {
                let _ = writeln!(out, "idle CPU by group count: {}", points.join(", "));
            }
        }
        if !self.postgresql_rows.is_empty() {
            let _ = writeln!(out);
            out.push_str(&peer_report::table(&self.postgresql_rows));
        }
        if let Some(b) = &self.backups {
            let _ = writeln!(out);
            out.push_str(&b.table());
        }
        out
    }
}

fn mib_list(v: &[f64]) -> String {
    if v.is_empty() {
        return "-".to_string();
    }
    v.iter()
        .map(|m| format!("{m:.0}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::stats::summarize;

    fn tp(ops_per_sec: f64) -> Throughput {
        Throughput {
            ops_per_sec,
            p50_ms: 1.5,
            p99_ms: 4.25,
            ops: 1000,
            errors: 0,
            server_cpu_us_per_op: Some(120.0),
            leader: None,
            retries: None,
        }
    }

    fn report() -> Report {
        Report {
            machine: "2 cores".into(),
            load_average: vec!["0.5 0.4 0.3".into(), "1.5 0.9 0.4".into()],
            mode: "quick".into(),
            window_s: 3.0,
            rows: vec![
                Row::throughput("put", 64, tp(3400.0), tp(2000.0)),
                Row::failover(
                    Failover::new(vec![900.0, 1100.0, 1000.0]),
                    Failover::new(vec![1200.0]),
                ),
            ],
            flotilla_memory: Memory {
                idle_rss_mib: vec![20.0, 21.0, 22.0],
                load_rss_mib: vec![40.0, 41.0, 42.0],
                idle_cpu_percent: Some(1.5),
            },
            etcd_memory: Memory::default(),
            idle_groups: Some(IdleGroups {
                groups: 1000,
                cpu_percent_of_one_core: Some(12.5),
                interval_s: 5.0,
                rss_mib: vec![100.0],
                points: vec![
                    IdlePoint {
                        groups: 500,
                        cpu_percent_of_one_core: 6.0,
                        rss_mib: vec![80.0],
                        hibernating_replicas: 1497,
                    },
                    IdlePoint {
                        groups: 1000,
                        cpu_percent_of_one_core: 12.5,
                        rss_mib: vec![100.0],
                        hibernating_replicas: 2997,
                    },
                ],
                note: None,
            }),
            postgresql_rows: vec![],
            backups: None,
        }
    }

    #[test]
    fn the_ratio_is_flotilla_over_etcd_throughput() {
        let row = Row::throughput("put", 64, tp(3400.0), tp(2000.0));
        assert_eq!(row.ratio, Some(1.7));
        let row = Row::throughput("put", 1, tp(100.0), tp(0.0));
        assert_eq!(row.ratio, None);
    }

    #[test]
    fn the_failover_ratio_compares_median_times() {
        let row = Row::failover(
            Failover::new(vec![900.0, 1100.0, 1000.0]),
            Failover::new(vec![2000.0]),
        );
        assert_eq!(row.ratio, Some(0.5));
        let row = Row::failover(Failover::new(vec![]), Failover::new(vec![2000.0]));
        assert_eq!(row.ratio, None);
    }

    #[test]
    fn json_has_the_documented_shape() {
        let v: serde_json::Value = serde_json::from_str(&report().to_json().unwrap()).unwrap();
        let row = &v["rows"][0];
        assert_eq!(row["workload"], "put");
        assert_eq!(row["clients"], 64);
        assert_eq!(row["ratio"], 1.7);
        assert_eq!(row["flotilla"]["ops_per_sec"], 3400.0);
        assert_eq!(row["etcd"]["p99_ms"], 4.25);
        let failover = &v["rows"][1];
        assert_eq!(failover["flotilla"]["median_ms"], 1000.0);
        assert_eq!(failover["etcd"]["trials_ms"][0], 1200.0);
        assert_eq!(v["idle_groups"]["groups"], 1000);
        assert_eq!(v["idle_groups"]["points"][0]["groups"], 500);
        assert_eq!(v["flotilla_memory"]["idle_rss_mib"][2], 22.0);
    }

    #[test]
    fn the_table_shows_every_row_and_the_resources() {
        let t = report().table();
        assert!(t.contains("put"), "{t}");
        assert!(t.contains("1.70"), "{t}");
        assert!(t.contains("failover"), "{t}");
        assert!(t.contains("1000 ms"), "{t}");
        assert!(t.contains("20 / 21 / 22"), "{t}");
        assert!(t.contains("1000 idle Raft groups: CPU 12.5%"), "{t}");
        assert!(t.contains("500 groups 6.0%, 1000 groups 12.5%"), "{t}");
        assert!(t.contains("0.5 0.4 0.3 / 1.5 0.9 0.4"), "{t}");
        let header = t.lines().nth(2).unwrap();
        let row = t.lines().nth(4).unwrap();
        assert_eq!(header.find('|'), row.find('|'), "columns line up:\n{t}");
    }

    #[test]
    fn cpu_per_op_is_derived_from_the_summary() {
        let s = summarize(vec![1_000; 2000], 0, Duration::from_secs(1));
        let t = Throughput::new(&s, Some(0.5));
        assert_eq!(t.server_cpu_us_per_op, Some(250.0));
        assert_eq!(t.ops_per_sec, 2000.0);
        let none = Throughput::new(&summarize(vec![], 0, Duration::from_secs(1)), Some(0.5));
        assert_eq!(none.server_cpu_us_per_op, None);
    }

    #[test]
    fn rounding_keeps_non_finite_values() {
        assert_eq!(round(1.23456, 2), 1.23);
        assert!(round(f64::NAN, 2).is_nan());
    }
}
