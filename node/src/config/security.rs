//! The flags of authentication, joining and the limits that keep one client from taking a node
//! (each also read from `FLOTILLA_<FLAG>`).

use std::time::Duration;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct SecurityFlags {
    /// How long an auth token stays valid, e.g. `10m` (clients authenticate again after).
    #[arg(long, env = "FLOTILLA_AUTH_TOKEN_TTL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub auth_token_ttl: Duration,
    /// With auth enabled, a client certificate (verified against --tls-ca) authenticates its
    /// common name as the user, without a token.
    #[arg(long, env = "FLOTILLA_CLIENT_CERT_AUTH")]
    pub client_cert_auth: bool,
    /// The cluster's join token: a node joining must present the same one to the member it
    /// asks (set it on every node). Without it, any node that reaches the peer port may join
    /// (unless mutual TLS restricts who does).
    #[arg(long, env = "FLOTILLA_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// Largest gRPC request the client port accepts, in bytes (a larger one is refused with
    /// OUT_OF_RANGE before it is read).
    #[arg(long, env = "FLOTILLA_MAX_MESSAGE_BYTES", default_value_t = 16 << 20)]
    pub max_message_bytes: usize,
    /// Most requests served at once on one client connection (HTTP/2 streams).
    #[arg(long, env = "FLOTILLA_MAX_CONNECTION_REQUESTS", default_value_t = 256)]
    pub max_connection_requests: u32,
    /// Most client requests served at once by the node (further ones are refused at once with
    /// RESOURCE_EXHAUSTED, not queued).
    #[arg(long, env = "FLOTILLA_MAX_NODE_REQUESTS", default_value_t = 2048)]
    pub max_node_requests: usize,
    /// Most watches (change feeds) open on the node at once.
    #[arg(long, env = "FLOTILLA_MAX_WATCHES", default_value_t = 1024)]
    pub max_watches: usize,
    /// Largest list or query answer, in bytes of documents.
    #[arg(long, env = "FLOTILLA_MAX_ANSWER_BYTES", default_value_t = 8 << 20)]
    pub max_answer_bytes: usize,
}

/// Longest node name (`--name`): a DNS label, as a pod name is.
const MAX_NODE_NAME: usize = 63;

/// A node name: 1 to 63 letters, digits, '-', '_' or '.'.
pub fn check_node_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NODE_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--name {name:?}: use 1-{MAX_NODE_NAME} letters, digits, '-', '_' or '.'"
        ))
    }
}

impl SecurityFlags {
    /// Checks the values that clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.auth_token_ttl < Duration::from_secs(1) {
            return Err("--auth-token-ttl must be at least 1s".into());
        }
        if self.max_message_bytes < 64 << 10 {
            return Err("--max-message-bytes must be at least 64 KiB".into());
        }
        if self.max_connection_requests == 0 || self.max_node_requests == 0 {
            return Err(
                "--max-connection-requests and --max-node-requests must be positive".into(),
            );
        }
        if self.join_token.as_deref().is_some_and(str::is_empty) {
            return Err("--join-token must not be empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_short_and_plain() {
        for good in ["node-0", "flotilla-2.db", "n_1"] {
            assert!(check_node_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "x/y", "ü", &"n".repeat(MAX_NODE_NAME + 1)] {
            assert!(check_node_name(bad).is_err(), "{bad}");
        }
    }
}
