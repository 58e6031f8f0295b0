//! A Cluster made from a backup: a source cluster (run by the operator) gets a database and
//! documents, the `flotilla` CLI backs it up to a directory, and a new Cluster with
//! `spec.bootstrap.recovery` naming that backup comes up with a DatabaseGroup of the same
//! database. The group waits (`WaitingForRecovery`) without creating the database; the
//! operator starts the restore Job once the new cluster is Ready; the Job's command runs
//! (see below); the recovery completes, the group becomes Ready on the restored database,
//! and every document reads back with its version.
//!
//! The kubelet stand-in runs the pods of StatefulSets only, not Jobs: the test runs the
//! restore Job's container command itself, with the real `flotilla` CLI and the Job's own
//! arguments (its `--endpoints`, the client Service's DNS name, turned into the address the
//! stand-in serves the Service on), and then writes the Job's outcome into its status as the
//! Job controller would.

use super::*;
use flotilla_client::DatabaseOptions;
use flotilla_operator::crd::RecoveryPhase;
use k8s_openapi::api::batch::v1::Job;

const SOURCE: &str = "source";
const RESTORED: &str = "restored";
const SHARDS: u32 = 2;
const DOCUMENTS: usize = 20;

/// A one-node Cluster named `name`, with `extra` added to its spec.
fn one_node_cluster(name: &str, extra: Value) -> Value {
    let mut spec = json!({
        "replicas": 1,
        "image": "flotilla/flotilla-node:0.1.0",
        "heartbeatInterval": "100ms",
        "electionTimeout": "1s",
        "storage": {"size": "1Gi"},
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    })
}

/// Runs the `flotilla` CLI with `args`; panics with its output when it fails.
async fn run_cli(cli: &std::path::Path, args: Vec<String>) -> String {
    let cli = cli.to_path_buf();
    let shown = args.join(" ");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(cli)
            .args(&args)
            .env_remove("FLOTILLA_ENDPOINTS")
            .output()
    })
    .await
    .expect("the CLI task runs")
    .expect("the CLI starts");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "flotilla {shown} failed: {text}");
    text
}

/// The restore's condition of a DatabaseGroup, as `status reason`.
fn group_condition(group: &DatabaseGroup, type_: &str) -> String {
    group
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .map(|c| format!("{} {}", c.status, c.reason))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_made_from_a_backup_restores_it_before_its_database_group_takes_it() {
    let cli = cli_binary();
    assert!(cli.is_file(), "{} is missing", cli.display());
    let harness = Harness::start().await;
    let backups = tempfile::tempdir().expect("backup directory");

    progress("a source cluster of one node, with a database and documents");
    harness
        .apply_named_cluster(SOURCE, &one_node_cluster(SOURCE, json!({})))
        .await;
    harness
        .wait_named_cluster(
            SOURCE,
            "the source Cluster to be Ready",
            START_TIMEOUT,
            ready,
        )
        .await;
    let source = harness.client_of(SOURCE).await;
    let options = DatabaseOptions {
        replication_factor: Some(1),
        shards: Some(SHARDS),
        ..DatabaseOptions::default()
    };
    source
        .create_database_with(DATABASE, &options)
        .await
        .expect("database created");
    source
        .wait_for_database(DATABASE, STEP_TIMEOUT, |_| {})
        .await
        .expect("the database's shards have leaders");
    let mut written = BTreeMap::new();
    for i in 0..DOCUMENTS {
        let id = format!("item-{i:04}");
        let body = json!({"n": i}).to_string();
        let put = wait::until_async("a write to be acknowledged", STEP_TIMEOUT, POLL, || async {
            Ok(source
                .put(DATABASE, COLLECTION, &id, &body, None)
                .await
                .ok())
        })
        .await
        .expect("write acknowledged");
        written.insert(id, (body, put.version));
    }
    // A second write of one document: its version 2 must come back.
    let body = json!({"n": 0, "edited": true}).to_string();
    let put = source
        .put(DATABASE, COLLECTION, "item-0000", &body, Some(1))
        .await
        .expect("second write acknowledged");
    assert_eq!(put.version, 2);
    written.insert("item-0000".to_owned(), (body, 2));

    progress("backing it up with the CLI to a directory");
    let target = format!("file://{}", backups.path().display());
    let source_address = harness.client_address(SOURCE).await;
    run_cli(
        &cli,
        [
            "--endpoints",
            &source_address,
            "backup",
            "create",
            DATABASE,
            "--to",
            &target,
            "--id",
            "source-orders",
        ]
        .map(str::to_owned)
        .to_vec(),
    )
    .await;
    let url = format!("{target}/source-orders");

    progress("a new Cluster made from that backup, and a DatabaseGroup of the database");
    let recovery = json!({"bootstrap": {"recovery": {
        "backups": [{"url": url, "database": DATABASE}],
    }}});
    harness
        .apply_named_cluster(RESTORED, &one_node_cluster(RESTORED, recovery))
        .await;
    let group = json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "DatabaseGroup",
        "metadata": {"name": DATABASE, "namespace": NAMESPACE},
        "spec": {
            "clusterRef": {"name": RESTORED},
            "replicationFactor": 1,
            "shards": SHARDS,
        },
    });
    harness.apply_named_group(DATABASE, &group).await;

    let jobs = Api::<Job>::namespaced(harness.client.clone(), NAMESPACE);
    let job_name = format!("{RESTORED}-restore-{DATABASE}");
    let job = wait::until_async("the restore Job", START_TIMEOUT, POLL, || async {
        jobs.get_opt(&job_name).await.map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let waiting = harness
        .wait_group("the DatabaseGroup to wait for the recovery", |g| {
            let seen = group_condition(g, "Ready");
            if seen == "False WaitingForRecovery" {
                Ok(())
            } else {
                Err(seen)
            }
        })
        .await;
    assert!(waiting.status.and_then(|s| s.created_by_operator).is_none());
    let restored = harness.client_of(RESTORED).await;
    let databases = restored.list_databases().await.expect("databases listed");
    assert!(
        databases.iter().all(|d| d.name != DATABASE),
        "the database exists before its restore: {databases:?}"
    );

    progress("running the restore Job's command");
    let container = job
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].clone())
        .expect("the Job has a container");
    assert_eq!(container.command, Some(vec!["flotilla".to_owned()]));
    let restored_address = harness.client_address(RESTORED).await;
    let service = format!("{RESTORED}.{NAMESPACE}.svc:7100");
    let args: Vec<String> = container
        .args
        .unwrap_or_default()
        .into_iter()
        .map(|a| {
            if a == service {
                restored_address.clone()
            } else {
                a
            }
        })
        .collect();
    assert!(args.contains(&restored_address), "{args:?}");
    let output = run_cli(&cli, args).await;
    progress(output.trim().to_owned());
    let done = json!({"status": {
        "succeeded": 1,
        "conditions": [{"type": "Complete", "status": "True"}],
    }});
    jobs.patch_status(&job_name, &PatchParams::default(), &Patch::Merge(&done))
        .await
        .expect("Job status written");

    progress("waiting for the recovery to complete and the group to be Ready");
    let cluster = harness
        .wait_named_cluster(RESTORED, "the recovery to complete", START_TIMEOUT, |c| {
            let recovery = c.status.as_ref().and_then(|s| s.recovery.clone());
            match recovery {
                Some(r) if r.phase == RecoveryPhase::Completed => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    let recovered = cluster
        .status
        .unwrap_or_default()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Recovered")
        .map(|c| (c.status, c.reason));
    assert_eq!(
        recovered,
        Some(("True".to_owned(), "RecoveryCompleted".to_owned()))
    );
    let group = harness
        .wait_group(
            "the DatabaseGroup to be Ready on the restored database",
            |g| {
                settled_on(&["restored-0"])(g)?;
                let seen = group_condition(g, "Ready");
                if seen.starts_with("True") {
                    Ok(())
                } else {
                    Err(seen)
                }
            },
        )
        .await;
    assert_eq!(group.status.and_then(|s| s.created_by_operator), Some(true));
    let events = harness.cluster_events().await;
    assert!(
        events.iter().any(|e| e.contains("recovery complete")),
        "{events:?}"
    );

    progress("every document reads back with its version");
    for (id, (body, version)) in &written {
        let document = restored
            .get(DATABASE, COLLECTION, id, Consistency::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("reading {id}: {e}"))
            .unwrap_or_else(|| panic!("{id} is not restored"));
        let expected: Value = serde_json::from_str(body).expect("json");
        assert_eq!(document.value().expect("json document"), expected, "{id}");
        assert_eq!(document.version, *version, "{id}");
    }
}
