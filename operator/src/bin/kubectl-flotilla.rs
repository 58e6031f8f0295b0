//! `kubectl flotilla`: a kubectl plugin that reports on Flotilla clusters.
//!
//! `kubectl flotilla status CLUSTER [-n NAMESPACE] [-o text|json|yaml]`

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use flotilla_operator::crd::{Cluster, DatabaseGroup};
use flotilla_operator::status_report::{render_text, report};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use std::io::Write;

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
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let namespace = cli
        .namespace
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let Command::Status { cluster, output } = cli.command;

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
