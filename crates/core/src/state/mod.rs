//! Bookkeeping every driver shares: per-layer metadata, the root lock,
//! staging and trash directories, mount reference counts, and recovery of
//! what a crash left behind.
//!
//! Layout under a driver's home (`ROOT/<driver>`):
//!
//! ```text
//! .lock              flock(2) guarding every change of the state below
//! .meta/ID.json      parent, rw flag, creation time (written atomically)
//! .mounts/ID         mount reference count (absent = not mounted)
//! .kids/PARENT/ID    the index of children (see `kids`)
//! .quarantine/ID.*   layers whose metadata could not be read, set aside
//! .staging/NAME.*    layers being built, in-place commits (held while live)
//! .trash/ID.*        layers being removed (held while live)
//! LAYERS/ID          the layer itself (driver-specific content)
//! ```
//!
//! A layer exists exactly when `LAYERS/ID` and its metadata exist. Creating
//! writes the metadata first, then renames the finished staging directory
//! into place (one atomic step); removing renames the layer into the trash
//! first, then drops its metadata. After a crash, [`DriverState::recover`]
//! removes what dead operations left (see [`recover`]).

mod chain;
mod counts;
mod held;
mod kids;
mod quarantine;
pub mod recover;
mod sync;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use held::{Held, Lock, hold, lock, unique_suffix};
pub use recover::Recovery;

use crate::driver::{LayerInfo, Pairs};
use crate::error::{Error, IoContext, Result};
use crate::fsx;
use crate::id::LayerId;

/// `LayerMeta::extra` key of layers that hold an applied diff.
pub const APPLIED: &str = "applied";

/// Metadata of one layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerMeta {
    /// The layer.
    pub id: LayerId,
    /// The layer it sits on.
    pub parent: Option<LayerId>,
    /// A read-write (container) layer.
    pub rw: bool,
    /// Seconds since the epoch.
    pub created: i64,
    /// Driver-specific values (e.g. overlay2's short link name).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

impl LayerMeta {
    /// A new layer's metadata.
    pub fn new(id: &LayerId, parent: Option<&LayerId>, rw: bool) -> Self {
        LayerMeta {
            id: id.clone(),
            parent: parent.cloned(),
            rw,
            created: now(),
            extra: BTreeMap::new(),
        }
    }

    /// The layer as `Driver::layer` reports it.
    pub fn info(&self, mount_count: u32) -> LayerInfo {
        LayerInfo {
            id: self.id.clone(),
            parent: self.parent.clone(),
            rw: self.rw,
            created: self.created,
            mount_count,
        }
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Shared state of one driver home.
#[derive(Debug)]
pub struct DriverState {
    /// The driver's name.
    pub name: &'static str,
    /// The driver's home under the root.
    pub home: PathBuf,
    /// Where the layers' directories are.
    pub layers: PathBuf,
    reserved: &'static [&'static str],
    /// Metadata read before, by id, with the (inode, ctime) of the file it
    /// came from: a rewrite (always a new file, renamed over) or removal
    /// shows in a stat, so a hit costs one stat instead of a read.
    metas: std::sync::Mutex<std::collections::HashMap<LayerId, (u64, i64, i64, LayerMeta)>>,
    /// Parent chains read before (see [`chain`](DriverState::chain)).
    chains: chain::Chains,
}

// Every path here is the driver's own bookkeeping, never layer content.
#[allow(clippy::disallowed_methods)]
impl DriverState {
    /// Open (creating if needed) the state of driver `name` under
    /// `ROOT/name`, with layers kept in its subdirectory `layers` (`""`:
    /// the home itself). Names in `reserved` can not be layer ids (they
    /// are driver directories next to the layers).
    pub fn open(
        name: &'static str,
        root: &Path,
        layers: &str,
        reserved: &'static [&'static str],
    ) -> Result<Self> {
        let home = root.join(name);
        let layers = if layers.is_empty() {
            home.clone()
        } else {
            home.join(layers)
        };
        let (home, layers) = (home.as_path(), layers.as_path());
        for d in [
            home.to_path_buf(),
            layers.to_path_buf(),
            home.join(".meta"),
            home.join(".mounts"),
            home.join(".kids"),
            home.join(".staging"),
            home.join(".trash"),
        ] {
            fsx::mkdir_p(&d, 0o700).ctx("create directory", &d)?;
        }
        Error::check_private(home)?;
        Ok(DriverState {
            name,
            home: home.to_path_buf(),
            layers: layers.to_path_buf(),
            reserved,
            metas: std::sync::Mutex::default(),
            chains: chain::Chains::default(),
        })
        .and_then(|st| {
            st.index_kids()?;
            Ok(st)
        })
    }

    /// A private directory of the driver (`home/name`, mode 0700), made if
    /// needed.
    pub fn private_dir(&self, name: &str) -> Result<PathBuf> {
        let d = self.home.join(name);
        fsx::mkdir_p(&d, 0o700).ctx("create directory", &d)?;
        Ok(d)
    }

    /// The lock every change of the state is made under.
    pub fn lock(&self) -> Result<Lock> {
        held::lock(&self.home.join(".lock"))
    }

    /// The directory of layer `id`.
    pub fn layer_path(&self, id: &LayerId) -> PathBuf {
        self.layers.join(id.as_str())
    }

    fn meta_path(&self, id: &LayerId) -> PathBuf {
        self.home.join(".meta").join(format!("{id}.json"))
    }

    /// Whether layer `id` has metadata.
    pub fn exists(&self, id: &LayerId) -> bool {
        self.layer_path(id).symlink_metadata().is_ok() && self.meta_path(id).exists()
    }

    /// Layer `id`'s metadata; `NotFound` when there is none.
    pub fn meta(&self, id: &LayerId) -> Result<LayerMeta> {
        self.meta_stamped(id).map(|(_, m)| m)
    }

    /// Layer `id`'s metadata and the (inode, ctime) of its file.
    fn meta_stamped(&self, id: &LayerId) -> Result<(chain::Stamp, LayerMeta)> {
        let p = self.meta_path(id);
        let st = match rustix::fs::lstat(&p) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => return Err(Error::not_found(format!("layer {id}"))),
            Err(e) => return Err(Error::io("stat metadata", &p, e)),
        };
        let stamp = (st.st_ino, st.st_ctime, st.st_ctime_nsec as i64);
        if let Some((ino, cs, cn, m)) = self.metas.lock().unwrap_or_else(|e| e.into_inner()).get(id)
            && (*ino, *cs, *cn) == stamp
        {
            return Ok((stamp, m.clone()));
        }
        let data = match std::fs::read(&p) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::not_found(format!("layer {id}")));
            }
            Err(e) => return Err(Error::io("read metadata", &p, e)),
        };
        let m: LayerMeta = serde_json::from_slice(&data).map_err(|e| Error::Corrupt {
            path: p,
            reason: e.to_string(),
        })?;
        // metadata without its layer (a crash between the two) is no layer;
        // checked once, when the metadata is first read
        if self.layer_path(id).symlink_metadata().is_err() {
            return Err(Error::not_found(format!("layer {id}")));
        }
        let mut cache = self.metas.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(id.clone(), (stamp.0, stamp.1, stamp.2, m.clone()));
        Ok((stamp, m))
    }

    /// Write a layer's metadata atomically.
    pub fn write_meta(&self, m: &LayerMeta) -> Result<()> {
        let p = self.meta_path(&m.id);
        let data = serde_json::to_vec_pretty(m).map_err(|e| Error::Corrupt {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        fsx::write_atomic(&p, &data).ctx("write metadata", &p)
    }

    /// Remove a layer's metadata.
    pub fn remove_meta(&self, id: &LayerId) -> Result<()> {
        self.forget_chain(id);
        let p = self.meta_path(id);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove metadata", &p, e)),
        }
    }

    /// Every layer's metadata, sorted by id.
    pub fn list(&self) -> Result<Vec<LayerMeta>> {
        let dir = self.home.join(".meta");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).ctx("read", &dir)? {
            let e = e.ctx("read", &dir)?;
            let name = e.file_name();
            let Some(s) = name.to_str().and_then(|s| s.strip_suffix(".json")) else {
                continue;
            };
            let Ok(id) = LayerId::new(s) else { continue };
            match self.meta(&id) {
                Ok(m) => out.push(m),
                Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
                // one unreadable record must not brick every command: it
                // is reported and left for `check --repair` to set aside
                Err(e) if e.kind() == crate::ErrorKind::Corrupt => {
                    tracing::warn!(layer = %id, "skipping a layer whose metadata is unreadable: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Refuse a new layer whose id is taken or reserved, or whose parent
    /// does not exist; returns the parent's chain (parent first; empty
    /// without a parent), whose length + 1 is the new layer's depth.
    pub fn check_new(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<LayerMeta>> {
        self.check_id_free(id, parent)?;
        let Some(p) = parent else {
            return Ok(Vec::new());
        };
        match self.chain(p) {
            Ok(c) => Ok(c),
            Err(e) if e.kind() == crate::ErrorKind::NotFound => {
                Err(Error::not_found(format!("parent layer {p}")))
            }
            Err(e) => Err(e),
        }
    }

    /// [`DriverState::check_new`] at publication, under the lock, after
    /// the chain was read: the id is still free and the parent still
    /// there (a parent's ancestors cannot go while it exists).
    fn check_still_new(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<()> {
        self.check_id_free(id, parent)?;
        match parent {
            Some(p) => match self.meta(p) {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == crate::ErrorKind::NotFound => {
                    Err(Error::not_found(format!("parent layer {p}")))
                }
                Err(e) => Err(e),
            },
            None => Ok(()),
        }
    }

    fn check_id_free(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<()> {
        if self.reserved.contains(&id.as_str()) {
            return Err(Error::invalid(
                format!("layer id {id}"),
                format!("reserved by driver {}", self.name),
            ));
        }
        if self.exists(id) {
            return Err(Error::AlreadyExists {
                what: format!("layer {id}"),
            });
        }
        if parent == Some(id) {
            return Err(Error::invalid(
                format!("parent {id}"),
                "a layer cannot be its own parent",
            ));
        }
        Ok(())
    }

    /// Make a finished staging directory the layer `meta.id`: under the
    /// lock, check again that the id is free and the parent exists, write
    /// the metadata, rename the staging directory into place. `durable`:
    /// forced to disk before returning (layers with content); an empty
    /// layer (`create`, a container's or a snapshot's) is not, as Docker's
    /// and containerd's are not: after a power cut it may be gone, never
    /// half there (recovery removes metadata without a layer and a layer
    /// without metadata).
    pub fn commit(&self, staging: &Path, meta: &LayerMeta, durable: bool) -> Result<()> {
        let _l = self.lock()?;
        self.check_still_new(&meta.id, meta.parent.as_ref())?;
        if let Some(p) = &meta.parent {
            self.add_kid(p, &meta.id)?;
        }
        if durable {
            self.write_meta(meta)?;
        } else {
            let p = self.meta_path(&meta.id);
            let data = serde_json::to_vec_pretty(meta).map_err(|e| Error::Corrupt {
                path: p.clone(),
                reason: e.to_string(),
            })?;
            fsx::write_replace(&p, &data).ctx("write metadata", &p)?;
        }
        let dst = self.layer_path(&meta.id);
        if let Err(e) = std::fs::rename(staging, &dst) {
            let _ = self.remove_meta(&meta.id);
            return Err(Error::io("rename staging layer", &dst, e));
        }
        if durable {
            fsx::fsync_dir(&self.layers).ctx("fsync", &self.layers)?;
        }
        self.remember_meta(meta);
        Ok(())
    }

    /// Cache the metadata just written for a layer now in place (its
    /// first read, mounting it, then costs one stat).
    fn remember_meta(&self, m: &LayerMeta) {
        if let Ok(st) = rustix::fs::lstat(self.meta_path(&m.id)) {
            let mut cache = self.metas.lock().unwrap_or_else(|e| e.into_inner());
            cache.insert(
                m.id.clone(),
                (st.st_ino, st.st_ctime, st.st_ctime_nsec as i64, m.clone()),
            );
        }
    }

    /// Take layer `id` out of the store (under the lock): refused while it
    /// has children or is mounted. `unseal` makes the layer movable first
    /// (read-only btrfs subvolumes cannot be renamed). Returns its new
    /// place in the trash, which the caller deletes (outside the lock).
    pub fn begin_remove(&self, id: &LayerId, unseal: &dyn Fn(&Path) -> Result<()>) -> Result<Held> {
        let _l = self.lock()?;
        self.check_removable(id)?;
        let parent = self.meta(id)?.parent;
        let t = self.new_trash(id)?;
        let src = self.layer_path(id);
        unseal(&src)?;
        std::fs::rename(&src, &t.path).ctx("move layer to trash", &src)?;
        self.remove_meta(id)?;
        self.drop_kid(parent.as_ref(), id);
        self.set_mount_count(id, 0)?;
        fsx::fsync_dir(&self.layers).ctx("fsync", &self.layers)?;
        Ok(t)
    }

    /// Refused while `id` has children (`HasChildren`) or is mounted (`Busy`).
    pub fn check_removable(&self, id: &LayerId) -> Result<()> {
        self.meta(id)?;
        let children = self.children(id)?;
        if !children.is_empty() {
            return Err(Error::HasChildren {
                id: id.to_string(),
                children: children
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let n = self.mount_count(id);
        if n > 0 {
            return Err(Error::Busy {
                id: id.to_string(),
                reason: format!("mounted ({n} references); unmount it first"),
            });
        }
        Ok(())
    }

    /// Commit in place: the read-write layer `id` becomes the read-only
    /// layer `new_meta.id` (same directory, renamed). Under the lock:
    /// checks, the new metadata, the rename, the old metadata dropped, then
    /// `finish` (a backend's own changes) on the layer's new path. An intent
    /// entry in the staging area, removed last, makes recovery scan after a
    /// crash halfway.
    pub fn promote(
        &self,
        id: &LayerId,
        new_meta: &LayerMeta,
        finish: &dyn Fn(&Path) -> Result<()>,
    ) -> Result<()> {
        let _l = self.lock()?;
        let meta = self.meta(id)?;
        if !meta.rw {
            return Err(Error::invalid(
                format!("layer {id}"),
                "only a read-write layer can be committed; this one is read-only",
            ));
        }
        self.check_removable(id)?;
        self.check_still_new(&new_meta.id, meta.parent.as_ref())?;
        let intent = self.new_temp(&format!("commit-{id}"))?;
        fsx::mkdir_p(&intent.path, 0o700).ctx("create", &intent.path)?;
        let src = self.layer_path(id);
        if let Some(p) = &new_meta.parent {
            self.add_kid(p, &new_meta.id)?;
        }
        self.write_meta(new_meta)?;
        let dst = self.layer_path(&new_meta.id);
        if let Err(e) = std::fs::rename(&src, &dst) {
            let _ = self.remove_meta(&new_meta.id);
            return Err(Error::io("rename committed layer", &dst, e));
        }
        self.remove_meta(id)?;
        self.drop_kid(meta.parent.as_ref(), id);
        fsx::fsync_dir(&self.layers).ctx("fsync", &self.layers)?;
        finish(&dst)?;
        let _ = std::fs::remove_dir(&intent.path);
        Ok(())
    }

    /// Checks before applying a diff into an existing layer (one made by
    /// `create` and never filled): under the lock; returns its metadata.
    pub fn begin_apply_in_place(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
    ) -> Result<LayerMeta> {
        let _l = self.lock()?;
        let meta = self.meta(id)?;
        if meta.rw {
            return Err(Error::invalid(
                format!("layer {id}"),
                "a diff is applied to read-only layers only; this is a read-write layer",
            ));
        }
        if meta.extra.contains_key(APPLIED) {
            return Err(Error::AlreadyExists {
                what: format!("layer {id} (it already holds a diff)"),
            });
        }
        if parent.is_some() && meta.parent.as_ref() != parent {
            return Err(Error::invalid(
                format!("parent of layer {id}"),
                format!(
                    "the layer exists with parent {}",
                    meta.parent.as_ref().map_or("(none)", |p| p.as_str())
                ),
            ));
        }
        if !self.children(id)?.is_empty() || self.mount_count(id) > 0 {
            return Err(Error::Busy {
                id: id.to_string(),
                reason:
                    "a diff can only be applied to a layer without children that is not mounted"
                        .into(),
            });
        }
        Ok(meta)
    }

    /// Set a driver-specific metadata value of a layer.
    pub fn set_extra(&self, id: &LayerId, key: &str, value: &str) -> Result<()> {
        let _l = self.lock()?;
        let mut m = self.meta(id)?;
        m.extra.insert(key.into(), value.into());
        self.write_meta(&m)
    }

    /// Record that a layer holds a diff (it can no longer be filled).
    pub fn mark_applied(&self, mut meta: LayerMeta) -> Result<()> {
        let _l = self.lock()?;
        meta.extra.insert(APPLIED.into(), "true".into());
        self.write_meta(&meta)
    }

    /// A new staging path for layer `id`, held by this process until the
    /// returned guard drops (recovery in other processes leaves it alone).
    pub fn new_staging(&self, id: &LayerId) -> Result<Held> {
        self.new_temp(id.as_str())
    }

    /// A held temporary path in the staging area (probes, temporary views,
    /// intents).
    pub fn new_temp(&self, name: &str) -> Result<Held> {
        hold(
            self.home
                .join(".staging")
                .join(format!("{name}.{}", unique_suffix())),
        )
    }

    /// A fresh trash path for layer `id`, held until dropped.
    pub fn new_trash(&self, id: &LayerId) -> Result<Held> {
        hold(
            self.home
                .join(".trash")
                .join(format!("{id}.{}", unique_suffix())),
        )
    }

    /// The metadata every driver reports of a layer whose chain (top
    /// first) is `chain`: its parent ("-" for a base layer), whether it is
    /// read-write, its depth, when it was made and its mount count.
    pub fn layer_pairs(&self, chain: &[LayerMeta]) -> Pairs {
        let Some(m) = chain.first() else {
            return Vec::new();
        };
        vec![
            (
                "Parent".into(),
                m.parent
                    .as_ref()
                    .map_or_else(|| "-".into(), ToString::to_string),
            ),
            ("ReadWrite".into(), m.rw.to_string()),
            ("Depth".into(), chain.len().to_string()),
            ("Created".into(), m.created.to_string()),
            ("MountCount".into(), self.mount_count(&m.id).to_string()),
        ]
    }

    /// `Driver::cleanup`: unmount everything the driver mounted under
    /// `dir` and reset every mount count.
    pub fn unmount_all(&self, dir: &Path) -> Result<()> {
        let _l = self.lock()?;
        crate::mounts::unmount_all_under(dir).ctx("unmount", dir)?;
        for id in self.mounted_ids()? {
            self.set_mount_count(&id, 0)?;
        }
        Ok(())
    }
}

/// Remove a plain directory tree (staging and trash of vfs / overlay2).
pub fn remove_plain_dir(p: &Path) -> Result<()> {
    fsx::remove_tree(p).ctx("remove", p)
}
