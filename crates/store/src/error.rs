//! The store's error type.

use std::path::PathBuf;

#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Driver(#[from] strata_core::Error),

    #[error("{op} {path}: {err}")]
    Io {
        op: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },

    #[error("not a valid digest: {0:?}")]
    BadDigest(String),

    #[error("no such image: {0}")]
    NoSuchImage(String),

    #[error("no such container: {0}")]
    NoSuchContainer(String),

    #[error("no such layer: {0}")]
    NoSuchLayer(String),

    #[error("{0}")]
    Conflict(String),

    #[error("invalid reference {0:?}: {1}")]
    BadReference(String, String),

    /// A blob's content does not match the digest it is known by.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    /// An error while reading one layer blob: names it.
    #[error("layer {what}: {inner}")]
    InLayer { what: String, inner: Box<Error> },

    #[error("invalid image archive {path}: {reason}")]
    BadArchive { path: PathBuf, reason: String },

    #[error("corrupt store metadata at {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub trait IoCtx<T> {
    fn ctx(self, op: &'static str, path: impl AsRef<std::path::Path>) -> Result<T>;
}

impl<T> IoCtx<T> for std::result::Result<T, std::io::Error> {
    fn ctx(self, op: &'static str, path: impl AsRef<std::path::Path>) -> Result<T> {
        self.map_err(|err| Error::Io {
            op,
            path: path.as_ref().to_path_buf(),
            err,
        })
    }
}

pub(crate) fn archive(path: &std::path::Path, reason: impl Into<String>) -> Error {
    Error::BadArchive {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}
