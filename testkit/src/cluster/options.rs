//! Settings of a test cluster: node flags, timeouts, the client options, where the nodes run
//! and which executable they are.

use std::path::PathBuf;
use std::time::Duration;

use flotilla_client::ClientOptions;

/// Where the nodes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// All nodes on 127.0.0.1 on free ports: every fault but partitions.
    Loopback,
    /// One network namespace per node on a [`Fabric`](crate::netns::Fabric), fixed ports:
    /// partitions possible (needs root and iproute2).
    Namespaces,
}

/// The `flotilla-node` executable cargo built for the running test: `NEXTEST_BIN_EXE_flotilla-node`
/// under nextest, otherwise the one next to the test binary's `deps/` directory (where cargo
/// puts a package's binaries for its integration tests). Another binary is set through
/// [`ClusterOptions::binary`].
pub fn node_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NEXTEST_BIN_EXE_flotilla-node") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let deps = exe.parent().unwrap_or(&exe);
    let profile = if deps.ends_with("deps") {
        deps.parent().unwrap_or(deps)
    } else {
        deps
    };
    profile.join("flotilla-node")
}

/// Settings of a test cluster. `None` leaves the node's own default.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub heartbeat_interval_ms: Option<u64>,
    pub election_timeout_ms: Option<u64>,
    pub snapshot_threshold: Option<u64>,
    pub max_document_bytes: Option<u64>,
    pub meta_voters: Option<usize>,
    /// Further `serve` flags for every node.
    pub extra_args: Vec<String>,
    /// Environment of every node (e.g. `FLOTILLA_LOG`).
    pub env: Vec<(String, String)>,
    /// How long a node may take to become ready.
    pub ready_timeout: Duration,
    /// How long a graceful stop may take before the test fails.
    pub stop_timeout: Duration,
    /// Options of the clients returned by [`Cluster::client`](super::Cluster::client).
    pub client_options: ClientOptions,
    /// Where the nodes run.
    pub network: Network,
    /// The `flotilla-node` executable (default: [`node_binary`]).
    pub binary: PathBuf,
    /// Its subcommand that runs a node with `serve`'s flags (`serve`; the benchmark re-executes
    /// itself with `node`).
    pub subcommand: String,
    /// The directory of the nodes' directories, kept after the cluster (default: a temporary
    /// directory, removed unless `FLOTILLA_KEEP_TEST_DIRS` is set).
    pub dir: Option<PathBuf>,
    /// Each node's wall clock runs through libfaketime, shifted by what its clock file says
    /// (see [`Cluster::shift_clock`](super::Cluster::shift_clock)); its monotonic clock is
    /// left alone.
    pub fake_clock: Option<PathBuf>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            heartbeat_interval_ms: None,
            election_timeout_ms: None,
            snapshot_threshold: None,
            max_document_bytes: None,
            meta_voters: None,
            extra_args: Vec::new(),
            env: Vec::new(),
            ready_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(30),
            client_options: ClientOptions {
                total_timeout: Duration::from_secs(30),
                ..ClientOptions::default()
            },
            network: Network::Loopback,
            binary: node_binary(),
            subcommand: "serve".into(),
            dir: None,
            fake_clock: None,
        }
    }
}

impl ClusterOptions {
    /// Runs every node's wall clock through the libfaketime library `library` (see
    /// [`crate::environment::faketime_library`]).
    pub fn fake_clock(mut self, library: PathBuf) -> Self {
        self.fake_clock = Some(library);
        self
    }

    /// Faster heartbeats and elections, for tests that kill leaders.
    pub fn fast_elections(mut self) -> Self {
        self.heartbeat_interval_ms = Some(50);
        self.election_timeout_ms = Some(500);
        self
    }

    pub fn snapshot_threshold(mut self, entries: u64) -> Self {
        self.snapshot_threshold = Some(entries);
        self
    }

    pub fn max_document_bytes(mut self, bytes: u64) -> Self {
        self.max_document_bytes = Some(bytes);
        self
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs the nodes on `network`.
    pub fn network(mut self, network: Network) -> Self {
        self.network = network;
        self
    }
}

/// How a node enters the cluster when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// `--initial-cluster-state new`: bootstraps when its data directory is fresh.
    Bootstrap,
    /// `--initial-cluster-state existing --join ADDRS`.
    Join(Vec<String>),
}
