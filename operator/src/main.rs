//! `flotilla-operator`: runs the operator, prints its CRDs, or renders the manifests
//! it would apply for a Cluster.

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use flotilla_operator::admin::grpc::GrpcAdmin;
use flotilla_operator::controllers::{self, Context};
use flotilla_operator::desired::OperatorPods;
use flotilla_operator::leader::Election;
use flotilla_operator::metrics::Metrics;
use flotilla_operator::render::{Mode, parse_status};
use prometheus_client::registry::Registry;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Name of the Lease the operator processes compete for, in their own namespace.
const LEASE_NAME: &str = "flotilla-operator";

#[derive(Parser)]
#[command(
    name = "flotilla-operator",
    version,
    about = "Kubernetes operator for Flotilla"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers against the cluster from KUBECONFIG or the in-cluster config.
    Run {
        /// Address of the HTTP endpoint (`/metrics`, `/healthz`, `/readyz`).
        #[arg(
            long,
            env = "FLOTILLA_OPERATOR_METRICS_ADDR",
            default_value = "0.0.0.0:8080"
        )]
        metrics_addr: SocketAddr,
        /// Watch only this namespace (the chart's namespaced RBAC mode); every namespace when unset.
        #[arg(long, env = "FLOTILLA_OPERATOR_WATCH_NAMESPACE")]
        watch_namespace: Option<String>,
        /// Hold a Lease before acting, so that two operator processes never act at once.
        #[arg(long, env = "FLOTILLA_OPERATOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
        leader_election: bool,
        /// Log format.
        #[arg(long, env = "FLOTILLA_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
        log_format: LogFormat,
        /// Labels of the operator's own pods (`k=v,k=v`): a Cluster's NetworkPolicy lets
        /// these pods, in the operator's namespace (POD_NAMESPACE), reach the nodes.
        #[arg(
            long,
            env = "FLOTILLA_OPERATOR_POD_LABELS",
            value_delimiter = ',',
            value_parser = parse_label,
            default_value = "app.kubernetes.io/name=flotilla-operator"
        )]
        operator_pod_labels: Vec<(String, String)>,
    },
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
    /// Print the manifests the operator applies for the given Cluster manifests once the
    /// cluster runs at its spec (every replica, nodes joining the existing cluster, the
    /// PodDisruptionBudget).
    Render {
        /// Files holding Cluster manifests (`-` reads standard input).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Namespace of Clusters whose manifest names none.
        #[arg(short, long)]
        namespace: Option<String>,
        /// Print the first apply of a new cluster instead: one pod, which initialises it.
        #[arg(long, conflicts_with = "status")]
        first_apply: bool,
        /// Print what the operator applies next for a cluster with this live status: a
        /// file holding the Cluster with its status (`kubectl get flc NAME -o yaml`) or the
        /// status alone.
        #[arg(long, value_name = "FILE")]
        status: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let output = match cli.command {
        Command::Run {
            metrics_addr,
            watch_namespace,
            leader_election,
            log_format,
            operator_pod_labels,
        } => {
            let operator_pods = OperatorPods {
                namespace: std::env::var("POD_NAMESPACE").ok(),
                labels: operator_pod_labels.into_iter().collect(),
            };
            return run(
                metrics_addr,
                watch_namespace,
                leader_election,
                log_format,
                operator_pods,
            );
        }
        Command::Crds => flotilla_operator::manifests::crds_yaml()?,
        Command::Render {
            files,
            namespace,
            first_apply,
            status,
        } => {
            let mode = match (first_apply, status) {
                (true, _) => Mode::FirstApply,
                (false, Some(path)) => Mode::Status(Box::new(parse_status(
                    &read_input(&path)?,
                    &path.display().to_string(),
                )?)),
                (false, None) => Mode::Steady,
            };
            render(&files, namespace.as_deref(), &mode)?
        }
    };
    match std::io::stdout().lock().write_all(output.as_bytes()) {
        // A closed pipe (`... | head`) is the reader's choice, not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("writing to standard output"),
    }
}

/// A label `key=value`.
fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?}: expected key=value")),
    }
}

fn read_input(file: &PathBuf) -> anyhow::Result<String> {
    if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
    }
}

fn render(files: &[PathBuf], namespace: Option<&str>, mode: &Mode) -> anyhow::Result<String> {
    let mut out = String::new();
    for file in files {
        out.push_str(&flotilla_operator::render::render(
            &read_input(file)?,
            &file.display().to_string(),
            namespace,
            mode,
        )?);
    }
    Ok(out)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn run(
    metrics_addr: SocketAddr,
    watch_namespace: Option<String>,
    leader_election: bool,
    log_format: LogFormat,
    operator_pods: OperatorPods,
) -> anyhow::Result<()> {
    init_logging(log_format);
    flotilla_operator::use_ring_crypto();
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let listener = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .with_context(|| format!("binding {metrics_addr}"))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(flotilla_operator::http::serve(
        listener,
        Arc::new(registry),
        async {
            let _ = stopped.await;
        },
    ));
    let ctx = Arc::new(
        Context::new(client.clone(), Arc::new(GrpcAdmin::default()), metrics)
            .with_operator_pods(operator_pods),
    );
    let controllers = controllers::run(client.clone(), ctx, watch_namespace.as_deref());
    let result = if leader_election {
        let namespace = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "default".to_owned());
        let identity = std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("flotilla-operator-{}", std::process::id()));
        Election::new(client, &namespace, LEASE_NAME, &identity)
            .lead(controllers, shutdown_signal())
            .await
    } else {
        tokio::select! {
            result = controllers => result,
            () = shutdown_signal() => Ok(()),
        }
    };
    let _ = stop.send(());
    http.await.context("metrics server")??;
    result.context("running the controllers")
}

/// Resolves on SIGTERM (a pod being stopped) or Ctrl-C.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
