//! One system's result in one measured window: throughput, latency, the server CPU it took,
//! retries; shared by the etcd rows and the PostgreSQL rows. Pure.

use serde::Serialize;

use crate::stats::Summary;

/// One system's result in a throughput row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Throughput {
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub ops: u64,
    pub errors: u64,
    /// CPU time of the three server processes per operation, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_op: Option<f64>,
    /// Flotilla only: what the leader's own metrics say about the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<LeaderProfile>,
    /// Transactions: attempts that conflicted and were run again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u64>,
}

/// Where a Flotilla leader's write time went in a window (from its Prometheus metrics).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeaderProfile {
    /// Durable (fsync) commits of the storage writer per second.
    pub fsync_commits_per_sec: f64,
    /// Mean time of one durable commit.
    pub fsync_commit_ms: f64,
    /// Mean time from proposal to apply of one write on the leader.
    pub proposal_ms: f64,
}

impl Throughput {
    pub fn new(s: &Summary, server_cpu_secs: Option<f64>) -> Throughput {
        Throughput {
            ops_per_sec: round(s.ops_per_sec, 1),
            p50_ms: round(s.p50_ms, 3),
            p99_ms: round(s.p99_ms, 3),
            ops: s.ops,
            errors: s.errors,
            server_cpu_us_per_op: server_cpu_secs
                .filter(|_| s.ops > 0)
                .map(|cpu| round(cpu * 1e6 / s.ops as f64, 1)),
            leader: None,
            retries: None,
        }
    }
}

/// Rounds to `digits` decimals (keeps the JSON readable).
pub fn round(x: f64, digits: i32) -> f64 {
    if !x.is_finite() {
        return x;
    }
    let f = 10f64.powi(digits);
    (x * f).round() / f
}
