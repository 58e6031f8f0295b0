//! The error of every harness operation.

use std::time::Duration;

/// What went wrong while driving docker or waiting for a condition.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tool the harness needs is missing or its daemon cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// A command could not be started.
    #[error("cannot run {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    /// A command did not finish in time and was killed.
    #[error("{command} did not finish within {timeout:?}")]
    CommandTimeout { command: String, timeout: Duration },
    /// A condition did not hold before its deadline.
    #[error("timed out after {waited:?} waiting for {what}; last seen: {last}")]
    Timeout {
        what: String,
        waited: Duration,
        last: String,
    },
    /// Output that does not have the expected shape.
    #[error("unexpected output: {0}")]
    Parse(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
