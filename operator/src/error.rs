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

    /// An object breaks the validation rules of its CRD.
    #[error("invalid {kind}: {}", messages.join("; "))]
    Invalid { kind: String, messages: Vec<String> },

    /// An object could not be serialized.
    #[error("cannot serialize {what}: {message}")]
    Serialize { what: String, message: String },

    /// The cluster's admin API cannot be used.
    #[error("the cluster admin API is not available")]
    AdminUnavailable,

    /// No node of the cluster answered its admin API in time.
    #[error("cluster admin API unreachable: {0}")]
    Admin(String),

    /// The cluster answered, but refused or cannot do what was asked.
    #[error("cluster admin API refused: {0}")]
    AdminRefused(String),

    /// A finalizer could not be added or removed, or its cleanup failed.
    #[error("finalizer: {0}")]
    Finalizer(String),

    /// Another operator process holds the leader lease.
    #[error("leadership lost to another operator process")]
    LeadershipLost,

    /// The operator's CRDs are missing from the Kubernetes API.
    #[error(
        "the flotilla.dev CRDs are not installed; install them with `flotilla-operator crds | kubectl apply --server-side -f -`"
    )]
    CrdsNotInstalled,

    /// A request to the Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    /// Whether the error means the cluster could not be reached (rather than that it
    /// refused a request).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Admin(_) | Self::AdminUnavailable)
    }
}

/// Result with the operator library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
