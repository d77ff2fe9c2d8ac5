//! What checks and recovery do with snapshot rows: finish or undo what an
//! interrupted operation left, and compare the rows with the driver's
//! layers.

use std::collections::BTreeMap;

use strata_core::LayerId;

use super::rows::{self, SnapshotRow};
use super::{Kind, State, layer_id};
use crate::Store;
use crate::error::Result;

impl Store {
    /// Recovery of snapshot rows an interrupted operation left (called
    /// with the gc lock held).
    pub(crate) fn recover_snapshots(&self, r: &mut crate::CheckReport) -> Result<()> {
        self.snap_mounts.clear();
        let rows = self.db.read("list snapshots", |tx| rows::unfinished(tx))?;
        for row in rows {
            let key = row.info.key.clone();
            let id = layer_id(&row)?;
            match row.state {
                State::Creating | State::Removing => {
                    self.remove_driver_layer(&id)?;
                    self.db
                        .write("drop snapshot", |tx| rows::delete(tx, &key))?;
                    r.repaired.push(format!(
                        "removed snapshot {key:?} of an interrupted operation"
                    ));
                }
                State::Committing if self.driver.exists(&id) => {
                    self.db.write("finish commit", |tx| {
                        if let Some(o) = &row.origin {
                            rows::delete(tx, o)?;
                        }
                        rows::set_state(tx, &key, State::Ready)
                    })?;
                    r.repaired
                        .push(format!("finished committing snapshot {key:?}"));
                }
                State::Committing => {
                    self.db
                        .write("drop snapshot", |tx| rows::delete(tx, &key))?;
                    r.repaired
                        .push(format!("undid the interrupted commit of snapshot {key:?}"));
                }
                State::Ready => {}
            }
        }
        Ok(())
    }
}

/// Problems of the snapshot rows against the driver's layers (for
/// `check`, which runs when nobody is at work).
pub(crate) fn check_rows(
    rows: &[SnapshotRow],
    driver: &std::collections::HashMap<LayerId, strata_core::LayerInfo>,
) -> Vec<String> {
    let by_key: BTreeMap<&str, &SnapshotRow> =
        rows.iter().map(|r| (r.info.key.as_str(), r)).collect();
    let mut out = Vec::new();
    for r in rows {
        let key = &r.info.key;
        if r.state != State::Ready {
            out.push(format!(
                "snapshot {key:?} was left {} by an interrupted operation (check --repair finishes it)",
                r.state.as_str()
            ));
            continue;
        }
        let Some(d) = LayerId::new(r.layer.clone())
            .ok()
            .and_then(|id| driver.get(&id))
        else {
            out.push(format!(
                "snapshot {key:?}: the driver has no layer {}",
                r.layer
            ));
            continue;
        };
        if d.rw != (r.info.kind == Kind::Active) {
            out.push(format!(
                "snapshot {key:?} is {} but its layer {} is {}",
                r.info.kind.as_str(),
                r.layer,
                if d.rw { "read-write" } else { "read-only" }
            ));
        }
        let want = match &r.info.parent {
            None => None,
            Some(p) => match by_key.get(p.as_str()) {
                Some(pr) => Some(pr.layer.as_str()),
                None => {
                    out.push(format!(
                        "snapshot {key:?} has a parent {p:?} that is not recorded"
                    ));
                    continue;
                }
            },
        };
        if d.parent.as_ref().map(|p| p.as_str()) != want {
            out.push(format!(
                "snapshot {key:?}: the driver's parent of {} is not its parent snapshot's layer",
                r.layer
            ));
        }
    }
    out
}
