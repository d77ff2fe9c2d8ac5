//! Mount reference counts, across processes, and their repair against the
//! mount table when a root is opened.

use std::collections::HashSet;
use std::path::PathBuf;

use super::{Backend, Layered, MountPoint};
use crate::error::{IoContext, Result};
use crate::id::LayerId;
use crate::{fsx, mounts};

impl<B: Backend> Layered<B> {
    /// Mount a layer's view (or take one more reference to it).
    pub(super) fn mount_counted(&self, id: &LayerId) -> Result<PathBuf> {
        let _l = self.state.lock()?;
        let chain = self.state.chain(id)?;
        let n = self.state.mount_count(id);
        let target = match self.backend.mount_point(&self.state, &chain[0]) {
            MountPoint::Direct(p) => p,
            MountPoint::At(t) => {
                if n == 0 || !mounts::is_mounted(&t).ctx("read mounts", &t)? {
                    let started = std::time::Instant::now();
                    fsx::mkdir_p(&t, 0o755).ctx("create mount point", &t)?;
                    self.backend.mount(&self.state, &chain, &t)?;
                    tracing::info!(
                        layer = %id, layers = chain.len(), at = %t.display(),
                        ms = format_args!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
                        "mounted"
                    );
                }
                t
            }
        };
        self.state.set_mount_count(id, n.saturating_add(1))?;
        Ok(target)
    }

    /// Drop one reference; unmount when none is left.
    pub(super) fn unmount_counted(&self, id: &LayerId) -> Result<()> {
        let _l = self.state.lock()?;
        let meta = self.state.meta(id)?;
        let n = self.state.mount_count(id);
        if n == 0 {
            return Ok(());
        }
        if n == 1
            && let MountPoint::At(t) = self.backend.mount_point(&self.state, &meta)
        {
            mounts::unmount_path(&t).ctx("unmount", &t)?;
            tracing::info!(layer = %id, at = %t.display(), "unmounted");
            #[allow(clippy::disallowed_methods)] // our mount point, not layer content
            let _ = std::fs::remove_dir(&t);
        }
        self.state.set_mount_count(id, n - 1)
    }

    /// Drop every reference and unmount.
    pub(super) fn release_all(&self, id: &LayerId) -> Result<u32> {
        let _l = self.state.lock()?;
        let meta = self.state.meta(id)?;
        let n = self.state.mount_count(id);
        if let MountPoint::At(t) = self.backend.mount_point(&self.state, &meta) {
            mounts::unmount_path(&t).ctx("unmount", &t)?;
            #[allow(clippy::disallowed_methods)] // our mount point, not layer content
            let _ = std::fs::remove_dir(&t);
        }
        self.state.set_mount_count(id, 0)?;
        Ok(n)
    }

    /// Counts whose mount is gone are reset; mounts under the driver that
    /// no count accounts for are unmounted (temporary views of live
    /// operations in the staging area excepted). Call under the lock.
    pub(super) fn recover_mounts(&self) -> Result<()> {
        let table = mounts::mounts().ctx("read mounts", "/proc/self/mountinfo")?;
        let mounted: HashSet<&std::path::Path> =
            table.iter().map(|m| m.mount_point.as_path()).collect();
        let mut counted = HashSet::new();
        for id in self.state.mounted_ids()? {
            let Ok(meta) = self.state.meta(&id) else {
                self.state.set_mount_count(&id, 0)?;
                continue;
            };
            if let MountPoint::At(t) = self.backend.mount_point(&self.state, &meta) {
                if mounted.contains(t.as_path()) {
                    counted.insert(t);
                } else {
                    tracing::info!(layer = %id, "mount count without a mount; reset");
                    self.state.set_mount_count(&id, 0)?;
                }
            }
        }
        let dir = self.backend.mounts_dir(&self.state);
        let staging = self.state.home.join(".staging");
        for m in mounts::mounts_under(&dir).ctx("read mounts", &dir)? {
            if m.mount_point.starts_with(&staging) || counted.contains(&m.mount_point) {
                continue;
            }
            tracing::info!(path = %m.mount_point.display(), "unmounting a stale mount");
            mounts::unmount_path(&m.mount_point).ctx("unmount", &m.mount_point)?;
        }
        Ok(())
    }
}
