//! The operator passes each Kubernetes Node's placement labels on to its Flotilla node.

use super::*;

const ZONE: &str = "topology.kubernetes.io/zone";

impl Harness {
    /// Kubernetes Nodes `m0`, `m1`, `m2` (zones a, b, a), pod `flotilla-i` on `m{i}`.
    fn schedule_on_machines(&self, replicas: i32) {
        for (machine, zone) in [("m0", "eu-1a"), ("m1", "eu-1b"), ("m2", "eu-1a")] {
            self.api.put(&Node {
                metadata: ObjectMeta {
                    name: Some(machine.to_owned()),
                    labels: Some(BTreeMap::from([
                        (ZONE.to_owned(), zone.to_owned()),
                        ("kubernetes.io/os".to_owned(), "linux".to_owned()),
                    ])),
                    ..ObjectMeta::default()
                },
                ..Node::default()
            });
        }
        for ordinal in 0..replicas {
            let name = format!("flotilla-{ordinal}");
            let mut pod: Pod = self.api.get(NS, &name).unwrap_or_default();
            pod.spec.get_or_insert_with(Default::default).node_name = Some(format!("m{ordinal}"));
            self.api.put(&pod);
        }
    }

    /// `cluster` bootstrapped with three running pods, each on its machine.
    async fn three_pods_on_machines(&self, cluster: &Cluster) {
        self.api.put(cluster);
        self.admin.set_membership(Some(membership(3)));
        ok(self.reconcile_cluster().await);
        self.run_pods(3, "r1");
        self.schedule_on_machines(3);
    }

    fn node_labels(&self) -> Vec<(String, BTreeMap<String, String>)> {
        self.cluster()
            .status
            .unwrap_or_default()
            .nodes
            .into_iter()
            .map(|n| (n.pod, n.labels))
            .collect()
    }
}

fn zone(value: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(ZONE.to_owned(), value.to_owned())])
}

#[tokio::test]
async fn every_node_gets_the_zone_of_its_kubernetes_node_once() {
    let h = Harness::new();
    h.three_pods_on_machines(&Cluster::test().with_cluster_id("c-1"))
        .await;

    ok(h.reconcile_cluster().await);
    assert_eq!(
        h.admin.calls(),
        [
            format!("label n0 {ZONE}=eu-1a"),
            format!("label n1 {ZONE}=eu-1b"),
            format!("label n2 {ZONE}=eu-1a"),
        ]
    );
    ok(h.reconcile_cluster().await);
    assert_eq!(
        h.node_labels(),
        [
            ("flotilla-0".to_owned(), zone("eu-1a")),
            ("flotilla-1".to_owned(), zone("eu-1b")),
            ("flotilla-2".to_owned(), zone("eu-1a")),
        ]
    );

    // Settled: no call to the cluster, no write.
    h.api.clear_requests();
    ok(h.reconcile_cluster().await);
    assert_eq!(h.admin.calls().len(), 3);
    assert_eq!(h.api.writes(), Vec::<String>::new());

    // The node's label changed behind the operator's back: it is put right.
    h.admin
        .edit_membership(|m| m.nodes[1].labels = zone("elsewhere"));
    ok(h.reconcile_cluster().await);
    assert_eq!(
        h.admin.calls().last().map(String::as_str),
        Some(format!("label n1 {ZONE}=eu-1b").as_str())
    );
}

#[tokio::test]
async fn a_cluster_without_placement_labels_reads_no_kubernetes_node() {
    let h = Harness::new();
    let mut cluster = Cluster::test().with_cluster_id("c-1");
    cluster.spec.placement_labels.clear();
    h.three_pods_on_machines(&cluster).await;
    h.api.clear_requests();
    ok(h.reconcile_cluster().await);
    assert!(
        !h.api.requests().iter().any(|r| r.contains("/nodes")),
        "{:?}",
        h.api.requests()
    );
    assert_eq!(h.admin.calls(), Vec::<String>::new());
}

#[tokio::test]
async fn nodes_the_operator_may_not_read_are_reported_and_the_rest_goes_on() {
    let h = Harness::new();
    h.three_pods_on_machines(&Cluster::test().with_cluster_id("c-1"))
        .await;
    h.api.forbid::<Node>();

    ok(h.reconcile_cluster().await);
    assert_eq!(h.admin.calls(), Vec::<String>::new());
    let status = h.cluster().status.unwrap_or_default();
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded");
    assert_eq!(
        degraded.map(|c| (c.status.as_str(), c.reason.as_str())),
        Some(("True", "NodeLabelsForbidden"))
    );
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    assert_eq!(ready.map(|c| c.status.as_str()), Some("True"));
    assert_eq!(h.statefulset_replicas(), Some(3));

    // Nothing new to say on the next pass.
    h.api.clear_requests();
    ok(h.reconcile_cluster().await);
    assert_eq!(h.api.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn the_first_node_gets_its_labels_only_once_it_has_formed_the_cluster() {
    let h = Harness::new();
    h.api.put(&Cluster::test());
    ok(h.reconcile_cluster().await);
    h.run_pods(1, "r1");
    h.schedule_on_machines(1);
    // The first node answers, but has not initialised the cluster yet.
    let mut forming = membership(1);
    forming.cluster_id = String::new();
    h.admin.set_membership(Some(forming));
    ok(h.reconcile_cluster().await);
    assert_eq!(h.admin.calls(), Vec::<String>::new());

    h.admin.edit_membership(|m| m.cluster_id = "c-1".to_owned());
    ok(h.reconcile_cluster().await);
    assert_eq!(h.admin.calls(), [format!("label n0 {ZONE}=eu-1a")]);
}
