//! The overlay2 driver: layers are directories stacked by the kernel's
//! overlayfs.
//!
//! Layout under `ROOT/overlay2` (as Docker's overlay2):
//!
//! ```text
//! ID/diff/     the layer's own files (overlay whiteouts and opaque xattrs)
//! ID/work/     overlay work dir (read-write layers)
//! ID/merged/   where the layer's view is mounted (while mounted)
//! ID/link      the layer's short link name
//! ID/lower     its ancestors as short links, top first ("l/A:l/B")
//! l/SHORT      -> ../ID/diff, so that long stacks fit in a mount(2) option
//! ```
//!
//! Read-only layers mount as an overlay of lower directories only (so the
//! view refuses writes); a single-layer view, which overlayfs cannot mount
//! without an upper, is a read-only bind mount. Read-write layers mount
//! with their `diff/` as upper; committing one in place renames it and
//! points its short link at the new name. Mounting uses the new mount API
//! with one `lowerdir+` per layer where the kernel has it (stack depth
//! limited only by the kernel, measured at first open), else mount(2) with
//! short links. Every overlay is mounted with
//! `redirect_dir=off,metacopy=off,index=off`.
//!
//! Hardlinks across layers: a layer that links a new name to a file of a
//! lower layer copies that file up and links to the copy, as overlayfs does
//! without `index=on` (and as Docker's and containerd's overlay drivers
//! do). Other names of the lower inode stay in the lower layer with the
//! same content but are no longer the same inode as the new pair; the OCI
//! image spec allows this for union file systems (layer.md, hard links).
//!
//! Rooms: `probe` (mount API and depth), `check` (can it run here),
//! `links` (short links), `views` (mount plans and read views), `diff`
//! (native or naive change walks), [`native`] (the walk over uppers),
//! [`plan`] and [`mount`] (plans as data, executed), `sys` (the one unsafe
//! call). Everything else is the core skeleton's
//! ([`strata_core::layered`]).

#![deny(unsafe_code)]

mod check;
mod diff;
mod links;
pub mod mount;
pub mod native;
pub mod plan;
mod probe;
#[allow(unsafe_code)]
mod sys;
mod views;

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use strata_core::error::IoContext;
use strata_core::layered::{MountPoint, NewLayer, View, WalkReq};
use strata_core::registry::Entry;
use strata_core::state::{DriverState, LayerMeta, remove_plain_dir};
use strata_core::walk::{DiffMethod, Emit};
use strata_core::whiteout::{OverlayXattr, WhiteoutFormat};
use strata_core::{Backend, Capabilities, DriverOptions, Layered, MountSpec, Pairs, Result, fsx};

pub use check::supported;
use links::{LINK_DIR, LINK_KEY};
use plan::Api;
use views::{ROOT_OPAQUE, diff_dir, visible};

pub const NAME: &str = "overlay2";

/// The overlay2 backend.
#[derive(Debug)]
pub struct Overlay2 {
    home: PathBuf,
    api: Api,
    max_depth: usize,
    xattr: OverlayXattr,
    force_naive: bool,
    naive_fallbacks: AtomicU64,
}

/// Open the overlay2 driver on `root`. Options: `overlay2.mount_api=
/// auto|new|legacy`, `overlay2.naive_diff=true`.
pub fn open(root: &Path, mut opts: DriverOptions) -> Result<Layered<Overlay2>> {
    let api_opt = opts
        .take("overlay2.mount_api")
        .unwrap_or_else(|| "auto".into());
    let force_naive = opts.take_bool("overlay2.naive_diff")?.unwrap_or(false);
    opts.finish(NAME)?;
    let state = DriverState::open(NAME, root, "", &[LINK_DIR])?;
    state.private_dir(LINK_DIR)?;
    let p = probe::probe(&state, &api_opt)?;
    let backend = Overlay2 {
        home: state.home.clone(),
        api: p.api,
        max_depth: p.max_depth,
        xattr: OverlayXattr::Trusted,
        force_naive,
        naive_fallbacks: AtomicU64::new(0),
    };
    Layered::open(root, state, backend)
}

/// Copy a root directory's owner, mode, xattrs and times.
fn copy_root_meta(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> std::io::Result<()> {
    let st = rustix::fs::fstat(src)?;
    fsx::chown_fd(dst, st.st_uid, st.st_gid)?;
    rustix::fs::fchmod(dst, rustix::fs::Mode::from_raw_mode(st.st_mode & 0o7777))?;
    for (k, v) in fsx::xattrs(fsx::XattrTarget::Fd(src))? {
        if !strata_core::whiteout::is_overlay_xattr(&k) {
            fsx::xattr_set(fsx::XattrTarget::Fd(dst), &k, &v)?;
        }
    }
    fsx::set_times_fd(dst, fsx::atime_of(&st), fsx::mtime_of(&st))
}

impl Overlay2 {
    fn native_status(&self) -> String {
        let fallbacks = self.naive_fallbacks.load(Ordering::Relaxed);
        if self.force_naive {
            "false (overlay2.naive_diff=true)".into()
        } else if fallbacks > 0 {
            format!(
                "true; {fallbacks} diff(s) fell back to naive (layers with redirect/metacopy xattrs)"
            )
        } else {
            "true (falls back to naive for layers with redirect/metacopy xattrs)".into()
        }
    }
}

impl Backend for Overlay2 {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::full(!self.force_naive, Some(self.max_depth))
    }

    /// `diff/` (with the parent's root attributes), `work/` for a
    /// read-write layer, the short link name and the list of lowers.
    #[allow(clippy::disallowed_methods)] // driver files, not layer content
    fn make_layer(&self, st: &DriverState, new: NewLayer<'_>) -> Result<()> {
        let NewLayer { dir, parent, meta } = new;
        let diff = dir.join("diff");
        // the layer's directory first (mkdir_p of diff/ would try diff/
        // first and fail once)
        fsx::mkdir_p(dir, 0o755).ctx("create", dir)?;
        fsx::mkdir_p(&diff, 0o755).ctx("create", &diff)?;
        if meta.rw {
            let w = dir.join("work");
            fsx::mkdir_p(&w, 0o700).ctx("create", &w)?;
        }
        let dfd = fsx::open_dir_path(&diff).ctx("open", &diff)?;
        match parent.first() {
            Some(p) => {
                // the root directory's attributes come from the parent
                let pdiff = diff_dir(st, &p.id);
                let pfd = fsx::open_dir_path(&pdiff).ctx("open", &pdiff)?;
                copy_root_meta(pfd.as_fd(), dfd.as_fd()).ctx("copy root attributes", &pdiff)?;
            }
            None => rustix::fs::fchmod(&dfd, rustix::fs::Mode::from_raw_mode(0o755))
                .ctx("chmod", &diff)?,
        }
        let short = links::short_name(&meta.id);
        std::fs::write(dir.join("link"), &short).ctx("write", dir.join("link"))?;
        let lower = links::lower_list(visible(parent));
        std::fs::write(dir.join("lower"), lower).ctx("write", dir.join("lower"))?;
        meta.extra.insert(LINK_KEY.into(), short);
        Ok(())
    }

    fn destroy(&self, dir: &Path) -> Result<()> {
        remove_plain_dir(dir)
    }

    fn content_dir(&self, dir: &Path) -> PathBuf {
        dir.join("diff")
    }

    fn whiteouts(&self) -> WhiteoutFormat {
        WhiteoutFormat::Overlay(self.xattr)
    }

    fn apply_sees_parent(&self) -> bool {
        true
    }

    /// A diff whose root was made opaque is flattened (see
    /// [`native::flatten_opaque_root`]) and the layer marked.
    fn after_apply(&self, content: &Path, meta: &mut LayerMeta) -> Result<()> {
        let fd = fsx::open_dir_path(content).ctx("open", content)?;
        let opaque = self
            .xattr
            .is_opaque(fsx::XattrTarget::Fd(fd.as_fd()))
            .ctx("read opaque xattr", content)?;
        if opaque {
            native::flatten_opaque_root(fd.as_fd(), self.xattr)?;
            meta.extra.insert(ROOT_OPAQUE.into(), "true".into());
        }
        Ok(())
    }

    /// The short link goes first: dangling until the layer is renamed
    /// into place, and removed by recovery if that never happens.
    fn publish(&self, _: &DriverState, meta: &LayerMeta) -> Result<()> {
        links::point(&self.home, meta)
    }

    fn forget(&self, _: &DriverState, meta: &LayerMeta) {
        links::remove(&self.home, meta);
    }

    /// The short link follows the new name; the work dir is not needed.
    fn promoted(&self, _: &DriverState, dir: &Path, meta: &LayerMeta) -> Result<()> {
        links::point(&self.home, meta)?;
        let _ = remove_plain_dir(&dir.join("work"));
        Ok(())
    }

    fn view(&self, st: &DriverState, chain: &[LayerMeta]) -> Result<View> {
        self.read_view(st, chain)
    }

    fn mount_point(&self, st: &DriverState, meta: &LayerMeta) -> MountPoint {
        MountPoint::At(st.layer_path(&meta.id).join("merged"))
    }

    fn mount(&self, st: &DriverState, chain: &[LayerMeta], target: &Path) -> Result<()> {
        mount::execute(&self.plan(st, chain, target, false), self.api, &self.home)
    }

    fn mount_specs(&self, st: &DriverState, chain: &[LayerMeta]) -> Result<Vec<MountSpec>> {
        // the target is the caller's; plans name it, specs do not
        Ok(vec![self.plan(st, chain, Path::new(""), false).spec()])
    }

    fn mounts_dir(&self, _: &DriverState) -> PathBuf {
        self.home.clone()
    }

    fn walk(&self, st: &DriverState, req: WalkReq<'_>, f: &mut Emit<'_>) -> Result<DiffMethod> {
        self.walk_changes(st, req, f)
    }

    fn status(&self, _: &DriverState) -> Pairs {
        vec![
            ("Mount API".into(), self.api.describe().into()),
            (
                "Max Depth".into(),
                format!(
                    "{} layers (measured on kernel {})",
                    self.max_depth,
                    probe::kernel_release()
                ),
            ),
            ("Native Overlay Diff".into(), self.native_status()),
            (
                "Mount Options".into(),
                "redirect_dir=off,metacopy=off,index=off".into(),
            ),
        ]
    }

    fn metadata(&self, st: &DriverState, chain: &[LayerMeta]) -> Result<Pairs> {
        let m = &chain[0];
        let dir = st.layer_path(&m.id);
        let lowers: Vec<String> = chain[1..]
            .iter()
            .map(|c| diff_dir(st, &c.id).display().to_string())
            .collect();
        let work = if m.rw {
            dir.join("work").display().to_string()
        } else {
            "-".into()
        };
        Ok(vec![
            ("UpperDir".into(), dir.join("diff").display().to_string()),
            ("LowerDir".into(), lowers.join(":")),
            ("MergedDir".into(), dir.join("merged").display().to_string()),
            ("WorkDir".into(), work),
            (
                "Link".into(),
                links::link_of(&self.home, m).display().to_string(),
            ),
        ])
    }

    fn recover(&self, st: &DriverState, full: bool) -> Result<()> {
        links::recover(st, full)
    }
}

/// Registry entry of the overlay2 driver.
pub const ENTRY: Entry = Entry {
    name: NAME,
    supported,
    open: |root, opts| Ok(Box::new(open(root, opts)?)),
    needs_root: true,
    scratch_fs: Some("tmpfs"),
};
