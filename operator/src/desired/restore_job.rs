//! The Jobs of a Cluster's `spec.bootstrap.recovery`: one per database, each one pod running
//! the node image's `flotilla backup restore URL --database NAME [--until TIME]` against the
//! cluster's client Service, as a backup Job runs (same restricted pod, the operator's client
//! certificate on a TLS cluster, the recovery's Secret as environment and its volume at
//! `/backup`). Owned by the Cluster; never retried by Kubernetes (a restore refuses a
//! database that exists, which a partial first attempt leaves).

use super::backup_job::{JobShape, backup_pod_selector, cli_job, client_endpoint};
use crate::crd::Cluster;
use crate::crd::recovery::{RecoveryBackup, RecoverySpec};
use crate::error::Result;
use k8s_openapi::api::batch::v1::Job;
use kube::Resource;

/// Label naming the database a restore Job (and its pod) restores.
pub const RESTORE_DATABASE_LABEL: &str = "flotilla.dev/restore-database";
/// Longest Job name (and pod name prefix) Kubernetes takes.
const MAX_JOB_NAME: usize = 63;

/// Name of the Job restoring `database` into `cluster`: `<cluster>-restore-<database>`, cut
/// to 63 characters with a hash of the whole kept, so that two databases never share one.
pub fn restore_job_name(cluster: &str, database: &str) -> String {
    let name = format!("{cluster}-restore-{database}").replace('_', "-");
    if name.len() <= MAX_JOB_NAME {
        return name;
    }
    // FNV-1a: stable across builds and platforms.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let suffix = format!("-{:08x}", hash & 0xffff_ffff);
    let keep = MAX_JOB_NAME - suffix.len();
    format!("{}{suffix}", name[..keep].trim_end_matches('-'))
}

/// The Job restoring `backup` (one entry of `recovery`) into `cluster`.
pub fn restore_job(
    cluster: &Cluster,
    recovery: &RecoverySpec,
    backup: &RecoveryBackup,
) -> Result<Job> {
    let mut labels = backup_pod_selector(cluster)?;
    labels.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        "flotilla-operator".to_owned(),
    );
    labels.insert(RESTORE_DATABASE_LABEL.to_owned(), backup.database.clone());
    let mut args = vec![
        "--endpoints".to_owned(),
        client_endpoint(cluster)?,
        "--timeout".to_owned(),
        "60s".to_owned(),
        "backup".to_owned(),
        "restore".to_owned(),
        backup.url.clone(),
        "--database".to_owned(),
        backup.database.clone(),
    ];
    if let Some(until) = &recovery.until {
        args.extend(["--until".to_owned(), until.clone()]);
    }
    cli_job(
        cluster,
        JobShape {
            name: restore_job_name(cluster.name()?, &backup.database),
            owner: cluster.controller_owner_ref(&()),
            labels,
            args,
            cluster_tls: cluster.tls_enabled(),
            backoff_limit: 0,
            env_from_secret: recovery.env_from_secret.clone(),
            volume_claim: recovery.volume_claim.clone(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SecretRef;
    use crate::crd::cluster_funcs::TLS_DIR;
    use crate::desired::backup_job::BACKUP_MOUNT;

    fn recovery(until: Option<&str>) -> RecoverySpec {
        RecoverySpec {
            backups: vec![RecoveryBackup {
                url: "file:///backup/flotilla/db-nightly".to_owned(),
                database: "orders".to_owned(),
            }],
            until: until.map(str::to_owned),
            env_from_secret: Some(SecretRef {
                name: "admin".to_owned(),
            }),
            volume_claim: Some("backups".to_owned()),
        }
    }

    fn args(job: &Job) -> String {
        let pod = job
            .spec
            .clone()
            .unwrap_or_default()
            .template
            .spec
            .unwrap_or_default();
        pod.containers[0].args.clone().unwrap_or_default().join(" ")
    }

    #[test]
    fn the_job_restores_one_database_from_its_backup_through_the_client_service() {
        let spec = recovery(None);
        let job = restore_job(&Cluster::test(), &spec, &spec.backups[0]).unwrap();
        assert_eq!(
            job.metadata.name.as_deref(),
            Some("flotilla-restore-orders")
        );
        assert_eq!(
            args(&job),
            "--endpoints flotilla.db.svc:7100 --timeout 60s backup restore \
             file:///backup/flotilla/db-nightly --database orders"
        );
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(0), "a restore is never retried");
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let container = &pod.containers[0];
        assert_eq!(container.command, Some(vec!["flotilla".to_owned()]));
        assert_eq!(
            container.image.as_deref(),
            Some("flotilla/flotilla-node:0.1.0")
        );
        let context = container.security_context.clone().unwrap_or_default();
        assert_eq!(context.allow_privilege_escalation, Some(false));
        assert_eq!(
            pod.security_context.and_then(|c| c.run_as_non_root),
            Some(true)
        );
        let secret = container
            .env_from
            .as_ref()
            .and_then(|e| e[0].secret_ref.clone());
        assert_eq!(secret.map(|s| s.name).as_deref(), Some("admin"));
        let mount = &container.volume_mounts.clone().unwrap_or_default()[0];
        assert_eq!(mount.mount_path, BACKUP_MOUNT);
    }

    #[test]
    fn until_is_passed_only_when_set() {
        let spec = recovery(Some("2026-12-01T03:00:00Z"));
        let job = restore_job(&Cluster::test(), &spec, &spec.backups[0]).unwrap();
        assert!(
            args(&job).ends_with("--database orders --until 2026-12-01T03:00:00Z"),
            "{}",
            args(&job)
        );
    }

    #[test]
    fn the_job_is_owned_by_the_cluster_labelled_with_its_database_and_admitted_as_a_backup_pod() {
        let cluster = Cluster::test();
        let spec = recovery(None);
        let job = restore_job(&cluster, &spec, &spec.backups[0]).unwrap();
        let owner = &job.metadata.owner_references.clone().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("Cluster", Some(true))
        );
        let labels = job.spec.unwrap().template.metadata.unwrap().labels.unwrap();
        assert_eq!(
            labels.get(RESTORE_DATABASE_LABEL).map(String::as_str),
            Some("orders")
        );
        // The NetworkPolicy admits backup pods to the client port.
        let admitted = backup_pod_selector(&cluster).unwrap();
        assert!(admitted.iter().all(|(k, v)| labels.get(k) == Some(v)));
        let nodes = cluster.selector_labels().unwrap();
        assert!(!nodes.iter().all(|(k, v)| labels.get(k) == Some(v)));
    }

    #[test]
    fn on_a_tls_cluster_the_job_speaks_tls_with_the_operators_certificate() {
        let mut cluster = Cluster::test();
        cluster.spec.tls = Some(crate::crd::TlsSpec {
            enabled: true,
            ..crate::crd::TlsSpec::default()
        });
        let spec = recovery(None);
        let pod = restore_job(&cluster, &spec, &spec.backups[0])
            .unwrap()
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        let env = pod.containers[0].env.clone().unwrap_or_default();
        assert!(env.iter().any(|e| e.name == "FLOTILLA_TLS_CERT"
            && e.value.as_deref() == Some(&format!("{TLS_DIR}/tls.crt"))));
    }

    #[test]
    fn long_names_are_cut_to_63_characters_and_stay_apart() {
        let db_a = format!("{}a", "x".repeat(60));
        let db_b = format!("{}b", "x".repeat(60));
        let a = restore_job_name("flotilla", &db_a);
        let b = restore_job_name("flotilla", &db_b);
        assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
        assert_ne!(a, b);
        assert_eq!(
            restore_job_name("flotilla", "my_db"),
            "flotilla-restore-my-db"
        );
    }
}
