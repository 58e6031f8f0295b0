//! Test fixtures: observations of healthy clusters, and changes to them.

use super::observed::META_GROUP;
use super::*;
use crate::crd::{NodeRole, NodeState};
use std::collections::BTreeMap;

/// Node id of the node in the pod with `ordinal`.
pub fn node_id(ordinal: i32) -> String {
    format!("n{ordinal}")
}

/// A healthy cluster of `replicas` pods at revision `r1`: every pod ready, the first three
/// nodes voters of the meta group (led by node 0) and of shard `orders/0` (led by node 1),
/// every node holding one data replica.
pub fn healthy(cluster: &Cluster, replicas: i32) -> Observed {
    let pod = |ordinal| cluster.pod_name(ordinal).unwrap_or_default();
    let voters: Vec<String> = (0..replicas.min(3)).map(node_id).collect();
    Observed {
        statefulset: Some(ObservedStatefulSet {
            replicas,
            update_revision: Some("r1".to_owned()),
            cluster_id: None,
            volume_size: None,
            terminating: false,
        }),
        pods: (0..replicas)
            .map(|ordinal| ObservedPod {
                name: pod(ordinal),
                ordinal,
                revision: Some("r1".to_owned()),
                ready: true,
                terminating: false,
                unrecoverable: false,
                hand_over: false,
                kube_node: None,
                terminating_for: None,
                kube_node_ready: None,
            })
            .collect(),
        pvcs: (0..replicas)
            .map(|ordinal| cluster.pvc_name(ordinal).unwrap_or_default())
            .collect(),
        pvcs_terminating: Vec::new(),
        pvc_cluster_ids: BTreeMap::new(),
        volume_requests: BTreeMap::new(),
        volume_capacities: BTreeMap::new(),
        initial_cluster_state: Some("existing".to_owned()),
        membership: Some(Membership {
            cluster_id: "c".to_owned(),
            nodes: (0..replicas)
                .map(|ordinal| MemberNode {
                    node_id: node_id(ordinal),
                    pod: pod(ordinal),
                    role: if ordinal < 3 {
                        NodeRole::Voter
                    } else {
                        NodeRole::Learner
                    },
                    state: NodeState::Member,
                    data_replicas: 1,
                    labels: Labels::new(),
                })
                .collect(),
            groups: vec![
                RaftGroup {
                    id: META_GROUP.to_owned(),
                    leader: Some(node_id(0)),
                    voters: voters.clone(),
                    caught_up: voters.clone(),
                },
                RaftGroup {
                    id: "orders/0".to_owned(),
                    leader: Some(node_id(1.min(replicas - 1))),
                    voters: voters.clone(),
                    caught_up: voters,
                },
            ],
            databases: BTreeMap::from([("orders".to_owned(), 1)]),
        }),
        replication_needs: Vec::new(),
        kube_nodes: KubeNodes::Unread,
    }
}

impl Observed {
    /// Moves the StatefulSet to revision `r2`: every pod is outdated.
    pub fn with_new_revision(mut self) -> Self {
        if let Some(sts) = self.statefulset.as_mut() {
            sts.update_revision = Some("r2".to_owned());
        }
        self
    }

    /// Marks the pod as running revision `r2`.
    pub fn updated(mut self, pod: &str) -> Self {
        for p in self.pods.iter_mut().filter(|p| p.name == pod) {
            p.revision = Some("r2".to_owned());
        }
        self
    }

    pub fn not_ready(mut self, pod: &str) -> Self {
        for p in self.pods.iter_mut().filter(|p| p.name == pod) {
            p.ready = false;
        }
        self
    }

    pub fn without_pod(mut self, pod: &str) -> Self {
        self.pods.retain(|p| p.name != pod);
        self
    }

    pub fn unrecoverable(mut self, pod: &str) -> Self {
        for p in self.pods.iter_mut().filter(|p| p.name == pod) {
            p.unrecoverable = true;
        }
        self
    }

    /// The pod carries the hand-over annotation.
    pub fn hand_over(mut self, pod: &str) -> Self {
        for p in self.pods.iter_mut().filter(|p| p.name == pod) {
            p.hand_over = true;
        }
        self
    }

    /// The PVC is deleted but still held by its pod.
    pub fn pvc_terminating(mut self, pvc: &str) -> Self {
        self.pvcs.retain(|p| p != pvc);
        self.pvcs_terminating.push(pvc.to_owned());
        self
    }

    pub fn without_pvc(mut self, pvc: &str) -> Self {
        self.pvcs.retain(|p| p != pvc);
        self
    }

    pub fn unreachable(mut self) -> Self {
        self.membership = None;
        self
    }

    /// Node `node` is no longer caught up in group `group`.
    pub fn lagging(mut self, group: &str, node: &str) -> Self {
        if let Some(m) = self.membership.as_mut() {
            for g in m.groups.iter_mut().filter(|g| g.id == group) {
                g.caught_up.retain(|n| n != node);
            }
        }
        self
    }

    pub fn led_by(mut self, group: &str, node: &str) -> Self {
        if let Some(m) = self.membership.as_mut() {
            for g in m.groups.iter_mut().filter(|g| g.id == group) {
                g.leader = Some(node.to_owned());
            }
        }
        self
    }

    pub fn with_data_replicas(mut self, node: &str, replicas: u32) -> Self {
        if let Some(m) = self.membership.as_mut() {
            for n in m.nodes.iter_mut().filter(|n| n.node_id == node) {
                n.data_replicas = replicas;
            }
        }
        self
    }

    pub fn without_member(mut self, node: &str) -> Self {
        if let Some(m) = self.membership.as_mut() {
            m.nodes.retain(|n| n.node_id != node);
            for g in &mut m.groups {
                g.voters.retain(|n| n != node);
                g.caught_up.retain(|n| n != node);
            }
        }
        self
    }

    pub fn with_state(mut self, node: &str, state: NodeState) -> Self {
        if let Some(m) = self.membership.as_mut() {
            for n in m.nodes.iter_mut().filter(|n| n.node_id == node) {
                n.state = state;
            }
        }
        self
    }

    pub fn needing_replication_factor(mut self, rf: i32) -> Self {
        self.replication_needs.push(ReplicationNeed {
            database_group: format!("rf{rf}"),
            replication_factor: rf,
        });
        self
    }

    pub fn with_statefulset_replicas(mut self, replicas: i32) -> Self {
        if let Some(sts) = self.statefulset.as_mut() {
            sts.replicas = replicas;
        }
        self
    }
}
