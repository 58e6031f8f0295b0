//! The error type of the operator library.

/// Errors a caller of the operator library can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An object lacks a field the operator needs (for example `metadata.name`).
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),

    /// A manifest could not be parsed.
    #[error("invalid manifest {source_name}: {message}")]
    InvalidManifest {
        source_name: String,
        message: String,
    },

    /// A kubeconfig file or context could not be used.
    #[error("kubeconfig {source_name}: {message}")]
    Kubeconfig {
        source_name: String,
        message: String,
    },

    /// An object breaks the validation rules of its CRD.
    #[error("invalid {kind}: {}", messages.join("; "))]
    Invalid { kind: String, messages: Vec<String> },

    /// An object could not be serialized.
    #[error("cannot serialize {what}: {message}")]
    Serialize { what: String, message: String },

    /// A pod named for a node-level request is not a node of the named Cluster.
    #[error("pod {pod} is not a node of Cluster {cluster}")]
    NotANode { pod: String, cluster: String },

    /// The cluster's admin API cannot be used.
    #[error("the cluster admin API is not available")]
    AdminUnavailable,

    /// No node of the cluster answered its admin API in time.
    #[error("cluster admin API unreachable: {0}")]
    Admin(String),

    /// The cluster answered, but refused or cannot do what was asked.
    #[error("cluster admin API refused: {0}")]
    AdminRefused(String),

    /// A database of this name exists that the operator was not asked to adopt.
    #[error(
        "database {0} exists already and was not created by this DatabaseGroup; set adopt: true to take it over"
    )]
    DatabaseExists(String),

    /// A certificate or key could not be made or read.
    #[error("certificates: {0}")]
    Certificate(String),

    /// A finalizer could not be added or removed, or its cleanup failed.
    #[error("finalizer: {0}")]
    Finalizer(String),

    /// Another operator process holds the leader lease.
    #[error("leadership lost to another operator process")]
    LeadershipLost,

    /// The leader lease could not be renewed in time: its holder steps down.
    #[error("the leader lease was not renewed within {within:?}")]
    LeaseNotRenewed {
        within: std::time::Duration,
        #[source]
        last_error: Option<Box<kube::Error>>,
    },

    /// The operator's CRDs are missing from the Kubernetes API.
    #[error(
        "the flotilla.dev CRDs are not installed; install them with `flotilla-operator crds | kubectl apply --server-side -f -`"
    )]
    CrdsNotInstalled,

    /// A request to the Kubernetes API failed.
    #[error("kubernetes API: {}", describe_kube(.0))]
    Kube(#[from] kube::Error),

    /// A child object of a Cluster could not be written.
    #[error("{action} {kind} {name}")]
    Child {
        action: &'static str,
        kind: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },

    /// A reconcile failed, and so did the status write that was to report it. Both are
    /// kept: the first is never hidden behind the second.
    #[error(
        "{}; the status reporting it was not written either: {}",
        error.chain(),
        status.chain()
    )]
    StatusNotWritten {
        error: Box<Error>,
        status: Box<Error>,
    },
}

impl Error {
    /// Whether the error means the cluster could not be reached (rather than that it
    /// refused a request).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Admin(_) | Self::AdminUnavailable)
    }

    /// The error and every cause below it, `: `-separated; a cause whose text is already
    /// shown is not repeated.
    pub fn chain(&self) -> String {
        cause_chain(self)
    }
}

/// `error` and every cause below it, `: `-separated; a cause whose text is already shown
/// is not repeated.
pub fn cause_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let kube = cause
            .downcast_ref::<kube::Error>()
            .or_else(|| cause.downcast_ref::<Box<kube::Error>>().map(|b| &**b));
        let shown = match kube {
            Some(kube) => describe_kube(kube),
            None => cause.to_string(),
        };
        if !text.contains(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        if matches!(kube, Some(kube::Error::Api(_))) {
            break; // the API server's answer says it all
        }
        source = cause.source();
    }
    text
}

/// A Kubernetes API error in one line: the API server's message with its reason and code
/// (kube's own text repeats the whole answer).
fn describe_kube(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            format!("{} ({}, {})", status.message, status.reason, status.code)
        }
        other => other.to_string(),
    }
}

/// What a reconcile pass ends with: its own error comes first; a failed status write is
/// added to it, never put in its place.
pub fn outcome(failure: Option<Error>, status_written: Result<()>) -> Result<()> {
    match (failure, status_written) {
        (None, written) => written,
        (Some(error), Ok(())) => Err(error),
        (Some(error), Err(status)) => Err(Error::StatusNotWritten {
            error: Box::new(error),
            status: Box::new(status),
        }),
    }
}

/// Result with the operator library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(message: &str) -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure(message, "Invalid").with_code(422),
        ))
    }

    /// The API server refused to apply StatefulSet `db`.
    fn refused_statefulset() -> Error {
        Error::Child {
            action: "applying",
            kind: "StatefulSet".to_owned(),
            name: "db".to_owned(),
            source: Box::new(refused("readinessProbe.httpGet.port: Invalid value")),
        }
    }

    #[test]
    fn the_chain_shows_every_cause_once() {
        let error = refused_statefulset();
        let chain = error.chain();
        assert!(chain.starts_with("applying StatefulSet db: "), "{chain}");
        assert_eq!(chain.matches("readinessProbe").count(), 1, "{chain}");
    }

    #[test]
    fn a_failed_status_write_does_not_hide_the_error_before_it() {
        let applied = refused_statefulset();
        let status = Error::Kube(refused("status write refused"));
        let chain = match outcome(Some(applied), Err(status)) {
            Err(error) => error.chain(),
            Ok(()) => panic!("the pass failed"),
        };
        assert!(chain.contains("applying StatefulSet db"), "{chain}");
        assert!(chain.contains("readinessProbe"), "{chain}");
        assert!(chain.contains("status write refused"), "{chain}");
    }

    #[test]
    fn a_pass_reports_its_own_error_or_else_the_status_writes() {
        assert!(matches!(
            outcome(Some(Error::AdminUnavailable), Ok(())),
            Err(Error::AdminUnavailable)
        ));
        assert!(matches!(
            outcome(None, Err(Error::AdminUnavailable)),
            Err(Error::AdminUnavailable)
        ));
        assert!(outcome(None, Ok(())).is_ok());
    }
}
