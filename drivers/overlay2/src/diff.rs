//! Changes of a layer: natively over the uppers between the layer and its
//! base when they can be read that way (see [`crate::native`]), else the
//! core's naive walk over both views.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;

use strata_core::changes::{self, WalkOpts};
use strata_core::error::IoContext;
use strata_core::layered::WalkReq;
use strata_core::state::{DriverState, LayerMeta};
use strata_core::walk::{DiffMethod, Emit, WalkPurpose};
use strata_core::{Error, LayerId, Result, fsx};

use crate::Overlay2;
use crate::native::{self, Walk};
use crate::views::{ROOT_OPAQUE, diff_dir, visible};

/// Metadata key of read-only layers found free of redirect / metacopy.
const NATIVE_OK: &str = "native_diff_checked";

/// The uppers from the top of `chain` down to (not including) `stop`;
/// `None` when `stop` is not an ancestor.
fn uppers_until<'c>(chain: &'c [LayerMeta], stop: Option<&LayerId>) -> Option<&'c [LayerMeta]> {
    match stop {
        None => Some(chain),
        Some(s) => chain.iter().position(|m| &m.id == s).map(|i| &chain[..i]),
    }
}

impl Overlay2 {
    pub(crate) fn walk_changes(
        &self,
        st: &DriverState,
        req: WalkReq<'_>,
        f: &mut Emit<'_>,
    ) -> Result<DiffMethod> {
        let WalkReq {
            chain,
            base,
            purpose,
        } = req;
        // A size is what the uppers hold (as Docker's overlay2 DiffSize):
        // deletions weigh nothing, so the base need not be mounted to see
        // what they delete.
        if purpose == WalkPurpose::Size
            && !self.force_naive
            && let Some(all) = uppers_until(chain, base.map(|b| &b[0].id))
            && let Some(m) = self.try_native(st, all, None, purpose, f)?
        {
            return Ok(m);
        }
        let base_view = base.map(|b| self.read_view(st, b)).transpose()?;
        let base_fd = base_view.as_ref().map(|v| v.fd());
        if !self.force_naive
            && purpose != WalkPurpose::Size
            && let Some(all) = uppers_until(chain, base.map(|b| &b[0].id))
            && let Some(m) = self.try_native(st, all, base_fd, purpose, f)?
        {
            return Ok(m);
        }
        let lv = self.read_view(st, chain)?;
        let opts = WalkOpts {
            filter: None,
            compare_content: purpose.compare_content(),
        };
        changes::walk_with(lv.fd(), base_fd, opts, f)?;
        Ok(DiffMethod::Naive)
    }

    /// The native walk over `all` (the uppers above the base, top first);
    /// `None` when a layer has overlay features it cannot read.
    fn try_native(
        &self,
        st: &DriverState,
        all: &[LayerMeta],
        base_fd: Option<BorrowedFd<'_>>,
        purpose: WalkPurpose,
        f: &mut Emit<'_>,
    ) -> Result<Option<DiffMethod>> {
        // an upper with an opaque root ends what contributes
        let uppers = visible(all);
        let hides_base = uppers.len() < all.len()
            || uppers
                .last()
                .is_some_and(|m| m.extra.contains_key(ROOT_OPAQUE));
        let fds: Vec<OwnedFd> = uppers
            .iter()
            .map(|m| {
                let p = diff_dir(st, &m.id);
                fsx::open_dir_path(&p).ctx("open", &p)
            })
            .collect::<Result<_>>()?;
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        if let Some(reason) = self.foreign(st, uppers, &borrowed, hides_base, base_fd)? {
            self.naive_fallbacks.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(layer = %all.first().map_or("", |m| m.id.as_str()), %reason, "overlay2: falling back to the naive diff");
            return Ok(None);
        }
        let deletions = purpose.opaque_as_deletions();
        match native::walk(&borrowed, hides_base, base_fd, self.xattr, deletions, f)? {
            Walk::Done => Ok(Some(DiffMethod::Native)),
            // a layer changed behind our back since it was checked
            Walk::Foreign(r) => Err(Error::Corrupt {
                path: diff_dir(st, &uppers[0].id),
                reason: format!("overlay features native diff cannot read appeared: {r}"),
            }),
        }
    }

    /// A foreign feature found halfway would come after output has gone
    /// out: a dry run (metadata only) looks first, unless every upper is a
    /// read-only layer already found clean (read-only layers do not
    /// change). Returns why the uppers cannot be read natively.
    fn foreign(
        &self,
        st: &DriverState,
        uppers: &[LayerMeta],
        fds: &[BorrowedFd<'_>],
        hides_base: bool,
        base_fd: Option<BorrowedFd<'_>>,
    ) -> Result<Option<String>> {
        if uppers
            .iter()
            .all(|m| !m.rw && m.extra.contains_key(NATIVE_OK))
        {
            return Ok(None);
        }
        match native::walk(fds, hides_base, base_fd, self.xattr, true, &mut |_| Ok(()))? {
            Walk::Foreign(r) => Ok(Some(r)),
            Walk::Done => {
                for m in uppers
                    .iter()
                    .filter(|m| !m.rw && !m.extra.contains_key(NATIVE_OK))
                {
                    // a cache only: failing to record it costs a dry run later
                    let _ = st.set_extra(&m.id, NATIVE_OK, "true");
                }
                Ok(None)
            }
        }
    }
}
