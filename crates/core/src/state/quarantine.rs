//! Layers whose metadata cannot be read: found, and set aside with their
//! content under `.quarantine/ID.SUFFIX/` (`meta.json`, `layer`), never
//! deleted. `check` reports them; `check --repair` sets them aside, so
//! that the rest of the root works and nothing is lost.

// The driver's own bookkeeping under its private home.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};

use super::{DriverState, unique_suffix};
use crate::error::{IoContext, Result};
use crate::fsx;
use crate::id::LayerId;

impl DriverState {
    /// Layers whose metadata does not parse: (id, why).
    pub fn unreadable(&self) -> Result<Vec<(LayerId, String)>> {
        let dir = self.home.join(".meta");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).ctx("read", &dir)? {
            let e = e.ctx("read", &dir)?;
            let name = e.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|s| s.strip_suffix(".json"))
                .and_then(|s| LayerId::new(s).ok())
            else {
                continue;
            };
            if let Err(err) = self.meta(&id)
                && err.kind() == crate::ErrorKind::Corrupt
            {
                out.push((id, err.to_string()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Move layer `id`'s metadata and content to `.quarantine/`; `unseal`
    /// makes the content movable first (read-only btrfs subvolumes). The
    /// layer is no longer the driver's. Returns where it went.
    pub fn quarantine(
        &self,
        id: &LayerId,
        unseal: &dyn Fn(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let _l = self.lock()?;
        let to = self
            .home
            .join(".quarantine")
            .join(format!("{id}.{}", unique_suffix()));
        fsx::mkdir_p(&to, 0o700).ctx("create directory", &to)?;
        let layer = self.layer_path(id);
        if layer.symlink_metadata().is_ok() {
            unseal(&layer)?;
            std::fs::rename(&layer, to.join("layer")).ctx("set aside", &layer)?;
        }
        let meta = self.meta_path(id);
        std::fs::rename(&meta, to.join("meta.json")).ctx("set aside", &meta)?;
        self.set_mount_count(id, 0)?;
        self.drop_kid(None, id);
        fsx::fsync_dir(&self.layers).ctx("fsync", &self.layers)?;
        tracing::warn!(layer = %id, to = %to.display(), "set aside a layer whose metadata cannot be read");
        Ok(to)
    }
}
