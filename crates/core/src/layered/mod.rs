//! One driver skeleton over a narrow [`Backend`].
//!
//! Every backend keeps layers as directories under its home and shares the
//! same life cycle: build a layer in a staging directory and rename it into
//! place; apply a diff into a new layer (staged) or into one made by
//! `create` (in place), removing the half-made layer on error; count
//! mounts across processes and repair the counts after a crash; diff,
//! changes and sizes from a change walk; remove through the trash; commit a
//! read-write layer in place. [`Layered`] implements [`Driver`] once over
//! [`DriverState`]; a [`Backend`] says only what differs: how a layer
//! directory is made from its parent, where a diff is applied and in which
//! whiteout form, how a chain is mounted and viewed, how changes are found,
//! how a directory is destroyed.
//!
//! Models: moby's `NaiveDiffDriver` wrapping a `ProtoDriver`
//! (`daemon/graphdriver/fsdiff.go`), and containerd's single metadata store
//! under every snapshotter.
//!
//! Rooms: [`build`](self) (create, apply, commit, remove), `mounting`
//! (reference counts and their recovery), [`view`] (views for reading and
//! temporary mounts).

mod build;
mod groups;
mod mounting;
pub mod view;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub use view::{MountPoint, TempMount, View};

use crate::archive::tar::RawSink;
use crate::changes::{self, WalkOpts};
use crate::driver::{
    ApplyStats, Capabilities, Change, CreateOpts, DiffBase, DiffStats, Driver, LayerInfo,
    MountSpec, Pairs, Usage,
};
use crate::error::{Error, Result};
use crate::id::LayerId;
use crate::state::{DriverState, LayerMeta};
use crate::walk::{DiffMethod, Emit, WalkPurpose};
use crate::whiteout::WhiteoutFormat;

/// What is special about one storage backend. Everything else (staging,
/// rollback, reference counts, recovery, listing) is [`Layered`]'s.
///
/// Paths given to a backend are layer directories (`LAYERS/ID`, or a
/// staging directory while a layer is built); chains are a layer's
/// metadata and its ancestors', the layer first.
pub trait Backend: Send + Sync + fmt::Debug {
    /// The registry name (`vfs`, `overlay2`, `btrfs`).
    fn name(&self) -> &'static str;

    /// What the driver can do (the conformance suite branches on it).
    fn capabilities(&self) -> Capabilities;

    /// Make the directory of a new layer (see [`NewLayer`]).
    fn make_layer(&self, st: &DriverState, new: NewLayer<'_>) -> Result<()>;

    /// Delete a layer directory (a finished one, staging, trash, orphans).
    fn destroy(&self, dir: &Path) -> Result<()>;

    /// Delete the staging directory of a layer whose build failed with
    /// `why` (btrfs frees the space at once after ENOSPC).
    fn discard(&self, dir: &Path, why: &Error) -> Result<()> {
        let _ = why;
        self.destroy(dir)
    }

    /// Where in a layer directory its files live (overlay2: `diff/`).
    fn content_dir(&self, dir: &Path) -> PathBuf {
        dir.to_path_buf()
    }

    /// The on-disk form of whiteouts in a layer directory.
    fn whiteouts(&self) -> WhiteoutFormat {
        WhiteoutFormat::Delete
    }

    /// Does an apply need the parent's merged view (layers that hold only
    /// their own files: overlay2)?
    fn apply_sees_parent(&self) -> bool {
        false
    }

    /// After a diff was applied into `content` (the layer's content dir).
    fn after_apply(&self, content: &Path, meta: &mut LayerMeta) -> Result<()> {
        let _ = (content, meta);
        Ok(())
    }

    /// Make a layer directory read-only (btrfs seals read-only layers) or
    /// writable again (to fill it in place, or to move it).
    fn set_read_only(&self, dir: &Path, read_only: bool) -> Result<()> {
        let _ = (dir, read_only);
        Ok(())
    }

    /// Just before a layer becomes visible under `meta.id` (overlay2: its
    /// short link).
    fn publish(&self, st: &DriverState, meta: &LayerMeta) -> Result<()> {
        let _ = (st, meta);
        Ok(())
    }

    /// After a layer is gone, or its build failed: undo `publish`.
    fn forget(&self, st: &DriverState, meta: &LayerMeta) {
        let _ = (st, meta);
    }

    /// After an in-place commit renamed the layer to `meta.id` at `dir`.
    fn promoted(&self, st: &DriverState, dir: &Path, meta: &LayerMeta) -> Result<()> {
        let _ = st;
        self.set_read_only(dir, !meta.rw)
    }

    /// A view of the merged tree of `chain[0]` for reading (not counted).
    fn view(&self, st: &DriverState, chain: &[LayerMeta]) -> Result<View>;

    /// Where the counted mount of a layer lives.
    fn mount_point(&self, st: &DriverState, meta: &LayerMeta) -> MountPoint;

    /// Mount the merged view of `chain[0]` at `target` (an existing
    /// directory); read-write for a read-write layer.
    fn mount(&self, st: &DriverState, chain: &[LayerMeta], target: &Path) -> Result<()>;

    /// The mounts that show `chain[0]` for a caller that mounts them
    /// itself (see [`Driver::mount_specs`]). The default: a bind mount of
    /// the layer's content directory.
    fn mount_specs(&self, st: &DriverState, chain: &[LayerMeta]) -> Result<Vec<MountSpec>> {
        let me = &chain[0];
        let dir = self.content_dir(&st.layer_path(&me.id));
        Ok(vec![MountSpec::bind(&dir, !me.rw)])
    }

    /// The directory every mount point of the driver is under.
    fn mounts_dir(&self, st: &DriverState) -> PathBuf;

    /// Walk the changes `req` asks for, emitting diff items in tar order.
    /// The default compares both views in full.
    fn walk(&self, st: &DriverState, req: WalkReq<'_>, f: &mut Emit<'_>) -> Result<DiffMethod> {
        naive_walk(self, st, req, f)
    }

    /// Status lines of the backend (between the driver's name and root and
    /// its layer count).
    fn status(&self, st: &DriverState) -> Pairs {
        let _ = st;
        Vec::new()
    }

    /// Metadata lines of one layer (before the common ones).
    fn metadata(&self, st: &DriverState, chain: &[LayerMeta]) -> Result<Pairs>;

    /// Backend state to repair on open (under the lock); `full` after a
    /// crash, when every layer is looked at.
    fn recover(&self, st: &DriverState, full: bool) -> Result<()> {
        let _ = (st, full);
        Ok(())
    }
}

/// A layer being made.
#[derive(Debug)]
pub struct NewLayer<'a> {
    /// Its directory (which does not exist yet).
    pub dir: &'a Path,
    /// The parent's chain, the parent first (empty for a base layer): the
    /// new layer starts as the parent's view.
    pub parent: &'a [LayerMeta],
    /// Its metadata; backend values go into `extra`.
    pub meta: &'a mut LayerMeta,
}

/// What a change walk is asked for.
#[derive(Debug, Clone, Copy)]
pub struct WalkReq<'a> {
    /// The layer's chain, the layer first.
    pub chain: &'a [LayerMeta],
    /// The base's chain; `None`: an empty tree.
    pub base: Option<&'a [LayerMeta]>,
    /// What the walk is for.
    pub purpose: WalkPurpose,
}

/// The walk every backend can fall back to: both views compared in full.
pub fn naive_walk<B: Backend + ?Sized>(
    b: &B,
    st: &DriverState,
    req: WalkReq<'_>,
    f: &mut Emit<'_>,
) -> Result<DiffMethod> {
    let lv = b.view(st, req.chain)?;
    let bv = req.base.map(|c| b.view(st, c)).transpose()?;
    let opts = WalkOpts {
        filter: None,
        compare_content: req.purpose.compare_content(),
    };
    changes::walk_with(lv.fd(), bv.as_ref().map(|v| v.fd()), opts, f)?;
    Ok(DiffMethod::Naive)
}

/// A [`Driver`] made of [`DriverState`] and a [`Backend`].
#[derive(Debug)]
pub struct Layered<B: Backend> {
    root: PathBuf,
    state: DriverState,
    backend: B,
}

impl<B: Backend> Layered<B> {
    /// The driver over `state` (its home under `root`) and `backend`;
    /// repairs what a crash left before it returns.
    pub fn open(root: &Path, state: DriverState, backend: B) -> Result<Self> {
        let d = Layered {
            root: root.to_path_buf(),
            state,
            backend,
        };
        d.recover(false)?;
        Ok(d)
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The driver's bookkeeping.
    pub fn state(&self) -> &DriverState {
        &self.state
    }

    /// Repair what interrupted operations left; `full` looks at every
    /// layer whether or not a dead operation was found.
    pub fn recover(&self, full: bool) -> Result<()> {
        let _l = self.state.lock()?;
        let r = self.state.recover(full, &|p| self.backend.destroy(p))?;
        if !r.is_empty() {
            tracing::info!(
                driver = self.backend.name(),
                ?r,
                "recovered from an interrupted operation"
            );
        }
        self.backend.recover(&self.state, full || !r.is_empty())?;
        self.recover_mounts()
    }

    /// The chain of the base a layer is compared with.
    fn base_chain(
        &self,
        chain: &[LayerMeta],
        base: DiffBase<'_>,
    ) -> Result<Option<Vec<LayerMeta>>> {
        Ok(match base {
            DiffBase::Empty => None,
            DiffBase::Parent => match &chain[0].parent {
                Some(p) => Some(self.state.chain(p)?),
                None => None,
            },
            DiffBase::Layer(b) => Some(self.state.chain(b)?),
        })
    }

    fn walk(
        &self,
        id: &LayerId,
        base: DiffBase<'_>,
        purpose: WalkPurpose,
        f: &mut Emit<'_>,
    ) -> Result<DiffMethod> {
        let chain = self.state.chain(id)?;
        let base = self.base_chain(&chain, base)?;
        let req = WalkReq {
            chain: &chain,
            base: base.as_deref(),
            purpose,
        };
        self.backend.walk(&self.state, req, f)
    }

    fn info(&self, m: &LayerMeta) -> LayerInfo {
        m.info(self.state.mount_count(&m.id))
    }
}

impl<B: Backend> Driver for Layered<B> {
    fn name(&self) -> &'static str {
        self.backend.name()
    }

    fn root(&self) -> &Path {
        &self.root
    }

    fn capabilities(&self) -> Capabilities {
        self.backend.capabilities()
    }

    fn create(&self, id: &LayerId, parent: Option<&LayerId>, opts: &CreateOpts) -> Result<()> {
        opts.refuse_all(self.backend.name())?;
        self.build(id, parent, false, None, false).map(|_| ())
    }

    fn create_rw(&self, id: &LayerId, parent: Option<&LayerId>, opts: &CreateOpts) -> Result<()> {
        opts.refuse_all(self.backend.name())?;
        self.build(id, parent, true, None, false).map(|_| ())
    }

    fn apply_diff_split(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        diff: &mut (dyn Read + Send),
        raw: Option<&mut dyn RawSink>,
    ) -> Result<ApplyStats> {
        self.apply_new_or_in_place(id, parent, diff, raw, true)
    }

    fn apply_diff_lazy(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        diff: &mut (dyn Read + Send),
        raw: Option<&mut dyn RawSink>,
    ) -> Result<ApplyStats> {
        self.apply_new_or_in_place(id, parent, diff, raw, false)
    }

    fn sync_layers(&self, ids: &[LayerId]) -> Result<()> {
        self.state.sync_layers(ids)
    }

    fn commit(&self, id: &LayerId, new_id: &LayerId) -> Result<()> {
        self.commit_in_place(id, new_id)
    }

    fn mount(&self, id: &LayerId) -> Result<PathBuf> {
        self.mount_counted(id)
    }

    fn unmount(&self, id: &LayerId) -> Result<()> {
        self.unmount_counted(id)
    }

    fn mount_specs(&self, id: &LayerId) -> Result<Vec<MountSpec>> {
        let chain = self.state.chain(id)?;
        self.backend.mount_specs(&self.state, &chain)
    }

    fn usage(&self, id: &LayerId) -> Result<Usage> {
        let dir = self.backend.content_dir(&self.state.layer_path(id));
        if !self.state.exists(id) {
            return Err(Error::not_found(format!("layer {id}")));
        }
        crate::fsx::disk_usage(&dir).map_err(|e| Error::io("measure", &dir, e))
    }

    fn release(&self, id: &LayerId) -> Result<u32> {
        self.release_all(id)
    }

    fn diff(&self, id: &LayerId, base: DiffBase<'_>, out: &mut dyn Write) -> Result<DiffStats> {
        changes::write_diff_with(out, |emit| {
            let mut g = groups::Groups::default();
            let m = self.walk(id, base, WalkPurpose::Diff, &mut |item| {
                g.note(&item);
                emit(item)
            })?;
            if g.needs_view() {
                let chain = self.state.chain(id)?;
                let view = self.backend.view(&self.state, &chain)?;
                g.complete(view.fd(), emit)?;
            }
            Ok(m)
        })
    }

    fn changes(&self, id: &LayerId, base: DiffBase<'_>) -> Result<Vec<Change>> {
        changes::collect_changes(|emit| self.walk(id, base, WalkPurpose::Changes, emit).map(|_| ()))
    }

    fn diff_size(&self, id: &LayerId, base: DiffBase<'_>) -> Result<u64> {
        changes::collect_size(|emit| self.walk(id, base, WalkPurpose::Size, emit).map(|_| ()))
    }

    fn remove(&self, id: &LayerId) -> Result<()> {
        self.remove_layer(id)
    }

    fn exists(&self, id: &LayerId) -> bool {
        self.state.exists(id)
    }

    fn layer(&self, id: &LayerId) -> Result<LayerInfo> {
        Ok(self.info(&self.state.meta(id)?))
    }

    fn layers(&self) -> Result<Vec<LayerInfo>> {
        Ok(self.state.list()?.iter().map(|m| self.info(m)).collect())
    }

    fn unreadable(&self) -> Result<Vec<(LayerId, String)>> {
        self.state.unreadable()
    }

    fn quarantine(&self, id: &LayerId) -> Result<PathBuf> {
        self.state
            .quarantine(id, &|dir| self.backend.set_read_only(dir, false))
    }

    fn mount_counts(&self) -> Result<std::collections::HashMap<LayerId, u32>> {
        Ok(self
            .state
            .mounted_ids()?
            .into_iter()
            .map(|id| {
                let n = self.state.mount_count(&id);
                (id, n)
            })
            .filter(|(_, n)| *n > 0)
            .collect())
    }

    fn status(&self) -> Pairs {
        let layers = self.state.list().map(|l| l.len()).unwrap_or(0);
        let mut v: Pairs = vec![
            ("Driver".into(), self.backend.name().into()),
            ("Root".into(), self.root.display().to_string()),
            (
                "Backing Filesystem".into(),
                crate::fsx::fs_type_name(&self.state.home),
            ),
        ];
        v.extend(self.backend.status(&self.state));
        v.push(("Layers".into(), layers.to_string()));
        v
    }

    fn metadata(&self, id: &LayerId) -> Result<Pairs> {
        let chain = self.state.chain(id)?;
        let mut pairs = self.backend.metadata(&self.state, &chain)?;
        pairs.extend(self.state.layer_pairs(&chain));
        Ok(pairs)
    }

    fn cleanup(&self) -> Result<()> {
        self.state
            .unmount_all(&self.backend.mounts_dir(&self.state))
    }
}

/// Open a layer's content directory.
pub(crate) fn open_content<B: Backend + ?Sized>(b: &B, dir: &Path) -> Result<std::os::fd::OwnedFd> {
    let p = b.content_dir(dir);
    crate::fsx::open_dir_path(&p).map_err(|e| Error::io("open", &p, e))
}
