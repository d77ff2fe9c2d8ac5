//! The store's error type: one variant per thing that goes wrong, each
//! naming the image, container, layer, digest, reference or path it is
//! about, and a [`kind`](Error::kind) for callers that branch.

use std::path::PathBuf;

/// What went wrong, for callers that branch on it (the CLI maps kinds to
/// messages and exit codes; tests assert them).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No such image, container or layer.
    NotFound,
    /// A name, tag or id is taken.
    AlreadyExists,
    /// Refused because something uses it (containers on an image, a
    /// mounted container, a layer of an image), or a prefix is ambiguous.
    Conflict,
    /// The input is malformed: a reference, an archive, a name.
    InvalidInput,
    /// Refused in the current state (containerd's FailedPrecondition: a
    /// snapshot with children, one that is not active).
    FailedPrecondition,
    /// Content does not match the digest it is known by.
    DigestMismatch,
    /// Stored metadata does not make sense.
    Corrupt,
    /// The operating system refused (disk full, permissions...).
    Io,
    /// An error of the driver; its own kind says more.
    Driver(strata_core::ErrorKind),
    /// A broken invariant of the store itself (a bug).
    Internal,
}

/// The store's error.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the driver.
    #[error(transparent)]
    Driver(#[from] strata_core::Error),

    /// A system call on a path of the store failed.
    #[error("{op} {}: {err}", strata_core::error::Name::of_path(path))]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path it was done on.
        path: PathBuf,
        /// What the system said.
        err: std::io::Error,
    },

    /// The metadata database refused.
    #[error("store database ({op}): {err}")]
    Db {
        /// The store operation.
        op: &'static str,
        /// What SQLite said.
        err: rusqlite::Error,
    },

    /// No image by this reference.
    #[error("No such image: {0}")]
    NoSuchImage(String),

    /// No container by this name or id.
    #[error("No such container: {0}")]
    NoSuchContainer(String),

    /// No layer by this chain ID.
    #[error("no such layer: {0}")]
    NoSuchLayer(String),

    /// No snapshot by this key.
    #[error("snapshot {0:?} does not exist")]
    NoSuchSnapshot(String),

    /// A snapshot key is taken.
    #[error("snapshot {0:?} already exists")]
    SnapshotExists(String),

    /// A snapshot operation refused in the snapshot's current state.
    #[error("snapshot {key:?} {reason}")]
    SnapshotState {
        /// The snapshot's key.
        key: String,
        /// Why it was refused.
        reason: String,
    },

    /// A snapshot request that does not make sense.
    #[error("invalid {what}: {reason}")]
    BadSnapshotInput {
        /// The input (a key, a parent, a field).
        what: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An ID prefix matches several images or containers.
    #[error("{what} ID prefix {prefix} is ambiguous ({count} match)")]
    Ambiguous {
        /// `image` or `container`.
        what: &'static str,
        /// The prefix given.
        prefix: String,
        /// How many match it.
        count: usize,
    },

    /// A container name is taken.
    #[error("Conflict. The container name \"{name}\" is already in use")]
    NameInUse {
        /// The name.
        name: String,
    },

    /// An image cannot go while containers use it.
    #[error("conflict: unable to delete {image} - image is being used by container {containers}")]
    ImageInUse {
        /// The image.
        image: String,
        /// The containers using it.
        containers: String,
    },

    /// A refusal that `--force` overrides (Docker's wording in `reason`).
    #[error("conflict: {reason}")]
    MustForce {
        /// Why, in Docker's words.
        reason: String,
    },

    /// Mounted, so not removable now.
    #[error("{what} is mounted ({count} references); unmount it first or use --force")]
    Mounted {
        /// The container or layer.
        what: String,
        /// Its mount references.
        count: u32,
    },

    /// A driver layer belongs to an image or container of the store.
    #[error("layer {layer} is used by {by}; remove that first (or use --force)")]
    LayerInUse {
        /// The driver layer.
        layer: String,
        /// The image or container using it.
        by: String,
    },

    /// A reference (name, tag, digest) that does not follow the grammar.
    #[error("invalid reference format {reference:?}: {reason}")]
    BadReference {
        /// The reference given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A container or tag name that is not allowed.
    #[error("invalid name {name:?}: {reason}")]
    BadName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A blob's content does not match the digest it is known by.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The blob (a layer, a config, a manifest).
        what: String,
        /// The digest it is known by.
        expected: String,
        /// The digest of what was read.
        actual: String,
    },

    /// An error while reading one layer blob: names it.
    #[error("layer {what}: {inner}")]
    InLayer {
        /// The layer (its digest or place in the image).
        what: String,
        /// The error.
        inner: Box<Error>,
    },

    /// An image archive or layout that cannot be imported.
    #[error(
        "{} is not an image archive Strata can read (docker-archive, OCI layout or OCI archive): {reason}",
        strata_core::error::Name::of_path(path)
    )]
    BadArchive {
        /// The archive or layout.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Stored metadata that does not make sense.
    #[error("corrupt store metadata ({what}): {reason}")]
    Corrupt {
        /// The record or file.
        what: String,
        /// What does not make sense.
        reason: String,
    },

    /// A broken invariant of the store (a bug).
    #[error("internal error of the store: {0}")]
    Internal(String),
}

/// The store's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// What went wrong, for callers that branch.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Driver(e) => ErrorKind::Driver(e.kind()),
            Error::Io { .. } => ErrorKind::Io,
            Error::Db { err, .. } => db_kind(err),
            Error::NoSuchImage(_)
            | Error::NoSuchContainer(_)
            | Error::NoSuchLayer(_)
            | Error::NoSuchSnapshot(_) => ErrorKind::NotFound,
            Error::NameInUse { .. } | Error::SnapshotExists(_) => ErrorKind::AlreadyExists,
            Error::SnapshotState { .. } => ErrorKind::FailedPrecondition,
            Error::BadSnapshotInput { .. } => ErrorKind::InvalidInput,
            Error::Ambiguous { .. }
            | Error::ImageInUse { .. }
            | Error::MustForce { .. }
            | Error::Mounted { .. }
            | Error::LayerInUse { .. } => ErrorKind::Conflict,
            Error::BadReference { .. } | Error::BadName { .. } | Error::BadArchive { .. } => {
                ErrorKind::InvalidInput
            }
            Error::DigestMismatch { .. } => ErrorKind::DigestMismatch,
            Error::InLayer { inner, .. } => inner.kind(),
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// A database error while doing `op`.
    pub fn db(op: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
        move |err| Error::Db { op, err }
    }

    /// An image archive that cannot be imported.
    pub fn bad_archive(path: &std::path::Path, reason: impl Into<String>) -> Error {
        Error::BadArchive {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

fn db_kind(e: &rusqlite::Error) -> ErrorKind {
    use rusqlite::ffi::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation) => ErrorKind::Conflict,
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => ErrorKind::Corrupt,
        Some(ErrorCode::DiskFull | ErrorCode::SystemIoFailure | ErrorCode::CannotOpen) => {
            ErrorKind::Io
        }
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => ErrorKind::Io,
        _ => ErrorKind::Internal,
    }
}

/// Attach an operation and a path to an io error.
pub trait IoCtx<T> {
    /// `self`'s error, naming `op` and `path`.
    fn ctx(self, op: &'static str, path: impl AsRef<std::path::Path>) -> Result<T>;
}

impl<T> IoCtx<T> for std::result::Result<T, rustix::io::Errno> {
    fn ctx(self, op: &'static str, path: impl AsRef<std::path::Path>) -> Result<T> {
        self.map_err(|e| Error::Io {
            op,
            path: path.as_ref().to_path_buf(),
            err: e.into(),
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_variants() {
        assert_eq!(Error::NoSuchImage("x".into()).kind(), ErrorKind::NotFound);
        let e = Error::InLayer {
            what: "sha256:x".into(),
            inner: Box::new(Error::DigestMismatch {
                what: "a".into(),
                expected: "b".into(),
                actual: "c".into(),
            }),
        };
        assert_eq!(e.kind(), ErrorKind::DigestMismatch);
        let d = Error::from(strata_core::Error::not_found("layer x"));
        assert_eq!(
            d.kind(),
            ErrorKind::Driver(strata_core::ErrorKind::NotFound)
        );
    }
}
