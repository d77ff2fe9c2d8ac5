//! The snapshotter's error type, and how each kind maps to the gRPC codes
//! containerd's `errdefs` turns back into its own errors.

use std::path::PathBuf;

use tonic::{Code, Status};

/// What went wrong, for callers that branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such snapshot.
    NotFound,
    /// The key is taken.
    AlreadyExists,
    /// Refused in the current state (children, not active, busy).
    FailedPrecondition,
    /// A malformed request (key, filter, field path).
    InvalidArgument,
    /// Something the driver cannot do here.
    Unimplemented,
    /// The daemon itself failed (I/O, a broken invariant).
    Internal,
}

/// The snapshotter's error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the store (snapshot records, driver work).
    #[error(transparent)]
    Store(#[from] strata_store::Error),

    /// From opening the driver.
    #[error(transparent)]
    Driver(#[from] strata_core::Error),

    /// A List filter that does not parse.
    #[error(transparent)]
    Filter(#[from] crate::filter::ParseError),

    /// A layer could not be fetched from its registry.
    #[error("fetching a layer: {0}")]
    Fetch(String),

    /// A request that lacks what it needs.
    #[error("invalid request: {0}")]
    BadRequest(String),

    /// The socket cannot be served.
    #[error("socket {}: {reason}", path.display())]
    Socket { path: PathBuf, reason: String },

    /// A system call failed.
    #[error("{op} {}: {err}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },

    /// A broken invariant (a task that panicked).
    #[error("internal error: {0}")]
    Internal(String),
}

/// The snapshotter's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        use strata_store::ErrorKind as S;
        match self {
            Error::Store(e) => match e.kind() {
                S::NotFound => ErrorKind::NotFound,
                S::AlreadyExists => ErrorKind::AlreadyExists,
                S::FailedPrecondition | S::Conflict => ErrorKind::FailedPrecondition,
                S::InvalidInput | S::DigestMismatch => ErrorKind::InvalidArgument,
                S::Driver(k) => driver_kind(k),
                _ => ErrorKind::Internal,
            },
            Error::Driver(e) => driver_kind(e.kind()),
            Error::Filter(_) | Error::BadRequest(_) => ErrorKind::InvalidArgument,
            Error::Fetch(_) | Error::Socket { .. } | Error::Io { .. } | Error::Internal(_) => {
                ErrorKind::Internal
            }
        }
    }

    /// The gRPC status containerd's `errdefs.FromGRPC` maps back.
    pub fn status(&self) -> Status {
        let code = match self.kind() {
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::AlreadyExists => Code::AlreadyExists,
            ErrorKind::FailedPrecondition => Code::FailedPrecondition,
            ErrorKind::InvalidArgument => Code::InvalidArgument,
            ErrorKind::Unimplemented => Code::Unimplemented,
            ErrorKind::Internal => Code::Unknown,
        };
        Status::new(code, self.to_string())
    }
}

fn driver_kind(k: strata_core::ErrorKind) -> ErrorKind {
    use strata_core::ErrorKind as D;
    match k {
        D::NotFound => ErrorKind::NotFound,
        D::AlreadyExists => ErrorKind::AlreadyExists,
        D::HasChildren | D::Busy | D::MaxDepth => ErrorKind::FailedPrecondition,
        D::InvalidInput | D::PathEscape => ErrorKind::InvalidArgument,
        D::Unsupported => ErrorKind::Unimplemented,
        _ => ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_refusals_become_containerds_codes() {
        let cases = [
            (
                strata_store::Error::NoSuchSnapshot("k".into()),
                Code::NotFound,
            ),
            (
                strata_store::Error::SnapshotExists("k".into()),
                Code::AlreadyExists,
            ),
            (
                strata_store::Error::SnapshotState {
                    key: "k".into(),
                    reason: "cannot be removed".into(),
                },
                Code::FailedPrecondition,
            ),
            (
                strata_store::Error::BadSnapshotInput {
                    what: "field".into(),
                    reason: "no".into(),
                },
                Code::InvalidArgument,
            ),
        ];
        for (e, code) in cases {
            let s = Error::from(e).status();
            assert_eq!(s.code(), code, "{s:?}");
            assert!(
                s.message().contains("\"k\"") || s.message().contains("field"),
                "{s:?}"
            );
        }
        let busy = strata_core::Error::Busy {
            id: "s1".into(),
            reason: "mounted".into(),
        };
        assert_eq!(Error::from(busy).status().code(), Code::FailedPrecondition);
    }
}
