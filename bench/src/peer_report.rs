//! The rows that compare Flotilla with PostgreSQL (queries, puts with indexes, transactions):
//! one row per workload, client count and client mode, printed as a second table. Pure.

use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::ratio;
use crate::throughput::{Throughput, round};

/// How the workers of a row reach the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientMode {
    /// One client (Flotilla) or one connection (PostgreSQL, pipelining) shared by every worker.
    Shared,
    /// A client or connection of its own for each worker.
    PerWorker,
}

impl ClientMode {
    pub fn name(self) -> &'static str {
        match self {
            ClientMode::Shared => "shared",
            ClientMode::PerWorker => "per-worker",
        }
    }
}

/// One workload at one client count and client mode, on Flotilla and on PostgreSQL.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerRow {
    /// `queries`, `indexes` or `transactions`.
    pub part: String,
    pub workload: String,
    pub clients: usize,
    pub mode: ClientMode,
    pub flotilla: Option<Throughput>,
    pub postgresql: Option<Throughput>,
    /// Flotilla ops/s ÷ PostgreSQL ops/s.
    pub ratio: Option<f64>,
    /// What the row cannot say by itself (e.g. why a side is missing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl PeerRow {
    pub fn new(
        part: &str,
        workload: &str,
        clients: usize,
        mode: ClientMode,
        flotilla: Option<Throughput>,
        postgresql: Option<Throughput>,
    ) -> PeerRow {
        let r = match (&flotilla, &postgresql) {
            (Some(f), Some(p)) => ratio(f.ops_per_sec, p.ops_per_sec).map(|r| round(r, 2)),
            _ => None,
        };
        PeerRow {
            part: part.to_string(),
            workload: workload.to_string(),
            clients,
            mode,
            flotilla,
            postgresql,
            ratio: r,
            note: None,
        }
    }

    pub fn with_note(mut self, note: impl Into<String>) -> PeerRow {
        self.note = Some(note.into());
        self
    }
}

/// The comparison table of `rows`, with a line per note.
pub fn table(rows: &[PeerRow]) -> String {
    let mut out = String::new();
    if rows.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "Flotilla (3 nodes, linearizable) vs PostgreSQL (1 server, synchronous commit)"
    );
    let _ = writeln!(
        out,
        "{:<26} {:>7} {:<10} | {:>10} {:>8} {:>8} {:>7} | {:>10} {:>8} {:>8} {:>7} | {:>6}",
        "workload",
        "clients",
        "mode",
        "flotilla/s",
        "p50 ms",
        "p99 ms",
        "retries",
        "pg/s",
        "p50 ms",
        "p99 ms",
        "retries",
        "ratio"
    );
    let _ = writeln!(out, "{}", "-".repeat(124));
    let cells = |t: &Option<Throughput>| match t {
        Some(t) => format!(
            "{:>10.0} {:>8.2} {:>8.2} {:>7}",
            t.ops_per_sec,
            t.p50_ms,
            t.p99_ms,
            t.retries.map_or("-".to_string(), |r| r.to_string())
        ),
        None => format!("{:>10} {:>8} {:>8} {:>7}", "-", "-", "-", "-"),
    };
    for row in rows {
        let _ = writeln!(
            out,
            "{:<26} {:>7} {:<10} | {} | {} | {:>6}",
            row.workload,
            row.clients,
            row.mode.name(),
            cells(&row.flotilla),
            cells(&row.postgresql),
            row.ratio.map_or("-".to_string(), |r| format!("{r:.2}"))
        );
    }
    let _ = writeln!(out, "ratio = Flotilla ops/s / PostgreSQL ops/s");
    for row in rows.iter().filter(|r| r.note.is_some()) {
        let _ = writeln!(
            out,
            "{} c{} {}: {}",
            row.workload,
            row.clients,
            row.mode.name(),
            row.note.as_deref().unwrap_or_default()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(ops_per_sec: f64, retries: Option<u64>) -> Throughput {
        Throughput {
            ops_per_sec,
            p50_ms: 1.0,
            p99_ms: 2.0,
            ops: 100,
            errors: 0,
            server_cpu_us_per_op: None,
            leader: None,
            retries,
        }
    }

    #[test]
    fn the_ratio_needs_both_sides() {
        let row = PeerRow::new(
            "queries",
            "indexed equality",
            64,
            ClientMode::Shared,
            Some(tp(3000.0, None)),
            Some(tp(2000.0, None)),
        );
        assert_eq!(row.ratio, Some(1.5));
        let row = PeerRow::new(
            "transactions",
            "transfer, 2 shards",
            64,
            ClientMode::Shared,
            Some(tp(3000.0, Some(4))),
            None,
        );
        assert_eq!(row.ratio, None);
    }

    #[test]
    fn the_table_lines_up_and_shows_notes_and_retries() {
        let rows = vec![
            PeerRow::new(
                "queries",
                "indexed equality",
                64,
                ClientMode::PerWorker,
                Some(tp(3000.0, None)),
                Some(tp(2000.0, None)),
            ),
            PeerRow::new(
                "transactions",
                "transfer, 2 shards",
                64,
                ClientMode::Shared,
                Some(tp(900.0, Some(17))),
                None,
            )
            .with_note("PostgreSQL runs one transaction per connection at a time"),
        ];
        let t = table(&rows);
        assert!(t.contains("per-worker"), "{t}");
        assert!(t.contains("1.50"), "{t}");
        assert!(t.contains(" 17 "), "{t}");
        assert!(t.contains("one transaction per connection"), "{t}");
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[1].find('|'), lines[3].find('|'), "{t}");
        assert_eq!(lines[1].rfind('|'), lines[4].rfind('|'), "{t}");
        let v = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!(v["mode"], "per-worker");
        assert_eq!(v["postgresql"]["ops_per_sec"], 2000.0);
    }
}
