//! Snapshots, as containerd's snapshotters keep them: one flat key space
//! of active (read-write), view (read-only) and committed snapshots, each
//! a driver layer, with a parent, times and labels. The records live in the
//! store's database beside images and containers, so that `strata check`,
//! `df` and `layer rm` know which driver layers are snapshots.
//!
//! Crash safety: a row is written before its driver work and says what is
//! under way (`state`): `creating` (the driver layer may or may not exist
//! yet), `committing` (an active snapshot's layer is being turned into this
//! committed one, in place), `removing` (the driver layer is being
//! removed). Recovery finishes or undoes each on the next open, as for
//! the store's other records (see `recovery`).
//!
//! Errors follow containerd's `errdefs`: a missing key is `NotFound`, a
//! taken one `AlreadyExists`, a parent that is not committed
//! `InvalidInput`, removing a snapshot with children or committing one that
//! is not active `FailedPrecondition`.

mod check;
mod mounts;
mod rows;

use std::collections::BTreeMap;

use strata_core::{CreateOpts, LayerId, MountSpec, Usage};

use crate::error::{Error, Result};
use crate::{Store, records};

pub(crate) use check::check_rows;
pub(crate) use mounts::MountsCache;
pub(crate) use rows::{SnapshotRow, all as all_rows, by_layer as rows_by_layer, is_snapshot_layer};

/// What a snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A read-only view of its parent.
    View,
    /// Read-write: being written (a container's root, a layer being
    /// unpacked).
    Active,
    /// Read-only and final; others may sit on it.
    Committed,
}

impl Kind {
    /// containerd's name (`view`, `active`, `committed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "view" => Kind::View,
            "active" => Kind::Active,
            "committed" => Kind::Committed,
            _ => return None,
        })
    }
}

/// Where a row is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Ready,
    Creating,
    Committing,
    Removing,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::Creating => "creating",
            State::Committing => "committing",
            State::Removing => "removing",
        }
    }

    fn parse(s: &str) -> Option<State> {
        Some(match s {
            "ready" => State::Ready,
            "creating" => State::Creating,
            "committing" => State::Committing,
            "removing" => State::Removing,
            _ => return None,
        })
    }
}

/// A snapshot as containerd's `snapshots.Info` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotInfo {
    /// Its key (containerd's name).
    pub key: String,
    /// The committed snapshot it sits on.
    pub parent: Option<String>,
    /// What it is.
    pub kind: Kind,
    /// Nanoseconds since the epoch.
    pub created: i64,
    /// Nanoseconds since the epoch of the last change (creation, or a
    /// label update).
    pub updated: i64,
    /// Arbitrary labels.
    pub labels: BTreeMap<String, String>,
}

/// Labels of a snapshot.
pub type Labels = BTreeMap<String, String>;

/// Nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 4096 || key.contains('\0') {
        return Err(Error::BadSnapshotInput {
            what: format!("snapshot key {key:?}"),
            reason: "must be 1 to 4096 bytes, without NUL".into(),
        });
    }
    Ok(())
}

fn not_found(key: &str) -> Error {
    Error::NoSuchSnapshot(key.to_string())
}

fn layer_id(row: &SnapshotRow) -> Result<LayerId> {
    LayerId::new(row.layer.clone()).map_err(|_| Error::Corrupt {
        what: format!("snapshot {}", row.info.key),
        reason: format!("invalid driver layer id {:?}", row.layer),
    })
}

impl Store {
    /// A ready row, or `NotFound`.
    fn ready_snapshot(&self, key: &str) -> Result<SnapshotRow> {
        self.db
            .read("read snapshot", |tx| rows::get(tx, key))?
            .filter(|r| r.state == State::Ready)
            .ok_or_else(|| not_found(key))
    }

    /// containerd's Prepare: an active snapshot `key` on the committed
    /// snapshot `parent` (`""`: none); returns its mounts.
    pub fn snapshot_prepare(
        &self,
        key: &str,
        parent: &str,
        labels: Labels,
    ) -> Result<Vec<MountSpec>> {
        self.snapshot_create(key, parent, labels, Kind::Active)
    }

    /// containerd's View: a read-only snapshot `key` of `parent`.
    pub fn snapshot_view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<MountSpec>> {
        self.snapshot_create(key, parent, labels, Kind::View)
    }

    /// Record snapshot `key` as being made (state `creating`, before the
    /// driver acts) on the committed snapshot `parent`; returns the row and
    /// the parent's layer.
    ///
    /// `synced`: the row is on disk before the driver acts. Without it the
    /// row survives the process being killed (WAL), but a power loss may
    /// lose it while the driver's layer stays: that layer is then claimed
    /// by no row, and `Cleanup` reclaims it (snapshot layers claimed by no
    /// row are orphans). The sequence of layer ids may then go back too, so
    /// an id whose driver layer exists is skipped.
    fn reserve(
        &self,
        key: &str,
        parent: &str,
        labels: Labels,
        kind: Kind,
        synced: bool,
    ) -> Result<(SnapshotRow, Option<LayerId>)> {
        let now = now_ns();
        let tx_fn = |tx: &rusqlite::Transaction<'_>| {
            if rows::get(tx, key)?.is_some() {
                return Err(Error::SnapshotExists(key.to_string()));
            }
            let parent_layer = match parent {
                "" => None,
                p => {
                    let r = rows::get(tx, p)?
                        .filter(|r| r.state == State::Ready)
                        .ok_or_else(|| not_found(p))?;
                    if r.info.kind != Kind::Committed {
                        return Err(Error::BadSnapshotInput {
                            what: format!("parent {p:?}"),
                            reason: "is not a committed snapshot".into(),
                        });
                    }
                    Some(layer_id(&r)?)
                }
            };
            let row = SnapshotRow {
                info: SnapshotInfo {
                    key: key.to_string(),
                    parent: (!parent.is_empty()).then(|| parent.to_string()),
                    kind,
                    created: now,
                    updated: now,
                    labels,
                },
                layer: self.free_layer_id(tx)?,
                state: State::Creating,
                origin: None,
            };
            rows::insert(tx, &row)?;
            Ok((row, parent_layer))
        };
        if synced {
            self.db.write("reserve snapshot", tx_fn)
        } else {
            self.db.write_lazy("reserve snapshot", tx_fn)
        }
    }

    /// The next snapshot layer id that no driver layer has (one left by a
    /// row lost to a power loss is skipped; `Cleanup` reclaims it).
    fn free_layer_id(&self, tx: &rusqlite::Transaction<'_>) -> Result<String> {
        for _ in 0..10_000 {
            let id = rows::next_layer(tx)?;
            if !self.driver.exists(&LayerId::new(id.clone())?) {
                return Ok(id);
            }
            tracing::warn!(layer = id, "skipping a snapshot layer id claimed by no row");
        }
        Err(Error::BadSnapshotInput {
            what: "snapshot layer ids".into(),
            reason: "10,000 ids in a row are taken by layers no row claims; run Cleanup".into(),
        })
    }

    fn snapshot_create(
        &self,
        key: &str,
        parent: &str,
        labels: Labels,
        kind: Kind,
    ) -> Result<Vec<MountSpec>> {
        check_key(key)?;
        let _w = self.work_lock()?;
        // not synced: the layer is empty and not synced by the driver
        // either, and its `ready` mark is not synced; a power loss may roll
        // the snapshot back, never leave a layer `Cleanup` cannot find
        let (row, parent_layer) = self.reserve(key, parent, labels, kind, false)?;
        let id = layer_id(&row)?;
        let o = CreateOpts::default();
        let made = match kind {
            Kind::Active => self.driver.create_rw(&id, parent_layer.as_ref(), &o),
            _ => self.driver.create(&id, parent_layer.as_ref(), &o),
        };
        let specs = made.and_then(|()| self.driver.mount_specs(&id));
        // an empty layer (not synced by the driver either): its `ready`
        // mark need not be synced, losing it rolls the snapshot back
        let done = specs.map_err(Error::from).and_then(|specs| {
            self.db.write_lazy("record snapshot", |tx| {
                rows::set_state(tx, key, State::Ready)
            })?;
            self.snap_mounts.put(key, &id, &specs);
            Ok(specs)
        });
        if done.is_err() {
            self.undo_made_layer(&id);
            let _ = self.db.write("drop snapshot", |tx| rows::delete(tx, key));
        }
        done
    }

    /// A committed snapshot `key` on `parent` made from a layer diff (what a
    /// remote snapshotter does for containerd: fetch the layer itself). The
    /// stream must have digest `blob` when given; otherwise nothing is
    /// left.
    pub fn snapshot_apply(
        &self,
        key: &str,
        parent: &str,
        labels: Labels,
        input: &mut (dyn std::io::Read + Send),
        blob: Option<&strata_core::Digest>,
    ) -> Result<()> {
        check_key(key)?;
        let _w = self.work_lock()?;
        let (row, parent_layer) = self.reserve(key, parent, labels, Kind::Committed, true)?;
        let id = layer_id(&row)?;
        let mut h = strata_core::Hashing::new(input);
        let applied = self.driver.apply_diff(&id, parent_layer.as_ref(), &mut h);
        // the digest covers every byte, also any after the tar's end
        let drained = std::io::copy(&mut h, &mut std::io::sink());
        let (_, got, _) = h.finish();
        let done = applied.map_err(Error::from).and_then(|_| {
            drained.map_err(|e| Error::Io {
                op: "read layer",
                path: key.into(),
                err: e,
            })?;
            if let Some(want) = blob
                && *want != got
            {
                return Err(Error::DigestMismatch {
                    what: format!("layer blob of snapshot {key:?}"),
                    expected: want.to_string(),
                    actual: got.to_string(),
                });
            }
            self.db.write("record snapshot", |tx| {
                rows::set_state(tx, key, State::Ready)
            })
        });
        if done.is_err() {
            self.undo_made_layer(&id);
            let _ = self.db.write("drop snapshot", |tx| rows::delete(tx, key));
        }
        done
    }

    /// The committed snapshot whose label `label` is `value` and whose
    /// parent is `parent` (containerd's lookup of a remote snapshot).
    pub fn snapshot_by_label(
        &self,
        label: &str,
        value: &str,
        parent: &str,
    ) -> Result<Option<SnapshotInfo>> {
        Ok(self.snapshots()?.into_iter().find(|i| {
            i.kind == Kind::Committed
                && i.labels.get(label).map(String::as_str) == Some(value)
                && i.parent.as_deref().unwrap_or("") == parent
        }))
    }

    /// containerd's Mounts: the mounts of an active or view snapshot.
    pub fn snapshot_mounts(&self, key: &str) -> Result<Vec<MountSpec>> {
        if let Some((layer, specs)) = self.snap_mounts.get(key) {
            if self.driver.exists(&layer) {
                return Ok(specs);
            }
            self.snap_mounts.forget(key);
        }
        let r = self.ready_snapshot(key)?;
        if r.info.kind == Kind::Committed {
            return Err(Error::SnapshotState {
                key: key.to_string(),
                reason: "is committed; only active and view snapshots have mounts".into(),
            });
        }
        let layer = layer_id(&r)?;
        let specs = self.driver.mount_specs(&layer)?;
        self.snap_mounts.put(key, &layer, &specs);
        Ok(specs)
    }

    /// containerd's Commit: the active snapshot `key` becomes the
    /// committed snapshot `name`, in place (no copy); `key` is gone after.
    pub fn snapshot_commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        check_key(name)?;
        self.snap_mounts.forget(key);
        let _w = self.work_lock()?;
        let now = now_ns();
        let (from, to) = self.db.write("commit snapshot", |tx| {
            let k = rows::get(tx, key)?
                .filter(|r| r.state == State::Ready)
                .ok_or_else(|| not_found(key))?;
            if k.info.kind != Kind::Active {
                return Err(Error::SnapshotState {
                    key: key.to_string(),
                    reason: format!("is not active (it is {})", k.info.kind.as_str()),
                });
            }
            if rows::get(tx, name)?.is_some() {
                return Err(Error::SnapshotExists(name.to_string()));
            }
            let row = SnapshotRow {
                info: SnapshotInfo {
                    key: name.to_string(),
                    parent: k.info.parent.clone(),
                    kind: Kind::Committed,
                    created: now,
                    updated: now,
                    labels,
                },
                layer: rows::next_layer(tx)?,
                state: State::Committing,
                origin: Some(key.to_string()),
            };
            rows::insert(tx, &row)?;
            Ok((layer_id(&k)?, layer_id(&row)?))
        })?;
        if let Err(e) = self.driver.commit(&from, &to) {
            let _ = self.db.write("drop snapshot", |tx| rows::delete(tx, name));
            return Err(e.into());
        }
        self.db.write("record commit", |tx| {
            rows::delete(tx, key)?;
            rows::set_state(tx, name, State::Ready)
        })
    }

    /// containerd's Remove: refused while other snapshots sit on it.
    pub fn snapshot_remove(&self, key: &str) -> Result<()> {
        self.snap_mounts.forget(key);
        let _w = self.work_lock()?;
        let r = self.db.write("remove snapshot", |tx| {
            let r = rows::get(tx, key)?
                .filter(|r| r.state == State::Ready)
                .ok_or_else(|| not_found(key))?;
            let kids = rows::children(tx, key)?;
            if !kids.is_empty() {
                return Err(Error::SnapshotState {
                    key: key.to_string(),
                    reason: format!(
                        "cannot be removed: snapshots sit on it ({}); remove them first",
                        kids.join(", ")
                    ),
                });
            }
            rows::set_state(tx, key, State::Removing)?;
            Ok(r)
        })?;
        if let Err(e) = layer_id(&r).and_then(|id| self.remove_driver_layer(&id)) {
            let _ = self.db.write("remove snapshot", |tx| {
                rows::set_state(tx, key, State::Ready)
            });
            return Err(e);
        }
        self.db.write("drop snapshot", |tx| rows::delete(tx, key))
    }

    /// containerd's Stat.
    pub fn snapshot_stat(&self, key: &str) -> Result<SnapshotInfo> {
        Ok(self.ready_snapshot(key)?.info)
    }

    /// containerd's Update: only labels change. `paths` empty: all labels
    /// are replaced; `labels`: the same; `labels.K`: label K is set to
    /// `info`'s value or removed when `info` has none. Any other path is
    /// `InvalidInput`.
    pub fn snapshot_update(&self, info: &SnapshotInfo, paths: &[String]) -> Result<SnapshotInfo> {
        let now = now_ns();
        self.db.write("update snapshot", |tx| {
            let mut r = rows::get(tx, &info.key)?
                .filter(|r| r.state == State::Ready)
                .ok_or_else(|| not_found(&info.key))?;
            r.info.labels = updated_labels(r.info.labels, info, paths)?;
            r.info.updated = now;
            rows::set_labels(tx, &info.key, &r.info.labels, now)?;
            Ok(r.info)
        })
    }

    /// Every snapshot (containerd's Walk / List filters them).
    pub fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        Ok(self
            .db
            .read("list snapshots", |tx| rows::all(tx))?
            .into_iter()
            .filter(|r| r.state == State::Ready)
            .map(|r| r.info)
            .collect())
    }

    /// containerd's Usage: what the snapshot's own layer holds.
    pub fn snapshot_usage(&self, key: &str) -> Result<Usage> {
        let r = self.ready_snapshot(key)?;
        Ok(self.driver.usage(&layer_id(&r)?)?)
    }

    /// containerd's Cleanup: finish what interrupted operations left (when
    /// nobody is at work) and remove snapshot layers no record claims.
    /// Returns the layers removed.
    pub fn snapshot_cleanup(&self) -> Result<Vec<String>> {
        if let Some(_g) = self.try_gc_lock()? {
            self.recover()?;
        }
        let _w = self.work_lock()?;
        // driver layers first, rows second: a row is written before its
        // layer is made, so every layer listed here has its row by now
        let layers = self.driver.layers()?;
        let claimed: std::collections::HashSet<String> = self
            .db
            .read("list snapshots", |tx| rows::all(tx))?
            .into_iter()
            .map(|r| r.layer)
            .chain(
                self.db
                    .read("list intents", |tx| records::intents(tx))?
                    .into_iter()
                    .map(|i| i.0),
            )
            .collect();
        let mut orphans: Vec<&strata_core::LayerInfo> = layers
            .iter()
            .filter(|l| is_snapshot_layer(l.id.as_str()) && !claimed.contains(l.id.as_str()))
            .collect();
        let mut removed = Vec::new();
        // children before parents: repeat while something goes
        while !orphans.is_empty() {
            let before = orphans.len();
            let mut left = Vec::new();
            for l in orphans {
                match self.remove_driver_layer(&l.id) {
                    Ok(_) => removed.push(l.id.to_string()),
                    Err(e)
                        if e.kind()
                            == crate::ErrorKind::Driver(strata_core::ErrorKind::HasChildren) =>
                    {
                        left.push(l)
                    }
                    Err(e) => return Err(e),
                }
            }
            if left.len() == before {
                break;
            }
            orphans = left;
        }
        Ok(removed)
    }
}

/// The labels after an update (containerd's `UpdateInfo` rules).
fn updated_labels(mut cur: Labels, info: &SnapshotInfo, paths: &[String]) -> Result<Labels> {
    if paths.is_empty() {
        return Ok(info.labels.clone());
    }
    for p in paths {
        if let Some(k) = p.strip_prefix("labels.") {
            match info.labels.get(k) {
                Some(v) => cur.insert(k.to_string(), v.clone()),
                None => cur.remove(k),
            };
        } else if p == "labels" {
            cur = info.labels.clone();
        } else {
            return Err(Error::BadSnapshotInput {
                what: format!("field {p:?} of snapshot {:?}", info.key),
                reason: "cannot be updated; only labels can".into(),
            });
        }
    }
    Ok(cur)
}
