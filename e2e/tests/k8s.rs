//! The operator scenario against a real Kubernetes cluster (kind, for example), from
//! `KUBECONFIG`, with the operator installed there (see the README's kind section).
//!
//! When `KUBECONFIG` is not set the test says plainly that it did not run (it is opt-in, in CI
//! too); when the cluster it names cannot be reached or lacks the operator's CRDs it says so
//! too, and fails under `CI=true`. Each run works in a namespace of its own and deletes
//! it at the end (`FLOTILLA_E2E_KEEP=1` keeps it). Documents are written and read with the
//! `flotilla` CLI inside a node pod (`kubectl exec`), so the test needs no route into the
//! cluster's network. `FLOTILLA_E2E_K8S_IMAGE` overrides the example's node image.
//!
//! With the node's default `--rehab-after` (60s) a deleted pod is usually back before its
//! replicas are marked Rehab; this test checks that the pod comes back and that its replicas
//! are Members again, and reports whether Rehab was seen.

use std::process::Command;
use std::time::Duration;

use flotilla_operator::crd::{Cluster, DatabaseGroup};
use flotilla_testkit::environment::{not_configured, not_run};
use flotilla_testkit::{progress, repo_root, unique_name, wait};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

const CLUSTER: &str = "flotilla";
const DATABASE: &str = "orders";
const USER: &str = "kubectl";
const TIMEOUT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_secs(2);

fn yaml_file(path: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join(path)).expect("example manifest");
    serde_saphyr::from_str(&text).expect("example manifest parses")
}

/// A client of the cluster in `KUBECONFIG`, or why there is none.
/// Why the scenario cannot run: no cluster was given (an opt-in test, never a failure), or the
/// one given is not usable (a failure under `CI=true`).
enum NoCluster {
    NotConfigured(String),
    Unusable(String),
}

async fn client_or_reason() -> Result<kube::Client, NoCluster> {
    if std::env::var_os("KUBECONFIG").is_none() {
        return Err(NoCluster::NotConfigured("KUBECONFIG is not set".to_owned()));
    }
    usable_client().await.map_err(NoCluster::Unusable)
}

async fn usable_client() -> Result<kube::Client, String> {
    flotilla_operator::use_ring_crypto();
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("cannot load KUBECONFIG: {e}"))?;
    let version = client
        .apiserver_version()
        .await
        .map_err(|e| format!("the cluster in KUBECONFIG is unreachable: {e}"))?;
    progress(format!("Kubernetes {}", version.git_version));
    match Api::<Cluster>::all(client.clone())
        .list(&ListParams::default().limit(1))
        .await
    {
        Ok(_) => Ok(client),
        Err(e) => Err(format!(
            "the flotilla.dev CRDs are not installed (install the operator first): {e}"
        )),
    }
}

/// Runs the `flotilla` CLI in the node pod `pod`.
fn flotilla(namespace: &str, pod: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new("kubectl")
        .args([
            "exec",
            "-n",
            namespace,
            pod,
            "--",
            "flotilla",
            "--endpoints",
        ])
        .arg(format!("{CLUSTER}:7100"))
        .args(args)
        .output()
        .map_err(|e| format!("running kubectl: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

fn cluster_ready(cluster: &Cluster) -> Result<(), String> {
    let status = cluster.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let done = ready
        && status.ready_nodes == cluster.spec.replicas
        && status.leader.is_some()
        && status.scale_down.is_none()
        && status.nodes.len() == usize::try_from(cluster.spec.replicas).unwrap_or(0)
        && cluster.metadata.generation == status.observed_generation;
    if done {
        Ok(())
    } else {
        Err(format!(
            "ready {ready}, {} ready nodes, leader {:?}, scale-down {:?}",
            status.ready_nodes, status.leader, status.scale_down
        ))
    }
}

fn group_settled(group: &DatabaseGroup) -> Result<(), String> {
    let status = group.status.clone().unwrap_or_default();
    let rf = usize::try_from(group.spec.replication_factor).unwrap_or(0);
    let done = status.replication_factor_met
        && status.shards.iter().all(|s| {
            s.leader.is_some()
                && s.rehab.is_empty()
                && s.promotables.is_empty()
                && s.members.len() == rf
        });
    if done {
        Ok(())
    } else {
        Err(format!("{:?}", status.shards))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_scenario_runs_on_a_real_cluster() {
    let client = match client_or_reason().await {
        Ok(client) => client,
        Err(NoCluster::NotConfigured(reason)) => {
            not_configured("the k8s scenario", reason);
            return;
        }
        Err(NoCluster::Unusable(reason)) => {
            not_run("the k8s scenario", reason);
            return;
        }
    };
    let namespace = unique_name("flotilla-e2e");
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("namespace"),
        )
        .await
        .expect("namespace created");
    progress(format!("working in namespace {namespace}"));
    let clusters = Api::<Cluster>::namespaced(client.clone(), &namespace);
    let groups = Api::<DatabaseGroup>::namespaced(client.clone(), &namespace);
    let apply_cluster = |replicas: i32| {
        let mut cluster = yaml_file("deploy/examples/cluster.yaml");
        cluster["metadata"]["namespace"] = json!(namespace);
        cluster["spec"]["replicas"] = json!(replicas);
        if let Ok(image) = std::env::var("FLOTILLA_E2E_K8S_IMAGE") {
            cluster["spec"]["image"] = json!(image);
        }
        let clusters = clusters.clone();
        async move {
            clusters
                .patch(
                    CLUSTER,
                    &PatchParams::apply(USER).force(),
                    &Patch::Apply(&cluster),
                )
                .await
                .expect("Cluster applied");
        }
    };
    let wait_cluster = |what: &'static str| {
        let clusters = clusters.clone();
        async move {
            wait::until_async(what, TIMEOUT, POLL, || async {
                let cluster = clusters.get(CLUSTER).await.map_err(|e| e.to_string())?;
                cluster_ready(&cluster).map(|()| Some(()))
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        }
    };
    let wait_group = |what: &'static str| {
        let groups = groups.clone();
        async move {
            wait::until_async(what, TIMEOUT, POLL, || async {
                let group = groups.get(DATABASE).await.map_err(|e| e.to_string())?;
                group_settled(&group).map(|()| Some(()))
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        }
    };
    let apply_group = |policy: &str| {
        let mut group = yaml_file("deploy/examples/database-group.yaml");
        group["metadata"]["namespace"] = json!(namespace);
        group["spec"]["deletionPolicy"] = json!(policy);
        let groups = groups.clone();
        async move {
            groups
                .patch(
                    DATABASE,
                    &PatchParams::apply(USER).force(),
                    &Patch::Apply(&group),
                )
                .await
                .expect("DatabaseGroup applied");
        }
    };

    apply_cluster(3).await;
    wait_cluster("the Cluster to be Ready with 3 nodes").await;
    apply_group("Retain").await;
    wait_group("every shard to have a leader and 3 members").await;

    let mut written = Vec::new();
    for i in 0..20 {
        let id = format!("item-{i:04}");
        let body = json!({"n": i}).to_string();
        match flotilla(
            &namespace,
            "flotilla-0",
            &["doc", "put", DATABASE, "items", &id, &body],
        ) {
            Ok(_) => written.push(id),
            Err(e) => progress(format!("write {id} not acknowledged: {e}")),
        }
    }
    assert!(
        !written.is_empty(),
        "writes through the client Service succeed"
    );

    progress("deleting pod flotilla-2");
    Api::<Pod>::namespaced(client.clone(), &namespace)
        .delete("flotilla-2", &DeleteParams::default())
        .await
        .expect("pod deleted");
    let rehab_seen = wait::until_async(
        "a replica of flotilla-2 in Rehab",
        Duration::from_secs(90),
        POLL,
        || async {
            let group = groups.get(DATABASE).await.map_err(|e| e.to_string())?;
            let status = group.status.unwrap_or_default();
            Ok(status
                .shards
                .iter()
                .any(|s| s.rehab.iter().any(|p| p == "flotilla-2"))
                .then_some(()))
        },
    )
    .await
    .is_ok();
    progress(format!(
        "Rehab seen while flotilla-2 was away: {rehab_seen}"
    ));
    wait_cluster("the Cluster to be Ready again").await;
    wait_group("flotilla-2's replicas to be Members again").await;

    apply_cluster(5).await;
    wait_cluster("5 nodes to be ready").await;
    apply_cluster(3).await;
    wait_cluster("the scale-down to 3 nodes to finish").await;
    wait_group("the database to be on the remaining nodes").await;
    for id in &written {
        let document = flotilla(
            &namespace,
            "flotilla-0",
            &["doc", "get", DATABASE, "items", id],
        )
        .unwrap_or_else(|e| panic!("reading {id}: {e}"));
        assert!(
            document.contains("\"n\""),
            "acknowledged write {id} is readable: {document}"
        );
    }

    apply_group("Delete").await;
    groups
        .delete(DATABASE, &DeleteParams::default())
        .await
        .expect("DatabaseGroup deleted");
    wait::until_async("the DatabaseGroup to be gone", TIMEOUT, POLL, || async {
        match groups.get_opt(DATABASE).await {
            Ok(None) => Ok(Some(())),
            Ok(Some(group)) => Err(format!("finalizers {:?}", group.finalizers())),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        flotilla(&namespace, "flotilla-0", &["db", "status", DATABASE]).is_err(),
        "the database is dropped"
    );

    if std::env::var_os("FLOTILLA_E2E_KEEP").is_none() {
        let _ = Api::<Namespace>::all(client)
            .delete(&namespace, &DeleteParams::default())
            .await;
    }
}
