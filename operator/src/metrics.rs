//! Prometheus metrics of the controllers: reconciles, failures and durations per
//! controller and object (a Cluster or a DatabaseGroup), the health of each Cluster as its
//! last status says (nodes ready and by state, meta leader, conditions), and of each
//! DatabaseGroup, labelled with its Cluster (replicas by state, shards under-replicated).
//! [`Metrics::reconcile`] returns a guard that records the duration on drop.

use crate::crd::{ClusterStatus, ConditionType, DatabaseGroupStatus, NodeState};
use kube::{Resource, ResourceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ObjectLabels {
    controller: &'static str,
    namespace: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    namespace: String,
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeStateLabels {
    namespace: String,
    cluster: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DatabaseGroupLabels {
    namespace: String,
    cluster: String,
    database_group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaStateLabels {
    namespace: String,
    cluster: String,
    database_group: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabels {
    namespace: String,
    cluster: String,
    condition: &'static str,
}

/// Metrics of the controllers, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    reconciles: Family<ObjectLabels, Counter>,
    failures: Family<ObjectLabels, Counter>,
    durations: Family<ObjectLabels, Histogram>,
    conditions: Family<ConditionLabels, Gauge>,
    replicas: Family<ClusterLabels, Gauge>,
    ready_nodes: Family<ClusterLabels, Gauge>,
    has_leader: Family<ClusterLabels, Gauge>,
    nodes: Family<NodeStateLabels, Gauge>,
    group_replicas: Family<ReplicaStateLabels, Gauge>,
    group_under_replicated: Family<DatabaseGroupLabels, Gauge>,
    group_shards: Family<DatabaseGroupLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            failures: Family::default(),
            durations: Family::new_with_constructor(|| {
                Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
            }),
            conditions: Family::default(),
            replicas: Family::default(),
            ready_nodes: Family::default(),
            has_leader: Family::default(),
            nodes: Family::default(),
            group_replicas: Family::default(),
            group_under_replicated: Family::default(),
            group_shards: Family::default(),
        }
    }
}

fn object_labels<K: Resource>(controller: &'static str, object: &K) -> ObjectLabels {
    ObjectLabels {
        controller,
        namespace: object.namespace().unwrap_or_default(),
        name: object.name_any(),
    }
}

impl Metrics {
    /// Metrics registered in `registry` under the `flotilla_operator` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let sub = registry.sub_registry_with_prefix("flotilla_operator");
        let m = &metrics;
        sub.register(
            "reconciles",
            "Reconciles started, per object",
            m.reconciles.clone(),
        );
        sub.register(
            "reconcile_failures",
            "Reconciles that failed, per object",
            m.failures.clone(),
        );
        sub.register(
            "reconcile_duration_seconds",
            "Duration of reconciles, per object",
            m.durations.clone(),
        );
        sub.register(
            "cluster_condition",
            "1 while the Cluster's condition (Ready, Progressing, Degraded) is True",
            m.conditions.clone(),
        );
        sub.register(
            "cluster_replicas",
            "Nodes the Cluster's spec asks for",
            m.replicas.clone(),
        );
        sub.register(
            "cluster_ready_nodes",
            "Nodes of the Cluster that are ready members",
            m.ready_nodes.clone(),
        );
        sub.register(
            "cluster_has_leader",
            "1 while the Cluster's meta group has a leader",
            m.has_leader.clone(),
        );
        sub.register(
            "cluster_nodes",
            "Nodes of the Cluster by state (Member, Promotable, Rehab, Draining, Unknown)",
            m.nodes.clone(),
        );
        sub.register(
            "database_group_shards",
            "Shards of the DatabaseGroup whose topology the operator sees",
            m.group_shards.clone(),
        );
        sub.register(
            "database_group_replicas",
            "Replicas of the DatabaseGroup's shards by state (Member, Promotable, Rehab)",
            m.group_replicas.clone(),
        );
        sub.register(
            "database_group_shards_under_replicated",
            "Shards of the DatabaseGroup with fewer Members than its replication factor",
            m.group_under_replicated.clone(),
        );
        metrics
    }

    /// Counts a reconcile of `object` by `controller`; its duration is recorded when the
    /// guard drops.
    pub fn reconcile<K: Resource>(&self, controller: &'static str, object: &K) -> ReconcileGuard {
        let labels = object_labels(controller, object);
        self.reconciles.get_or_create(&labels).inc();
        ReconcileGuard {
            histogram: self.durations.get_or_create(&labels).clone(),
            started: Instant::now(),
        }
    }

    /// Counts a failed reconcile of `object` by `controller`.
    pub fn failure<K: Resource>(&self, controller: &'static str, object: &K) {
        self.failures
            .get_or_create(&object_labels(controller, object))
            .inc();
    }

    /// Records the health of a Cluster as the status about to be written shows it.
    pub fn cluster_health(
        &self,
        namespace: &str,
        cluster: &str,
        replicas: i32,
        status: &ClusterStatus,
    ) {
        let labels = ClusterLabels {
            namespace: namespace.to_owned(),
            cluster: cluster.to_owned(),
        };
        self.replicas
            .get_or_create(&labels)
            .set(i64::from(replicas));
        self.ready_nodes
            .get_or_create(&labels)
            .set(i64::from(status.ready_nodes));
        self.has_leader
            .get_or_create(&labels)
            .set(i64::from(status.leader.is_some()));
        for state in NodeState::ALL {
            let count = status.nodes.iter().filter(|n| n.state == state).count();
            self.nodes
                .get_or_create(&NodeStateLabels {
                    namespace: namespace.to_owned(),
                    cluster: cluster.to_owned(),
                    state: state.as_str(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        for condition in ConditionType::ALL {
            let holds = status
                .conditions
                .iter()
                .any(|c| c.type_ == condition.as_str() && c.status == "True");
            let labels = ConditionLabels {
                namespace: namespace.to_owned(),
                cluster: cluster.to_owned(),
                condition: condition.as_str(),
            };
            self.conditions.get_or_create(&labels).set(i64::from(holds));
        }
    }

    /// Forgets a deleted Cluster's health.
    pub fn forget_cluster(&self, namespace: &str, cluster: &str) {
        let labels = ClusterLabels {
            namespace: namespace.to_owned(),
            cluster: cluster.to_owned(),
        };
        for family in [&self.replicas, &self.ready_nodes, &self.has_leader] {
            family.remove(&labels);
        }
        for state in NodeState::ALL {
            self.nodes.remove(&NodeStateLabels {
                namespace: namespace.to_owned(),
                cluster: cluster.to_owned(),
                state: state.as_str(),
            });
        }
        for condition in ConditionType::ALL {
            self.conditions.remove(&ConditionLabels {
                namespace: namespace.to_owned(),
                cluster: cluster.to_owned(),
                condition: condition.as_str(),
            });
        }
    }
}

/// Where a DatabaseGroup is: its namespace, its Cluster and its name.
pub struct GroupRef<'a> {
    pub namespace: &'a str,
    pub cluster: &'a str,
    pub name: &'a str,
}

impl GroupRef<'_> {
    fn labels(&self) -> DatabaseGroupLabels {
        DatabaseGroupLabels {
            namespace: self.namespace.to_owned(),
            cluster: self.cluster.to_owned(),
            database_group: self.name.to_owned(),
        }
    }

    fn with_state(&self, state: &'static str) -> ReplicaStateLabels {
        ReplicaStateLabels {
            namespace: self.namespace.to_owned(),
            cluster: self.cluster.to_owned(),
            database_group: self.name.to_owned(),
            state,
        }
    }
}

/// Replica states of a DatabaseGroup's shards, as its status names them.
const REPLICA_STATES: [&str; 3] = ["Member", "Promotable", "Rehab"];

impl Metrics {
    /// Records the health of a DatabaseGroup as the status about to be written shows it:
    /// its replicas by state and its shards with fewer Members than `replication_factor`.
    pub fn database_group_health(
        &self,
        group: &GroupRef<'_>,
        replication_factor: i32,
        status: &DatabaseGroupStatus,
    ) {
        let wanted = usize::try_from(replication_factor).unwrap_or(0);
        let under = status
            .shards
            .iter()
            .filter(|s| s.members.len() < wanted)
            .count();
        let counts = [
            status.shards.iter().map(|s| s.members.len()).sum::<usize>(),
            status.shards.iter().map(|s| s.promotables.len()).sum(),
            status.shards.iter().map(|s| s.rehab.len()).sum(),
        ];
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        for (state, count) in REPLICA_STATES.into_iter().zip(counts) {
            self.group_replicas
                .get_or_create(&group.with_state(state))
                .set(gauge(count));
        }
        self.group_under_replicated
            .get_or_create(&group.labels())
            .set(gauge(under));
        self.group_shards
            .get_or_create(&group.labels())
            .set(gauge(status.shards.len()));
    }

    /// Forgets a deleted DatabaseGroup's health.
    pub fn forget_database_group(&self, group: &GroupRef<'_>) {
        for state in REPLICA_STATES {
            self.group_replicas.remove(&group.with_state(state));
        }
        self.group_under_replicated.remove(&group.labels());
        self.group_shards.remove(&group.labels());
    }
}

/// Records the duration of one reconcile when dropped.
pub struct ReconcileGuard {
    histogram: Histogram,
    started: Instant,
}

impl Drop for ReconcileGuard {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::crd::{Cluster, DatabaseGroup};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn encoded(registry: &Registry) -> String {
        let mut text = String::new();
        assert!(prometheus_client::encoding::text::encode(&mut text, registry).is_ok());
        text
    }

    #[test]
    fn reconciles_and_failures_are_counted_per_controller_and_object() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let cluster = Cluster::test();
        drop(metrics.reconcile("cluster", &cluster));
        drop(metrics.reconcile("cluster", &cluster));
        metrics.failure("database_group", &DatabaseGroup::test());
        let text = encoded(&registry);
        let object = format!(
            "controller=\"cluster\",namespace=\"{}\",name=\"{}\"",
            cluster.namespace().unwrap_or_default(),
            cluster.name_any()
        );
        for expected in [
            format!("flotilla_operator_reconciles_total{{{object}}} 2"),
            format!("flotilla_operator_reconcile_duration_seconds_count{{{object}}} 2"),
            "flotilla_operator_reconcile_failures_total{controller=\"database_group\"".to_owned(),
        ] {
            assert!(text.contains(&expected), "no {expected} in\n{text}");
        }
    }

    #[test]
    fn a_clusters_health_follows_its_status_and_goes_with_it() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let mut status = ClusterStatus {
            ready_nodes: 2,
            ..ClusterStatus::default()
        };
        status.conditions.push(Condition {
            type_: "Degraded".to_owned(),
            status: "True".to_owned(),
            reason: "NodesNotReady".to_owned(),
            message: String::new(),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            observed_generation: None,
        });
        for (pod, state) in [
            ("db-0", NodeState::Member),
            ("db-1", NodeState::Member),
            ("db-2", NodeState::Rehab),
        ] {
            status.nodes.push(crate::crd::NodeStatus {
                pod: pod.to_owned(),
                node_id: None,
                role: None,
                state,
                labels: Default::default(),
            });
        }
        metrics.cluster_health("shop", "db", 3, &status);
        let text = encoded(&registry);
        for expected in [
            "flotilla_operator_cluster_ready_nodes{namespace=\"shop\",cluster=\"db\"} 2",
            "flotilla_operator_cluster_replicas{namespace=\"shop\",cluster=\"db\"} 3",
            "flotilla_operator_cluster_has_leader{namespace=\"shop\",cluster=\"db\"} 0",
            "flotilla_operator_cluster_condition{namespace=\"shop\",cluster=\"db\",condition=\"Degraded\"} 1",
            "flotilla_operator_cluster_condition{namespace=\"shop\",cluster=\"db\",condition=\"Ready\"} 0",
            "flotilla_operator_cluster_nodes{namespace=\"shop\",cluster=\"db\",state=\"Member\"} 2",
            "flotilla_operator_cluster_nodes{namespace=\"shop\",cluster=\"db\",state=\"Rehab\"} 1",
            "flotilla_operator_cluster_nodes{namespace=\"shop\",cluster=\"db\",state=\"Draining\"} 0",
        ] {
            assert!(text.contains(expected), "no {expected} in\n{text}");
        }
        metrics.forget_cluster("shop", "db");
        assert!(!encoded(&registry).contains("cluster=\"db\""));
    }

    #[test]
    fn a_database_groups_replicas_and_under_replicated_shards_are_counted_under_its_cluster() {
        use crate::crd::ShardStatus;
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let pods = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let status = DatabaseGroupStatus {
            shards: vec![
                ShardStatus {
                    shard: 0,
                    leader: Some("db-0".to_owned()),
                    members: pods(&["db-0", "db-1", "db-2"]),
                    promotables: vec![],
                    rehab: vec![],
                },
                ShardStatus {
                    shard: 1,
                    leader: Some("db-1".to_owned()),
                    members: pods(&["db-1", "db-2"]),
                    promotables: pods(&["db-3"]),
                    rehab: pods(&["db-0"]),
                },
            ],
            ..DatabaseGroupStatus::default()
        };
        let group = GroupRef {
            namespace: "shop",
            cluster: "db",
            name: "orders",
        };
        metrics.database_group_health(&group, 3, &status);
        let text = encoded(&registry);
        let labels = "namespace=\"shop\",cluster=\"db\",database_group=\"orders\"";
        for expected in [
            format!("flotilla_operator_database_group_shards{{{labels}}} 2"),
            format!("flotilla_operator_database_group_shards_under_replicated{{{labels}}} 1"),
            format!("flotilla_operator_database_group_replicas{{{labels},state=\"Member\"}} 5"),
            format!("flotilla_operator_database_group_replicas{{{labels},state=\"Promotable\"}} 1"),
            format!("flotilla_operator_database_group_replicas{{{labels},state=\"Rehab\"}} 1"),
        ] {
            assert!(text.contains(&expected), "no {expected} in\n{text}");
        }
        metrics.forget_database_group(&group);
        assert!(!encoded(&registry).contains("orders"));
    }
}
