//! What `kubectl flotilla` changes on a Cluster: merge patches the operator acts on, so
//! that every change goes through the operator's own safe steps (a restart rolls the pods
//! followers first, leaders after a transfer, gated on quorum), and the client the plugin
//! talks with (`--kubeconfig`, `--context`, `-n`).

use crate::crd::cluster_funcs::{CLUSTER_LABEL, HAND_OVER_ANNOTATION, UNRECOVERABLE_ANNOTATION};
use crate::crd::database_group::ClusterRef;
use crate::crd::{Backup, BackupDestination, BackupSpec, SecretRef};
use crate::error::{Error, Result};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use serde_json::{Value, json};
use std::path::Path;

/// Pod annotation whose change makes the operator restart every node (as
/// `kubectl rollout restart` does with `kubectl.kubernetes.io/restartedAt`).
pub const RESTARTED_AT: &str = "flotilla.dev/restartedAt";

/// Restarts every node of the cluster through the operator: a new pod template annotation.
pub fn restart_patch(at: Timestamp) -> Value {
    json!({"spec": {"pod": {"annotations": {RESTARTED_AT: at.to_string()}}}})
}

/// Stops (`true`) or resumes (`false`) every change the operator makes to the cluster.
pub fn pause_patch(paused: bool) -> Value {
    json!({"spec": {"paused": paused}})
}

/// Asks the operator to move every leadership off the pod's node (it clears the annotation
/// once the node leads nothing).
pub fn hand_over_patch(at: Timestamp) -> Value {
    json!({"metadata": {"annotations": {HAND_OVER_ANNOTATION: at.to_string()}}})
}

/// Marks the pod's node as lost for good: the operator removes it from the cluster, deletes
/// its volume and recreates the pod with a fresh node, which joins as a new member and gets
/// its replicas copied from the others.
pub fn destroy_patch() -> Value {
    json!({"metadata": {"annotations": {UNRECOVERABLE_ANNOTATION: "true"}}})
}

/// What `kubectl flotilla backup` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupRequest {
    pub cluster: String,
    pub database: String,
    /// The Cluster's `spec.backup` destination when unset.
    pub destination: Option<String>,
    pub env_from_secret: Option<String>,
    pub volume_claim: Option<String>,
    /// The Backup's read rate limit (MiB/s); the Cluster's when unset.
    pub max_rate_mib_per_second: Option<u32>,
    /// The Backup's name; `<cluster>-<database>-<UTC time>` when unset.
    pub name: Option<String>,
}

/// The Backup object of a request made at `at`.
pub fn backup_object(request: &BackupRequest, namespace: &str, at: Timestamp) -> Backup {
    let name = request.name.clone().unwrap_or_else(|| {
        let stamp = at.strftime("%Y%m%d%H%M%S");
        format!("{}-{}-{stamp}", request.cluster, request.database).replace('_', "-")
    });
    let mut backup = Backup::new(
        &name,
        BackupSpec {
            cluster_ref: ClusterRef {
                name: request.cluster.clone(),
            },
            database: request.database.clone(),
            target: BackupDestination {
                destination: request.destination.clone(),
                env_from_secret: request
                    .env_from_secret
                    .clone()
                    .map(|name| SecretRef { name }),
                volume_claim: request.volume_claim.clone(),
            },
            max_rate_mib_per_second: request.max_rate_mib_per_second,
        },
    );
    backup.metadata.namespace = Some(namespace.to_owned());
    backup
}

/// Merge-patches a pod of the Cluster `cluster`; refuses a pod that is not one of its nodes.
pub async fn patch_node_pod(
    client: Client,
    namespace: &str,
    cluster: &str,
    pod: &str,
    patch: &Value,
) -> Result<Pod> {
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let live = pods.get(pod).await?;
    if live.labels().get(CLUSTER_LABEL).map(String::as_str) != Some(cluster) {
        return Err(Error::NotANode {
            pod: pod.to_owned(),
            cluster: cluster.to_owned(),
        });
    }
    Ok(pods
        .patch(pod, &PatchParams::default(), &Patch::Merge(patch))
        .await?)
}

/// A client for the given kubeconfig file and context (the defaults when `None`), and the
/// namespace to use: `namespace`, else the context's.
pub async fn client(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    namespace: Option<&str>,
) -> Result<(Client, String)> {
    crate::use_ring_crypto();
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..KubeConfigOptions::default()
    };
    let invalid = |message: String| Error::Kubeconfig {
        source_name: kubeconfig.map_or("(default)".to_owned(), |p| p.display().to_string()),
        message,
    };
    let config = match (kubeconfig, context) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path).map_err(|e| invalid(e.to_string()))?;
            Config::from_custom_kubeconfig(file, &options).await
        }
        (None, Some(_)) => Config::from_kubeconfig(&options).await,
        (None, None) => return default_client(namespace).await,
    }
    .map_err(|e| invalid(e.to_string()))?;
    let namespace = namespace.map_or_else(|| config.default_namespace.clone(), str::to_owned);
    Ok((Client::try_from(config)?, namespace))
}

/// The in-cluster config or the default kubeconfig, as kubectl would pick.
async fn default_client(namespace: Option<&str>) -> Result<(Client, String)> {
    let client = Client::try_default().await?;
    let namespace = namespace.map_or_else(|| client.default_namespace().to_owned(), str::to_owned);
    Ok((client, namespace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Cluster;
    use flotilla_kubefake::FakeApi;
    use kube::Api;
    use kube::api::{Patch, PatchParams};

    async fn patched(api: &FakeApi, patch: Value) -> Cluster {
        let clusters: Api<Cluster> = Api::namespaced(api.client(), "db");
        let result = clusters
            .patch("flotilla", &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        match result {
            Ok(cluster) => cluster,
            Err(e) => panic!("patching the Cluster: {e}"),
        }
    }

    #[tokio::test]
    async fn pause_then_resume_sets_and_clears_spec_paused() {
        let api = crate::crd::fixtures::fake_api();
        api.put(&Cluster::test());
        assert!(patched(&api, pause_patch(true)).await.spec.paused);
        assert!(!patched(&api, pause_patch(false)).await.spec.paused);
    }

    #[tokio::test]
    async fn restart_stamps_the_pod_template_and_keeps_the_other_annotations() {
        let api = crate::crd::fixtures::fake_api();
        let mut cluster = Cluster::test();
        let pod = cluster.spec.pod.get_or_insert_with(Default::default);
        pod.annotations
            .insert("team".to_owned(), "storage".to_owned());
        api.put(&cluster);
        let restarted = patched(&api, restart_patch(Timestamp::UNIX_EPOCH)).await;
        let statefulset = match crate::desired::statefulset(&restarted, 3) {
            Ok(statefulset) => statefulset,
            Err(e) => panic!("{e}"),
        };
        let annotations = statefulset
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .unwrap_or_default();
        assert_eq!(
            annotations.get(RESTARTED_AT).map(String::as_str),
            Some("1970-01-01T00:00:00Z"),
            "the pod template changes, so the operator rolls the pods"
        );
        assert_eq!(annotations.get("team").map(String::as_str), Some("storage"));
    }

    fn pod(name: &str, cluster: &str) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.to_owned());
        pod.metadata.namespace = Some("db".to_owned());
        pod.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(CLUSTER_LABEL.to_owned(), cluster.to_owned());
        pod
    }

    #[tokio::test]
    async fn transfer_leadership_and_destroy_annotate_only_a_node_of_the_named_cluster() {
        let api = crate::crd::fixtures::fake_api();
        api.put(&pod("flotilla-1", "flotilla"));
        api.put(&pod("other-0", "other"));
        let handed = patch_node_pod(
            api.client(),
            "db",
            "flotilla",
            "flotilla-1",
            &hand_over_patch(Timestamp::UNIX_EPOCH),
        )
        .await;
        let handed = handed.unwrap_or_else(|e| panic!("{e}"));
        assert!(handed.annotations().contains_key(HAND_OVER_ANNOTATION));
        let destroyed = patch_node_pod(
            api.client(),
            "db",
            "flotilla",
            "flotilla-1",
            &destroy_patch(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            destroyed
                .annotations()
                .get(UNRECOVERABLE_ANNOTATION)
                .map(String::as_str),
            Some("true")
        );
        let refused =
            patch_node_pod(api.client(), "db", "flotilla", "other-0", &destroy_patch()).await;
        assert!(
            matches!(refused, Err(Error::NotANode { .. })),
            "{refused:?}"
        );
        let untouched: Option<Pod> = api.get("db", "other-0");
        assert!(untouched.is_some_and(|p| !p.annotations().contains_key(UNRECOVERABLE_ANNOTATION)));
    }
}
