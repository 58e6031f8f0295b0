//! Transaction metrics: commits (by path: one shard in one entry, or two-phase), aborts by
//! reason, recoveries of transactions whose coordinator was gone, commit latency, and the
//! records forgotten by the sweep.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::latency_histogram;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    /// `one_shard` (one Raft entry), `two_phase`, or `read_only`.
    pub path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `conflict`, `version_mismatch`, `timeout`, `rollback`, `recovered` or `error`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `committed` or `aborted`: the decision the recovery found or wrote.
    pub outcome: &'static str,
}

#[derive(Clone)]
pub struct TxnMetrics {
    pub commits: Family<PathLabels, Counter>,
    pub aborts: Family<ReasonLabels, Counter>,
    pub recoveries: Family<OutcomeLabels, Counter>,
    pub commit_seconds: Family<PathLabels, Histogram>,
    pub records_forgotten: Counter,
}

impl TxnMetrics {
    pub fn register(registry: &mut Registry) -> TxnMetrics {
        let metrics = TxnMetrics {
            commits: Family::default(),
            aborts: Family::default(),
            recoveries: Family::default(),
            commit_seconds: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            records_forgotten: Counter::default(),
        };
        registry.register(
            "txn_commits",
            "Transactions committed, by path (one_shard, two_phase, read_only)",
            metrics.commits.clone(),
        );
        registry.register(
            "txn_aborts",
            "Transactions aborted, by reason",
            metrics.aborts.clone(),
        );
        registry.register(
            "txn_recoveries",
            "Intents of transactions whose coordinator was gone, resolved from the record",
            metrics.recoveries.clone(),
        );
        registry.register(
            "txn_commit_duration_seconds",
            "Time from a commit request to the decision",
            metrics.commit_seconds.clone(),
        );
        registry.register(
            "txn_records_forgotten",
            "Transaction records forgotten by the sweep once no intent could need them",
            metrics.records_forgotten.clone(),
        );
        metrics
    }

    pub fn committed(&self, path: &'static str, seconds: f64) {
        self.commits.get_or_create(&PathLabels { path }).inc();
        self.commit_seconds
            .get_or_create(&PathLabels { path })
            .observe(seconds);
    }

    pub fn aborted(&self, reason: &'static str) {
        self.aborts.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn recovered(&self, committed: bool) {
        let outcome = if committed { "committed" } else { "aborted" };
        self.recoveries
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn forgot(&self) {
        self.records_forgotten.inc();
    }
}
