//! The StatefulSet that runs the nodes.
//!
//! The operator, not the StatefulSet controller, decides when a pod restarts
//! (`updateStrategy: OnDelete`), and the pod template depends only on the `Cluster`
//! spec, never on the operator's version, so upgrading the operator restarts nothing.

use super::child_metadata;
use super::configmap::{INITIAL_CLUSTER_STATE_KEY, JOIN_KEY};
use crate::crd::Cluster;
use crate::crd::cluster_funcs::{
    CLIENT_PORT, DATA_DIR, DATA_VOLUME, HTTP_PORT, NODE_CONTAINER, PEER_PORT, TLS_DIR, TLS_VOLUME,
};
use crate::error::Result;
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapKeySelector, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecretVolumeSource, SecurityContext, Volume,
    VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// User and group the node runs as (the `nonroot` user of distroless images).
pub const NODE_UID: i64 = 65532;
/// Seconds a node gets to hand over leadership and flush before it is killed.
pub const TERMINATION_GRACE_SECONDS: i64 = 60;

/// The StatefulSet of `cluster` with `replicas` pods.
pub fn statefulset(cluster: &Cluster, replicas: i32) -> Result<StatefulSet> {
    let selector = cluster.selector_labels()?;
    Ok(StatefulSet {
        metadata: child_metadata(cluster, cluster.statefulset_name()?)?,
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(cluster.headless_service_name()?),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            pod_management_policy: Some("Parallel".to_owned()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_owned()),
                ..StatefulSetUpdateStrategy::default()
            }),
            // The operator deletes a node's volume itself, and only once the node has been
            // removed from the cluster.
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".to_owned()),
                    when_scaled: Some("Retain".to_owned()),
                },
            ),
            template: pod_template(cluster)?,
            volume_claim_templates: Some(vec![volume_claim_template(cluster)?]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    })
}

fn volume_claim_template(cluster: &Cluster) -> Result<PersistentVolumeClaim> {
    let storage = &cluster.spec.storage;
    Ok(PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_owned()),
            labels: Some(cluster.selector_labels()?),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    storage.size.clone(),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    })
}

fn pod_template(cluster: &Cluster) -> Result<PodTemplateSpec> {
    let overrides = cluster.spec.pod.clone().unwrap_or_default();
    let mut labels = overrides.labels;
    labels.extend(cluster.labels()?);
    let affinity = match overrides.affinity {
        Some(affinity) => affinity,
        None => spread_over_hosts(cluster)?,
    };
    Ok(PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            annotations: (!overrides.annotations.is_empty()).then_some(overrides.annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![node_container(cluster)?],
            volumes: Some(volumes(cluster)?),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(NODE_UID),
                run_as_group: Some(NODE_UID),
                fs_group: Some(NODE_UID),
                fs_group_change_policy: Some("OnRootMismatch".to_owned()),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_owned(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            // Service links would inject variables such as FLOTILLA_PORT for a Service named
            // `flotilla`, and the node reads every FLOTILLA_* variable as a flag.
            enable_service_links: Some(false),
            automount_service_account_token: Some(false),
            termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
            node_selector: (!overrides.node_selector.is_empty()).then_some(overrides.node_selector),
            affinity: Some(affinity),
            tolerations: (!overrides.tolerations.is_empty()).then_some(overrides.tolerations),
            topology_spread_constraints: (!overrides.topology_spread_constraints.is_empty())
                .then_some(overrides.topology_spread_constraints),
            ..PodSpec::default()
        }),
    })
}

/// Scratch space, and with TLS the Secret of the node certificate. The kubelet refreshes
/// the files of a mounted Secret (never mounted by `subPath`) when it changes, and the node
/// reads them again, so a renewed certificate needs no restart.
fn volumes(cluster: &Cluster) -> Result<Vec<Volume>> {
    let mut volumes = vec![Volume {
        name: "tmp".to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    if cluster.tls_enabled() {
        volumes.push(Volume {
            name: TLS_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(cluster.tls_secret_name()?),
                // Readable by the node's group (fsGroup) only.
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    Ok(volumes)
}

/// Prefer one node per Kubernetes node, unless the spec sets its own affinity.
fn spread_over_hosts(cluster: &Cluster) -> Result<Affinity> {
    Ok(Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key: "kubernetes.io/hostname".to_owned(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(cluster.selector_labels()?),
                            ..LabelSelector::default()
                        }),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    })
}

fn node_container(cluster: &Cluster) -> Result<Container> {
    let configmap = cluster.configmap_name()?;
    Ok(Container {
        name: NODE_CONTAINER.to_owned(),
        image: Some(cluster.spec.image.clone()),
        image_pull_policy: Some(cluster.image_pull_policy().to_owned()),
        command: Some(vec!["flotilla-node".to_owned()]),
        args: Some(node_args(cluster)?),
        env: Some(vec![
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
            configmap_env(
                "FLOTILLA_INITIAL_CLUSTER_STATE",
                &configmap,
                INITIAL_CLUSTER_STATE_KEY,
            ),
            configmap_env("FLOTILLA_JOIN", &configmap, JOIN_KEY),
        ]),
        ports: Some(vec![
            container_port("client", CLIENT_PORT),
            container_port("peer", PEER_PORT),
            container_port("http", HTTP_PORT),
        ]),
        readiness_probe: Some(http_probe(cluster, "/readyz", 5, 3)),
        liveness_probe: Some(http_probe(cluster, "/healthz", 10, 6)),
        // Opening a large data file may take a while; liveness starts only after this.
        startup_probe: Some(http_probe(cluster, "/healthz", 5, 120)),
        resources: cluster.spec.resources.clone(),
        volume_mounts: Some(volume_mounts(cluster)),
        security_context: Some(restricted_container()),
        ..Container::default()
    })
}

/// The security context of every container the operator runs (the restricted Pod Security
/// profile): non-root, no privilege escalation, read-only root filesystem, no capabilities.
pub fn restricted_container() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

fn volume_mounts(cluster: &Cluster) -> Vec<VolumeMount> {
    let mut mounts = vec![
        VolumeMount {
            name: DATA_VOLUME.to_owned(),
            mount_path: DATA_DIR.to_owned(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "tmp".to_owned(),
            mount_path: "/tmp".to_owned(),
            ..VolumeMount::default()
        },
    ];
    if cluster.tls_enabled() {
        mounts.push(VolumeMount {
            name: TLS_VOLUME.to_owned(),
            mount_path: TLS_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    mounts
}

/// The node's TLS flags: the one certificate of the `<cluster>-tls` Secret on every port,
/// its trust bundle as the CA of both client certificates and peers (mutual TLS on the peer
/// port), and client certificates of that CA authenticating their common name as the user
/// (so that the operator's certificate, named `root`, is the administrator when users are
/// enabled).
fn tls_args() -> Vec<String> {
    let cert = format!("{TLS_DIR}/tls.crt");
    let key = format!("{TLS_DIR}/tls.key");
    let ca = format!("{TLS_DIR}/ca.crt");
    let mut args = Vec::new();
    for (flag, path) in [
        ("--tls-cert", &cert),
        ("--tls-key", &key),
        ("--tls-ca", &ca),
        ("--peer-tls-cert", &cert),
        ("--peer-tls-key", &key),
        ("--peer-tls-ca", &ca),
    ] {
        args.push(flag.to_owned());
        args.push(path.clone());
    }
    args.push("--client-cert-auth".to_owned());
    args
}

/// Command-line arguments of `flotilla-node`. `$(VAR)` is expanded by the kubelet from the
/// container's environment; the two values that change over a cluster's life come from the
/// ConfigMap, so that changing them does not change the pod template.
pub fn node_args(cluster: &Cluster) -> Result<Vec<String>> {
    let domain = cluster.pod_domain()?;
    let mut args: Vec<String> = ["serve", "--name", "$(POD_NAME)", "--data-dir", DATA_DIR]
        .into_iter()
        .map(str::to_owned)
        .collect();
    args.extend([
        "--client-addr".to_owned(),
        format!("0.0.0.0:{CLIENT_PORT}"),
        "--peer-addr".to_owned(),
        format!("0.0.0.0:{PEER_PORT}"),
        "--http-addr".to_owned(),
        format!("0.0.0.0:{HTTP_PORT}"),
        "--advertise-client".to_owned(),
        format!("$(POD_NAME).{domain}:{CLIENT_PORT}"),
        "--advertise-peer".to_owned(),
        format!("$(POD_NAME).{domain}:{PEER_PORT}"),
        "--initial-cluster-state".to_owned(),
        "$(FLOTILLA_INITIAL_CLUSTER_STATE)".to_owned(),
        "--join".to_owned(),
        "$(FLOTILLA_JOIN)".to_owned(),
        "--meta-voters".to_owned(),
        cluster.spec.meta_voters.to_string(),
    ]);
    if let Some(interval) = cluster.spec.heartbeat_interval {
        args.push("--heartbeat-interval".to_owned());
        args.push(millis(interval).to_string());
    }
    if let Some(timeout) = cluster.spec.election_timeout {
        args.push("--election-timeout".to_owned());
        args.push(millis(timeout).to_string());
    }
    let spec = &cluster.spec;
    let numbers = [
        ("--snapshot-threshold", spec.snapshot_threshold),
        ("--snapshot-log-bytes", spec.snapshot_log_bytes),
        ("--promotion-lag", spec.promotion_lag),
        ("--rehab-lag", spec.rehab_lag),
    ];
    for (flag, value) in numbers {
        if let Some(value) = value {
            args.push(flag.to_owned());
            args.push(value.to_string());
        }
    }
    if let Some(after) = spec.rehab_after {
        args.push("--rehab-after".to_owned());
        args.push(format!("{}ms", millis(after)));
    }
    if cluster.tls_enabled() {
        args.extend(tls_args());
    }
    Ok(args)
}

fn millis(duration: kube::core::Duration) -> u128 {
    std::time::Duration::from(duration).as_millis()
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn configmap_env(name: &str, configmap: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: configmap.to_owned(),
                key: key.to_owned(),
                ..ConfigMapKeySelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

/// A probe of the HTTP port; over TLS when the port serves it (the kubelet does not verify
/// the certificate).
fn http_probe(cluster: &Cluster, path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            scheme: cluster.tls_enabled().then(|| "HTTPS".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{PodOverrides, cluster_funcs::CLUSTER_LABEL};
    use k8s_openapi::api::core::v1::Toleration;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    /// The StatefulSet's spec; a builder error or a missing part fails the test.
    fn spec(cluster: &Cluster, replicas: i32) -> StatefulSetSpec {
        match statefulset(cluster, replicas) {
            Ok(StatefulSet {
                spec: Some(spec), ..
            }) => spec,
            Ok(_) => panic!("the StatefulSet has no spec"),
            Err(error) => panic!("building the StatefulSet: {error}"),
        }
    }

    fn pod(cluster: &Cluster) -> PodSpec {
        match spec(cluster, 3).template.spec {
            Some(pod) => pod,
            None => panic!("the pod template has no spec"),
        }
    }

    fn container(cluster: &Cluster) -> Container {
        match pod(cluster).containers.into_iter().next() {
            Some(container) => container,
            None => panic!("the pod has no container"),
        }
    }

    fn args(cluster: &Cluster) -> Vec<String> {
        container(cluster).args.unwrap_or_default()
    }

    /// The value following `flag` in `args`.
    fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    }

    #[test]
    fn the_operator_restarts_pods_itself_and_starts_them_in_parallel() {
        let spec = spec(&Cluster::test(), 5);
        assert_eq!(spec.replicas, Some(5));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(
            spec.update_strategy.and_then(|s| s.type_).as_deref(),
            Some("OnDelete")
        );
        assert_eq!(spec.service_name.as_deref(), Some("flotilla-peers"));
        let retention = spec
            .persistent_volume_claim_retention_policy
            .unwrap_or_default();
        assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
        assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
    }

    #[test]
    fn every_node_gets_a_volume_from_the_storage_spec() {
        let mut cluster = Cluster::test();
        cluster.spec.storage.size = Quantity("50Gi".to_owned());
        cluster.spec.storage.storage_class_name = Some("fast".to_owned());
        let templates = spec(&cluster, 3).volume_claim_templates.unwrap_or_default();
        assert_eq!(templates.len(), 1);
        assert_eq!(templates[0].metadata.name.as_deref(), Some("data"));
        let pvc = templates[0].spec.clone().unwrap_or_default();
        assert_eq!(pvc.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(pvc.access_modes, Some(vec!["ReadWriteOnce".to_owned()]));
        let requests = pvc.resources.and_then(|r| r.requests).unwrap_or_default();
        assert_eq!(requests.get("storage"), Some(&Quantity("50Gi".to_owned())));
        let mounts = container(&cluster).volume_mounts.unwrap_or_default();
        assert!(
            mounts
                .iter()
                .any(|m| m.name == "data" && m.mount_path == DATA_DIR)
        );
    }

    #[test]
    fn the_node_listens_on_all_interfaces_and_advertises_its_stable_dns_name() {
        let args = args(&Cluster::test());
        assert_eq!(args.first().map(String::as_str), Some("serve"));
        assert_eq!(flag(&args, "--name"), Some("$(POD_NAME)"));
        assert_eq!(flag(&args, "--data-dir"), Some("/var/lib/flotilla"));
        assert_eq!(flag(&args, "--client-addr"), Some("0.0.0.0:7100"));
        assert_eq!(flag(&args, "--peer-addr"), Some("0.0.0.0:7101"));
        assert_eq!(flag(&args, "--http-addr"), Some("0.0.0.0:7102"));
        assert_eq!(
            flag(&args, "--advertise-client"),
            Some("$(POD_NAME).flotilla-peers.db.svc:7100")
        );
        assert_eq!(
            flag(&args, "--advertise-peer"),
            Some("$(POD_NAME).flotilla-peers.db.svc:7101")
        );
        assert_eq!(flag(&args, "--meta-voters"), Some("3"));
    }

    #[test]
    fn bootstrap_state_and_join_list_come_from_the_configmap() {
        let cluster = Cluster::test();
        let args = args(&cluster);
        assert_eq!(
            flag(&args, "--initial-cluster-state"),
            Some("$(FLOTILLA_INITIAL_CLUSTER_STATE)")
        );
        assert_eq!(flag(&args, "--join"), Some("$(FLOTILLA_JOIN)"));
        let env = container(&cluster).env.unwrap_or_default();
        for (name, key) in [
            ("FLOTILLA_INITIAL_CLUSTER_STATE", INITIAL_CLUSTER_STATE_KEY),
            ("FLOTILLA_JOIN", JOIN_KEY),
        ] {
            let source = env
                .iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value_from.clone())
                .and_then(|v| v.config_map_key_ref)
                .unwrap_or_default();
            assert_eq!(source.name, "flotilla-config");
            assert_eq!(source.key, key);
        }
    }

    #[test]
    fn bootstrapping_does_not_change_the_pod_template() {
        let fresh = Cluster::test();
        let bootstrapped = Cluster::test().with_cluster_id("c-1");
        assert_eq!(spec(&fresh, 1).template, spec(&bootstrapped, 3).template);
    }

    #[test]
    fn scaling_does_not_change_the_pod_template() {
        let cluster = Cluster::test().with_cluster_id("c-1");
        assert_eq!(
            spec(&cluster, 3).template,
            spec(&cluster.clone().with_replicas(5), 5).template
        );
    }

    #[test]
    fn the_pod_template_does_not_mention_the_operator_version() {
        let mut cluster = Cluster::test();
        cluster.spec.image = "flotilla/flotilla-node@sha256:abcd".to_owned();
        let template = serde_json::to_string(&spec(&cluster, 3).template).unwrap_or_default();
        assert!(!template.is_empty());
        assert!(
            !template.contains("app.kubernetes.io/version"),
            "{template}"
        );
        assert!(!template.contains(env!("CARGO_PKG_VERSION")), "{template}");
        assert!(!template.contains("flotilla-operator:"), "{template}");
    }

    #[test]
    fn raft_tuning_becomes_node_flags_in_milliseconds() {
        let mut cluster = Cluster::test();
        cluster.spec.meta_voters = 5;
        cluster.spec.heartbeat_interval = "150ms".parse().ok();
        cluster.spec.election_timeout = "2s".parse().ok();
        cluster.spec.snapshot_threshold = Some(50_000);
        let args = args(&cluster);
        assert_eq!(flag(&args, "--meta-voters"), Some("5"));
        assert_eq!(flag(&args, "--heartbeat-interval"), Some("150"));
        assert_eq!(flag(&args, "--election-timeout"), Some("2000"));
        assert_eq!(flag(&args, "--snapshot-threshold"), Some("50000"));
    }

    #[test]
    fn replica_health_and_snapshot_settings_become_node_flags() {
        let mut cluster = Cluster::test();
        cluster.spec.rehab_after = "90s".parse().ok();
        cluster.spec.promotion_lag = Some(200);
        cluster.spec.rehab_lag = Some(20_000);
        cluster.spec.snapshot_log_bytes = Some(32 << 20);
        let args = args(&cluster);
        assert_eq!(flag(&args, "--rehab-after"), Some("90000ms"));
        assert_eq!(flag(&args, "--promotion-lag"), Some("200"));
        assert_eq!(flag(&args, "--rehab-lag"), Some("20000"));
        assert_eq!(flag(&args, "--snapshot-log-bytes"), Some("33554432"));
    }

    #[test]
    fn unset_raft_tuning_leaves_the_node_defaults() {
        let args = args(&Cluster::test());
        for unset in [
            "--heartbeat-interval",
            "--election-timeout",
            "--snapshot-threshold",
            "--snapshot-log-bytes",
            "--rehab-after",
            "--promotion-lag",
            "--rehab-lag",
        ] {
            assert!(!args.iter().any(|a| a == unset), "{unset} in {args:?}");
        }
    }

    #[test]
    fn probes_use_readyz_for_readiness_and_healthz_for_liveness() {
        let container = container(&Cluster::test());
        let path = |probe: Option<Probe>| {
            probe
                .and_then(|p| p.http_get)
                .map(|h| (h.path.unwrap_or_default(), h.port))
        };
        let http = IntOrString::String("http".to_owned());
        assert_eq!(
            path(container.readiness_probe),
            Some(("/readyz".to_owned(), http.clone()))
        );
        assert_eq!(
            path(container.liveness_probe),
            Some(("/healthz".to_owned(), http.clone()))
        );
        assert_eq!(
            path(container.startup_probe),
            Some(("/healthz".to_owned(), http))
        );
    }

    #[test]
    fn the_node_runs_as_non_root_with_a_read_only_root_filesystem() {
        let cluster = Cluster::test();
        let pod = pod(&cluster);
        let pod_security = pod.security_context.unwrap_or_default();
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(pod_security.fs_group, Some(NODE_UID));
        let security = container(&cluster).security_context.unwrap_or_default();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            security.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_owned()])
        );
        assert_eq!(pod.enable_service_links, Some(false));
        assert_eq!(pod.automount_service_account_token, Some(false));
    }

    #[test]
    fn pod_overrides_reach_the_pod_but_cannot_replace_the_selector_labels() {
        let mut cluster = Cluster::test();
        cluster.spec.pod = Some(PodOverrides {
            node_selector: [("disk".to_owned(), "ssd".to_owned())].into(),
            tolerations: vec![Toleration {
                key: Some("dedicated".to_owned()),
                operator: Some("Exists".to_owned()),
                ..Toleration::default()
            }],
            labels: [
                ("team".to_owned(), "storage".to_owned()),
                ("app.kubernetes.io/instance".to_owned(), "hijack".to_owned()),
            ]
            .into(),
            annotations: [("scrape".to_owned(), "true".to_owned())].into(),
            ..PodOverrides::default()
        });
        let template = spec(&cluster, 3).template;
        let meta = template.metadata.unwrap_or_default();
        let labels = meta.labels.unwrap_or_default();
        assert_eq!(labels.get("team").map(String::as_str), Some("storage"));
        assert_eq!(
            labels.get("app.kubernetes.io/instance").map(String::as_str),
            Some("flotilla")
        );
        assert_eq!(
            labels.get(CLUSTER_LABEL).map(String::as_str),
            Some("flotilla")
        );
        assert_eq!(
            meta.annotations
                .unwrap_or_default()
                .get("scrape")
                .map(String::as_str),
            Some("true")
        );
        let pod = template.spec.unwrap_or_default();
        assert_eq!(
            pod.node_selector
                .unwrap_or_default()
                .get("disk")
                .map(String::as_str),
            Some("ssd")
        );
        assert_eq!(pod.tolerations.map(|t| t.len()), Some(1));
    }

    #[test]
    fn pods_prefer_distinct_hosts_unless_the_spec_sets_an_affinity() {
        let default = pod(&Cluster::test())
            .affinity
            .and_then(|a| a.pod_anti_affinity);
        let terms = default
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution)
            .unwrap_or_default();
        assert_eq!(terms.len(), 1);
        assert_eq!(
            terms[0].pod_affinity_term.topology_key,
            "kubernetes.io/hostname"
        );

        let mut cluster = Cluster::test();
        cluster.spec.pod = Some(PodOverrides {
            affinity: Some(Affinity::default()),
            ..PodOverrides::default()
        });
        assert_eq!(pod(&cluster).affinity, Some(Affinity::default()));
    }

    #[test]
    fn the_image_and_resources_come_from_the_spec() {
        let mut cluster = Cluster::test();
        cluster.spec.image = "registry.example/flotilla-node:9.9.9".to_owned();
        cluster.spec.image_pull_policy = crate::crd::ImagePullPolicy::Always;
        cluster.spec.resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
            limits: Some([("memory".to_owned(), Quantity("2Gi".to_owned()))].into()),
            ..Default::default()
        });
        let container = container(&cluster);
        assert_eq!(
            container.image.as_deref(),
            Some("registry.example/flotilla-node:9.9.9")
        );
        assert_eq!(container.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(container.resources, cluster.spec.resources);
        assert_eq!(container.command, Some(vec!["flotilla-node".to_owned()]));
    }

    fn with_tls() -> Cluster {
        let mut cluster = Cluster::test();
        cluster.spec.tls = Some(crate::crd::TlsSpec {
            enabled: true,
            ..crate::crd::TlsSpec::default()
        });
        cluster
    }

    #[test]
    fn with_tls_every_port_uses_the_mounted_certificate_and_the_peer_port_is_mutual() {
        let cluster = with_tls();
        let args = container(&cluster).args.unwrap_or_default();
        for (name, file) in [
            ("--tls-cert", "tls.crt"),
            ("--tls-key", "tls.key"),
            ("--tls-ca", "ca.crt"),
            ("--peer-tls-cert", "tls.crt"),
            ("--peer-tls-key", "tls.key"),
            ("--peer-tls-ca", "ca.crt"),
        ] {
            assert_eq!(
                flag(&args, name),
                Some(format!("{TLS_DIR}/{file}").as_str()),
                "{name}"
            );
        }
        assert!(args.iter().any(|a| a == "--client-cert-auth"));

        let volume = pod(&cluster)
            .volumes
            .unwrap_or_default()
            .into_iter()
            .find(|v| v.name == TLS_VOLUME);
        assert_eq!(
            volume.and_then(|v| v.secret).and_then(|s| s.secret_name),
            Some("flotilla-tls".to_owned())
        );
        let mount = container(&cluster)
            .volume_mounts
            .unwrap_or_default()
            .into_iter()
            .find(|m| m.name == TLS_VOLUME);
        // Mounted whole (not by subPath), so that the kubelet refreshes renewed files.
        assert_eq!(
            mount.map(|m| (m.mount_path, m.sub_path, m.read_only)),
            Some((TLS_DIR.to_owned(), None, Some(true)))
        );
    }

    #[test]
    fn with_tls_the_probes_speak_https() {
        let probe = container(&with_tls())
            .readiness_probe
            .and_then(|p| p.http_get);
        assert_eq!(probe.and_then(|g| g.scheme), Some("HTTPS".to_owned()));
        let plain = container(&Cluster::test())
            .readiness_probe
            .and_then(|p| p.http_get);
        assert_eq!(plain.and_then(|g| g.scheme), None);
    }

    #[test]
    fn without_tls_the_node_gets_no_tls_flag_or_volume() {
        let cluster = Cluster::test();
        let args = container(&cluster).args.unwrap_or_default();
        assert!(
            !args
                .iter()
                .any(|a| a.contains("tls") || a == "--client-cert-auth")
        );
        assert!(
            !pod(&cluster)
                .volumes
                .unwrap_or_default()
                .iter()
                .any(|v| v.name == TLS_VOLUME)
        );
    }
}
