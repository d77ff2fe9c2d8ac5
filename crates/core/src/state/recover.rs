//! Crash recovery of a driver's state: what an interrupted operation left
//! (staging and trash entries of dead processes, metadata without a layer,
//! a layer without metadata).
//!
//! Every operation that can leave such a thing first holds an entry in
//! `.staging` or `.trash` (building, removing, committing in place). So the
//! orphan scans, which read every layer, run only when a dead operation's
//! entry was found: opening a root costs O(1) in the number of layers.

use std::path::Path;

use super::DriverState;
use super::held::{is_held, lock_path_of};
use crate::error::{IoContext, Result};
use crate::id::LayerId;

/// What [`DriverState::recover`] cleaned.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Staging directories of dead operations removed.
    pub staging: usize,
    /// Trash directories emptied.
    pub trash: usize,
    /// Metadata without a layer directory removed.
    pub orphan_meta: usize,
    /// Layer directories without metadata removed.
    pub orphan_layers: usize,
    /// Mount counts reset because nothing was mounted.
    pub stale_mounts: usize,
}

impl Recovery {
    /// Whether recovery found nothing to do.
    pub fn is_empty(&self) -> bool {
        *self == Recovery::default()
    }

    /// A dead operation was found: the full scans are due.
    pub fn found_dead(&self) -> bool {
        self.staging + self.trash > 0
    }
}

/// How old a temporary lock file must be before it is taken for a dead
/// one (a live one is between its creation and its flock for microseconds).
const FRESH: std::time::Duration = std::time::Duration::from_secs(60);

#[allow(clippy::disallowed_methods)] // driver bookkeeping, not layer content
impl DriverState {
    /// Clean what a crash left. Staging and trash entries of dead
    /// operations are removed with `remove_dir` (which knows the driver's
    /// kind of directory); when there were any, or `full` is asked, the
    /// orphan scans run too. Call under the lock.
    pub fn recover(
        &self,
        full: bool,
        remove_dir: &dyn Fn(&Path) -> Result<()>,
    ) -> Result<Recovery> {
        let mut r = Recovery::default();
        let staging = self.dead(".staging")?;
        let trash = self.dead(".trash")?;
        // the scans go first: a crash during them leaves the evidence, and
        // the next open scans again
        if full || !staging.is_empty() || !trash.is_empty() {
            r.orphan_meta = self.orphan_meta()?;
            r.orphan_layers = self.orphan_layers(remove_dir)?;
        }
        for p in &staging {
            self.remove_dead(p, remove_dir)?;
        }
        for p in &trash {
            self.remove_dead(p, remove_dir)?;
        }
        r.staging = staging.len();
        r.trash = trash.len();
        Ok(r)
    }

    /// The entries of dead operations in `sub` (stale lock files are
    /// dropped on the way).
    fn dead(&self, sub: &str) -> Result<Vec<std::path::PathBuf>> {
        let dir = self.home.join(sub);
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).ctx("read", &dir)? {
            let e = e.ctx("read", &dir)?;
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".lock") || name.contains(".lock.tmp-") {
                drop_stale_lock(&e, &p, &name);
            } else if !is_held(&lock_path_of(&p)) {
                out.push(p); // not held: its operation died
            }
        }
        Ok(out)
    }

    fn remove_dead(&self, p: &Path, remove_dir: &dyn Fn(&Path) -> Result<()>) -> Result<()> {
        tracing::info!(path = %p.display(), "removing crash leftover");
        crate::mounts::unmount_all_under(p).ctx("unmount", p)?;
        remove_dir(p)?;
        let _ = std::fs::remove_file(lock_path_of(p));
        Ok(())
    }

    /// Metadata without a layer.
    fn orphan_meta(&self) -> Result<usize> {
        let mdir = self.home.join(".meta");
        let mut n = 0;
        for e in std::fs::read_dir(&mdir).ctx("read", &mdir)? {
            let e = e.ctx("read", &mdir)?;
            let name = e.file_name();
            let Some(s) = name.to_str() else { continue };
            if s.starts_with(".tmp-") {
                let _ = std::fs::remove_file(e.path());
                continue;
            }
            let Some(id) = s.strip_suffix(".json").and_then(|s| LayerId::new(s).ok()) else {
                continue;
            };
            if self.layer_path(&id).symlink_metadata().is_err() {
                tracing::info!(layer = %id, "removing metadata of a layer that was never completed");
                self.remove_meta(&id)?;
                self.set_mount_count(&id, 0)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Layers without metadata.
    fn orphan_layers(&self, remove_dir: &dyn Fn(&Path) -> Result<()>) -> Result<usize> {
        let mut n = 0;
        for e in std::fs::read_dir(&self.layers).ctx("read", &self.layers)? {
            let e = e.ctx("read", &self.layers)?;
            let name = e.file_name();
            let Some(s) = name.to_str() else { continue };
            if s.starts_with('.') || self.reserved.contains(&s) {
                continue;
            }
            let Ok(id) = LayerId::new(s) else { continue };
            if !self.meta_path(&id).exists() {
                tracing::info!(layer = %id, "removing a layer without metadata");
                remove_dir(&e.path())?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// A lock file nobody holds, without its entry: drop it (a fresh temporary
/// lock may be between its creation and its flock).
#[allow(clippy::disallowed_methods)] // driver bookkeeping, not layer content
fn drop_stale_lock(e: &std::fs::DirEntry, p: &Path, name: &str) {
    let entry = p.with_file_name(name.split(".lock").next().unwrap_or_default());
    let fresh = e
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_none_or(|age| age < FRESH);
    // a temporary lock names its maker (`.lock.tmp-PID.…`): one whose
    // maker is gone is stale however young
    let maker_alive = name
        .split(".lock.tmp-")
        .nth(1)
        .and_then(|rest| rest.split('.').next())
        .and_then(|pid| pid.parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw)
        .is_none_or(|pid| rustix::process::test_kill_process(pid) != Err(rustix::io::Errno::SRCH));
    let young_tmp = fresh && name.contains(".lock.tmp-") && maker_alive;
    if !entry.exists() && !is_held(p) && !young_tmp {
        let _ = std::fs::remove_file(p);
    }
}
