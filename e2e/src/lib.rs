//! End-to-end test support for Flotilla: drives the docker CLI and docker compose to build the
//! container image, run containers and a compose cluster, and waits on conditions with deadlines;
//! runs clusters of node processes on a private network of namespaces where faults are injected
//! ([`cluster`], [`netns`], [`schedule`]), records what concurrent clients did ([`workload`],
//! [`history`]) and checks it for linearizability ([`linearizability`]).
//!
//! Everything here shells out to the `docker` and `docker compose` / `docker-compose` command
//! lines, the way a user would, and cleans up what it created when dropped:
//! [`docker::Container`] removes its container and anonymous volumes, [`compose::Project`] runs
//! `down --volumes`. Names are unique per run ([`unique_name`]) so that runs never collide.

pub mod cluster;
pub mod compose;
pub mod docker;
pub mod error;
pub mod history;
pub mod http;
pub mod image;
pub mod kube_api;
pub mod kubelet;
pub mod linearizability;
pub mod netns;
pub mod process;
pub mod schedule;
pub mod wait;
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
