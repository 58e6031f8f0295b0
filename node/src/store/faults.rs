//! Storage faults for tests (`--test-storage-faults`, hidden): while the data directory holds
//! the file `fail-apply-<group>`, every apply job of that group fails as a storage error would
//! (a failing disk, a corrupt record), so that tests see what one group's failure does to the
//! others and to the node. While it holds `diverge-apply-<group>`, that group's document writes
//! are taken as applied without being written, so that its replica silently differs from its
//! peers (what the consistency checks must find). Without the flag nothing is checked.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::types::GroupId;

/// The file that makes group `gid`'s applies fail.
pub fn apply_trigger(gid: GroupId) -> String {
    format!("fail-apply-{gid}")
}

/// The file that makes group `gid`'s replica skip its document writes.
pub fn diverge_trigger(gid: GroupId) -> String {
    format!("diverge-apply-{gid}")
}

/// Where a node's injected faults are armed, once enabled.
#[derive(Debug, Default)]
pub struct TestFaults {
    dir: OnceLock<PathBuf>,
}

impl TestFaults {
    /// Arms faults by trigger files in `dir`.
    pub fn enable(&self, dir: &Path) {
        let _ = self.dir.set(dir.to_path_buf());
    }

    /// The trigger file of group `gid`'s applies, when faults are enabled.
    pub(crate) fn apply_trigger(&self, gid: GroupId) -> Option<PathBuf> {
        self.dir.get().map(|d| d.join(apply_trigger(gid)))
    }

    /// The trigger file of group `gid`'s divergence, when faults are enabled.
    pub(crate) fn diverge_trigger(&self, gid: GroupId) -> Option<PathBuf> {
        self.dir.get().map(|d| d.join(diverge_trigger(gid)))
    }
}

/// Fails when `trigger` names a file that exists.
pub(crate) fn check(trigger: Option<&Path>) -> io::Result<()> {
    match trigger {
        Some(t) if armed(Some(t)) => Err(io::Error::other(format!(
            "injected storage fault ({})",
            t.display()
        ))),
        _ => Ok(()),
    }
}

/// Whether `trigger` names a file that exists.
pub(crate) fn armed(trigger: Option<&Path>) -> bool {
    trigger.is_some_and(Path::exists)
}
