//! The `flotilla` command line: cluster administration, databases and documents, over the
//! client library. Output is an aligned table (`-o table`, the default) or one JSON object per
//! result and line (`-o json`). Errors are one line on stderr and an exit code per kind.

mod backup;
mod cluster;
mod doc;
mod query;
mod render;
mod table;
mod txn;
mod users;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use flotilla_client::{
    Client, ClientOptions, ClientTls, Credentials, DatabaseOptions, DatabaseUpdate, Error,
};

use render::Output;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  other error
  2  bad command line
  3  not found (database, document or node)
  4  version mismatch (--if-version did not hold)
  5  cluster unavailable (no node reachable, no leader, timed out)
  6  write outcome unknown (sent, but no answer came back)
  7  invalid argument (for example a body that is not JSON)
  8  already exists
  9  over a limit of the cluster (document or batch too large)
 10  unauthenticated (credentials needed, or refused)
 11  permission denied
 12  transaction aborted (a conflict that kept recurring, or its timeout)
 13  storage full (the shard's leader is out of space: nothing applied)";

/// Parses a placement label, `key=value`.
fn parse_label(text: &str) -> std::result::Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
            Ok((k.trim().to_string(), v.trim().to_string()))
        }
        _ => Err(format!("{text:?} is not a label of the form key=value")),
    }
}

/// Parses `on` / `off`.
fn parse_on_off(text: &str) -> std::result::Result<bool, String> {
    match text {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("{text:?}: expected on or off")),
    }
}

/// Flotilla: a strongly consistent, Raft-replicated document database.
#[derive(Debug, Parser)]
#[command(name = "flotilla", version, after_help = EXIT_CODES)]
struct Cli {
    /// Client addresses (host:port) of any nodes of the cluster, comma separated.
    #[arg(
        long,
        global = true,
        env = "FLOTILLA_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7100"
    )]
    endpoints: Vec<String>,

    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value = "table")]
    output: Output,

    /// Give up on a request (all retries included) after this long, e.g. `10s`, `500ms`.
    #[arg(long, global = true, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,

    /// Connect over TLS, trusting the nodes' certificates signed by this CA (PEM file).
    #[arg(long, global = true, env = "FLOTILLA_TLS_CA", visible_alias = "cacert")]
    tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) to present over TLS.
    #[arg(
        long,
        global = true,
        env = "FLOTILLA_TLS_CERT",
        visible_alias = "cert",
        requires_all = ["tls_key", "tls_ca"]
    )]
    tls_cert: Option<PathBuf>,

    /// Private key (PEM) of `--tls-cert`.
    #[arg(
        long,
        global = true,
        env = "FLOTILLA_TLS_KEY",
        visible_alias = "key",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,

    /// Authenticate as this user (on clusters with auth enabled).
    #[arg(long, global = true, env = "FLOTILLA_USER", requires = "password")]
    user: Option<String>,

    /// The password of `--user`.
    #[arg(long, global = true, env = "FLOTILLA_PASSWORD", hide_env_values = true)]
    password: Option<String>,

    /// Authenticate with a token made by `token create` (instead of --user).
    #[arg(
        long,
        global = true,
        env = "FLOTILLA_TOKEN",
        hide_env_values = true,
        conflicts_with = "user"
    )]
    token: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Cluster membership and the meta group.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Databases.
    #[command(subcommand)]
    Db(DbCommand),
    /// Documents.
    #[command(subcommand)]
    Doc(doc::DocCommand),
    /// Secondary indexes of collections.
    #[command(subcommand)]
    Index(query::IndexCommand),
    /// Collections (shard keys).
    #[command(subcommand)]
    Collection(query::CollectionCommand),
    /// Users and the roles they hold.
    #[command(subcommand)]
    User(users::UserCommand),
    /// Roles and their permissions per database.
    #[command(subcommand)]
    Role(users::RoleCommand),
    /// Turn auth on or off.
    #[command(subcommand)]
    Auth(users::AuthCommand),
    /// Tokens for scripts and services: create, list, revoke one by one.
    #[command(subcommand)]
    Token(users::TokenCommand),
    /// Backups of a database: create, list, verify, restore.
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// Transactions: `txn DB --file ops.json` runs the operations of the file (a JSON array of
    /// {"op": "get"|"put"|"delete", "collection", "id", "json", "if_version"}) as one
    /// transaction; `txn list DB` shows open and recovering transactions.
    Txn(TxnArgs),
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
struct TxnArgs {
    #[command(subcommand)]
    command: Option<TxnCommand>,
    /// The database.
    database: Option<String>,
    /// The operations file (`-` for stdin).
    #[arg(long, short)]
    file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum TxnCommand {
    /// Open transactions and those being recovered (their coordinator is gone).
    List { database: String },
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Create a database and wait until every shard has a leader.
    Create {
        /// The database's name.
        name: String,
        /// Replicas per shard (default: min(3, nodes)).
        #[arg(long)]
        replication_factor: Option<u32>,
        /// Number of shards (default: 1).
        #[arg(long)]
        shards: Option<u32>,
        /// How long a replica may stay in Rehab before it is replaced: e.g. `30s`, `15m`
        /// (the default), or `off`.
        #[arg(long)]
        replace_after: Option<String>,
        /// Node labels a node must carry to hold a replica, e.g. `zone=a` (repeatable).
        #[arg(long, value_delimiter = ',', value_parser = parse_label)]
        placement: Vec<(String, String)>,
        /// Move replicas on their own so that nodes hold replica counts within one of each other.
        #[arg(long)]
        auto_rebalance: bool,
        /// Do not wait for the shards to elect their leaders.
        #[arg(long)]
        no_wait: bool,
        /// Longest wait for the shards' leaders.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        wait_timeout: Duration,
    },
    /// List the databases.
    List,
    /// Drop a database and all of its documents.
    Drop {
        /// The database.
        name: String,
    },
    /// The shards of a database, their leaders and replicas.
    Status {
        /// The database.
        name: String,
    },
    /// Change a database's replication factor or replacement delay.
    Update {
        /// The database.
        name: String,
        /// Replicas per shard; the cluster adds or removes replicas to match.
        #[arg(long)]
        replication_factor: Option<u32>,
        /// How long a replica may stay in Rehab before it is replaced: e.g. `30s`, `15m`, or `off`.
        #[arg(long)]
        replace_after: Option<String>,
        /// New placement labels, e.g. `zone=a` (repeatable); `any` lifts the placement.
        #[arg(long, value_delimiter = ',')]
        placement: Vec<String>,
        /// Automatic rebalancing: `on` or `off`.
        #[arg(long, value_parser = parse_on_off)]
        auto_rebalance: Option<bool>,
    },
    /// Add a replica on a node (a Promotable that becomes a Member once caught up).
    AddReplica {
        /// The database.
        name: String,
        /// The node that gets the replica.
        #[arg(long)]
        node: u64,
        /// Only this shard (default: every shard).
        #[arg(long)]
        shard: Option<u32>,
        /// The node the initial snapshot should come from (default: the shard leader).
        #[arg(long)]
        mentor: Option<u64>,
    },
    /// Remove a node's replica (refused when it would break a shard's majority).
    RemoveReplica {
        /// The database.
        name: String,
        /// The node whose replica goes.
        #[arg(long)]
        node: u64,
        /// Only this shard (default: every shard).
        #[arg(long)]
        shard: Option<u32>,
        /// Also delete the replica's files on that node (kept by default).
        #[arg(long)]
        hard: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flotilla: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flotilla: {}", one_line(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

/// The exit code for an error: by the client error it carries, if any.
fn exit_code(e: &anyhow::Error) -> u8 {
    match e.chain().find_map(|c| c.downcast_ref::<Error>()) {
        Some(Error::NotFound(_)) => 3,
        Some(Error::VersionMismatch(_)) => 4,
        Some(Error::FailedPrecondition(_) | Error::CutLifted(_)) => 9,
        Some(Error::Unavailable(_) | Error::Transport { .. } | Error::DeadlineExceeded(_)) => 5,
        Some(Error::OutcomeUnknown(_)) => 6,
        Some(Error::InvalidArgument(_) | Error::RevisionCompacted { .. }) => 7,
        Some(Error::AlreadyExists(_)) => 8,
        Some(Error::ResourceExhausted(_)) => 9,
        Some(Error::Unauthenticated(_)) => 10,
        Some(Error::PermissionDenied(_)) => 11,
        Some(Error::TxnConflict(_) | Error::TxnAborted(_)) => 12,
        Some(Error::StorageFull(_)) => 13,
        Some(Error::Server { .. } | Error::Protocol(_)) | None => 1,
    }
}

/// Writes to stdout; a closed pipe (`flotilla ... | head`) is not an error.
fn print(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => other.context("writing to stdout"),
    }
}

async fn run(cli: Cli) -> Result<()> {
    let options = ClientOptions {
        total_timeout: cli.timeout,
        request_timeout: cli.timeout.min(ClientOptions::default().request_timeout),
        tls: match &cli.tls_ca {
            Some(ca) => {
                let identity = cli.tls_cert.as_deref().zip(cli.tls_key.as_deref());
                Some(ClientTls::from_files(ca, identity)?)
            }
            None => None,
        },
        credentials: cli
            .user
            .as_ref()
            .map(|u| Credentials::new(u, cli.password.clone().unwrap_or_default())),
        token: cli.token.clone(),
        ..ClientOptions::default()
    };
    let client = Client::with_options(cli.endpoints.clone(), options)?;
    let out = cli.output;
    match cli.command {
        Command::Cluster(c) => cluster::run(&client, c, out).await,
        Command::Db(c) => db(&client, c, out).await,
        Command::Doc(c) => doc::doc(&client, c, out).await,
        Command::Index(c) => query::index(&client, c, out).await,
        Command::Collection(c) => query::collection(&client, c, out).await,
        Command::User(c) => users::user(&client, c, out).await,
        Command::Role(c) => users::role(&client, c, out).await,
        Command::Auth(c) => users::auth(&client, c, out).await,
        Command::Token(c) => users::token(&client, c, out).await,
        Command::Txn(t) => transaction(&client, t, out).await,
        Command::Backup(c) => backup::run(&client, c).await,
    }
}

async fn transaction(client: &Client, args: TxnArgs, out: Output) -> Result<()> {
    match (args.command, args.database, args.file) {
        (Some(TxnCommand::List { database }), _, _) => {
            let txns = client.list_transactions(&database).await?;
            print(&txn::render_list(&txns, out))
        }
        (None, Some(database), Some(file)) => {
            let ops = txn::parse(&txn::read_file(&file)?)?;
            let (results, outcome) = txn::run(client, &database, &ops).await?;
            print(&txn::render(&results, &outcome, out))
        }
        _ => Err(Error::InvalidArgument(
            "usage: flotilla txn DB --file OPS.json, or flotilla txn list DB".into(),
        )
        .into()),
    }
}

async fn db(client: &Client, command: DbCommand, out: Output) -> Result<()> {
    match command {
        DbCommand::Create {
            name,
            replication_factor,
            shards,
            replace_after,
            placement,
            auto_rebalance,
            no_wait,
            wait_timeout,
        } => {
            let options = DatabaseOptions {
                replication_factor,
                shards,
                replace_after,
                placement: placement.into_iter().collect(),
                auto_rebalance,
            };
            let info = client
                .create_database_with(&name, &options)
                .await
                .with_context(|| format!("creating database {name}"))?;
            if no_wait {
                return print(&render::database_created(&info, None, out));
            }
            let mut last = None;
            let status = client
                .wait_for_database(&name, wait_timeout, |s| {
                    let now = (s.shards_with_leader(), s.shards.len());
                    if last != Some(now) {
                        eprintln!(
                            "waiting for database {name}: {}/{} shards have a leader",
                            now.0,
                            s.database.shards.max(now.1 as u32)
                        );
                        last = Some(now);
                    }
                })
                .await
                .with_context(|| format!("database {name} was created, but"))?;
            print(&render::database_created(&info, Some(&status), out))
        }
        DbCommand::List => {
            let dbs = client.list_databases().await?;
            print(&render::databases(&dbs, out))
        }
        DbCommand::Drop { name } => {
            client
                .drop_database(&name)
                .await
                .with_context(|| format!("dropping database {name}"))?;
            print(&render::database_dropped(&name, out))
        }
        DbCommand::Status { name } => {
            let status = client.database_status(&name).await?;
            print(&render::database_status(&status, out))
        }
        DbCommand::Update {
            name,
            replication_factor,
            replace_after,
            placement,
            auto_rebalance,
        } => {
            let placement = match placement.as_slice() {
                [] => None,
                [any] if any == "any" => Some(Default::default()),
                labels => Some(
                    labels
                        .iter()
                        .map(|l| parse_label(l).map_err(anyhow::Error::msg))
                        .collect::<Result<_>>()?,
                ),
            };
            let update = DatabaseUpdate {
                replication_factor,
                replace_after,
                placement,
                auto_rebalance,
            };
            if update == DatabaseUpdate::default() {
                anyhow::bail!(
                    "nothing to change: give --replication-factor, --replace-after, --placement or --auto-rebalance"
                );
            }
            let db = client
                .update_database_with(&name, &update)
                .await
                .with_context(|| format!("updating database {name}"))?;
            print(&render::database_updated(&db, out))
        }
        DbCommand::AddReplica {
            name,
            node,
            shard,
            mentor,
        } => {
            let steps = client
                .add_replica(&name, shard, node, mentor)
                .await
                .with_context(|| format!("adding a replica of {name} on node {node}"))?;
            print(&render::steps(
                &format!("replica of {name} added on node {node}"),
                &steps,
                out,
            ))
        }
        DbCommand::RemoveReplica {
            name,
            node,
            shard,
            hard,
        } => {
            let steps = client
                .remove_replica(&name, shard, node, hard)
                .await
                .with_context(|| format!("removing node {node}'s replica of {name}"))?;
            print(&render::steps(
                &format!("replica of {name} removed from node {node}"),
                &steps,
                out,
            ))
        }
    }
}
