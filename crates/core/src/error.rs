//! The one error type of the core crate (and of the drivers, which share it
//! so that callers can branch on [`ErrorKind`] whatever backend they use).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What went wrong, for callers that branch on it (the CLI maps kinds to
/// exit codes; the conformance suite asserts them).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A layer, path or record that does not exist.
    NotFound,
    /// A layer or record of that name exists already.
    AlreadyExists,
    /// A layer that others sit on (remove them first).
    HasChildren,
    /// A layer that is mounted or otherwise in use.
    Busy,
    /// A stack deeper than the driver can mount.
    MaxDepth,
    /// Something this driver, kernel or file system cannot do.
    Unsupported,
    /// Bad input: an id, an option, a tar entry.
    InvalidInput,
    /// A path of a layer diff (entry, link target, whiteout) would resolve
    /// outside the layer root. Never folded into `Io` or `InvalidInput`.
    PathEscape,
    /// The root was set up by another driver.
    DriverMismatch,
    /// On-disk state that does not make sense (metadata without a layer...).
    Corrupt,
    /// A directory that another user could have prepared or can change.
    NotPrivate,
    /// A system call failed (the message names the call and the path).
    Io,
}

/// Printable form of a name that may not be UTF-8 (tar entry names are bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct Name(pub Vec<u8>);

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c.is_control() {
                    write!(f, "{}", c.escape_default())?;
                } else {
                    write!(f, "{c}")?;
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl Name {
    /// The printable form of a path (its bytes, escaped).
    pub fn of_path(p: &Path) -> Name {
        use std::os::unix::ffi::OsStrExt;
        Name(p.as_os_str().as_bytes().to_vec())
    }
}

impl From<&[u8]> for Name {
    fn from(b: &[u8]) -> Self {
        Name(b.to_vec())
    }
}

/// An error of the core or of a driver. Each variant's fields are what its
/// message names: the layer (`id`), the thing (`what`), the path, and why
/// (`reason`). Branch on [`Error::kind`], not on the variant.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// See [`ErrorKind::NotFound`].
    #[error("{what} not found")]
    NotFound {
        /// What was looked for (`layer X`, a path...).
        what: String,
    },

    /// See [`ErrorKind::AlreadyExists`].
    #[error("{what} already exists")]
    AlreadyExists {
        /// What exists already.
        what: String,
    },

    /// See [`ErrorKind::HasChildren`].
    #[error("layer {id} has children ({children}); remove them first")]
    HasChildren {
        /// The layer.
        id: String,
        /// Its children, comma-separated.
        children: String,
    },

    /// See [`ErrorKind::Busy`].
    #[error("layer {id} is busy: {reason}")]
    Busy {
        /// The layer.
        id: String,
        /// Who uses it.
        reason: String,
    },

    /// See [`ErrorKind::MaxDepth`].
    #[error("a stack of {depth} layers exceeds the maximum of {max} layers of driver {driver}")]
    MaxDepth {
        /// The depth asked for.
        depth: usize,
        /// The driver's maximum.
        max: usize,
        /// The driver.
        driver: String,
    },

    /// See [`ErrorKind::Unsupported`].
    #[error("{what} is not supported: {reason}")]
    Unsupported {
        /// The operation or driver.
        what: String,
        /// Why not, here.
        reason: String,
    },

    /// See [`ErrorKind::InvalidInput`].
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// The input (`layer id`, `option`, `hardlink`...).
        what: String,
        /// What is wrong with it.
        reason: String,
    },

    /// See [`ErrorKind::PathEscape`].
    #[error("path {path} escapes the layer root: {reason}")]
    PathEscape {
        /// The path, as the layer spelled it.
        path: Name,
        /// How it would escape.
        reason: String,
    },

    #[error(
        "root {root} was set up with driver {recorded}; refusing to open it with driver {requested}"
    )]
    /// See [`ErrorKind::DriverMismatch`].
    DriverMismatch {
        /// The root.
        root: PathBuf,
        /// The driver recorded in `ROOT/driver`.
        recorded: String,
        /// The driver asked for.
        requested: String,
    },

    /// See [`ErrorKind::Corrupt`].
    #[error("corrupt state at {path}: {reason}")]
    Corrupt {
        /// Where.
        path: PathBuf,
        /// What does not make sense.
        reason: String,
    },

    #[error(
        "refusing to use {}: it {reason} (make it root's and not writable by group or others)",
        Name::of_path(path)
    )]
    /// See [`ErrorKind::NotPrivate`].
    NotPrivate {
        /// The directory.
        path: PathBuf,
        /// What is wrong with its owner or mode.
        reason: String,
    },

    // Messages include their cause and do not also expose it as `source()`,
    // so that `{:#}` chains print each cause once. The path is escaped
    // (names come from layers and may hold control bytes).
    #[error("{op} {}: {err}", Name::of_path(path))]
    /// See [`ErrorKind::Io`].
    Io {
        /// The call (`open`, `rename`...).
        op: &'static str,
        /// Its path.
        path: PathBuf,
        /// The OS error.
        err: io::Error,
    },

    /// An error while applying one tar entry: names the entry.
    #[error("tar entry {entry}: {inner}")]
    Entry {
        /// The entry's name.
        entry: Name,
        /// What went wrong with it (its kind is this error's kind).
        inner: Box<Error>,
    },

    /// The archive stream itself is broken (bad header, truncated...).
    #[error("layer archive: {reason}{}", err.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Archive {
        /// What is wrong.
        reason: String,
        /// The read error, when there was one.
        err: Option<io::Error>,
    },
}

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// What went wrong, for callers that branch on it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::HasChildren { .. } => ErrorKind::HasChildren,
            Error::Busy { .. } => ErrorKind::Busy,
            Error::MaxDepth { .. } => ErrorKind::MaxDepth,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::InvalidInput { .. } => ErrorKind::InvalidInput,
            Error::PathEscape { .. } => ErrorKind::PathEscape,
            Error::DriverMismatch { .. } => ErrorKind::DriverMismatch,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::NotPrivate { .. } => ErrorKind::NotPrivate,
            Error::Io { .. } => ErrorKind::Io,
            Error::Entry { inner, .. } => inner.kind(),
            Error::Archive { err, .. } => match err {
                Some(e) if is_system_io(e) => ErrorKind::Io,
                _ => ErrorKind::InvalidInput,
            },
        }
    }

    /// The OS error number behind this error, if there is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { err, .. } => err.raw_os_error(),
            Error::Archive { err: Some(s), .. } => s.raw_os_error(),
            Error::Entry { inner, .. } => inner.raw_os_error(),
            _ => None,
        }
    }

    /// An [`Error::Io`]: call `op` failed on `path`.
    pub fn io(op: &'static str, path: impl AsRef<Path>, source: impl Into<io::Error>) -> Error {
        Error::Io {
            op,
            path: path.as_ref().to_path_buf(),
            err: source.into(),
        }
    }

    /// An I/O error at a path given as bytes (a name inside a layer): the
    /// bytes are kept as they are, never converted lossily.
    pub fn io_at(op: &'static str, path: &[u8], source: impl Into<io::Error>) -> Error {
        use std::os::unix::ffi::OsStrExt;
        Error::Io {
            op,
            path: PathBuf::from(std::ffi::OsStr::from_bytes(path)),
            err: source.into(),
        }
    }

    /// An [`ErrorKind::InvalidInput`] error.
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidInput {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// An [`ErrorKind::NotFound`] error.
    pub fn not_found(what: impl Into<String>) -> Error {
        Error::NotFound { what: what.into() }
    }

    /// An [`ErrorKind::Unsupported`] error.
    pub fn unsupported(what: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Unsupported {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// An [`ErrorKind::PathEscape`] error for a layer's path.
    pub fn escape(path: &[u8], reason: impl Into<String>) -> Error {
        Error::PathEscape {
            path: Name(path.to_vec()),
            reason: reason.into(),
        }
    }

    /// Check that a directory of ours is private (see
    /// [`fsx::check_private_dir`](crate::fsx::check_private_dir)).
    pub fn check_private(path: &Path) -> Result<()> {
        match crate::fsx::check_private_dir(path) {
            Ok(None) => Ok(()),
            Ok(Some(reason)) => Err(Error::NotPrivate {
                path: path.to_path_buf(),
                reason,
            }),
            Err(e) => Err(Error::io("stat", path, e)),
        }
    }

    /// `source`, naming the tar entry it happened at.
    pub fn entry(entry: &[u8], source: Error) -> Error {
        // do not nest entry contexts
        if let Error::Entry { .. } = source {
            return source;
        }
        Error::Entry {
            entry: Name(entry.to_vec()),
            inner: Box::new(source),
        }
    }

    /// A broken archive stream.
    pub fn archive(reason: impl Into<String>, source: Option<io::Error>) -> Error {
        Error::Archive {
            reason: reason.into(),
            err: source,
        }
    }
}

/// An io::Error that comes from the system (disk full, permission) rather
/// than from malformed input (the tar crate reports those as `Other` /
/// `InvalidData` / `UnexpectedEof`).
fn is_system_io(e: &io::Error) -> bool {
    e.raw_os_error().is_some()
}

/// Attach an operation and a path to an io / rustix error.
pub trait IoContext<T> {
    /// The error as an [`Error::Io`] naming `op` and `path`.
    fn ctx(self, op: &'static str, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::result::Result<T, io::Error> {
    fn ctx(self, op: &'static str, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}

impl<T> IoContext<T> for std::result::Result<T, rustix::io::Errno> {
    fn ctx(self, op: &'static str, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(op, path, io::Error::from(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_escapes_invalid_utf8_and_controls() {
        let n = Name(b"a\nb\xffc".to_vec());
        assert_eq!(n.to_string(), "a\\nb\\xffc");
    }

    #[test]
    fn entry_error_names_entry_and_keeps_kind() {
        let e = Error::entry(
            b"etc/passwd",
            Error::escape(b"../x", "climbs above the root"),
        );
        assert_eq!(e.kind(), ErrorKind::PathEscape);
        let msg = e.to_string();
        assert!(msg.contains("etc/passwd"), "{msg}");
        let nested = Error::entry(b"other", e);
        assert!(nested.to_string().contains("etc/passwd"));
    }

    #[test]
    fn io_errors_keep_name_bytes_and_escape_them() {
        let e = Error::io_at("open", b"a\x1b]0;x\xff", io::Error::from_raw_os_error(2));
        let Error::Io { path, .. } = &e else {
            panic!("{e:?}")
        };
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(path.as_os_str().as_bytes(), b"a\x1b]0;x\xff");
        let msg = e.to_string();
        assert!(!msg.contains('\x1b'), "{msg}");
        assert!(msg.contains("\\u{1b}") && msg.contains("\\xff"), "{msg}");
    }
}
