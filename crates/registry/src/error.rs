//! The registry client's error: each variant names the registry, the
//! repository, the reference or the digest it is about.

/// What went wrong, for callers that branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The registry refused the credentials (or has none for us).
    Unauthorized,
    /// No such repository, tag, manifest or blob.
    NotFound,
    /// Content does not match its digest.
    DigestMismatch,
    /// A malformed reference, manifest or platform.
    InvalidInput,
    /// The registry cannot be reached or answered badly.
    Transport,
    /// From the store (its own kind says more).
    Store,
    /// A local file (credentials) could not be read or written.
    Io,
}

/// The registry client's error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the store (applying a layer, recording the image).
    #[error(transparent)]
    Store(#[from] strata_store::Error),

    /// The registry refused our credentials, or wants some we do not have.
    #[error("{registry}: unauthorized: {reason}")]
    Unauthorized { registry: String, reason: String },

    /// The registry has no such thing.
    #[error("{registry}: {what} not found")]
    NotFound { registry: String, what: String },

    /// Content that does not match its digest.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    /// A manifest, index or config that cannot be used.
    #[error("{what}: {reason}")]
    BadContent { what: String, reason: String },

    /// No manifest for the platform asked for.
    #[error(
        "{reference}: no matching manifest for {platform} in the manifest list entries (has: {has})"
    )]
    NoPlatform {
        reference: String,
        platform: String,
        has: String,
    },

    /// The registry could not be reached, or answered with an error.
    #[error("{registry}: {reason}")]
    Transport { registry: String, reason: String },

    /// A plain-HTTP registry that is neither on loopback nor named
    /// insecure.
    #[error(
        "{registry}: refusing plain HTTP: the registry is not on a loopback address; name it with --insecure-registry {registry} if you trust the network"
    )]
    Insecure { registry: String },

    /// A credentials file.
    #[error("{op} {}: {err}", path.display())]
    Io {
        op: &'static str,
        path: std::path::PathBuf,
        err: std::io::Error,
    },
}

/// The registry client's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Store(_) => ErrorKind::Store,
            Error::Unauthorized { .. } => ErrorKind::Unauthorized,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::DigestMismatch { .. } => ErrorKind::DigestMismatch,
            Error::BadContent { .. } | Error::NoPlatform { .. } => ErrorKind::InvalidInput,
            Error::Transport { .. } | Error::Insecure { .. } => ErrorKind::Transport,
            Error::Io { .. } => ErrorKind::Io,
        }
    }

    pub(crate) fn transport(registry: &str, reason: impl Into<String>) -> Error {
        Error::Transport {
            registry: registry.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn bad(what: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::BadContent {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// Worth another try (the connection broke, the server is busy)?
    pub fn retryable(&self) -> bool {
        matches!(self, Error::Transport { .. })
    }
}
