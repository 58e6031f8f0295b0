//! Prometheus metrics of the node: per-group Raft state, proposal and storage commit latency.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use std::sync::Arc;

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;

use crate::consensus::TypeConfig;
use crate::types::{GroupId, NodeId};

type Labels = Vec<(String, String)>;

pub fn group_labels(gid: GroupId) -> Labels {
    vec![("group".to_string(), gid.to_string())]
}

pub struct Metrics {
    registry: Registry,
    pub term: Family<Labels, Gauge>,
    pub commit_index: Family<Labels, Gauge>,
    pub applied_index: Family<Labels, Gauge>,
    pub last_log_index: Family<Labels, Gauge>,
    pub is_leader: Family<Labels, Gauge>,
    pub leader_changes: Family<Labels, Counter>,
    pub hibernating: Family<Labels, Gauge>,
    pub takeovers: Family<Labels, Counter>,
    pub proposal_seconds: Family<Labels, Histogram>,
    pub commit_seconds: Histogram,
    pub requests: Family<Labels, Counter>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("flotilla");
        let term = Family::<Labels, Gauge>::default();
        let commit_index = Family::<Labels, Gauge>::default();
        let applied_index = Family::<Labels, Gauge>::default();
        let last_log_index = Family::<Labels, Gauge>::default();
        let is_leader = Family::<Labels, Gauge>::default();
        let leader_changes = Family::<Labels, Counter>::default();
        let hibernating = Family::<Labels, Gauge>::default();
        let takeovers = Family::<Labels, Counter>::default();
        let proposal_seconds = Family::<Labels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let commit_seconds = latency_histogram();
        let requests = Family::<Labels, Counter>::default();
        registry.register("raft_term", "Current Raft term", term.clone());
        registry.register(
            "raft_commit_index",
            "Highest committed log index",
            commit_index.clone(),
        );
        registry.register(
            "raft_applied_index",
            "Highest applied log index",
            applied_index.clone(),
        );
        registry.register(
            "raft_last_log_index",
            "Highest log index stored",
            last_log_index.clone(),
        );
        registry.register(
            "raft_is_leader",
            "1 when this node leads the group",
            is_leader.clone(),
        );
        registry.register(
            "raft_leader_changes",
            "Leader changes observed",
            leader_changes.clone(),
        );
        registry.register(
            "raft_hibernating",
            "1 while the group is idle and its heartbeats and election timer are stopped",
            hibernating.clone(),
        );
        registry.register(
            "raft_takeovers",
            "Elections this node called at once because the leader's node was gone",
            takeovers.clone(),
        );
        registry.register(
            "raft_proposal_duration_seconds",
            "Time from proposal to apply",
            proposal_seconds.clone(),
        );
        registry.register(
            "storage_commit_duration_seconds",
            "Durable (fsync) commit time of one write batch",
            commit_seconds.clone(),
        );
        registry.register(
            "grpc_requests",
            "Client requests by method and code",
            requests.clone(),
        );
        Metrics {
            registry,
            term,
            commit_index,
            applied_index,
            last_log_index,
            is_leader,
            leader_changes,
            hibernating,
            takeovers,
            proposal_seconds,
            commit_seconds,
            requests,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Shortest time between two updates of a group's metrics: a busy group changes its Raft
/// metrics on every write, and Prometheus scrapes far less often.
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Mirrors a group's Raft metrics into Prometheus.
pub async fn report_metrics(
    metrics: Arc<Metrics>,
    gid: GroupId,
    mut rx: openraft::alias::WatchReceiverOf<TypeConfig, openraft::RaftMetrics<TypeConfig>>,
) {
    let labels = group_labels(gid);
    let mut leader: Option<NodeId> = None;
    loop {
        {
            let m = rx.borrow_watched();
            let g = &metrics;
            g.term.get_or_create(&labels).set(m.current_term as i64);
            g.commit_index.get_or_create(&labels).set(
                m.local_committed
                    .as_ref()
                    .map(|l| l.index as i64)
                    .unwrap_or(0),
            );
            g.applied_index
                .get_or_create(&labels)
                .set(m.last_applied.as_ref().map(|l| l.index as i64).unwrap_or(0));
            g.last_log_index
                .get_or_create(&labels)
                .set(m.last_log_index.unwrap_or(0) as i64);
            g.is_leader
                .get_or_create(&labels)
                .set(i64::from(m.state == ServerState::Leader));
            if m.current_leader != leader {
                if m.current_leader.is_some() {
                    g.leader_changes.get_or_create(&labels).inc();
                }
                leader = m.current_leader;
            }
        }
        tokio::time::sleep(REPORT_EVERY).await;
        if rx.changed().await.is_err() {
            return;
        }
    }
}
