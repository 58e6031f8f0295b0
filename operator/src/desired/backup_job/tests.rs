use super::*;
use crate::crd::backup::{BackupDestination, BackupSpec, SecretRef};
use crate::crd::database_group::ClusterRef;

fn job_of(backup: &Backup, cluster: &Cluster) -> Job {
    let destination = backup_destination(backup, cluster).unwrap();
    backup_job(backup, cluster, &destination).unwrap()
}

fn backup() -> Backup {
    let mut backup = Backup::new(
        "nightly",
        BackupSpec {
            cluster_ref: ClusterRef {
                name: "flotilla".to_owned(),
            },
            database: "orders".to_owned(),
            target: BackupDestination {
                destination: Some("s3://bucket/flotilla/".to_owned()),
                env_from_secret: Some(SecretRef {
                    name: "s3-credentials".to_owned(),
                }),
                volume_claim: None,
            },
            max_rate_mib_per_second: None,
        },
    );
    backup.metadata.namespace = Some("db".to_owned());
    backup.metadata.uid = Some("b-uid".to_owned());
    backup
}

#[test]
fn the_job_runs_backup_create_against_the_client_service_with_a_fixed_id() {
    let job = job_of(&backup(), &Cluster::test());
    let spec = job.spec.unwrap();
    assert_eq!(
        spec.backoff_limit,
        Some(0),
        "never retried under the same id"
    );
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("flotilla/flotilla-node:0.1.0")
    );
    assert_eq!(container.command, Some(vec!["flotilla".to_owned()]));
    let args = container.args.clone().unwrap_or_default().join(" ");
    assert_eq!(
        args,
        "--endpoints flotilla.db.svc:7100 --timeout 60s backup create orders \
         --to s3://bucket/flotilla/ --id db-nightly"
    );
    let secret = container
        .env_from
        .as_ref()
        .and_then(|e| e[0].secret_ref.clone());
    assert_eq!(secret.map(|s| s.name), "s3-credentials".to_owned().into());
    assert_eq!(
        backup_url(
            &backup(),
            &backup_destination(&backup(), &Cluster::test()).unwrap()
        )
        .unwrap(),
        "s3://bucket/flotilla/db-nightly"
    );
}

#[test]
fn the_read_rate_is_the_backups_else_the_clusters_else_unlimited() {
    let args = |backup: &Backup, cluster: &Cluster| {
        let job = job_of(backup, cluster);
        let pod = job.spec.and_then(|s| s.template.spec).unwrap();
        pod.containers[0].args.clone().unwrap_or_default().join(" ")
    };
    let mut cluster = Cluster::test();
    assert!(!args(&backup(), &cluster).contains("--max-rate"));
    cluster.spec.backup = Some(crate::crd::ClusterBackupSpec {
        target: BackupDestination::to("s3://elsewhere"),
        retention: None,
        max_rate_mib_per_second: Some(64),
    });
    assert!(
        args(&backup(), &cluster).ends_with("--id db-nightly --max-rate 64"),
        "the cluster's default"
    );
    let mut own = backup();
    own.spec.max_rate_mib_per_second = Some(16);
    assert!(
        args(&own, &cluster).ends_with("--id db-nightly --max-rate 16"),
        "the backup's own"
    );
}

#[test]
fn the_job_is_owned_by_its_backup_and_its_pod_is_not_selected_as_a_node() {
    let cluster = Cluster::test();
    let job = job_of(&backup(), &cluster);
    let owner = &job.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Backup", "nightly")
    );
    let pod_labels = job.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    let selects_nodes = cluster
        .selector_labels()
        .unwrap()
        .iter()
        .all(|(k, v)| pod_labels.get(k) == Some(v));
    assert!(!selects_nodes, "{pod_labels:?}");
    assert!(!pod_labels.contains_key(crate::crd::cluster_funcs::CLUSTER_LABEL));
    assert_eq!(
        pod_labels.get(BACKUP_LABEL).map(String::as_str),
        Some("nightly")
    );
}

#[test]
fn on_a_tls_cluster_the_job_speaks_tls_with_the_operators_certificate() {
    let mut cluster = Cluster::test();
    cluster.spec.tls = Some(crate::crd::TlsSpec {
        enabled: true,
        ..crate::crd::TlsSpec::default()
    });
    let pod = job_of(&backup(), &cluster)
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let secret = pod.volumes.unwrap()[0]
        .secret
        .clone()
        .and_then(|s| s.secret_name);
    assert_eq!(secret, cluster.operator_tls_secret_name().ok());
    let env: Vec<(String, String)> = pod.containers[0]
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name, e.value.unwrap_or_default()))
        .collect();
    assert!(
        env.contains(&("FLOTILLA_TLS_CA".to_owned(), format!("{TLS_DIR}/ca.crt"))),
        "{env:?}"
    );
    assert_eq!(env.len(), 3, "{env:?}");
}

#[test]
fn a_volume_claim_is_mounted_for_a_file_destination() {
    let mut backup = backup();
    backup.spec.target.destination = Some("file:///backup/flotilla".to_owned());
    backup.spec.target.volume_claim = Some("backups".to_owned());
    let pod = job_of(&backup, &Cluster::test())
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let claim = pod.volumes.unwrap()[0]
        .persistent_volume_claim
        .clone()
        .map(|c| c.claim_name);
    assert_eq!(claim.as_deref(), Some("backups"));
    let mount = &pod.containers[0].volume_mounts.clone().unwrap()[0];
    assert_eq!(mount.mount_path, BACKUP_MOUNT);
}

#[test]
fn the_delete_job_runs_backup_delete_on_the_backups_url_and_may_retry() {
    let mut backup = backup();
    backup.metadata.labels = Some(BTreeMap::from([(
        crate::crd::scheduled_backup::SCHEDULE_LABEL.to_owned(),
        "daily".to_owned(),
    )]));
    let job = backup_delete_job(&backup, &Cluster::test())
        .unwrap()
        .unwrap();
    assert_eq!(job.metadata.name.as_deref(), Some("nightly-del"));
    let labels = job.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get(crate::crd::scheduled_backup::SCHEDULE_LABEL)
            .map(String::as_str),
        Some("daily")
    );
    let owner = &job.metadata.owner_references.unwrap()[0];
    assert_eq!(owner.name, "nightly");
    let spec = job.spec.unwrap();
    assert_eq!(spec.backoff_limit, Some(2));
    let container = &spec.template.spec.unwrap().containers[0];
    assert_eq!(
        container.args.clone().unwrap_or_default().join(" "),
        "backup delete s3://bucket/flotilla/db-nightly --missing-ok"
    );
    assert!(container.env_from.is_some(), "the store's credentials");
}

#[test]
fn a_backup_naming_no_destination_takes_its_clusters() {
    let mut backup = backup();
    backup.spec.target = BackupDestination::default();
    assert_eq!(backup_destination(&backup, &Cluster::test()), None);
    assert!(
        backup_delete_job(&backup, &Cluster::test())
            .unwrap()
            .is_none()
    );
    let mut cluster = Cluster::test();
    cluster.spec.backup = Some(crate::crd::ClusterBackupSpec {
        target: BackupDestination {
            destination: Some("file:///backup/flotilla".to_owned()),
            env_from_secret: Some(SecretRef {
                name: "cluster-credentials".to_owned(),
            }),
            volume_claim: Some("backups".to_owned()),
        },
        retention: None,
        max_rate_mib_per_second: None,
    });
    let pod = job_of(&backup, &cluster)
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let container = &pod.containers[0];
    let args = container.args.clone().unwrap_or_default().join(" ");
    assert!(
        args.contains("--to file:///backup/flotilla --id db-nightly"),
        "{args}"
    );
    let secret = container
        .env_from
        .as_ref()
        .and_then(|e| e[0].secret_ref.clone());
    assert_eq!(
        secret.map(|s| s.name).as_deref(),
        Some("cluster-credentials")
    );
    let claim = pod.volumes.unwrap()[0]
        .persistent_volume_claim
        .clone()
        .map(|c| c.claim_name);
    assert_eq!(claim.as_deref(), Some("backups"));
    // A Secret of its own wins over the Cluster's.
    backup.spec.target.env_from_secret = Some(SecretRef {
        name: "own".to_owned(),
    });
    let resolved = backup_destination(&backup, &cluster).unwrap();
    assert_eq!(
        resolved.env_from_secret.map(|s| s.name).as_deref(),
        Some("own")
    );
    assert_eq!(resolved.volume_claim.as_deref(), Some("backups"));
}
