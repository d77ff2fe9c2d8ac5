//! What a mount of a layer shows, as data ([`MountPlan`]): the visible part
//! of its chain, the plan for a counted mount, and temporary read-only
//! views for reading (diffs, applies over a parent).

use std::path::{Path, PathBuf};

use strata_core::Result;
use strata_core::layered::{TempMount, View};
use strata_core::state::{DriverState, LayerMeta};

use crate::Overlay2;
use crate::mount;
use crate::plan::{Lower, MountPlan};

/// Meta key: the layer's root directory is opaque (a `.wh..wh..opq` at the
/// top of its diff). overlayfs ignores the opaque xattr on a layer's root,
/// so the layers below are left out of the mount instead.
pub const ROOT_OPAQUE: &str = "root_opaque";

/// The part of a chain (top first) a mount shows: down to the first layer
/// with an opaque root.
pub fn visible(chain: &[LayerMeta]) -> &[LayerMeta] {
    match chain.iter().position(|m| m.extra.contains_key(ROOT_OPAQUE)) {
        Some(k) => &chain[..=k],
        None => chain,
    }
}

/// `ID/diff`, the layer's own files.
pub fn diff_dir(st: &DriverState, id: &strata_core::LayerId) -> PathBuf {
    st.layer_path(id).join("diff")
}

impl Overlay2 {
    fn lower_of(&self, st: &DriverState, m: &LayerMeta) -> Lower {
        Lower {
            diff: diff_dir(st, &m.id),
            link: crate::links::link_of(&st.home, m),
        }
    }

    /// The plan that mounts the view of `chain[0]` at `target`. A single
    /// read-only layer is a read-only bind mount (overlayfs needs two
    /// lowers when there is no upper); a read-write layer mounts with its
    /// `diff/` as upper.
    pub fn plan(
        &self,
        st: &DriverState,
        chain: &[LayerMeta],
        target: &Path,
        force_ro: bool,
    ) -> MountPlan {
        let chain = visible(chain);
        let me = &chain[0];
        let target = target.to_path_buf();
        let source = diff_dir(st, &me.id);
        let rw = me.rw && !force_ro;
        if chain.len() == 1 {
            return MountPlan::Bind {
                source,
                target,
                read_only: !rw,
            };
        }
        if rw {
            return MountPlan::Overlay {
                lowers: chain[1..].iter().map(|m| self.lower_of(st, m)).collect(),
                upper: Some((source, st.layer_path(&me.id).join("work"))),
                target,
            };
        }
        MountPlan::Overlay {
            lowers: chain.iter().map(|m| self.lower_of(st, m)).collect(),
            upper: None,
            target,
        }
    }

    /// A read-only view for reading: the layer's own `diff/` when it is
    /// the whole visible chain, else a temporary read-only overlay.
    pub fn read_view(&self, st: &DriverState, chain: &[LayerMeta]) -> Result<View> {
        let id = &chain[0].id;
        if visible(chain).len() == 1 {
            return View::dir(&diff_dir(st, id));
        }
        let tm = TempMount::new(st.new_temp(&format!("view-{id}"))?)?;
        let plan = self.plan(st, chain, tm.path(), true);
        mount::execute(&plan, self.api, &st.home)?;
        let path = tm.path().to_path_buf();
        View::kept(&path, tm)
    }
}
