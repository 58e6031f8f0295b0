//! The topology core's inputs, built from what the meta leader has: the replicated meta state,
//! the meta group's membership and heartbeats, and the shard leaders' replication progress.
//! Pure conversions, so they are tested without a cluster.

use std::time::Duration;

use flotilla_model::ShardStatus;

use crate::meta::{self, MetaState};
use crate::topology::{DatabasePolicy, GroupProgress, Policy};
use crate::types::GroupId;

/// The node settings the policy is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub alive_within: Duration,
    pub meta_voters: usize,
    pub rehab_after: Duration,
    pub promotion_lag: u64,
    pub rehab_lag: u64,
}

/// The policy of every database, from its record and the node's settings.
pub fn policy(state_: &MetaState, s: &Settings) -> Policy {
    let base = DatabasePolicy {
        replication_factor: 3,
        replace_after: Some(Duration::from_millis(meta::DEFAULT_REPLACE_AFTER_MS)),
        promotion_lag: s.promotion_lag,
        rehab_lag: s.rehab_lag.max(s.promotion_lag),
        rehab_after: s.rehab_after,
        rebalance: false,
        required_labels: Default::default(),
    };
    let databases = state_
        .databases
        .iter()
        .map(|(name, db)| {
            (
                name.clone(),
                DatabasePolicy {
                    replication_factor: db.replication_factor as usize,
                    replace_after: db.replace_after_ms.map(Duration::from_millis),
                    rebalance: db.auto_rebalance,
                    required_labels: db.placement.clone(),
                    ..base.clone()
                },
            )
        })
        .collect();
    Policy {
        alive_within: s.alive_within,
        meta_voters: s.meta_voters,
        meta_replace_after: s.rehab_after,
        rebalance_requested: state_.rebalance_requested,
        max_rebalance_moves: 2,
        databases,
        default_database: base,
    }
}

/// A shard's progress, when `status` came from its leader (only a leader knows how far each
/// replica is); `None` otherwise, so that nothing is promoted on a guess.
pub fn shard_progress(status: &ShardStatus) -> Option<(GroupId, GroupProgress)> {
    let leader = status.leader_id?;
    let from_leader = status
        .replicas
        .iter()
        .any(|r| r.node_id == leader && r.matched_index > 0);
    if !from_leader {
        return None;
    }
    let last_index = status
        .replicas
        .iter()
        .map(|r| r.matched_index + r.lag)
        .max()
        .unwrap_or(0);
    Some((
        status.group_id,
        GroupProgress {
            leader: Some(leader),
            last_index,
            matched: status
                .replicas
                .iter()
                .map(|r| (r.node_id, r.matched_index))
                .collect(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use flotilla_model::ReplicaStatus;

    use super::*;
    use crate::meta::{DatabaseRecord, ReplicaMove, ReplicaState, ShardRecord};
    use crate::types::{NodeAddr, NodeId};

    fn settings() -> Settings {
        Settings {
            alive_within: Duration::from_secs(2),
            meta_voters: 3,
            rehab_after: Duration::from_secs(60),
            promotion_lag: 100,
            rehab_lag: 10,
        }
    }

    fn state_with_one_database() -> MetaState {
        let mut st = MetaState::default();
        for n in [1, 2, 3, 4] {
            st.nodes.insert(n, NodeAddr::default());
        }
        st.labels
            .insert(4, BTreeMap::from([("zone".into(), "b".into())]));
        st.draining.insert(3);
        let mut shard = ShardRecord::new(7, vec![1, 2, 3, 4]);
        shard.states.insert(3, ReplicaState::Rehab);
        shard.since_ms.insert(3, 5_000);
        shard.states.insert(4, ReplicaState::Promotable);
        shard.since_ms.insert(4, 9_000);
        shard.replacement = Some(ReplicaMove { old: 3, new: 4 });
        st.databases.insert(
            "app".into(),
            DatabaseRecord {
                name: "app".into(),
                replication_factor: 3,
                shards: vec![shard],
                replace_after_ms: None,
                placement: BTreeMap::from([("zone".into(), "b".into())]),
                auto_rebalance: true,
                collections: Default::default(),
            },
        );
        st.rebalance_requested = true;
        st
    }

    #[test]
    fn the_topology_carries_states_times_moves_labels_and_draining() {
        let st = state_with_one_database();
        let topo =
            crate::topology::from_meta(&st, &BTreeSet::from([1, 2, 3]), &BTreeSet::from([4]));
        let shard = &topo.databases["app"].shards[0];
        assert_eq!(shard.group, 7);
        let got: Vec<(NodeId, ReplicaState, u64)> = shard
            .replicas
            .iter()
            .map(|r| (r.node, r.state, r.since.as_millis() as u64))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, ReplicaState::Member, 0),
                (2, ReplicaState::Member, 0),
                (3, ReplicaState::Rehab, 5_000),
                (4, ReplicaState::Promotable, 9_000),
            ]
        );
        assert_eq!(shard.replacement, Some(ReplicaMove { old: 3, new: 4 }));
        assert!(topo.nodes[&3].draining && !topo.nodes[&1].draining);
        assert_eq!(topo.nodes[&4].labels["zone"], "b");
        assert_eq!(topo.meta.learners, BTreeSet::from([4]));
    }

    #[test]
    fn the_policy_follows_each_database_record() {
        let st = state_with_one_database();
        let p = policy(&st, &settings());
        let db = p.database("app");
        assert_eq!(db.replication_factor, 3);
        assert_eq!(db.replace_after, None);
        assert!(db.rebalance);
        assert_eq!(db.required_labels["zone"], "b");
        // Rehab lag is never below the promotion lag, so a replica cannot flap.
        assert_eq!(db.rehab_lag, 100);
        assert!(p.rebalance_requested);
        assert_eq!(
            p.database("other").replace_after,
            Some(Duration::from_secs(15 * 60))
        );
    }

    fn replica(node_id: NodeId, lag: u64, matched_index: u64) -> ReplicaStatus {
        ReplicaStatus {
            node_id,
            client_addr: String::new(),
            state: ReplicaState::Member,
            lag,
            matched_index,
            snapshot_bytes_sent: 0,
            stopped: None,
            broken: false,
        }
    }

    fn shard(leader_id: Option<NodeId>, replicas: Vec<ReplicaStatus>) -> ShardStatus {
        ShardStatus {
            shard: 0,
            group_id: 7,
            leader_id,
            term: 1,
            commit_index: 0,
            replicas,
            replacement: None,
        }
    }

    #[test]
    fn progress_is_taken_only_from_a_shard_leader() {
        let from_leader = shard(
            Some(1),
            vec![replica(1, 0, 50), replica(2, 5, 45), replica(4, 50, 0)],
        );
        let (gid, p) = shard_progress(&from_leader).expect("leader's view");
        assert_eq!(gid, 7);
        assert_eq!(p.lag(2), Some(5));
        assert_eq!(p.lag(4), Some(50));
        assert_eq!(p.lag(1), Some(0));
        assert_eq!(p.lag(9), None);
        // A follower's view has no progress (lags read 0): it must not count as caught up.
        let from_follower = shard(Some(1), vec![replica(1, 0, 0), replica(2, 0, 0)]);
        assert_eq!(shard_progress(&from_follower), None);
        let leaderless = shard(None, vec![replica(1, 0, 50)]);
        assert_eq!(shard_progress(&leaderless), None);
    }
}
