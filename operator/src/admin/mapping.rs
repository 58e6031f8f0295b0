//! Pure conversions from what the nodes' admin API reports to the operator's view:
//! [`Membership`] for the planners, [`ShardTopology`] for DatabaseGroup status and
//! [`TopologyEvents`] for the Events a DatabaseGroup reports.
//! Nodes are named by their pod (`--name $(POD_NAME)`).

use super::{ShardTopology, TopologyEvent, TopologyEvents};
use crate::crd::{NodeRole, NodeState};
use crate::plan::observed::META_GROUP;
use crate::plan::{MemberNode, Membership, RaftGroup};
use flotilla_client::{
    ClusterEvent, ClusterStatus, DatabaseStatus, Health, MetaRole, ReplicaState,
};

/// Log entries a replica may trail its leader by and still count as caught up.
pub const CAUGHT_UP_LAG: u64 = 100;

/// Pod name of the node with `id`, or the id itself when the node is unknown.
pub fn pod_of(status: &ClusterStatus, id: u64) -> String {
    status
        .nodes
        .iter()
        .find(|n| n.id == id)
        .map_or_else(|| id.to_string(), |n| n.name.clone())
}

/// The membership of every Raft group, from the cluster status and the status of
/// every database.
pub fn membership(status: &ClusterStatus, databases: &[DatabaseStatus]) -> Membership {
    let replicas_on = |id: u64| -> u32 {
        let count = databases
            .iter()
            .flat_map(|d| &d.shards)
            .flat_map(|s| &s.replicas)
            .filter(|r| r.node_id == id)
            .count();
        u32::try_from(count).unwrap_or(u32::MAX)
    };
    let nodes = status
        .nodes
        .iter()
        .filter(|n| n.meta_role != MetaRole::None)
        .map(|n| MemberNode {
            node_id: n.id.to_string(),
            pod: n.name.clone(),
            role: match n.meta_role {
                MetaRole::Leader | MetaRole::Follower => NodeRole::Voter,
                _ => NodeRole::Learner,
            },
            state: if n.health == Health::Unreachable {
                NodeState::Rehab
            } else if n.lag > CAUGHT_UP_LAG {
                NodeState::Promotable
            } else {
                NodeState::Member
            },
            data_replicas: replicas_on(n.id),
            labels: n.labels.clone(),
        })
        .collect();

    let meta_voters: Vec<_> = status
        .nodes
        .iter()
        .filter(|n| matches!(n.meta_role, MetaRole::Leader | MetaRole::Follower))
        .collect();
    let mut groups = vec![RaftGroup {
        id: META_GROUP.to_owned(),
        leader: status.meta_leader_id.map(|id| id.to_string()),
        voters: meta_voters.iter().map(|n| n.id.to_string()).collect(),
        caught_up: meta_voters
            .iter()
            .filter(|n| n.health == Health::Healthy && n.lag <= CAUGHT_UP_LAG)
            .map(|n| n.id.to_string())
            .collect(),
    }];
    for database in databases {
        for shard in &database.shards {
            let voters = shard
                .replicas
                .iter()
                .filter(|r| matches!(r.state, ReplicaState::Member | ReplicaState::Rehab));
            groups.push(RaftGroup {
                id: format!("{}/{}", database.database.name, shard.shard),
                leader: shard.leader_id.map(|id| id.to_string()),
                voters: voters.clone().map(|r| r.node_id.to_string()).collect(),
                caught_up: voters
                    .filter(|r| r.state == ReplicaState::Member && r.lag <= CAUGHT_UP_LAG)
                    .map(|r| r.node_id.to_string())
                    .collect(),
            });
        }
    }
    Membership {
        cluster_id: status.cluster_id.clone(),
        nodes,
        groups,
        databases: databases
            .iter()
            .map(|d| {
                let shards = u32::try_from(d.shards.len()).unwrap_or(u32::MAX);
                (d.database.name.clone(), shards)
            })
            .collect(),
    }
}

/// Live topology of a database, with replicas named by pod.
pub fn topology(status: &ClusterStatus, database: &DatabaseStatus) -> Vec<ShardTopology> {
    database
        .shards
        .iter()
        .map(|shard| {
            let pods = |state: ReplicaState| -> Vec<String> {
                shard
                    .replicas
                    .iter()
                    .filter(|r| r.state == state)
                    .map(|r| pod_of(status, r.node_id))
                    .collect()
            };
            ShardTopology {
                shard: shard.shard,
                leader: shard.leader_id.map(|id| pod_of(status, id)),
                members: pods(ReplicaState::Member),
                promotables: pods(ReplicaState::Promotable),
                rehab: pods(ReplicaState::Rehab),
            }
        })
        .collect()
}

/// The cluster's recorded topology events, with each replica's node named by its pod when
/// the cluster still knows the node.
pub fn topology_events(status: &ClusterStatus, events: Vec<ClusterEvent>) -> TopologyEvents {
    TopologyEvents {
        cluster_id: status.cluster_id.clone(),
        events: events
            .into_iter()
            .map(|e| TopologyEvent {
                sequence: e.sequence,
                at_unix_ms: e.at_unix_ms,
                pod: status
                    .nodes
                    .iter()
                    .find(|n| n.id == e.node_id)
                    .map(|n| n.name.clone()),
                database: e.database,
                shard: e.shard,
                node_id: e.node_id,
                from_state: e.from_state,
                to_state: e.to_state,
                reason: e.reason,
                replica_broken: e.replica_broken,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_client::{DatabaseInfo, NodeStatus, ReplicaStatus, ShardStatus};

    fn node(id: u64, role: MetaRole, health: Health, lag: u64) -> NodeStatus {
        NodeStatus {
            id,
            name: format!("flotilla-{}", id - 100),
            client_addr: String::new(),
            peer_addr: String::new(),
            meta_role: role,
            health,
            lag,
            labels: Default::default(),
            draining: false,
            replicas: 0,
        }
    }

    fn replica(node_id: u64, state: ReplicaState, lag: u64) -> ReplicaStatus {
        ReplicaStatus {
            node_id,
            client_addr: String::new(),
            state,
            lag,
            matched_index: 0,
            snapshot_bytes_sent: 0,
            stopped: None,
            broken: false,
        }
    }

    fn cluster() -> ClusterStatus {
        ClusterStatus {
            cluster_id: "c-1".to_owned(),
            meta_leader_id: Some(100),
            meta_term: 3,
            nodes: vec![
                node(100, MetaRole::Leader, Health::Healthy, 0),
                node(101, MetaRole::Follower, Health::Unreachable, 0),
                node(102, MetaRole::Follower, Health::Healthy, 5),
                node(103, MetaRole::Learner, Health::Healthy, 5000),
                node(104, MetaRole::None, Health::Healthy, 0),
            ],
            answered_by: 100,
            rebalancing: false,
            auth_enabled: true,
        }
    }

    fn orders() -> DatabaseStatus {
        DatabaseStatus {
            database: DatabaseInfo {
                name: "orders".to_owned(),
                shards: 1,
                replication_factor: 3,
                replace_after: "15m".into(),
                placement: Default::default(),
                auto_rebalance: false,
            },
            shards: vec![ShardStatus {
                shard: 0,
                group_id: 7,
                leader_id: Some(102),
                term: 2,
                commit_index: 10,
                replicas: vec![
                    replica(100, ReplicaState::Member, 0),
                    replica(101, ReplicaState::Rehab, 900),
                    replica(102, ReplicaState::Member, 0),
                    replica(103, ReplicaState::Promotable, 40),
                ],
                replacement: None,
            }],
        }
    }

    #[test]
    fn nodes_are_named_by_pod_with_role_state_and_replica_count() {
        let membership = membership(&cluster(), &[orders()]);
        let nodes: Vec<_> = membership
            .nodes
            .iter()
            .map(|n| (n.pod.as_str(), n.role, n.state, n.data_replicas))
            .collect();
        assert_eq!(
            nodes,
            vec![
                ("flotilla-0", NodeRole::Voter, NodeState::Member, 1),
                ("flotilla-1", NodeRole::Voter, NodeState::Rehab, 1),
                ("flotilla-2", NodeRole::Voter, NodeState::Member, 1),
                ("flotilla-3", NodeRole::Learner, NodeState::Promotable, 1),
            ],
            "a node outside the meta membership is not a member"
        );
        assert_eq!(membership.cluster_id, "c-1");
    }

    #[test]
    fn groups_count_only_healthy_voters_as_caught_up() {
        let membership = membership(&cluster(), &[orders()]);
        let meta = &membership.groups[0];
        assert_eq!(meta.id, "meta");
        assert_eq!(meta.leader.as_deref(), Some("100"));
        assert_eq!(meta.voters, ["100", "101", "102"]);
        assert_eq!(meta.caught_up, ["100", "102"]);
        let shard = &membership.groups[1];
        assert_eq!(shard.id, "orders/0");
        assert_eq!(shard.leader.as_deref(), Some("102"));
        assert_eq!(
            shard.voters,
            ["100", "101", "102"],
            "promotables do not vote"
        );
        assert_eq!(shard.caught_up, ["100", "102"]);
    }

    #[test]
    fn the_topology_names_replicas_by_pod() {
        let topology = topology(&cluster(), &orders());
        assert_eq!(
            topology,
            vec![ShardTopology {
                shard: 0,
                leader: Some("flotilla-2".to_owned()),
                members: vec!["flotilla-0".to_owned(), "flotilla-2".to_owned()],
                promotables: vec!["flotilla-3".to_owned()],
                rehab: vec!["flotilla-1".to_owned()],
            }]
        );
    }

    #[test]
    fn events_name_the_pod_of_a_known_node_only() {
        let event = |sequence, node_id| ClusterEvent {
            sequence,
            at_unix_ms: 1_000,
            database: "orders".to_owned(),
            shard: 0,
            node_id,
            from_state: "member".to_owned(),
            to_state: "rehab".to_owned(),
            reason: "not seen for 60s".to_owned(),
            replica_broken: node_id == 999,
        };
        let read = topology_events(&cluster(), vec![event(7, 101), event(8, 999)]);
        let broken: Vec<bool> = read.events.iter().map(|e| e.replica_broken).collect();
        assert_eq!(broken, vec![false, true], "the cause is carried over");
        assert_eq!(read.cluster_id, "c-1");
        let pods: Vec<_> = read
            .events
            .iter()
            .map(|e| (e.sequence, e.node_id, e.pod.as_deref()))
            .collect();
        assert_eq!(pods, vec![(7, 101, Some("flotilla-1")), (8, 999, None)]);
    }
}
