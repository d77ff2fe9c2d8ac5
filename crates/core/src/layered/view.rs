//! Views of a layer's merged tree for reading, and where counted mounts
//! live.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};
use crate::state::Held;
use crate::{fsx, mounts};

/// A directory fd of a layer's merged tree, with whatever keeps it valid
/// (a temporary mount, a temporary snapshot) dropped after the fd.
pub struct View {
    fd: OwnedFd,
    // declared after `fd`: fields drop in order, so the fd is closed first
    _keep: Option<Box<dyn Send>>,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View").field("fd", &self.fd).finish()
    }
}

impl View {
    /// A view that is a directory of its own (a full tree, a single layer).
    pub fn dir(path: &Path) -> Result<View> {
        Ok(View {
            fd: fsx::open_dir_path(path).ctx("open", path)?,
            _keep: None,
        })
    }

    /// A view of `path` kept valid by `keep` until the view drops.
    pub fn kept(path: &Path, keep: impl Send + 'static) -> Result<View> {
        let keep: Box<dyn Send> = Box::new(keep);
        Ok(View {
            fd: fsx::open_dir_path(path).ctx("open", path)?,
            _keep: Some(keep),
        })
    }

    /// The view's directory.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A mount in the staging area, unmounted (and its directory removed) when
/// dropped; held so that recovery in other processes leaves it alone.
#[derive(Debug)]
pub struct TempMount {
    held: Held,
}

impl TempMount {
    /// Take `held`'s path (creating the directory) for a mount that the
    /// caller makes next.
    pub fn new(held: Held) -> Result<TempMount> {
        fsx::mkdir_p(&held.path, 0o700).ctx("create", &held.path)?;
        Ok(TempMount { held })
    }

    /// Where the view is.
    pub fn path(&self) -> &Path {
        &self.held.path
    }
}

impl Drop for TempMount {
    #[allow(clippy::disallowed_methods)] // a mount point of ours, not layer content
    fn drop(&mut self) {
        if let Err(e) = mounts::unmount_path(&self.held.path) {
            tracing::warn!(path = %self.held.path.display(), "unmounting a temporary view: {e}");
        }
        let _ = std::fs::remove_dir(&self.held.path);
    }
}

/// Where the counted mount of a layer lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountPoint {
    /// The layer's own directory is its view: nothing is mounted.
    Direct(PathBuf),
    /// The view is mounted here (made on mount, removed on unmount).
    At(PathBuf),
}
