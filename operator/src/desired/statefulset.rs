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
mod tests;
