//! What the storage layer measures for the node's metrics: the time of each durable commit
//! (its fsyncs) per file, of the log writer's batch commits, of snapshot builds and installs,
//! and of log compaction (the purge of the entries a snapshot covers). The histograms are
//! registered by `crate::metrics`; the store only observes them.

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// The storage histograms; clones share their counts.
#[derive(Clone, Debug)]
pub struct StorageMetrics {
    /// A batch of log appends, from its transaction's start to its durable commit.
    pub log_commit: Histogram,
    /// Each durable commit (fsync) of the log file, `flotilla.redb`.
    pub log_fsync: Histogram,
    /// Each durable commit (fsync) of the state file, `state.redb`.
    pub state_fsync: Histogram,
    /// Building a snapshot of a group, from reading its state to storing it durably.
    pub snapshot_build: Histogram,
    /// Installing a snapshot received from a leader, durably.
    pub snapshot_install: Histogram,
    /// Purging the log entries a snapshot covers.
    pub log_compaction: Histogram,
}

/// Buckets from 100 µs to about 13 s, doubling.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// Buckets from 1 ms to about 4.5 min, doubling: snapshots of large shards take long.
pub fn snapshot_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 19))
}

impl StorageMetrics {
    /// Histograms no registry exposes (tests, tools).
    pub fn unregistered() -> StorageMetrics {
        StorageMetrics {
            log_commit: latency_histogram(),
            log_fsync: latency_histogram(),
            state_fsync: latency_histogram(),
            snapshot_build: snapshot_histogram(),
            snapshot_install: snapshot_histogram(),
            log_compaction: latency_histogram(),
        }
    }
}

/// Observes the seconds since it was made into its histogram when dropped (also when the
/// measured work fails or its future is dropped).
pub struct Timer<'a> {
    histogram: &'a Histogram,
    started: std::time::Instant,
}

impl<'a> Timer<'a> {
    pub fn start(histogram: &'a Histogram) -> Timer<'a> {
        Timer {
            histogram,
            started: std::time::Instant::now(),
        }
    }
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}
