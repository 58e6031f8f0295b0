//! `kubectl flotilla`: a kubectl plugin that reports on Flotilla clusters and asks the
//! operator for changes.
//!
//! `kubectl flotilla [--kubeconfig FILE] [--context NAME] [-n NAMESPACE] COMMAND`:
//! `status CLUSTER [-o text|json|yaml]`, `restart CLUSTER`, `pause CLUSTER`,
//! `resume CLUSTER` (the last three accept `-o json` to print the updated Cluster),
//! `transfer-leadership CLUSTER POD`, `destroy CLUSTER POD --yes`,
//! `backup CLUSTER --database DB --to URL [--wait]`.

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use flotilla_operator::crd::{Backup, BackupPhase, Cluster, DatabaseGroup};
use flotilla_operator::plugin::{
    BackupRequest, backup_object, client, destroy_patch, hand_over_patch, patch_node_pod,
    pause_patch, restart_patch,
};
use flotilla_operator::status_report::{render_text, report};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "kubectl-flotilla",
    version,
    about = "Report on Flotilla clusters"
)]
struct Cli {
    /// Namespace of the cluster; the current context's namespace when unset.
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    /// Kubeconfig file; KUBECONFIG or ~/.kube/config when unset.
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context; the current context when unset.
    #[arg(long, global = true)]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Summary, nodes, the shards of every DatabaseGroup, and problems.
    Status {
        /// Name of the Cluster.
        cluster: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Restart every node through the operator: followers first, leaders after moving
    /// their leadership, one at a time, each gated on quorum.
    Restart(Change),
    /// Stop every change the operator makes to the cluster (spec.paused).
    Pause(Change),
    /// Let the operator act on the cluster again.
    Resume(Change),
    /// Move every leadership off one node (through the operator), e.g. before maintenance
    /// of its machine; the node stays a voter.
    TransferLeadership(NodeChange),
    /// Replace one node whose data is lost for good (through the operator): it is removed
    /// from the cluster, its volume deleted and its pod recreated with a fresh node that
    /// gets its replicas copied from the others. Needs --yes.
    Destroy {
        #[command(flatten)]
        node: NodeChange,
        /// Confirms that the node's data may be thrown away.
        #[arg(long)]
        yes: bool,
    },
    /// Back up a database of the cluster (through the operator: a Backup object, run by a
    /// Job); prints the Backup's name, or with --wait its URL once complete.
    Backup {
        /// Name of the Cluster.
        cluster: String,
        /// The database to back up.
        #[arg(long)]
        database: String,
        /// Where: s3://bucket/prefix, or file:///backup/... with --volume-claim; the
        /// Cluster's spec.backup.destination when unset.
        #[arg(long)]
        to: Option<String>,
        /// A Secret whose keys become the Job's environment (AWS_* credentials;
        /// FLOTILLA_USER and FLOTILLA_PASSWORD on a cluster with auth).
        #[arg(long)]
        secret: Option<String>,
        /// A PersistentVolumeClaim mounted at /backup in the Job's pod.
        #[arg(long)]
        volume_claim: Option<String>,
        /// Read no faster than this many MiB per second (at least 1); the Cluster's
        /// spec.backup.maxRateMiBPerSecond when unset.
        #[arg(long, value_name = "MIB_PER_SEC", value_parser = clap::value_parser!(u32).range(1..))]
        max_rate: Option<u32>,
        /// Name of the Backup object (`<cluster>-<database>-<UTC time>` when unset).
        #[arg(long)]
        name: Option<String>,
        /// Wait until the backup is Completed (exit 0) or Failed (exit 1).
        #[arg(long)]
        wait: bool,
        /// Longest wait with --wait, e.g. 30m.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Output format: a sentence, or the Backup object.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

#[derive(clap::Args)]
struct NodeChange {
    /// Name of the Cluster.
    cluster: String,
    /// The pod of the node (e.g. flotilla-2).
    pod: String,
    /// Output format: a sentence, or the updated pod.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(clap::Args)]
struct Change {
    /// Name of the Cluster.
    cluster: String,
    /// Output format: a sentence, or the updated Cluster.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
    Yaml,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (client, namespace) = client(
        cli.kubeconfig.as_deref(),
        cli.context.as_deref(),
        cli.namespace.as_deref(),
    )
    .await
    .context("connecting to the Kubernetes API")?;
    let (cluster, output) = match cli.command {
        Command::Status { cluster, output } => (cluster, output),
        Command::Restart(change) => {
            return apply(client, &namespace, change, Action::Restart).await;
        }
        Command::Pause(change) => return apply(client, &namespace, change, Action::Pause).await,
        Command::Resume(change) => return apply(client, &namespace, change, Action::Resume).await,
        Command::TransferLeadership(node) => {
            let patch = hand_over_patch(k8s_openapi::jiff::Timestamp::now());
            let done = "asked to hand its leaderships over: the operator moves them and then \
                        clears the request";
            return apply_to_node(client, &namespace, node, &patch, done).await;
        }
        Command::Destroy { node, yes } => {
            if !yes {
                anyhow::bail!(
                    "destroy throws away the data of {} (its replicas are copied again from \
                     the other nodes); run again with --yes to go ahead",
                    node.pod
                );
            }
            let done = "marked unrecoverable: the operator removes its node, deletes its \
                        volume and recreates it with a fresh node";
            return apply_to_node(client, &namespace, node, &destroy_patch(), done).await;
        }
        Command::Backup {
            cluster,
            database,
            to,
            secret,
            volume_claim,
            max_rate,
            name,
            wait,
            timeout,
            output,
        } => {
            let request = BackupRequest {
                cluster,
                database,
                destination: to,
                env_from_secret: secret,
                volume_claim,
                max_rate_mib_per_second: max_rate,
                name,
            };
            return backup(
                client,
                &namespace,
                &request,
                wait.then_some(timeout),
                output,
            )
            .await;
        }
    };

    let cluster: Cluster = Api::namespaced(client.clone(), &namespace)
        .get(&cluster)
        .await
        .with_context(|| format!("reading Cluster {namespace}/{cluster}"))?;
    let groups = Api::<DatabaseGroup>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default())
        .await
        .context("listing DatabaseGroups")?
        .items;
    let selector = cluster.label_selector()?;
    let pods = Api::<Pod>::namespaced(client, &namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .context("listing pods")?
        .items;

    let report = report(&cluster, &groups, &pods);
    let text = match output {
        Output::Text => render_text(&report),
        Output::Json => serde_json::to_string_pretty(&report)? + "\n",
        Output::Yaml => serde_saphyr::to_string(&report)?,
    };
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("writing to standard output"),
    }
}

/// Patches one node's pod of the Cluster and says what the operator will do.
async fn apply_to_node(
    client: Client,
    namespace: &str,
    node: NodeChange,
    patch: &serde_json::Value,
    done: &str,
) -> anyhow::Result<()> {
    let NodeChange {
        cluster,
        pod,
        output,
    } = node;
    let updated = patch_node_pod(client, namespace, &cluster, &pod, patch)
        .await
        .with_context(|| format!("updating pod {namespace}/{pod}"))?;
    let text = match output {
        Output::Text => format!("pod {namespace}/{pod} of cluster {cluster} {done}\n"),
        Output::Json => serde_json::to_string_pretty(&updated)? + "\n",
        Output::Yaml => serde_saphyr::to_string(&updated)?,
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

#[derive(Clone, Copy)]
enum Action {
    Restart,
    Pause,
    Resume,
}

/// Patches the Cluster for `action` and says what the operator will do.
async fn apply(
    client: Client,
    namespace: &str,
    change: Change,
    action: Action,
) -> anyhow::Result<()> {
    let (patch, done) = match action {
        Action::Restart => (
            restart_patch(k8s_openapi::jiff::Timestamp::now()),
            "restart requested: the operator restarts the nodes one at a time",
        ),
        Action::Pause => (pause_patch(true), "paused: the operator makes no change"),
        Action::Resume => (pause_patch(false), "resumed"),
    };
    let name = &change.cluster;
    let updated: Cluster = Api::namespaced(client, namespace)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("updating Cluster {namespace}/{name}"))?;
    let text = match change.output {
        Output::Text => format!("cluster {namespace}/{name} {done}\n"),
        Output::Json => serde_json::to_string_pretty(&updated)? + "\n",
        Output::Yaml => serde_saphyr::to_string(&updated)?,
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

/// Creates the Backup object and, when asked, waits for its end.
async fn backup(
    client: Client,
    namespace: &str,
    request: &BackupRequest,
    wait: Option<std::time::Duration>,
    output: Output,
) -> anyhow::Result<()> {
    // The Cluster must exist: a typo would otherwise leave a Backup pending for ever.
    Api::<Cluster>::namespaced(client.clone(), namespace)
        .get(&request.cluster)
        .await
        .with_context(|| format!("reading Cluster {namespace}/{}", request.cluster))?;
    let backups: Api<Backup> = Api::namespaced(client, namespace);
    let object = backup_object(request, namespace, k8s_openapi::jiff::Timestamp::now());
    let mut backup = backups
        .create(&PostParams::default(), &object)
        .await
        .context("creating the Backup")?;
    let name = backup.metadata.name.clone().unwrap_or_default();
    if let Some(timeout) = wait {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let phase = backup.status.as_ref().and_then(|s| s.phase);
            if phase.is_some_and(|p| p.is_final()) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "backup {namespace}/{name} is not done after {}: `kubectl get fbk {name}` shows where it is",
                    humantime::format_duration(timeout)
                );
            }
            eprintln!(
                "backup {name}: {}",
                phase.map_or("Pending".to_owned(), |p| format!("{p:?}"))
            );
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            backup = backups
                .get(&name)
                .await
                .with_context(|| format!("reading Backup {namespace}/{name}"))?;
        }
    }
    let status = backup.status.clone().unwrap_or_default();
    let text = match output {
        Output::Json => serde_json::to_string_pretty(&backup)? + "\n",
        Output::Yaml => serde_saphyr::to_string(&backup)?,
        Output::Text => match status.phase {
            Some(BackupPhase::Completed) => format!(
                "backup {namespace}/{name} completed: {}\n",
                status.url.unwrap_or_default()
            ),
            Some(BackupPhase::Failed) => format!(
                "backup {namespace}/{name} failed: {}\n",
                status.message.unwrap_or_default()
            ),
            _ => format!(
                "backup {namespace}/{name} created: the operator runs it (`kubectl get fbk {name}`)\n"
            ),
        },
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    if status.phase == Some(BackupPhase::Failed) {
        std::process::exit(1);
    }
    Ok(())
}
