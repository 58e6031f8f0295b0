//! A crash point for tests (`--test-crash-point`, hidden): a shard leader that applied a write
//! dies, as kill -9 would, before it answers, when its data directory holds the file
//! [`TRIGGER`] (removed first, so that the node restarts normally). That is the moment at
//! which a write's outcome is unknown to everyone who sent it: committed, applied, unanswered.
//! Does nothing (not even a file check) unless the flag is given.

use std::path::Path;

use crate::config::NodeConfig;

/// The file in the data directory that arms the crash point for one write.
pub const TRIGGER: &str = "crash-before-answering";

/// Called after a write applied on a shard led here, before it is answered.
pub fn after_write(config: &NodeConfig) {
    if !config.test_crash_point {
        return;
    }
    let trigger = config.data_dir.join(TRIGGER);
    if armed(&trigger) {
        tracing::warn!("test crash point: dying before answering a write that applied");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Takes the trigger: true when it was there (and is now gone).
fn armed(trigger: &Path) -> bool {
    std::fs::remove_file(trigger).is_ok()
}
