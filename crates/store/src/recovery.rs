//! Crash recovery: finish or undo what interrupted operations left. Runs
//! at open when no other process is at work (the gc lock is free), and
//! from `check --repair`.
//!
//! - An intent whose driver layer never got its record: the driver layer
//!   is removed (it was half-made).
//! - A layer or container marked `removing`: the removal is finished
//!   (driver layer, then record).
//! - Temporary files in `store/tmp`: removed.
//! - Snapshots being created, committed or removed: see `snapshots`.

use serde::Serialize;
use strata_core::LayerId;

use crate::Store;
use crate::error::{IoCtx, Result};
use crate::records;

/// What `check` (and recovery) found and did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CheckReport {
    /// What is wrong (after repairs: what is still wrong).
    pub problems: Vec<String>,
    /// What was repaired (or, in a dry run, would be).
    pub repaired: Vec<String>,
    /// Facts that are not problems (layers outside the store...).
    pub notes: Vec<String>,
}

impl Store {
    /// Reconcile records with the driver after a crash. Call with the gc
    /// lock held.
    pub(crate) fn recover(&self) -> Result<CheckReport> {
        let mut r = CheckReport::default();
        let tmp = self.tmp_dir();
        for e in std::fs::read_dir(&tmp).ctx("read", &tmp)?.flatten() {
            // store/tmp is used only under the work lock: nobody is at work
            let _ = std::fs::remove_file(e.path());
            r.repaired
                .push(format!("removed temporary file {}", e.path().display()));
        }
        self.recover_intents(&mut r)?;
        self.finish_removals(&mut r)?;
        self.recover_snapshots(&mut r)?;
        Ok(r)
    }

    /// Driver layers an operation made and died before recording.
    fn recover_intents(&self, r: &mut CheckReport) -> Result<()> {
        for (cache, op) in self.db.read("list intents", |tx| records::intents(tx))? {
            let claimed = self.db.read("look up layer", |tx| {
                Ok(records::layer_by_cache(tx, &cache)?.is_some()
                    || records::container_by_layer(tx, &cache)?.is_some())
            })?;
            if !claimed && let Ok(id) = LayerId::new(cache.clone()) {
                match self.remove_driver_layer(&id) {
                    Ok(true) => r.repaired.push(format!(
                        "removed driver layer {cache} that an interrupted {op} left without a record"
                    )),
                    Ok(false) => {}
                    Err(e) => {
                        r.problems.push(format!("driver layer {cache} of an interrupted {op}: {e}"));
                        continue;
                    }
                }
            }
            self.db
                .write("drop intent", |tx| records::remove_intent(tx, &cache))?;
        }
        Ok(())
    }

    /// Removals a crash interrupted.
    fn finish_removals(&self, r: &mut CheckReport) -> Result<()> {
        // one indexed query each when nothing is pending: every command
        // opens the store, and this must not grow with the store
        let layers = self
            .db
            .read("list removals", |tx| records::removing_layers(tx))?;
        for l in layers {
            match self.delete_layer(&l) {
                Ok(()) => r
                    .repaired
                    .push(format!("finished removing layer {}", l.chain_id)),
                Err(e) => r
                    .problems
                    .push(format!("layer {} is half removed: {e}", l.chain_id)),
            }
        }
        let containers = self
            .db
            .read("list removals", |tx| records::removing_containers(tx))?;
        for c in containers {
            let removed = Self::container_layer(&c).and_then(|id| self.remove_driver_layer(&id));
            match removed {
                Ok(_) => {
                    self.db
                        .write("drop container", |tx| records::delete_container(tx, &c.id))?;
                    r.repaired
                        .push(format!("finished removing container {}", c.name));
                }
                Err(e) => r
                    .problems
                    .push(format!("container {} is half removed: {e}", c.name)),
            }
        }
        Ok(())
    }

    /// Remove a driver layer, dropping mounts a dead process left first;
    /// `false` when it did not exist.
    pub(crate) fn remove_driver_layer(&self, id: &LayerId) -> Result<bool> {
        match self.driver.layer(id) {
            Ok(_) => {}
            Err(e) if e.kind() == strata_core::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        self.unmount_all_refs(id)?;
        self.driver.remove(id)?;
        Ok(true)
    }
}
