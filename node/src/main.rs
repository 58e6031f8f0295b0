//! `flotilla-node`: run a storage node (`serve`) or a local dev cluster (`dev`).

use clap::{Parser, Subcommand};
use flotilla_node::config::{LogFormat, NodeConfig};
use flotilla_node::{dev, serve};

/// mimalloc: a node allocates and frees many small buffers per request (frames, entries,
/// documents), which glibc's allocator served at a few percent of the CPU under load.
/// Built without transparent huge pages (`no_thp`), which more than doubled an idle node's RSS.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "flotilla-node", version, about = "Flotilla storage node")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one storage node.
    Serve(Box<NodeConfig>),
    /// Run a local cluster of node processes on 127.0.0.1.
    Dev(dev::DevArgs),
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOTILLA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Serve(config) => {
            init_logging(config.log_format);
            serve::run(*config).await
        }
        Cmd::Dev(args) => {
            init_logging(LogFormat::Text);
            dev::run(args).await
        }
    }
}
