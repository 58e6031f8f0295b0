//! Prometheus metrics of the node, in the manner of etcd's: per-group Raft state (indexes,
//! proposals committed, applied, pending and failed, leader changes), proposal latency,
//! requests per RPC with their final codes and latency (`rpc`, tower layers on the servers),
//! storage timings (fsync, snapshots, compaction) and the documents per shard (`storage`),
//! storage file sizes and replica states per database (read from the node at each scrape),
//! and the standard `process_*` metrics (`process`).

mod consistency;
mod process;
mod rpc;
mod storage;
mod txn;

pub use consistency::ConsistencyMetrics;
pub use rpc::{GrpcLayer, RequestLayer, RequestMetrics};
pub use storage::StorageFamilies;
pub use txn::TxnMetrics;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use std::path::Path;
use std::sync::Arc;

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;

use crate::consensus::TypeConfig;
use crate::meta::{MetaState, ReplicaState};
use crate::types::{GroupId, NodeId};

type Labels = Vec<(String, String)>;

pub fn group_labels(gid: GroupId) -> Labels {
    vec![("group".to_string(), gid.to_string())]
}

pub struct Metrics {
    registry: Registry,
    /// The `process_*` metrics, which carry no `flotilla_` prefix.
    process: Registry,
    pub term: Family<Labels, Gauge>,
    pub commit_index: Family<Labels, Gauge>,
    pub applied_index: Family<Labels, Gauge>,
    pub last_log_index: Family<Labels, Gauge>,
    pub snapshot_index: Family<Labels, Gauge>,
    pub is_leader: Family<Labels, Gauge>,
    pub leader_changes: Family<Labels, Counter>,
    pub hibernating: Family<Labels, Gauge>,
    pub takeovers: Family<Labels, Counter>,
    pub proposal_seconds: Family<Labels, Histogram>,
    pub commit_seconds: Histogram,
    pub proposals_pending: Family<Labels, Gauge>,
    pub proposals_committed: Family<Labels, Counter>,
    pub proposals_applied: Family<Labels, Counter>,
    pub proposals_failed: Family<Labels, Counter>,
    pub storage: StorageFamilies,
    pub requests: RequestMetrics,
    pub storage_file_bytes: Family<Labels, Gauge>,
    pub replicas: Family<Labels, Gauge>,
    pub replication_factor: Family<Labels, Gauge>,
    pub shards_under_replicated: Family<Labels, Gauge>,
    pub shards_quorum_at_risk: Family<Labels, Gauge>,
    pub txn: TxnMetrics,
    pub consistency: ConsistencyMetrics,
}

pub(crate) use crate::store::measure::latency_histogram;

/// Why a proposal failed, the `reason` of `raft_proposals_failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProposalFailure {
    /// The leader had not heard from a quorum lately, so it did not propose.
    NoQuorum,
    /// Not committed within the request timeout.
    Timeout,
    /// The leadership moved while the proposal was in flight.
    LeaderChanged,
    /// The group stopped (a storage error turned it fatal) or refused the proposal.
    GroupStopped,
    /// A membership change the group refused.
    Rejected,
}

impl ProposalFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            ProposalFailure::NoQuorum => "no_quorum",
            ProposalFailure::Timeout => "timeout",
            ProposalFailure::LeaderChanged => "leader_changed",
            ProposalFailure::GroupStopped => "group_stopped",
            ProposalFailure::Rejected => "rejected",
        }
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("flotilla");
        let term = Family::<Labels, Gauge>::default();
        let commit_index = Family::<Labels, Gauge>::default();
        let applied_index = Family::<Labels, Gauge>::default();
        let last_log_index = Family::<Labels, Gauge>::default();
        let snapshot_index = Family::<Labels, Gauge>::default();
        let is_leader = Family::<Labels, Gauge>::default();
        let leader_changes = Family::<Labels, Counter>::default();
        let hibernating = Family::<Labels, Gauge>::default();
        let takeovers = Family::<Labels, Counter>::default();
        let proposal_seconds = Family::<Labels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let commit_seconds = latency_histogram();
        let proposals_pending = Family::<Labels, Gauge>::default();
        let proposals_committed = Family::<Labels, Counter>::default();
        let proposals_applied = Family::<Labels, Counter>::default();
        let proposals_failed = Family::<Labels, Counter>::default();
        let storage = StorageFamilies::register(&mut registry, commit_seconds.clone());
        let requests = RequestMetrics::register(&mut registry);
        let txn = TxnMetrics::register(&mut registry);
        let consistency = ConsistencyMetrics::register(&mut registry);
        let storage_file_bytes = Family::<Labels, Gauge>::default();
        let replicas = Family::<Labels, Gauge>::default();
        let replication_factor = Family::<Labels, Gauge>::default();
        let shards_under_replicated = Family::<Labels, Gauge>::default();
        let shards_quorum_at_risk = Family::<Labels, Gauge>::default();
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
            "raft_snapshot_index",
            "Highest log index the latest snapshot covers",
            snapshot_index.clone(),
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
            "Time to commit one batch of Raft log appends durably, from the start of its \
             transaction to the end of its fsync (storage_fsync_duration_seconds: the fsync alone)",
            commit_seconds.clone(),
        );
        registry.register(
            "raft_proposals_pending",
            "Log entries the group's leader holds that are not applied yet (0 on followers)",
            proposals_pending.clone(),
        );
        registry.register(
            "raft_proposals_committed",
            "Log entries this node saw committed in the group",
            proposals_committed.clone(),
        );
        registry.register(
            "raft_proposals_applied",
            "Log entries this node applied to the group's state machine",
            proposals_applied.clone(),
        );
        registry.register(
            "raft_proposals_failed",
            "Writes this node, leading the group, failed to commit, by reason (no_quorum, \
             timeout, leader_changed, group_stopped, rejected)",
            proposals_failed.clone(),
        );
        registry.register_with_unit(
            "storage_file_size",
            "Size of each storage file (flotilla.redb: Raft logs; state.redb: state machines)",
            prometheus_client::registry::Unit::Bytes,
            storage_file_bytes.clone(),
        );
        registry.register(
            "database_replicas",
            "Replicas of each database's shards, by replica state (Member, Promotable, Rehab)",
            replicas.clone(),
        );
        registry.register(
            "database_replication_factor",
            "Replicas each shard of the database should have as Members",
            replication_factor.clone(),
        );
        registry.register(
            "database_shards_under_replicated",
            "Shards of the database with fewer Members than its replication factor",
            shards_under_replicated.clone(),
        );
        registry.register(
            "database_shards_quorum_at_risk",
            "Shards with a voter down whose majority one more failure would lose",
            shards_quorum_at_risk.clone(),
        );
        let mut process = Registry::default();
        process.register_collector(Box::new(process::ProcessCollector));
        Metrics {
            registry,
            process,
            term,
            commit_index,
            applied_index,
            last_log_index,
            snapshot_index,
            is_leader,
            leader_changes,
            hibernating,
            takeovers,
            proposal_seconds,
            commit_seconds,
            proposals_pending,
            proposals_committed,
            proposals_applied,
            proposals_failed,
            storage,
            requests,
            storage_file_bytes,
            replicas,
            replication_factor,
            shards_under_replicated,
            shards_quorum_at_risk,
            txn,
            consistency,
        }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoded = encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &self.process))
            .and_then(|()| encode_eof(&mut out));
        if encoded.is_err() {
            out.clear();
        }
        out
    }

    /// The exposition in Prometheus' text format 0.0.4, for scrapers that do not ask for
    /// OpenMetrics (and `promtool check metrics`): a counter's HELP and TYPE name its
    /// `_total` series, and there are no UNIT or EOF lines.
    pub fn render_text(&self) -> String {
        to_text_format(&self.render())
    }

    /// Counts a write to group `gid` that failed for `why`.
    pub fn proposal_failed(&self, gid: GroupId, why: ProposalFailure) {
        let mut labels = group_labels(gid);
        labels.push(("reason".to_owned(), why.as_str().to_owned()));
        self.proposals_failed.get_or_create(&labels).inc();
    }

    /// Reads what is measured at scrape time: the sizes of the storage files in `data_dir`,
    /// the replica states of every database in the meta state and the documents of each
    /// shard here (`documents`: group and count).
    pub fn observe(&self, data_dir: &Path, meta_state: &MetaState, documents: &[(GroupId, u64)]) {
        for file in ["flotilla.redb", "state.redb"] {
            if let Ok(meta) = std::fs::metadata(data_dir.join(file)) {
                let labels = vec![("file".to_owned(), file.to_owned())];
                let bytes = i64::try_from(meta.len()).unwrap_or(i64::MAX);
                self.storage_file_bytes.get_or_create(&labels).set(bytes);
            }
        }
        self.observe_databases(meta_state);
        self.storage.observe_documents(meta_state, documents);
    }

    fn observe_databases(&self, meta: &MetaState) {
        // Dropped databases must not linger: every family is rebuilt from the meta state.
        for family in [
            &self.replicas,
            &self.replication_factor,
            &self.shards_under_replicated,
            &self.shards_quorum_at_risk,
        ] {
            family.clear();
        }
        for (name, database) in &meta.databases {
            let labels = vec![("database".to_owned(), name.clone())];
            let (mut under, mut at_risk) = (0, 0);
            let mut counts = [0_i64; ReplicaState::ALL.len()];
            for shard in &database.shards {
                let states: Vec<ReplicaState> = shard
                    .replicas
                    .iter()
                    .filter_map(|node| shard.state_of(*node))
                    .collect();
                for state in &states {
                    if let Some(i) = ReplicaState::ALL.iter().position(|s| s == state) {
                        counts[i] += 1;
                    }
                }
                let members = states
                    .iter()
                    .filter(|s| **s == ReplicaState::Member)
                    .count();
                let voters = states.iter().filter(|s| s.is_voter()).count();
                under += i64::from(members < database.replication_factor as usize);
                at_risk += i64::from(members < voters && members <= voters / 2 + 1);
            }
            for (state, count) in ReplicaState::ALL.iter().zip(counts) {
                let mut labels = labels.clone();
                labels.push(("state".to_owned(), state.to_string()));
                self.replicas.get_or_create(&labels).set(count);
            }
            self.replication_factor
                .get_or_create(&labels)
                .set(i64::from(database.replication_factor));
            self.shards_under_replicated
                .get_or_create(&labels)
                .set(under);
            self.shards_quorum_at_risk
                .get_or_create(&labels)
                .set(at_risk);
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn to_text_format(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let described = ["# HELP ", "# TYPE "].into_iter().find_map(|p| {
            let (name, rest) = line.strip_prefix(p)?.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {rest}"))
        });
        out.push_str(described.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Shortest time between two updates of a group's metrics: a busy group changes its Raft
/// metrics on every write, and Prometheus scrapes far less often.
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// A group's committed and applied indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    committed: u64,
    applied: u64,
}

impl Progress {
    /// Entries committed and applied since `before` (none for an index that went back).
    fn since(self, before: Progress) -> (u64, u64) {
        (
            self.committed.saturating_sub(before.committed),
            self.applied.saturating_sub(before.applied),
        )
    }
}

/// Mirrors a group's Raft metrics into Prometheus.
pub async fn report_metrics(
    metrics: Arc<Metrics>,
    gid: GroupId,
    mut rx: openraft::alias::WatchReceiverOf<TypeConfig, openraft::RaftMetrics<TypeConfig>>,
) {
    let labels = group_labels(gid);
    let mut leader: Option<NodeId> = None;
    // Indexes at the last report; the first report only sets them, so that a restarted node
    // does not count the entries it committed before.
    let mut progress: Option<Progress> = None;
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
            g.snapshot_index
                .get_or_create(&labels)
                .set(m.snapshot.as_ref().map_or(0, |l| l.index as i64));
            let leading = m.state == ServerState::Leader;
            g.is_leader.get_or_create(&labels).set(i64::from(leading));
            let applied = m.last_applied.as_ref().map_or(0, |l| l.index);
            let committed = m.local_committed.as_ref().map_or(0, |l| l.index);
            let now = Progress { committed, applied };
            if let Some(before) = progress {
                let (c, a) = now.since(before);
                g.proposals_committed.get_or_create(&labels).inc_by(c);
                g.proposals_applied.get_or_create(&labels).inc_by(a);
            }
            progress = Some(now);
            let pending = m.last_log_index.unwrap_or(0).saturating_sub(applied);
            g.proposals_pending.get_or_create(&labels).set(if leading {
                pending as i64
            } else {
                0
            });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{DatabaseRecord, ShardRecord};

    fn shard(group_id: GroupId, states: &[(NodeId, ReplicaState)]) -> ShardRecord {
        let mut shard = ShardRecord::new(group_id, states.iter().map(|(n, _)| *n).collect());
        shard.states = states.iter().copied().collect();
        shard
    }

    #[test]
    fn replica_states_under_replication_and_quorum_risk_are_counted_per_database() {
        use ReplicaState::{Member, Promotable, Rehab};
        let mut meta = MetaState::default();
        meta.databases.insert(
            "orders".to_owned(),
            DatabaseRecord {
                name: "orders".to_owned(),
                replication_factor: 3,
                shards: vec![
                    shard(1, &[(1, Member), (2, Member), (3, Member)]),
                    // One voter down: a second failure would lose the majority.
                    shard(2, &[(1, Member), (2, Member), (3, Rehab), (4, Promotable)]),
                ],
                replace_after_ms: None,
                placement: Default::default(),
                auto_rebalance: false,
                collections: Default::default(),
            },
        );
        let metrics = Metrics::new();
        metrics.observe_databases(&meta);
        let text = metrics.render_text();
        for expected in [
            r#"flotilla_database_replicas{database="orders",state="Member"} 5"#,
            r#"flotilla_database_replicas{database="orders",state="Rehab"} 1"#,
            r#"flotilla_database_replicas{database="orders",state="Promotable"} 1"#,
            r#"flotilla_database_shards_under_replicated{database="orders"} 1"#,
            r#"flotilla_database_shards_quorum_at_risk{database="orders"} 1"#,
            r#"flotilla_database_replication_factor{database="orders"} 3"#,
        ] {
            assert!(text.contains(expected), "no {expected} in\n{text}");
        }
        // A dropped database leaves no series behind.
        metrics.observe_databases(&MetaState::default());
        assert!(!metrics.render_text().contains("orders"));
    }

    #[test]
    fn committed_and_applied_entries_count_what_the_indexes_moved() {
        let at = |committed, applied| Progress { committed, applied };
        assert_eq!(at(10, 7).since(at(4, 4)), (6, 3));
        assert_eq!(at(10, 10).since(at(10, 10)), (0, 0));
        // An index never goes back; if it did, nothing would be counted.
        assert_eq!(at(3, 3).since(at(10, 10)), (0, 0));
    }

    #[test]
    fn failed_proposals_are_counted_by_group_and_reason() {
        let metrics = Metrics::new();
        metrics.proposal_failed(7, ProposalFailure::GroupStopped);
        metrics.proposal_failed(7, ProposalFailure::GroupStopped);
        metrics.proposal_failed(7, ProposalFailure::Timeout);
        let text = metrics.render_text();
        for expected in [
            r#"flotilla_raft_proposals_failed_total{group="7",reason="group_stopped"} 2"#,
            r#"flotilla_raft_proposals_failed_total{group="7",reason="timeout"} 1"#,
        ] {
            assert!(text.contains(expected), "no {expected} in\n{text}");
        }
    }

    #[test]
    fn documents_are_reported_per_database_shard_held_here() {
        let mut meta = MetaState::default();
        meta.databases.insert(
            "orders".to_owned(),
            DatabaseRecord {
                name: "orders".to_owned(),
                replication_factor: 1,
                shards: vec![shard(11, &[]), shard(12, &[]), shard(13, &[])],
                replace_after_ms: None,
                placement: Default::default(),
                auto_rebalance: false,
                collections: Default::default(),
            },
        );
        let metrics = Metrics::new();
        let dir = std::env::temp_dir();
        // Shard 1 is not held here; group 99 is no shard of any database.
        metrics.observe(&dir, &meta, &[(11, 5), (13, 0), (99, 3)]);
        let text = metrics.render_text();
        for expected in [
            r#"flotilla_shard_documents{database="orders",shard="0"} 5"#,
            r#"flotilla_shard_documents{database="orders",shard="2"} 0"#,
        ] {
            assert!(text.contains(expected), "no {expected} in\n{text}");
        }
        assert!(!text.contains(r#"shard="1""#), "{text}");
        metrics.observe(&dir, &MetaState::default(), &[(11, 5)]);
        assert!(!metrics.render_text().contains("flotilla_shard_documents{"));
    }

    #[test]
    fn the_text_format_names_each_counter_by_its_total_series() {
        let text = to_text_format(
            "# HELP x_requests Requests.\n# TYPE x_requests counter\nx_requests_total 1\n\
             # HELP x_size Size.\n# TYPE x_size gauge\n# UNIT x_size bytes\nx_size 2\n# EOF\n",
        );
        assert_eq!(
            text,
            "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\n\
             x_requests_total 1\n# HELP x_size Size.\n# TYPE x_size gauge\nx_size 2\n"
        );
    }
}
