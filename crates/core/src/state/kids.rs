//! The index of children: `.kids/PARENT/CHILD`, one empty file per layer
//! with a parent, so that "has this layer children?" (asked by every
//! removal and in-place commit) reads one small directory instead of the
//! metadata of every layer (20,000 files on a root with 10,000 images and
//! containers).
//!
//! The index may hold more than the truth, never less: a child's entry is
//! made before the child is published and dropped after it is gone, so a
//! crash in between leaves a stale entry, which [`DriverState::children`]
//! checks against the child's metadata. Roots made before the index are
//! indexed once, under the lock, when first opened (`.kids/.complete`
//! says it was done).

// The index is the driver's own bookkeeping under its private home, never
// layer content.
#![allow(clippy::disallowed_methods)]

use std::io;
use std::path::PathBuf;

use super::{DriverState, LayerMeta};
use crate::error::{Error, IoContext, Result};
use crate::fsx;
use crate::id::LayerId;

const KIDS: &str = ".kids";
const COMPLETE: &str = ".complete";

impl DriverState {
    fn kids_dir(&self, parent: &LayerId) -> PathBuf {
        self.home.join(KIDS).join(parent.as_str())
    }

    /// Record `child` under `parent` (call under the lock, before the
    /// child is published).
    pub(super) fn add_kid(&self, parent: &LayerId, child: &LayerId) -> Result<()> {
        let d = self.kids_dir(parent);
        let p = d.join(child.as_str());
        // an empty file: made whole or not at all, no temporary name needed
        let made = match fsx::create_new(&p) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fsx::mkdir_p(&d, 0o700).ctx("create directory", &d)?;
                fsx::create_new(&p)
            }
            r => r,
        };
        match made {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(Error::io("write", &p, e)),
        }
    }

    /// Forget `child` under `parent`, and `child`'s own entries (call
    /// under the lock, after the child is gone).
    pub(super) fn drop_kid(&self, parent: Option<&LayerId>, child: &LayerId) {
        if let Some(p) = parent {
            let _ = std::fs::remove_file(self.kids_dir(p).join(child.as_str()));
        }
        let _ = std::fs::remove_dir_all(self.kids_dir(child));
    }

    /// Index the children of a root made before the index (once).
    pub(super) fn index_kids(&self) -> Result<()> {
        let done = self.home.join(KIDS).join(COMPLETE);
        if done.exists() {
            return Ok(());
        }
        let _l = self.lock()?;
        if done.exists() {
            return Ok(());
        }
        for m in self.list()? {
            if let Some(p) = &m.parent {
                self.add_kid(p, &m.id)?;
            }
        }
        fsx::write_replace(&done, b"").ctx("write", &done)
    }

    /// The layers whose parent is `id`.
    pub fn children(&self, id: &LayerId) -> Result<Vec<LayerId>> {
        let d = self.kids_dir(id);
        let entries = match std::fs::read_dir(&d) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(crate::Error::io("read", &d, e)),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e.ctx("read", &d)?;
            let Some(kid) = e.file_name().to_str().and_then(|s| LayerId::new(s).ok()) else {
                continue;
            };
            // a stale entry (a crash before publication or after removal)
            // names a layer that is gone or has another parent
            match self.meta(&kid) {
                Ok(LayerMeta {
                    parent: Some(p), ..
                }) if &p == id => out.push(kid),
                Ok(_) => {}
                Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
                // unreadable metadata: count it (a removal must not go on)
                Err(_) => out.push(kid),
            }
        }
        out.sort();
        Ok(out)
    }
}
