//! Node configuration: every flag of `flotilla-node serve`, each also read from `FLOTILLA_<FLAG>`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

mod security;
pub use security::SecurityFlags;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitialClusterState {
    /// Initialise a new cluster (only when this node has no data yet).
    New,
    /// Join an existing cluster through `--join`.
    Existing,
}

/// Where a transaction coordinator stops, for tests that kill it there (`--txn-failpoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TxnFailpoint {
    /// Every shard prepared, no decision written yet.
    AfterPrepare,
    /// The decision is in the record; the other shards' intents are not resolved yet.
    AfterDecide,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct NodeConfig {
    /// Human-readable node name (e.g. the pod name); only an address, not the identity.
    #[arg(long, env = "FLOTILLA_NAME")]
    pub name: String,
    /// Directory holding the node's database file.
    #[arg(long, env = "FLOTILLA_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Listen address of the client and admin gRPC API.
    #[arg(long, env = "FLOTILLA_CLIENT_ADDR", default_value = "127.0.0.1:7100")]
    pub client_addr: SocketAddr,
    /// Listen address of the peer (Raft) gRPC API.
    #[arg(long, env = "FLOTILLA_PEER_ADDR", default_value = "127.0.0.1:7101")]
    pub peer_addr: SocketAddr,
    /// Listen address of HTTP `/metrics`, `/healthz`, `/readyz`.
    #[arg(long, env = "FLOTILLA_HTTP_ADDR", default_value = "127.0.0.1:7102")]
    pub http_addr: SocketAddr,
    /// Client address other nodes and clients use (default: --client-addr).
    #[arg(long, env = "FLOTILLA_ADVERTISE_CLIENT")]
    pub advertise_client: Option<String>,
    /// Peer address other nodes use (default: --peer-addr).
    #[arg(long, env = "FLOTILLA_ADVERTISE_PEER")]
    pub advertise_peer: Option<String>,
    /// `new` bootstraps a cluster when the data directory is empty; `existing` joins.
    #[arg(
        long,
        env = "FLOTILLA_INITIAL_CLUSTER_STATE",
        value_enum,
        default_value = "existing"
    )]
    pub initial_cluster_state: InitialClusterState,
    /// Client addresses of existing members to join through (comma separated).
    #[arg(long, env = "FLOTILLA_JOIN", value_delimiter = ',')]
    pub join: Vec<String>,
    /// Voters of the meta group (3 or 5); further nodes are its learners.
    #[arg(long, env = "FLOTILLA_META_VOTERS", default_value_t = 3)]
    pub meta_voters: usize,
    /// Raft heartbeat interval in milliseconds.
    #[arg(long, env = "FLOTILLA_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Minimum Raft election timeout in milliseconds (the maximum is twice it).
    #[arg(long, env = "FLOTILLA_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,
    /// Log entries since the last snapshot that trigger a new snapshot and log compaction.
    #[arg(long, env = "FLOTILLA_SNAPSHOT_THRESHOLD", default_value_t = 10_000)]
    pub snapshot_threshold: u64,
    /// Bytes of documents written since the last snapshot that also trigger a new snapshot
    /// (whichever of this and `--snapshot-threshold` comes first), so that the log kept between
    /// snapshots stays bounded in bytes when entries are large.
    #[arg(long, env = "FLOTILLA_SNAPSHOT_LOG_BYTES", default_value_t = 64 << 20)]
    pub snapshot_log_bytes: u64,
    /// Page cache of the state file (the documents read and written), in bytes. The node's
    /// memory is mostly this and the log file's 32 MiB; snapshots are read and written a
    /// frame at a time and add little.
    #[arg(long, env = "FLOTILLA_STATE_CACHE_BYTES", default_value_t = crate::store::STATE_CACHE_BYTES)]
    pub state_cache_bytes: usize,
    /// Free bytes kept in reserve on the data directory's volume (at most a tenth of it): below
    /// them the node counts its storage as full, hands its leaderships over and refuses writes
    /// that add data until space is freed, so that it never runs out in the middle of a write.
    #[arg(long, env = "FLOTILLA_STORAGE_RESERVE_BYTES", default_value_t = crate::store::space::DEFAULT_RESERVE)]
    pub storage_reserve_bytes: u64,
    /// Largest accepted document body, in bytes.
    #[arg(long, env = "FLOTILLA_MAX_DOCUMENT_BYTES", default_value_t = 1 << 20)]
    pub max_document_bytes: usize,
    /// Most operations in one atomic batch.
    #[arg(long, env = "FLOTILLA_MAX_BATCH_OPS", default_value_t = 1000)]
    pub max_batch_ops: usize,
    /// Largest atomic batch, in bytes of document bodies.
    #[arg(long, env = "FLOTILLA_MAX_BATCH_BYTES", default_value_t = 4 << 20)]
    pub max_batch_bytes: usize,
    /// Deadline of one client request, e.g. `10s`.
    #[arg(long, env = "FLOTILLA_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Timeout of a transaction that names none, e.g. `10s`: an undecided transaction older
    /// than its timeout is aborted by whoever meets its intents.
    #[arg(long, env = "FLOTILLA_TXN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub txn_timeout: Duration,
    /// How long a transaction record (its decision) is kept at least, e.g. `60s`; after that
    /// the primary shard's leader forgets it once no shard holds an intent of it. Longer than
    /// any commit decision may be in flight (the request timeout) plus the clock skew.
    #[arg(long, env = "FLOTILLA_TXN_RECORD_RETENTION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub txn_record_retention: Duration,
    /// Longest a backup's fence stays up on a shard this node leads, e.g. `30s`: a fence its
    /// backup did not lift by then (the backup client died) is lifted by the shard leader.
    /// Transaction commits on a fenced shard wait, so keep it short.
    #[arg(long, env = "FLOTILLA_BACKUP_FENCE_MAX", default_value = "30s", value_parser = humantime::parse_duration)]
    pub backup_fence_max: Duration,
    /// How many revisions of change feed each shard replica keeps (at least 1), for watches
    /// and incremental backups: a watch or an incremental backup that needs older changes is
    /// refused as compacted (watch again from the current state; take a full backup).
    #[arg(long, env = "FLOTILLA_CHANGE_RETENTION", default_value_t = crate::store::CHANGE_RETENTION)]
    pub change_retention: u64,
    /// Testing only: this node's transaction coordinator stops for a minute at this point of
    /// every two-phase commit, so that a test can kill it there.
    #[arg(long, env = "FLOTILLA_TXN_FAILPOINT", value_enum, hide = true)]
    pub txn_failpoint: Option<TxnFailpoint>,
    /// How long a graceful stop may take handing leadership over, e.g. `10s`.
    #[arg(long, env = "FLOTILLA_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
    /// How often each shard leader compares its shard's replicas (a digest of each at the same
    /// log index); a replica that differs from the majority is stopped and replaced. `0s`
    /// never checks. A shard is checked again only once it applied something new.
    #[arg(long, env = "FLOTILLA_CONSISTENCY_CHECK_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub consistency_check_interval: Duration,
    /// How long a voter may go unseen before its replicas are marked Rehab, e.g. `60s`.
    #[arg(long, env = "FLOTILLA_REHAB_AFTER", default_value = "60s", value_parser = humantime::parse_duration)]
    pub rehab_after: Duration,
    /// How long a data group must be idle, with every replica caught up, before it stops its
    /// heartbeats and election timer (hibernates) until its next write; `0s` keeps every group
    /// awake.
    #[arg(long, env = "FLOTILLA_HIBERNATE_AFTER", default_value = "5s", value_parser = humantime::parse_duration)]
    pub hibernate_after: Duration,
    /// A Promotable is promoted to voter once it is fewer than this many entries behind.
    #[arg(long, env = "FLOTILLA_PROMOTION_LAG", default_value_t = 100)]
    pub promotion_lag: u64,
    /// A Member more than this many entries behind its shard leader is marked Rehab.
    #[arg(long, env = "FLOTILLA_REHAB_LAG", default_value_t = 10_000)]
    pub rehab_lag: u64,
    /// Placement labels of this node, e.g. `zone=a,disk=ssd`; databases may require them.
    #[arg(long, env = "FLOTILLA_LABELS", value_delimiter = ',', value_parser = crate::labels::parse)]
    pub labels: Vec<(String, String)>,
    /// Log output format.
    #[arg(long, env = "FLOTILLA_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub tls: TlsFlags,
    /// Tests only: see `crash_point` (dies as kill -9 would after applying a write as shard
    /// leader, before answering it, when the data directory holds a trigger file).
    #[arg(long, env = "FLOTILLA_TEST_CRASH_POINT", hide = true)]
    pub test_crash_point: bool,
    /// Tests only: see `store::faults` (a group's applies fail while the data directory holds
    /// its trigger file) and `store::slow_disk` (syncs are slowed while it holds `slow-sync`).
    #[arg(long, env = "FLOTILLA_TEST_STORAGE_FAULTS", hide = true)]
    pub test_storage_faults: bool,
    /// Tests only: see `store::power_loss` (what was not synced is lost when the process is
    /// killed, as in a power cut).
    #[arg(long, env = "FLOTILLA_TEST_POWER_LOSS", hide = true)]
    pub test_power_loss: bool,
    #[command(flatten)]
    pub security: SecurityFlags,
}

/// Certificates of the node's ports (PEM files, re-read when they change). Without them every
/// port speaks plaintext.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsFlags {
    /// Certificate chain the client and HTTP ports present (TLS on both when set).
    #[arg(long, env = "FLOTILLA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of `--tls-cert`.
    #[arg(long, env = "FLOTILLA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA bundle that client certificates presented on the client and HTTP ports are verified
    /// against (a client without one is still served), and that this node trusts when it calls
    /// another member's client port to join.
    #[arg(long, env = "FLOTILLA_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Certificate chain of this node on the peer port, presented to peers both when serving
    /// and when calling them.
    #[arg(long, env = "FLOTILLA_PEER_TLS_CERT", requires_all = ["peer_tls_key", "peer_tls_ca"])]
    pub peer_tls_cert: Option<PathBuf>,
    /// Private key of `--peer-tls-cert`.
    #[arg(long, env = "FLOTILLA_PEER_TLS_KEY", requires = "peer_tls_cert")]
    pub peer_tls_key: Option<PathBuf>,
    /// The cluster CA: the peer port accepts only clients with a certificate it signed, and
    /// this node's calls to peers accept only servers with one.
    #[arg(long, env = "FLOTILLA_PEER_TLS_CA", requires = "peer_tls_cert")]
    pub peer_tls_ca: Option<PathBuf>,
}

/// An address others can dial: a wildcard listen address is advertised as this host's name.
fn reachable(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified()
        && let Ok(host) = nix::unistd::gethostname()
        && let Some(host) = host.to_str()
    {
        return format!("{host}:{}", addr.port());
    }
    addr.to_string()
}

impl NodeConfig {
    pub fn advertised_client(&self) -> String {
        self.advertise_client
            .clone()
            .unwrap_or_else(|| reachable(self.client_addr))
    }

    pub fn advertised_peer(&self) -> String {
        self.advertise_peer
            .clone()
            .unwrap_or_else(|| reachable(self.peer_addr))
    }

    /// This node's placement labels.
    pub fn label_map(&self) -> crate::labels::Labels {
        self.labels.iter().cloned().collect()
    }

    /// Checks the values that clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        security::check_node_name(&self.name)?;
        if !(1..=7).contains(&self.meta_voters) {
            return Err(format!(
                "--meta-voters must be between 1 and 7 (3 or 5 recommended), got {}",
                self.meta_voters
            ));
        }
        if self.heartbeat_interval == 0 || self.election_timeout <= 2 * self.heartbeat_interval {
            return Err(format!(
                "--election-timeout ({} ms) must exceed twice --heartbeat-interval ({} ms)",
                self.election_timeout, self.heartbeat_interval
            ));
        }
        if self.snapshot_threshold < 10 {
            return Err("--snapshot-threshold must be at least 10".into());
        }
        if self.snapshot_log_bytes < 4096 {
            return Err("--snapshot-log-bytes must be at least 4096".into());
        }
        if self.state_cache_bytes < 1 << 20 {
            return Err("--state-cache-bytes must be at least 1 MiB (1048576)".into());
        }
        self.security.validate()
    }

    /// The log kept behind a snapshot: a follower that has just installed one goes on from
    /// there by log, unless the leader snapshotted and purged past it meanwhile. A tenth of the
    /// threshold, and never less than the threshold itself up to 40 entries.
    pub fn log_to_keep(&self) -> u64 {
        (self.snapshot_threshold / 10).max(self.snapshot_threshold.min(40))
    }

    pub fn raft_config(&self) -> Result<openraft::Config, String> {
        openraft::Config {
            cluster_name: "flotilla".into(),
            heartbeat_interval: self.heartbeat_interval,
            election_timeout_min: self.election_timeout,
            election_timeout_max: self.election_timeout * 2,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_threshold),
            // Log compaction is this node's (`crate::compaction`): it keeps `log_to_keep`
            // entries behind each snapshot and, on a leader, what a replica being sent a
            // snapshot resumes from.
            max_in_snapshot_log_to_keep: u64::MAX,
            max_payload_entries: 512,
            install_snapshot_timeout: 10_000,
            enable_pre_vote: Some(true),
            // The leader sends new entries to its followers while it writes them itself, so its
            // own fsync and theirs overlap (an entry still commits only once a majority,
            // counting the leader only after its fsync, holds it durably).
            broadcast_submitted_on_append: Some(true),
            // Applies are not fsynced and `committed` is not persisted durably, so a restarted
            // leader must learn the commit index through a new election, not resume its term.
            enable_leader_restore: Some(false),
            ..Default::default()
        }
        .validate()
        .map_err(|e| e.to_string())
    }
}
