//! The vocabulary of change walks, shared by the naive walk
//! ([`crate::changes`]), the backends' native walks and the diff writer
//! ([`crate::archive::write`]): what changed ([`Change`], [`ChangeKind`]),
//! one element of a diff in tar order ([`DiffItem`]), what a walk is for
//! ([`WalkPurpose`]) and how it was done ([`DiffMethod`]).

use std::ffi::{CStr, OsString};
use std::fmt;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use rustix::fs::Stat;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::whiteout;

/// Added, modified or deleted: the letters `docker diff` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ChangeKind {
    /// New in the layer.
    Added,
    /// Changed against the base.
    Modified,
    /// Removed from the base.
    Deleted,
}

impl ChangeKind {
    /// The letter `docker diff` prints.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Modified => 'C',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// One changed path of a layer against its base. `path` is absolute
/// (`/etc/passwd`) and may hold any bytes but NUL.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Change {
    /// How it changed.
    pub kind: ChangeKind,
    /// The path, rooted at `/`.
    pub path: PathBuf,
}

impl Change {
    /// A change of `rel` (a path relative to the layer root).
    pub fn new(kind: ChangeKind, rel: &[u8]) -> Change {
        let mut p = Vec::with_capacity(rel.len() + 1);
        p.push(b'/');
        p.extend_from_slice(rel);
        Change {
            kind,
            path: PathBuf::from(OsString::from_vec(p)),
        }
    }
}

impl PartialOrd for Change {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Change {
    /// Sorted by path bytes (like `docker diff`), then kind.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.path
            .as_os_str()
            .as_bytes()
            .cmp(other.path.as_os_str().as_bytes())
            .then(self.kind.cmp(&other.kind))
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            self.kind.letter(),
            crate::error::Name::of_path(&self.path)
        )
    }
}

impl fmt::Debug for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// What a walk is for: it decides how deletions under an opaque directory
/// are reported and whether file contents are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkPurpose {
    /// A layer tar: an opaque directory is one `.wh..wh..opq` marker;
    /// contents are compared where metadata cannot decide.
    Diff,
    /// A change list: what an opaque directory hides is reported as
    /// deletions; contents are compared where metadata cannot decide.
    Changes,
    /// A size estimate: like `Changes`, but no file is read (files whose
    /// metadata matches count as unchanged).
    Size,
}

impl WalkPurpose {
    /// Are file contents compared where metadata cannot decide?
    pub fn compare_content(self) -> bool {
        self != WalkPurpose::Size
    }

    /// Is what an opaque directory hides reported as deletions (rather
    /// than as one opaque marker)?
    pub fn opaque_as_deletions(self) -> bool {
        self != WalkPurpose::Diff
    }
}

/// How a walk found its changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiffMethod {
    /// From the backend's own change tracking (overlay uppers, btrfs
    /// send): O(changes).
    Native,
    /// Both trees walked in full and compared (or, against an empty base,
    /// the whole tree): O(files).
    #[default]
    Naive,
}

impl DiffMethod {
    /// `A`, `C` or `D`, as `docker diff` prints them.
    pub fn as_str(self) -> &'static str {
        match self {
            DiffMethod::Native => "native",
            DiffMethod::Naive => "naive",
        }
    }
}

impl fmt::Display for DiffMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where to read an inode from.
#[derive(Debug, Clone, Copy)]
pub enum DiffSource<'a> {
    /// A directory, by its own fd.
    Dir(BorrowedFd<'a>),
    /// Any inode, by its parent directory and name.
    At(BorrowedFd<'a>, &'a CStr),
}

/// One element of a layer diff, in tar order.
#[derive(Debug, Clone, Copy)]
pub enum DiffItem<'a> {
    /// A path that is new or changed in the layer.
    Entry {
        /// The path inside the layer.
        path: &'a [u8],
        /// How it changed.
        change: ChangeKind,
        /// Its stat.
        st: &'a Stat,
        /// Where its content is read.
        src: DiffSource<'a>,
    },
    /// A path that was deleted: `.wh.NAME` beside it. `mtime` is used for
    /// the whiteout file (the parent directory's, so output is stable).
    Whiteout {
        /// The deleted path.
        path: &'a [u8],
        /// The time given to the marker.
        mtime: (i64, u32),
    },
    /// A directory that hides everything its lower layers had.
    Opaque {
        /// The directory.
        dir: &'a [u8],
        /// The time given to the marker.
        mtime: (i64, u32),
    },
}

impl DiffItem<'_> {
    /// The change this item stands for (`None` for opaque markers).
    pub fn change(&self) -> Option<(ChangeKind, &[u8])> {
        match self {
            DiffItem::Entry { path, change, .. } => Some((*change, path)),
            DiffItem::Whiteout { path, .. } => Some((ChangeKind::Deleted, path)),
            DiffItem::Opaque { .. } => None,
        }
    }
}

/// The callback a walk hands its items to, in tar order.
pub type Emit<'e> = dyn FnMut(DiffItem<'_>) -> Result<()> + 'e;

/// Is this xattr exported into diffs? Backend markers and host labels stay.
pub fn exported_xattr(name: &[u8]) -> bool {
    !whiteout::is_overlay_xattr(name) && name != b"security.selinux"
}
