//! The Flotilla test kit: everything the node's tests, the end-to-end tests and the benchmark
//! share to run and judge real node processes.
//!
//! - [`cluster`]: clusters of real `flotilla-node` processes on 127.0.0.1 or, for partitions,
//!   one network namespace per node ([`netns`]); kill, freeze, stop, restart and wipe nodes.
//! - [`workload`], [`history`], [`linearizability`], [`schedule`]: concurrent clients whose every
//!   operation is recorded, the check of that history, and seeded schedules of faults;
//!   [`membership`]: seeded membership changes under faults.
//! - [`http`]: GETs on a node's HTTP port (`/readyz`, `/metrics`) through a real HTTP client.
//! - [`wait`]: waiting on a condition with a deadline, never sleeping and hoping.
//! - [`command`]: external commands (`ip`, docker) run with a deadline.
//! - [`fake_node`]: a fake node (Documents and Admin from memory, with scripted failures) for
//!   the tests of the client library and the command line.
//! - [`environment`]: what a test does when the machine lacks what it needs (root, namespaces,
//!   docker): it fails under `CI=true` and says plainly that it did not run elsewhere.
//!
//! Nothing here knows about Kubernetes; the fake API server and the kubelet stand-in live in
//! `flotilla-e2e`.

pub mod cluster;
pub mod command;
pub mod elle;
pub mod environment;
pub mod error;
pub mod fake_node;
pub mod history;
pub mod http;
pub mod linearizability;
pub mod membership;
pub mod netns;
pub mod schedule;
pub mod sessions;
pub mod tmpfs;
pub mod wait;
pub mod watch_check;
pub mod workload;

pub use error::{Error, Result};

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The root of the source tree (holds `deploy/`).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// A name no other run uses: `<prefix>-<pid>-<time>-<counter>`, lowercase letters, digits and
/// dashes only (valid as a container name and as a compose project name).
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() % 100_000_000)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{millis}-{n}", std::process::id())
}

/// Prints one progress line of a test, with the time since the process started.
pub fn progress(message: impl std::fmt::Display) {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    eprintln!("[e2e {:>6.1}s] {message}", start.elapsed().as_secs_f64());
}
