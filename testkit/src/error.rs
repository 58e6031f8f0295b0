//! The error of every test-kit operation that can fail for a reason outside the test: a missing
//! tool, a command that failed, a deadline passed, an HTTP exchange that went wrong.

use std::time::Duration;

/// What went wrong while driving processes, commands or HTTP, or waiting for a condition.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tool the kit needs is missing, or its daemon or capability is not there.
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
    /// An HTTP GET got no answer (connection refused, reset, no answer in time, bad URL).
    #[error("GET http://{addr}{path}: {reason}")]
    Http {
        addr: String,
        path: String,
        reason: String,
    },
    /// Output that does not have the expected shape.
    #[error("unexpected output: {0}")]
    Parse(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
