//! Storage faults for tests (`--test-storage-faults`, hidden): while the data directory holds
//! the file `fail-apply-<group>`, every apply job of that group fails as a storage error would
//! (a failing disk, a corrupt record), so that tests see what one group's failure does to the
//! others and to the node. Without the flag nothing is checked.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::types::GroupId;

/// The file that makes group `gid`'s applies fail.
pub fn apply_trigger(gid: GroupId) -> String {
    format!("fail-apply-{gid}")
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
}

/// Fails when `trigger` names a file that exists.
pub(crate) fn check(trigger: Option<&Path>) -> io::Result<()> {
    match trigger {
        Some(t) if t.exists() => Err(io::Error::other(format!(
            "injected storage fault ({})",
            t.display()
        ))),
        _ => Ok(()),
    }
}
