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
