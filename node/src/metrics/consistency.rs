//! Consistency check metrics: the checks a shard leader ran, by outcome, and the replicas it
//! found diverged.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::types::GroupId;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub group: String,
    /// `consistent`, `diverged`, `undecided` or `incomplete`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    pub group: String,
}

#[derive(Clone)]
pub struct ConsistencyMetrics {
    pub checks: Family<CheckLabels, Counter>,
    pub diverged: Family<GroupLabels, Counter>,
}

impl ConsistencyMetrics {
    pub fn register(registry: &mut Registry) -> ConsistencyMetrics {
        let metrics = ConsistencyMetrics {
            checks: Family::default(),
            diverged: Family::default(),
        };
        registry.register(
            "consistency_checks",
            "Consistency checks this node ran as shard leader, by outcome (consistent: every \
             replica compared had the same digest; diverged: some differed from a majority; \
             undecided: digests differed without a majority; incomplete: fewer than two \
             replicas could be compared)",
            metrics.checks.clone(),
        );
        registry.register(
            "consistency_replicas_diverged",
            "Replicas this node, as shard leader, found to differ from the other replicas (each \
             is stopped and replaced)",
            metrics.diverged.clone(),
        );
        metrics
    }

    pub fn checked(&self, gid: GroupId, outcome: &'static str) {
        self.checks
            .get_or_create(&CheckLabels {
                group: gid.to_string(),
                outcome,
            })
            .inc();
    }

    pub fn found_diverged(&self, gid: GroupId, replicas: usize) {
        self.diverged
            .get_or_create(&GroupLabels {
                group: gid.to_string(),
            })
            .inc_by(replicas as u64);
    }
}
