//! The operator end to end, without Kubernetes: the real controllers (in this process) talk
//! to the fake API server of `flotilla_kubefake`, and the stand-in of
//! `flotilla_e2e::kubelet` runs every pod of the StatefulSet as a real `flotilla-node`
//! process on its own loopback address.
//!
//! Scenario: the example Cluster (3 nodes) forms one Raft cluster and reports Ready with a
//! leader; every node carries the zone of the machine (Kubernetes Node) its pod runs on as a
//! placement label; the example DatabaseGroup (RF 3) creates its database and shows its
//! topology, and a DatabaseGroup placed on one zone has its replicas on that zone's nodes only;
//! documents are written through the client Service; a deleted pod shows its replicas in
//! Rehab while it is away and as Members once it is back; scaling to 5 adds nodes; scaling
//! back to 3 drains and removes nodes before the StatefulSet shrinks and loses no
//! acknowledged write; a larger `storage.size` grows every volume and re-creates the
//! StatefulSet around its pods without restarting one; a node whose machine is lost and
//! whose pod stays Terminating there is replaced (while the cluster has 5 nodes, so that its
//! replicas have somewhere to go) once `forceDeleteAfter` has passed (the pod deleted with
//! no grace period, with a Warning Event), losing no acknowledged write;
//! deleting the DatabaseGroup with `deletionPolicy: Delete` drops the database.
//!
//! A second scenario ([`recovery`]) makes a new Cluster from a backup of another one.
//!
//! The node binary is `FLOTILLA_NODE_BIN`, or `flotilla-node` built with cargo next to this
//! test's executable.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flotilla_client::{Client, ClientOptions, Consistency};
use flotilla_e2e::kubelet::{Kubelet, KubeletOptions, Machine};
use flotilla_kubefake::FakeApiServer;
use flotilla_operator::admin::grpc::GrpcAdmin;
use flotilla_operator::controllers::{self, Context};
use flotilla_operator::crd::cluster_funcs::UNRECOVERABLE_ANNOTATION;
use flotilla_operator::crd::{Cluster, DatabaseGroup};
use flotilla_operator::desired::INITIAL_CLUSTER_STATE_KEY;
use flotilla_operator::leader::Election;
use flotilla_operator::metrics::Metrics;
use flotilla_testkit::{progress, repo_root, wait};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

#[path = "operator_scenario/recovery.rs"]
mod recovery;

const NAMESPACE: &str = "flotilla-e2e";
const CLUSTER: &str = "flotilla";
const DATABASE: &str = "orders";
/// A DatabaseGroup (and its database) placed on the nodes of zone [`ZONE_A`] only.
const ZONED: &str = "zoned";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const ZONE_A: &str = "eu-1a";
const ZONE_B: &str = "eu-1b";
const COLLECTION: &str = "items";
/// Applies made "by the user", as `kubectl apply --server-side` would.
const USER: &str = "kubectl";

const START_TIMEOUT: Duration = Duration::from_secs(90);
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(250);
/// The volumes' size at first, and after they grow.
const FIRST_SIZE: &str = "10Gi";
const GROWN_SIZE: &str = "20Gi";
/// `spec.forceDeleteAfter`: the shortest the CRD accepts, to keep the scenario short.
const FORCE_DELETE_AFTER: Duration = Duration::from_secs(30);

/// The `flotilla-node` binary: `FLOTILLA_NODE_BIN`, or built with cargo into the target
/// directory of this test.
fn node_binary() -> PathBuf {
    built_binary("FLOTILLA_NODE_BIN", "flotilla-node", "flotilla-node")
}

/// The `flotilla` CLI: `FLOTILLA_CLI_BIN`, or built with cargo into the target directory of
/// this test.
fn cli_binary() -> PathBuf {
    built_binary("FLOTILLA_CLI_BIN", "flotilla-cli", "flotilla")
}

/// The binary `bin` of `package`: the path in `env`, or built with cargo into the target
/// directory of this test.
fn built_binary(env: &str, package: &str, bin: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test knows its executable");
    // target/<profile>/deps/<test> -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from a cargo target directory")
        .to_path_buf();
    let target_dir = profile_dir
        .parent()
        .expect("target directory")
        .to_path_buf();
    let release = profile_dir.file_name().is_some_and(|p| p == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    progress(format!(
        "building {bin} (cargo skips it when it is up to date)"
    ));
    let mut build = std::process::Command::new(cargo);
    build
        .args(["build", "-q", "-p", package, "--bin", bin])
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(repo_root());
    if release {
        build.arg("--release");
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "cargo build -p {package} failed");
    profile_dir.join(bin)
}

fn yaml_file(path: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join(path)).expect("example manifest");
    serde_saphyr::from_str(&text).expect("example manifest parses")
}

/// Everything the scenario runs; prints what it knows when the test fails.
struct Harness {
    /// Kept until the end: the server stops when dropped.
    _api: FakeApiServer,
    kubelet: Option<Kubelet>,
    client: kube::Client,
    operator: tokio::task::JoinHandle<()>,
    /// The `storage.size` the Cluster is applied with.
    storage_size: std::sync::Mutex<String>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Self {
        let binary = node_binary();
        assert!(binary.is_file(), "{} is missing", binary.display());
        let dir = tempfile::tempdir().expect("temporary directory");
        flotilla_operator::use_ring_crypto();
        let api = FakeApiServer::start()
            .await
            .expect("fake API server starts");
        let client = api.client().expect("client of the fake API");
        progress(format!("fake API server on {}", api.url()));
        let kubelet = Kubelet::start(
            client.clone(),
            KubeletOptions {
                commands: BTreeMap::from([("flotilla-node".to_owned(), binary)]),
                // Short enough to see a deleted pod's replicas in Rehab within the test.
                extra_env: vec![("FLOTILLA_REHAB_AFTER".to_owned(), "2s".to_owned())],
                probe_period: Duration::from_millis(500),
                max_grace: Duration::from_secs(15),
                root: dir.path().to_path_buf(),
                // Pod i runs on machine i mod 4: pods 0, 2 and 4 in zone a, 1 and 3 in zone b
                // (pod 3 alone on its machine, which the scenario loses).
                machines: vec![
                    Machine::new("machine-a1", &[(ZONE_LABEL, ZONE_A)]),
                    Machine::new("machine-b1", &[(ZONE_LABEL, ZONE_B)]),
                    Machine::new("machine-a2", &[(ZONE_LABEL, ZONE_A)]),
                    Machine::new("machine-b2", &[(ZONE_LABEL, ZONE_B)]),
                ],
            },
        )
        .expect("kubelet stand-in starts");

        // Install the CRDs, as `flotilla-operator crds | kubectl apply --server-side -f -`.
        let crds = Api::<CustomResourceDefinition>::all(client.clone());
        for crd in flotilla_operator::crd::all_crds() {
            crds.patch(
                &crd.name_any(),
                &PatchParams::apply(USER).force(),
                &Patch::Apply(&crd),
            )
            .await
            .expect("CRD applied");
        }

        // The namespace of the scenario, as `kubectl create namespace`.
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))
            .expect("a namespace object");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .expect("namespace created");

        // The operator, as `flotilla-operator run` starts it, holding the leader Lease.
        let network = kubelet.network().clone();
        let admin =
            GrpcAdmin::with_address_map(Arc::new(move |addr: &str| network.resolve_endpoint(addr)));
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::register(&mut registry);
        let ctx = Arc::new(Context::new(client.clone(), Arc::new(admin), metrics));
        let election = Election::new(
            client.clone(),
            NAMESPACE,
            "flotilla-operator",
            "e2e-operator",
        );
        let controllers = controllers::run(client.clone(), ctx, None);
        let operator = tokio::spawn(async move {
            // Runs until the harness aborts it, as a process runs until SIGTERM.
            let result = election.lead(controllers, std::future::pending()).await;
            if let Err(error) = result {
                eprintln!("operator stopped: {error}");
            }
        });
        Self {
            _api: api,
            kubelet: Some(kubelet),
            client,
            operator,
            storage_size: std::sync::Mutex::new(FIRST_SIZE.to_owned()),
            _dir: dir,
        }
    }

    fn kubelet(&self) -> &Kubelet {
        self.kubelet
            .as_ref()
            .expect("the kubelet runs until the end")
    }

    fn clusters(&self) -> Api<Cluster> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    fn groups(&self) -> Api<DatabaseGroup> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    async fn apply_cluster(&self, replicas: i32) {
        let mut cluster = yaml_file("deploy/examples/cluster.yaml");
        cluster["metadata"]["namespace"] = json!(NAMESPACE);
        cluster["spec"]["replicas"] = json!(replicas);
        cluster["spec"]["heartbeatInterval"] = json!("100ms");
        cluster["spec"]["electionTimeout"] = json!("1s");
        cluster["spec"]["forceDeleteAfter"] = json!(format!("{}s", FORCE_DELETE_AFTER.as_secs()));
        let size = self
            .storage_size
            .lock()
            .map_or_else(|p| p.into_inner().clone(), |s| s.clone());
        cluster["spec"]["storage"]["size"] = json!(size);
        self.apply_named_cluster(CLUSTER, &cluster).await;
    }

    /// Applies `cluster` (the whole object) as Cluster `name`, as `kubectl apply` would.
    async fn apply_named_cluster(&self, name: &str, cluster: &Value) {
        self.clusters()
            .patch(
                name,
                &PatchParams::apply(USER).force(),
                &Patch::Apply(cluster),
            )
            .await
            .expect("Cluster applied");
    }

    async fn apply_group(&self, deletion_policy: &str) {
        let mut group = yaml_file("deploy/examples/database-group.yaml");
        group["metadata"]["namespace"] = json!(NAMESPACE);
        group["spec"]["deletionPolicy"] = json!(deletion_policy);
        self.apply_named_group(DATABASE, &group).await;
    }

    /// Applies `group` (the whole object) as DatabaseGroup `name`, as `kubectl apply` would.
    async fn apply_named_group(&self, name: &str, group: &Value) {
        self.groups()
            .patch(
                name,
                &PatchParams::apply(USER).force(),
                &Patch::Apply(group),
            )
            .await
            .expect("DatabaseGroup applied");
    }

    /// A DatabaseGroup of RF 2 whose replicas may only live on nodes of zone a.
    async fn apply_zoned_group(&self) {
        let group = json!({
            "apiVersion": "flotilla.dev/v1alpha1",
            "kind": "DatabaseGroup",
            "metadata": {"name": ZONED, "namespace": NAMESPACE},
            "spec": {
                "clusterRef": {"name": CLUSTER},
                "replicationFactor": 2,
                "shards": 2,
                "placement": {"nodeLabels": {ZONE_LABEL: ZONE_A}},
            },
        });
        self.apply_named_group(ZONED, &group).await;
    }

    /// A client of the database through the client Service's address.
    async fn database_client(&self) -> Client {
        self.client_of(CLUSTER).await
    }

    /// A client of `cluster` through its client Service's address.
    async fn client_of(&self, cluster: &str) -> Client {
        let address = self.client_address(cluster).await;
        progress(format!("client Service of {cluster} at {address}"));
        let options = ClientOptions {
            total_timeout: Duration::from_secs(30),
            ..ClientOptions::default()
        };
        Client::with_options(vec![address], options).expect("client")
    }

    /// The address the client Service of `cluster` is served on.
    async fn client_address(&self, cluster: &str) -> String {
        let kubelet = self.kubelet();
        let address = wait::until_async("the client Service", STEP_TIMEOUT, POLL, || async {
            Ok(kubelet.service_address(NAMESPACE, cluster, "client"))
        })
        .await
        .expect("the client Service is served");
        address.to_string()
    }

    /// Waits until the Cluster's status satisfies `check`, which says what it sees.
    async fn wait_cluster(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Cluster) -> Result<(), String>,
    ) -> Cluster {
        self.wait_named_cluster(CLUSTER, what, timeout, check).await
    }

    /// Waits until the status of Cluster `name` satisfies `check`, which says what it sees.
    async fn wait_named_cluster(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Cluster) -> Result<(), String>,
    ) -> Cluster {
        let clusters = self.clusters();
        wait::until_async(what, timeout, POLL, || async {
            let cluster = clusters.get(name).await.map_err(|e| e.to_string())?;
            check(&cluster).map(|()| Some(cluster))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn wait_group(
        &self,
        what: &str,
        check: impl Fn(&DatabaseGroup) -> Result<(), String>,
    ) -> DatabaseGroup {
        self.wait_group_named(DATABASE, what, check).await
    }

    async fn wait_group_named(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&DatabaseGroup) -> Result<(), String>,
    ) -> DatabaseGroup {
        let groups = self.groups();
        wait::until_async(what, STEP_TIMEOUT, POLL, || async {
            let group = groups.get(name).await.map_err(|e| e.to_string())?;
            check(&group).map(|()| Some(group))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn statefulset_replicas(&self) -> i32 {
        Api::<StatefulSet>::namespaced(self.client.clone(), NAMESPACE)
            .get(CLUSTER)
            .await
            .ok()
            .and_then(|s| s.spec)
            .and_then(|s| s.replicas)
            .unwrap_or(0)
    }

    /// Notes of the cluster's Events, oldest first.
    async fn cluster_events(&self) -> Vec<String> {
        let mut events = Api::<Event>::namespaced(self.client.clone(), NAMESPACE)
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        events.sort_by_key(|e| {
            e.metadata
                .resource_version
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok())
        });
        events
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Cluster"))
            .filter_map(|e| e.note)
            .collect()
    }

    /// The Cluster's conditions, as `type=status reason: message`.
    async fn conditions(&self) -> String {
        let cluster = self.clusters().get(CLUSTER).await.ok();
        let status = cluster.and_then(|c| c.status).unwrap_or_default();
        status
            .conditions
            .iter()
            .map(|c| format!("{}={} {}: {}", c.type_, c.status, c.reason, c.message))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Prints the nodes' logs (on failure).
    fn report(&self) {
        let Some(kubelet) = &self.kubelet else {
            return;
        };
        for (namespace, pod) in kubelet.logged_pods() {
            eprintln!("----- log of {namespace}/{pod} (last lines) -----");
            eprintln!("{}", kubelet.log_tail(&namespace, &pod, 25));
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.operator.abort();
        if std::thread::panicking() {
            self.report();
        }
    }
}

fn ready(cluster: &Cluster) -> Result<(), String> {
    let status = cluster.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| format!("{} ({}: {})", c.status, c.reason, c.message))
        .unwrap_or_else(|| "no Ready condition".to_owned());
    let nodes: Vec<String> = status
        .nodes
        .iter()
        .map(|n| format!("{}={:?}/{:?}", n.pod, n.role, n.state))
        .collect();
    let seen = format!(
        "Ready {ready}, {} ready nodes, leader {:?}, cluster id {:?}, scale-down {:?}, nodes [{}]",
        status.ready_nodes,
        status.leader,
        status.cluster_id,
        status.scale_down.as_ref().map(|s| s.phase),
        nodes.join(" ")
    );
    let done = ready.starts_with("True")
        && status.ready_nodes == cluster.spec.replicas
        && status.leader.is_some()
        && status.cluster_id.is_some()
        && status.scale_down.is_none()
        && status.nodes.len() == usize::try_from(cluster.spec.replicas).unwrap_or(0)
        && cluster.metadata.generation == status.observed_generation;
    if done { Ok(()) } else { Err(seen) }
}

/// Every pod in `zones` (pod -> zone) reports that zone as its node's placement label.
fn zones_assigned<'a>(
    zones: &'a [(&'a str, &'a str)],
) -> impl Fn(&Cluster) -> Result<(), String> + 'a {
    move |cluster| {
        let status = cluster.status.clone().unwrap_or_default();
        let seen: Vec<String> = status
            .nodes
            .iter()
            .map(|n| format!("{}={:?}", n.pod, n.labels.get(ZONE_LABEL)))
            .collect();
        let done = zones.iter().all(|(pod, zone)| {
            status.nodes.iter().any(|n| {
                n.pod == *pod && n.labels.get(ZONE_LABEL).map(String::as_str) == Some(zone)
            })
        });
        if done { Ok(()) } else { Err(seen.join(" ")) }
    }
}

fn topology(group: &DatabaseGroup) -> String {
    let status = group.status.clone().unwrap_or_default();
    status
        .shards
        .iter()
        .map(|s| {
            format!(
                "shard {}: leader {:?} members {:?} promotables {:?} rehab {:?}",
                s.shard, s.leader, s.members, s.promotables, s.rehab
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every shard has a leader and exactly the pods in `pods` as its members.
fn settled_on<'a>(pods: &'a [&'a str]) -> impl Fn(&DatabaseGroup) -> Result<(), String> + 'a {
    move |group| {
        let status = group.status.clone().unwrap_or_default();
        let done = status.replication_factor_met
            && status.shards.len() == usize::try_from(group.spec.shards).unwrap_or(0)
            && status.shards.iter().all(|s| {
                s.leader.is_some()
                    && s.promotables.is_empty()
                    && s.rehab.is_empty()
                    && s.members.len()
                        == usize::try_from(group.spec.replication_factor).unwrap_or(0)
                    && s.members.iter().all(|m| pods.contains(&m.as_str()))
            });
        if done { Ok(()) } else { Err(topology(group)) }
    }
}

async fn write(
    client: &Client,
    acknowledged: &mut BTreeMap<String, String>,
    ids: std::ops::Range<usize>,
) {
    for i in ids {
        let id = format!("item-{i:04}");
        let body = json!({"n": i, "note": "written through the client Service"}).to_string();
        match client.put(DATABASE, COLLECTION, &id, &body, None).await {
            Ok(_) => {
                acknowledged.insert(id, body);
            }
            Err(error) => progress(format!("write {id} not acknowledged: {error}")),
        }
    }
}

async fn check_all_readable(client: &Client, acknowledged: &BTreeMap<String, String>) {
    for (id, body) in acknowledged {
        let document = client
            .get(DATABASE, COLLECTION, id, Consistency::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("reading {id}: {e}"))
            .unwrap_or_else(|| panic!("acknowledged write {id} is lost"));
        let expected: Value = serde_json::from_str(body).expect("json");
        assert_eq!(document.value().expect("json document"), expected, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_and_a_database_group_come_alive_heal_scale_and_go() {
    let harness = Harness::start().await;

    progress("applying the example Cluster (3 nodes)");
    harness.apply_cluster(3).await;
    let cluster = harness
        .wait_cluster(
            "the Cluster to be Ready with 3 nodes and a leader",
            START_TIMEOUT,
            ready,
        )
        .await;
    progress(format!(
        "cluster {:?} led by {:?}",
        cluster.status.as_ref().and_then(|s| s.cluster_id.clone()),
        cluster.status.as_ref().and_then(|s| s.leader.clone())
    ));

    // The operator copies the zone of each pod's machine onto its node.
    let zones = [
        ("flotilla-0", ZONE_A),
        ("flotilla-1", ZONE_B),
        ("flotilla-2", ZONE_A),
    ];
    harness
        .wait_cluster(
            "every node to carry the zone of its machine",
            STEP_TIMEOUT,
            zones_assigned(&zones),
        )
        .await;

    progress("applying the example DatabaseGroup (RF 3) and one placed on zone a (RF 2)");
    harness.apply_group("Retain").await;
    harness.apply_zoned_group().await;
    let all = ["flotilla-0", "flotilla-1", "flotilla-2"];
    harness
        .wait_group(
            "every shard of the database to have a leader and 3 members",
            settled_on(&all),
        )
        .await;
    let zone_a = ["flotilla-0", "flotilla-2"];
    harness
        .wait_group_named(
            ZONED,
            "every shard of the zoned database to be on the nodes of zone a",
            settled_on(&zone_a),
        )
        .await;
    let database = harness.database_client().await;
    // The cluster's own view agrees: every replica of the zoned database is on a node
    // labelled with zone a.
    let cluster_status = database.cluster_status().await.expect("cluster status");
    let zoned = database
        .database_status(ZONED)
        .await
        .expect("the zoned database exists");
    assert_eq!(
        zoned.database.placement.get(ZONE_LABEL).map(String::as_str),
        Some(ZONE_A)
    );
    for replica in zoned.shards.iter().flat_map(|s| &s.replicas) {
        let node = cluster_status
            .nodes
            .iter()
            .find(|n| n.id == replica.node_id)
            .expect("the replica's node is known");
        assert_eq!(
            node.labels.get(ZONE_LABEL).map(String::as_str),
            Some(ZONE_A),
            "replica of {ZONED} on {} ({:?})",
            node.name,
            node.labels
        );
    }
    let status = database
        .database_status(DATABASE)
        .await
        .expect("the database exists");
    assert_eq!(status.database.replication_factor, 3);
    assert_eq!(
        status.database.replace_after, "15m",
        "spec.replaceAfter reached the cluster"
    );
    assert_eq!(status.shards.len(), 4);

    let mut acknowledged = BTreeMap::new();
    write(&database, &mut acknowledged, 0..40).await;
    assert_eq!(
        acknowledged.len(),
        40,
        "every write to a healthy cluster is acknowledged"
    );

    // A pod goes away and stays away for a while (its node is down), then comes back.
    let victim = "flotilla-2";
    progress(format!(
        "deleting pod {victim} and keeping it from starting"
    ));
    harness.kubelet().hold(NAMESPACE, victim);
    Api::<Pod>::namespaced(harness.client.clone(), NAMESPACE)
        .delete(victim, &DeleteParams::default())
        .await
        .expect("pod deleted");
    harness
        .wait_group(
            &format!("the status to show {victim}'s replicas in Rehab"),
            |group| {
                let status = group.status.clone().unwrap_or_default();
                if status
                    .shards
                    .iter()
                    .any(|s| s.rehab.iter().any(|p| p == victim))
                {
                    Ok(())
                } else {
                    Err(topology(group))
                }
            },
        )
        .await;
    write(&database, &mut acknowledged, 40..60).await;
    harness.kubelet().release(NAMESPACE, victim);
    harness
        .wait_group(
            &format!("{victim}'s replicas to be Members again"),
            settled_on(&all),
        )
        .await;
    harness
        .wait_cluster("the Cluster to be Ready again", STEP_TIMEOUT, ready)
        .await;

    progress("scaling the Cluster to 5 nodes");
    harness.apply_cluster(5).await;
    harness
        .wait_cluster("5 nodes to be ready members", START_TIMEOUT, ready)
        .await;
    harness
        .wait_cluster(
            "the new nodes to carry the zone of their machines",
            STEP_TIMEOUT,
            zones_assigned(&[("flotilla-3", ZONE_B), ("flotilla-4", ZONE_A)]),
        )
        .await;
    write(&database, &mut acknowledged, 60..80).await;
    // With 5 nodes the replicas of a lost node have somewhere to go; flotilla-3 holds no
    // replica of the zoned database (RF 2), which could not lose one.
    a_pod_stuck_on_a_lost_machine_is_replaced(&harness, &database, &mut acknowledged).await;

    progress("scaling the Cluster back to 3 nodes");
    harness.apply_cluster(3).await;
    harness
        .wait_cluster("the scale-down to 3 nodes to finish", START_TIMEOUT, ready)
        .await;
    assert_eq!(harness.statefulset_replicas().await, 3);
    // The volumes of the removed nodes go once their pods are gone (a claim in use is only
    // marked for deletion until then, as the API server's pvc-protection does).
    wait::until_async(
        "the volumes of removed nodes to be deleted",
        STEP_TIMEOUT,
        POLL,
        || async {
            let claims: Vec<String> =
                Api::<PersistentVolumeClaim>::namespaced(harness.client.clone(), NAMESPACE)
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?
                    .items
                    .iter()
                    .map(ResourceExt::name_any)
                    .collect();
            if claims
                .iter()
                .any(|c| c.ends_with("-3") || c.ends_with("-4"))
            {
                Err(format!("claims {claims:?}"))
            } else {
                Ok(Some(()))
            }
        },
    )
    .await
    .expect("the volumes of removed nodes are deleted");
    // The Events tell the order: every leaving node drained and removed, then the shrink.
    let events = harness.cluster_events().await;
    let position = |needle: &str| events.iter().position(|e| e.contains(needle));
    let shrink = position("shrinking the StatefulSet").expect("a shrink event");
    for pod in ["flotilla-3", "flotilla-4"] {
        let drained = position(&format!("draining {pod}"))
            .or_else(|| position(&format!("removed {pod}")))
            .unwrap_or_else(|| panic!("{pod} was drained or removed: {events:#?}"));
        assert!(
            drained < shrink,
            "{pod} left before the StatefulSet shrank: {events:#?}"
        );
    }
    harness
        .wait_group(
            "the database to be on the 3 remaining nodes",
            settled_on(&all),
        )
        .await;
    check_all_readable(&database, &acknowledged).await;
    progress(format!(
        "all {} acknowledged writes are readable",
        acknowledged.len()
    ));

    drift_is_reverted(&harness).await;
    a_lost_status_restarts_and_shrinks_nothing(&harness, &database, &mut acknowledged).await;
    check_all_readable(&database, &acknowledged).await;
    volumes_grow_under_running_pods(&harness, &database, &mut acknowledged).await;
    check_all_readable(&database, &acknowledged).await;

    progress("deleting the DatabaseGroup with deletionPolicy Delete");
    harness.apply_group("Delete").await;
    // Only a group whose database is dropped on deletion carries the finalizer; the operator
    // adds it when it sees the policy change, and a deletion before that would not wait.
    let groups = harness.groups();
    wait::until_async(
        "the DatabaseGroup to carry its finalizer",
        STEP_TIMEOUT,
        POLL,
        || async {
            match groups.get_opt(DATABASE).await {
                Ok(Some(group))
                    if group
                        .finalizers()
                        .iter()
                        .any(|f| f == controllers::database_group::FINALIZER) =>
                {
                    Ok(Some(()))
                }
                Ok(Some(_)) => Err("no finalizer yet".to_string()),
                Ok(None) => Err("the DatabaseGroup is gone".to_string()),
                Err(error) => Err(error.to_string()),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    harness
        .groups()
        .delete(DATABASE, &DeleteParams::default())
        .await
        .expect("DatabaseGroup deleted");
    let groups = harness.groups();
    wait::until_async(
        "the DatabaseGroup to be gone",
        STEP_TIMEOUT,
        POLL,
        || async {
            match groups.get_opt(DATABASE).await {
                Ok(None) => Ok(Some(())),
                Ok(Some(group)) => Err(format!("still there, finalizers {:?}", group.finalizers())),
                Err(error) => Err(error.to_string()),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let databases = database.list_databases().await.expect("databases");
    assert!(
        !databases.iter().any(|d| d.name == DATABASE),
        "the database is dropped: {databases:?}"
    );

    let mut harness = harness;
    harness.operator.abort();
    if let Some(kubelet) = harness.kubelet.take() {
        kubelet.stop().await;
    }
}

/// A hand edit of a child (here the bootstrap setting in the ConfigMap, `kubectl edit`) is
/// undone by the next pass, with an Event saying what was reverted.
async fn drift_is_reverted(harness: &Harness) {
    progress("editing the cluster's ConfigMap by hand (initial-cluster-state: new)");
    let cluster = harness.clusters().get(CLUSTER).await.expect("the Cluster");
    let name = cluster.configmap_name().expect("the ConfigMap's name");
    let configmaps = Api::<ConfigMap>::namespaced(harness.client.clone(), NAMESPACE);
    let edit = json!({"data": {INITIAL_CLUSTER_STATE_KEY: "new"}});
    configmaps
        .patch(&name, &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("ConfigMap edited");
    wait::until_async(
        "the operator to revert the hand edit, with an Event",
        STEP_TIMEOUT,
        POLL,
        || async {
            let live = configmaps.get(&name).await.map_err(|e| e.to_string())?;
            let value = live
                .data
                .as_ref()
                .and_then(|d| d.get(INITIAL_CLUSTER_STATE_KEY))
                .cloned();
            let events = harness.cluster_events().await;
            let told = events
                .iter()
                .any(|e| e.contains(&format!("reverted hand edits of ConfigMap {name}")));
            match (value.as_deref(), told) {
                (Some("existing"), true) => Ok(Some(())),
                _ => Err(format!(
                    "{INITIAL_CLUSTER_STATE_KEY} is {value:?}; events {events:?}"
                )),
            }
        },
    )
    .await
    .expect("drift reverted");
}

/// The Cluster's status is lost (as after a restore without status): the operator finds the
/// cluster bootstrapped from what it sees, restarts no pod, never shrinks the StatefulSet,
/// and writes the same cluster id back.
async fn a_lost_status_restarts_and_shrinks_nothing(
    harness: &Harness,
    database: &Client,
    acknowledged: &mut BTreeMap<String, String>,
) {
    let before = harness.clusters().get(CLUSTER).await.expect("the Cluster");
    let cluster_id = before.status.as_ref().and_then(|s| s.cluster_id.clone());
    assert!(cluster_id.is_some(), "a running cluster has an id");
    let pods = Api::<Pod>::namespaced(harness.client.clone(), NAMESPACE);
    let uids = |list: Vec<Pod>| -> BTreeMap<String, String> {
        list.into_iter()
            .filter_map(|p| Some((p.name_any(), p.metadata.uid?)))
            .collect()
    };
    let uids_before = uids(pods.list(&ListParams::default()).await.expect("pods").items);
    progress("wiping the Cluster's status");
    harness
        .clusters()
        .patch_status(
            CLUSTER,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": null})),
        )
        .await
        .expect("status wiped");
    wait::until_async(
        "the Cluster to be Ready again with its own cluster id",
        START_TIMEOUT,
        POLL,
        || async {
            // Never, at any moment, a smaller StatefulSet.
            let replicas = harness.statefulset_replicas().await;
            assert_eq!(
                replicas, 3,
                "the StatefulSet shrank after the status was lost"
            );
            let cluster = harness
                .clusters()
                .get(CLUSTER)
                .await
                .map_err(|e| e.to_string())?;
            ready(&cluster)?;
            let id = cluster.status.as_ref().and_then(|s| s.cluster_id.clone());
            if id == cluster_id {
                Ok(Some(()))
            } else {
                Err(format!("cluster id {id:?}, was {cluster_id:?}"))
            }
        },
    )
    .await
    .expect("status restored");
    let uids_after = uids(pods.list(&ListParams::default()).await.expect("pods").items);
    assert_eq!(uids_before, uids_after, "no pod was restarted or replaced");
    write(database, acknowledged, 80..90).await;
}

/// Every pod's uid and container restart count: the same pod with the same count has run
/// the same process all along.
async fn pod_runs(harness: &Harness) -> BTreeMap<String, (String, i32)> {
    Api::<Pod>::namespaced(harness.client.clone(), NAMESPACE)
        .list(&ListParams::default())
        .await
        .expect("pods")
        .items
        .into_iter()
        .filter_map(|p| {
            let restarts = p
                .status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .first()?
                .restart_count;
            Some((p.name_any(), (p.metadata.uid?, restarts)))
        })
        .collect()
}

/// The storage request of the StatefulSet's claim template and every claim's capacity.
async fn volume_sizes(harness: &Harness) -> (Option<String>, BTreeMap<String, Option<String>>) {
    let template = Api::<StatefulSet>::namespaced(harness.client.clone(), NAMESPACE)
        .get_opt(CLUSTER)
        .await
        .ok()
        .flatten()
        .and_then(|s| s.spec?.volume_claim_templates?.into_iter().next())
        .and_then(|t| t.spec?.resources?.requests?.remove("storage"))
        .map(|q| q.0);
    let capacities = Api::<PersistentVolumeClaim>::namespaced(harness.client.clone(), NAMESPACE)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let capacity = c
                .status
                .clone()
                .and_then(|s| s.capacity)
                .and_then(|mut c| c.remove("storage"))
                .map(|q| q.0);
            (c.name_any(), capacity)
        })
        .collect();
    (template, capacities)
}

/// A larger `storage.size`: the operator grows every volume (the stand-in's StorageClass
/// allows it and its driver completes each resize), waits for the new capacity, then
/// re-creates the StatefulSet with the larger claim template around the running pods. The
/// status shows the growth while it goes on; no node restarts; every write stays readable.
async fn volumes_grow_under_running_pods(
    harness: &Harness,
    database: &Client,
    acknowledged: &mut BTreeMap<String, String>,
) {
    let runs_before = pod_runs(harness).await;
    assert_eq!(runs_before.len(), 3, "{runs_before:?}");
    progress(format!(
        "raising storage.size from {FIRST_SIZE} to {GROWN_SIZE}"
    ));
    // The storage driver holds the growth until the status was seen to show it: otherwise
    // growing three volumes can pass between two looks at the status.
    harness.kubelet().hold_volume_growth();
    *harness
        .storage_size
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = GROWN_SIZE.to_owned();
    harness.apply_cluster(3).await;
    harness
        .wait_cluster(
            "the status to show the volumes growing",
            STEP_TIMEOUT,
            |cluster| {
                let progressing = cluster
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Progressing"))
                    .map(|c| format!("{} {}: {}", c.status, c.reason, c.message));
                match progressing {
                    Some(p) if p.starts_with("True VolumeGrowth") => Ok(()),
                    other => Err(format!("Progressing is {other:?}")),
                }
            },
        )
        .await;
    harness.kubelet().release_volume_growth();
    write(database, acknowledged, 100..110).await;
    let grown = wait::until_async(
        "every volume and the claim template to have the new size",
        START_TIMEOUT,
        POLL,
        || async {
            let (template, capacities) = volume_sizes(harness).await;
            let done = template.as_deref() == Some(GROWN_SIZE)
                && capacities.len() == 3
                && capacities
                    .values()
                    .all(|c| c.as_deref() == Some(GROWN_SIZE));
            if done {
                Ok(Some(capacities))
            } else {
                Err(format!(
                    "claim template {template:?}, volumes {capacities:?}"
                ))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    progress(format!("volumes grown: {grown:?}"));
    harness
        .wait_cluster(
            "the Cluster to be Ready after growing its volumes",
            STEP_TIMEOUT,
            |c| {
                ready(c)?;
                let reason = c
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Progressing"))
                    .map(|c| c.reason.clone());
                if reason.as_deref() == Some("VolumeGrowth") {
                    Err("still growing volumes".to_owned())
                } else {
                    Ok(())
                }
            },
        )
        .await;
    assert_eq!(
        pod_runs(harness).await,
        runs_before,
        "no pod was re-created and no node process restarted"
    );
    let events = harness.cluster_events().await;
    let position = |needle: &str| events.iter().position(|e| e.contains(needle));
    let recreated = position("re-creating the StatefulSet")
        .unwrap_or_else(|| panic!("an Event for re-creating the StatefulSet: {events:#?}"));
    for ordinal in 0..3 {
        let grown = position(&format!(
            "growing volume data-{CLUSTER}-{ordinal} to {GROWN_SIZE}"
        ))
        .unwrap_or_else(|| panic!("volume {ordinal} grown: {events:#?}"));
        assert!(grown < recreated, "{events:#?}");
    }
    check_all_readable(database, acknowledged).await;
}

/// The machine of a pod is lost (its process dies, its Node turns NotReady) and the node is
/// declared unrecoverable, as `kubectl flotilla destroy` does. The operator removes the node
/// from the cluster and deletes its volume and pod; the pod stays Terminating on the lost
/// machine, whose kubelet will never finish the deletion, so once `forceDeleteAfter` has
/// passed the operator deletes it with no grace period and says so in a Warning Event. A
/// fresh node then starts on another machine and the cluster is whole again.
async fn a_pod_stuck_on_a_lost_machine_is_replaced(
    harness: &Harness,
    database: &Client,
    acknowledged: &mut BTreeMap<String, String>,
) {
    let (victim, machine) = ("flotilla-3", "machine-b2");
    let pods = Api::<Pod>::namespaced(harness.client.clone(), NAMESPACE);
    let lost = pods.get(victim).await.expect("the pod");
    assert_eq!(
        lost.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(machine)
    );
    progress(format!(
        "losing {machine}, where {victim} runs, and marking {victim} unrecoverable"
    ));
    harness.kubelet().lose_machine(machine);
    let mark = json!({"metadata": {"annotations": {UNRECOVERABLE_ANNOTATION: "true"}}});
    pods.patch(victim, &PatchParams::default(), &Patch::Merge(&mark))
        .await
        .expect("pod annotated");
    let stuck = wait::until_async(
        &format!("{victim} to be Terminating on the lost machine"),
        STEP_TIMEOUT,
        POLL,
        || async {
            let pod = pods.get(victim).await.map_err(|e| e.to_string())?;
            if pod.metadata.uid == lost.metadata.uid && pod.metadata.deletion_timestamp.is_some() {
                Ok(Some(std::time::Instant::now()))
            } else {
                Err(format!(
                    "deletionTimestamp {:?}; {}",
                    pod.metadata.deletion_timestamp,
                    harness.conditions().await
                ))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // The cluster keeps a majority meanwhile.
    write(database, acknowledged, 110..120).await;
    let fresh = wait::until_async(
        &format!("a fresh {victim} on another machine"),
        FORCE_DELETE_AFTER + STEP_TIMEOUT,
        POLL,
        || async {
            let pod = pods.get_opt(victim).await.map_err(|e| e.to_string())?;
            match pod {
                Some(pod) if pod.metadata.uid != lost.metadata.uid => Ok(Some(pod)),
                Some(pod) => Err(format!(
                    "still the lost pod, deleting since {:?}; {}",
                    pod.metadata.deletion_timestamp,
                    harness.conditions().await
                )),
                None => Err("no pod".to_owned()),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let waited = stuck.elapsed();
    assert!(
        waited + Duration::from_secs(2) >= FORCE_DELETE_AFTER,
        "the pod was deleted by force after {waited:?}, before forceDeleteAfter"
    );
    let placed = fresh.spec.as_ref().and_then(|s| s.node_name.clone());
    assert!(
        placed.as_deref().is_some_and(|m| m != machine),
        "the fresh pod runs on {placed:?}"
    );
    let events = harness.cluster_events().await;
    assert!(
        events.iter().any(|e| e.contains(&format!(
            "{victim} was stuck terminating on Kubernetes node {machine}"
        ))),
        "an Event tells of the forced deletion: {events:#?}"
    );
    harness
        .wait_cluster(
            "the Cluster to be Ready with a fresh node",
            START_TIMEOUT,
            ready,
        )
        .await;
    harness
        .wait_group(
            "every shard of the database to have 3 members again",
            settled_on(&[
                "flotilla-0",
                "flotilla-1",
                "flotilla-2",
                "flotilla-3",
                "flotilla-4",
            ]),
        )
        .await;
    write(database, acknowledged, 120..130).await;
    check_all_readable(database, acknowledged).await;
}
