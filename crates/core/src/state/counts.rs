//! Mount reference counts: `.mounts/ID` holds a layer's count (absent: not
//! mounted), written atomically but not durably (mounts do not survive a
//! reboot either; a count whose mount is gone is reset on open).

// The driver's own bookkeeping under its private home.
#![allow(clippy::disallowed_methods)]

use std::io;
use std::path::PathBuf;

use super::DriverState;
use crate::error::{Error, IoContext, Result};
use crate::fsx;
use crate::id::LayerId;

impl DriverState {
    pub(super) fn count_path(&self, id: &LayerId) -> PathBuf {
        self.home.join(".mounts").join(id.as_str())
    }

    /// Mount reference count (0 when not mounted, or when the count file is
    /// not a number). Call under the lock.
    pub fn mount_count(&self, id: &LayerId) -> u32 {
        std::fs::read_to_string(self.count_path(id))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Record layer `id`'s mount count.
    pub fn set_mount_count(&self, id: &LayerId, n: u32) -> Result<()> {
        let p = self.count_path(id);
        if n == 0 {
            match std::fs::remove_file(&p) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io("remove mount count", &p, e)),
            }
        } else {
            // atomic but not durable: mounts do not survive a reboot either,
            // and a count whose mount is gone is reset on open
            fsx::write_replace(&p, n.to_string().as_bytes()).ctx("write mount count", &p)
        }
    }

    /// Ids with a mount count file.
    pub fn mounted_ids(&self) -> Result<Vec<LayerId>> {
        let dir = self.home.join(".mounts");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).ctx("read", &dir)? {
            let e = e.ctx("read", &dir)?;
            if let Some(id) = e.file_name().to_str().and_then(|s| LayerId::new(s).ok()) {
                out.push(id);
            }
        }
        out.sort();
        Ok(out)
    }
}
