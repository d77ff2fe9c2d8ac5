//! The overlay2 driver: layers are directories stacked by the kernel's
//! overlayfs.
//!
//! Layout under `ROOT/overlay2` (as Docker's overlay2):
//!
//! ```text
//! ID/diff/     the layer's own files (overlay whiteouts and opaque xattrs)
//! ID/work/     overlay work dir (read-write layers)
//! ID/merged/   where the layer's view is mounted
//! ID/link      the layer's short link name
//! ID/lower     its ancestors as short links, top first ("l/A:l/B")
//! l/SHORT      -> ../ID/diff, so that long stacks fit in a mount(2) option
//! ```
//!
//! Read-only layers mount as an overlay of lower directories only (so the
//! view refuses writes); a single-layer view, which overlayfs cannot mount
//! without an upper, is a read-only bind mount. Read-write layers mount
//! with their `diff/` as upper. Mounting uses the new mount API with one
//! `lowerdir+` per layer where the kernel has it (stack depth limited only
//! by the kernel, measured at first open), else mount(2) with short links.
//! Every overlay is mounted with `redirect_dir=off,metacopy=off,index=off`.
//!
//! Hardlinks across layers: a layer that links a new name to a file of a
//! lower layer copies that file up and links to the copy, as overlayfs does
//! without `index=on` (and as Docker's and containerd's overlay drivers
//! do). Other names of the lower inode stay in the lower layer with the
//! same content but are no longer the same inode as the new pair; the OCI
//! image spec allows this for union file systems (layer.md, hard links).

#![deny(unsafe_code)]

pub mod mount;
pub mod native;
pub mod plan;
#[allow(unsafe_code)]
mod sys;

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use strata_core::archive::write::DiffItem;
use strata_core::archive::{self, ApplyOptions};
use strata_core::error::IoContext;
use strata_core::state::{APPLIED, DriverState, LayerMeta, remove_plain_dir};
use strata_core::whiteout::{OverlayXattr, WhiteoutFormat};
use strata_core::{
    ApplyStats, Capabilities, Change, CreateOpts, DiffBase, DiffStats, Driver, DriverFactory,
    DriverOptions, Error, LayerId, LayerInfo, Pairs, Result, changes, fsx, mounts,
};

use plan::{Api, Lower, MountPlan};

pub const NAME: &str = "overlay2";
/// Metadata key of read-only layers found free of redirect / metacopy.
const NATIVE_OK: &str = "native_diff_checked";
/// Meta key: the layer's root directory is opaque (a `.wh..wh..opq` at the
/// top of its diff). overlayfs ignores the opaque xattr on a layer's root,
/// so the layers below are left out of the mount instead.
const ROOT_OPAQUE: &str = "root_opaque";

/// The part of a chain (top first) a mount shows: down to the first layer
/// with an opaque root.
fn visible(chain: &[LayerMeta]) -> &[LayerMeta] {
    match chain.iter().position(|m| m.extra.contains_key(ROOT_OPAQUE)) {
        Some(k) => &chain[..=k],
        None => chain,
    }
}
const LINK_DIR: &str = "l";

/// The overlay2 driver.
#[derive(Debug)]
pub struct Overlay2 {
    root: PathBuf,
    home: PathBuf,
    state: DriverState,
    api: Api,
    max_depth: usize,
    xattr: OverlayXattr,
    force_naive: bool,
    naive_fallbacks: AtomicU64,
    backing: String,
}

/// What the first open of a root measured, kept in `.probe.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Probe {
    kernel: String,
    api: Api,
    max_depth: usize,
}

fn kernel_release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

/// A random-looking 26-character short link name (Docker's format).
fn short_name(id: &LayerId) -> String {
    use sha2::Digest;
    let seed = format!("{id}-{}", strata_core::state::unique_suffix());
    let h = sha2::Sha256::digest(seed.as_bytes());
    h.iter().take(26).map(|b| (b'A' + b % 26) as char).collect()
}

/// A temporary mount, unmounted (and its directory removed) when dropped.
struct TempMount {
    target: PathBuf,
    fd: Option<OwnedFd>,
    /// Keeps recovery in other processes away until unmounted.
    _held: strata_core::state::Held,
}

impl TempMount {
    fn fd(&self) -> Result<std::os::fd::BorrowedFd<'_>> {
        self.fd
            .as_ref()
            .map(|f| f.as_fd())
            .ok_or_else(|| Error::invalid("view", "not open"))
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        self.fd.take();
        if let Err(e) = mounts::unmount_path(&self.target) {
            tracing::warn!(path = %self.target.display(), "unmounting a temporary view: {e}");
        }
        let _ = std::fs::remove_dir(&self.target);
    }
}

/// A view of a layer's merged tree for reading: its own `diff/` when it is
/// a single layer, else a temporary read-only overlay.
enum View {
    Dir(OwnedFd),
    Mount(TempMount),
}

impl View {
    fn fd(&self) -> Result<std::os::fd::BorrowedFd<'_>> {
        match self {
            View::Dir(f) => Ok(f.as_fd()),
            View::Mount(m) => m.fd(),
        }
    }
}

impl Overlay2 {
    pub fn open(root: &Path, mut opts: DriverOptions) -> Result<Self> {
        let api_opt = opts
            .take("overlay2.mount_api")
            .unwrap_or_else(|| "auto".into());
        let force_naive = opts.take_bool("overlay2.naive_diff")?.unwrap_or(false);
        opts.finish(NAME)?;
        let home = root.join(NAME);
        let state = DriverState::open(NAME, &home, &home, &[LINK_DIR])?;
        let links = home.join(LINK_DIR);
        fsx::mkdir_p(&links, 0o700).ctx("create directory", &links)?;
        let mut d = Overlay2 {
            root: root.to_path_buf(),
            home,
            state,
            api: Api::New,
            max_depth: 0,
            xattr: OverlayXattr::Trusted,
            force_naive,
            naive_fallbacks: AtomicU64::new(0),
            backing: strata_vfs_fs_name(root),
        };
        let probe = d.probe(&api_opt)?;
        d.api = probe.api;
        d.max_depth = probe.max_depth;
        d.recover()?;
        Ok(d)
    }

    /// Pick the mount API and measure the deepest stack it mounts (cached
    /// per kernel release in `.probe.json`).
    fn probe(&self, api_opt: &str) -> Result<Probe> {
        let path = self.home.join(".probe.json");
        let kernel = kernel_release();
        let held = self.state.new_temp("probe")?;
        let scratch = held.path.clone();
        fsx::mkdir_p(&scratch, 0o700).ctx("create", &scratch)?;
        let new_ok = mount::new_api_available(&scratch);
        let api = match api_opt {
            "auto" => {
                if new_ok {
                    Api::New
                } else {
                    Api::Legacy
                }
            }
            "new" if new_ok => Api::New,
            "new" => {
                let _ = remove_plain_dir(&scratch);
                return Err(Error::unsupported(
                    "overlay2.mount_api=new",
                    "this kernel lacks fsopen/fsconfig lowerdir+ for overlay",
                ));
            }
            "legacy" => Api::Legacy,
            other => {
                let _ = remove_plain_dir(&scratch);
                return Err(Error::invalid(
                    format!("driver option overlay2.mount_api={other}"),
                    "expected auto, new or legacy",
                ));
            }
        };
        if let Ok(data) = std::fs::read(&path)
            && let Ok(p) = serde_json::from_slice::<Probe>(&data)
            && p.kernel == kernel
            && p.api == api
        {
            let _ = remove_plain_dir(&scratch);
            return Ok(p);
        }
        let max_depth = self.measure_depth(&scratch, api);
        let _ = mounts::unmount_all_under(&scratch);
        let _ = remove_plain_dir(&scratch);
        let max_depth = max_depth?;
        let p = Probe {
            kernel,
            api,
            max_depth,
        };
        let data =
            serde_json::to_vec_pretty(&p).map_err(|e| Error::invalid("probe", e.to_string()))?;
        fsx::write_atomic(&path, &data).ctx("write", &path)?;
        tracing::info!(?p, "overlay2: probed the kernel");
        Ok(p)
    }

    /// Binary search for the most lower layers one mount accepts.
    #[allow(clippy::disallowed_methods)] // short links are driver files, not layer content
    fn measure_depth(&self, scratch: &Path, api: Api) -> Result<usize> {
        const CEILING: usize = 1024;
        let target = scratch.join("m");
        fsx::mkdir_p(&target, 0o700).ctx("create", &target)?;
        let mut lowers = Vec::with_capacity(CEILING);
        let mut links = Vec::new();
        for i in 0..CEILING {
            let d = scratch.join(format!("{i}"));
            fsx::mkdir_p(&d, 0o755).ctx("create", &d)?;
            let link = if api == Api::Legacy {
                // realistic option lengths: links like the real ones
                let l = self.home.join(LINK_DIR).join(format!("PROBE{:021}", i));
                let _ = std::fs::remove_file(&l);
                std::os::unix::fs::symlink(&d, &l).ctx("symlink", &l)?;
                links.push(l.clone());
                l
            } else {
                d.clone()
            };
            lowers.push(Lower { diff: d, link });
        }
        let try_n = |n: usize| -> bool {
            let plan = MountPlan::Overlay {
                lowers: lowers[..n].to_vec(),
                upper: None,
                target: target.clone(),
            };
            let ok = mount::execute(&plan, api, &self.home).is_ok();
            if ok {
                let _ = mounts::unmount_path(&target);
            }
            ok
        };
        let r = if !try_n(2) {
            Err(Error::unsupported(
                "overlay2",
                "the kernel refuses an overlay of two lower directories here",
            ))
        } else {
            let (mut lo, mut hi) = (2usize, CEILING + 1);
            while hi - lo > 1 {
                let mid = (lo + hi) / 2;
                if try_n(mid) {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            Ok(lo)
        };
        for l in links {
            let _ = std::fs::remove_file(l);
        }
        r
    }

    /// Clean crash leftovers: staging (and any temporary view mounted in
    /// it), trash, half-made layers, dangling short links, mount counts
    /// without a mount and mounts without a count.
    fn recover(&self) -> Result<()> {
        let _l = self.state.lock()?;
        // (stale temporary views in .staging are unmounted by the state's
        // recovery; live ones of other processes are left alone)
        let staging = self.home.join(".staging");
        let r = self.state.recover(&remove_plain_dir)?;
        if !r.is_empty() {
            tracing::info!(?r, "overlay2: recovered from an interrupted operation");
        }
        let links = self.home.join(LINK_DIR);
        for e in std::fs::read_dir(&links).ctx("read", &links)? {
            let e = e.ctx("read", &links)?;
            if std::fs::metadata(e.path()).is_err() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let table = mounts::mounts().ctx("read mounts", "/proc/self/mountinfo")?;
        for id in self.state.mounted_ids()? {
            let target = self.merged(&id);
            if !table.iter().any(|m| m.mount_point == target) {
                tracing::info!(layer = %id, "overlay2: mount count without a mount; reset");
                self.state.set_mount_count(&id, 0)?;
            }
        }
        for m in mounts::mounts_under(&self.home).ctx("read mounts", &self.home)? {
            if m.mount_point.starts_with(&staging) {
                continue;
            }
            let id = m
                .mount_point
                .strip_prefix(&self.home)
                .ok()
                .and_then(|p| p.iter().next())
                .and_then(|c| c.to_str())
                .and_then(|s| LayerId::new(s).ok());
            let counted = id.as_ref().is_some_and(|id| {
                self.state.mount_count(id) > 0 && m.mount_point == self.merged(id)
            });
            if !counted {
                tracing::info!(path = %m.mount_point.display(), "overlay2: unmounting a stale mount");
                mounts::unmount_path(&m.mount_point).ctx("unmount", &m.mount_point)?;
            }
        }
        Ok(())
    }

    fn dir(&self, id: &LayerId) -> PathBuf {
        self.state.layer_path(id)
    }

    fn diff_dir(&self, id: &LayerId) -> PathBuf {
        self.dir(id).join("diff")
    }

    fn merged(&self, id: &LayerId) -> PathBuf {
        self.dir(id).join("merged")
    }

    fn link_of(&self, meta: &LayerMeta) -> PathBuf {
        let short = meta.extra.get("link").cloned().unwrap_or_default();
        self.home.join(LINK_DIR).join(short)
    }

    /// The plan that mounts a layer's view at `target`.
    fn plan(&self, chain: &[LayerMeta], target: PathBuf, force_ro: bool) -> MountPlan {
        let chain = visible(chain);
        let me = &chain[0];
        let rw = me.rw && !force_ro;
        let lower_of = |m: &LayerMeta| Lower {
            diff: self.diff_dir(&m.id),
            link: self.link_of(m),
        };
        if rw {
            if chain.len() == 1 {
                return MountPlan::Bind {
                    source: self.diff_dir(&me.id),
                    target,
                    read_only: false,
                };
            }
            MountPlan::Overlay {
                lowers: chain[1..].iter().map(lower_of).collect(),
                upper: Some((self.diff_dir(&me.id), self.dir(&me.id).join("work"))),
                target,
            }
        } else if chain.len() == 1 {
            MountPlan::Bind {
                source: self.diff_dir(&me.id),
                target,
                read_only: true,
            }
        } else {
            MountPlan::Overlay {
                lowers: chain.iter().map(lower_of).collect(),
                upper: None,
                target,
            }
        }
    }

    /// A read-only view of a layer for reading (not reference counted).
    fn view(&self, id: &LayerId) -> Result<View> {
        let chain = self.state.chain(id)?;
        if visible(&chain).len() == 1 {
            let p = self.diff_dir(id);
            return Ok(View::Dir(fsx::open_dir_path(&p).ctx("open", &p)?));
        }
        let held = self.state.new_temp(&format!("view-{id}"))?;
        let target = held.path.clone();
        fsx::mkdir_p(&target, 0o700).ctx("create", &target)?;
        let plan = self.plan(&chain, target.clone(), true);
        if let Err(e) = mount::execute(&plan, self.api, &self.home) {
            let _ = std::fs::remove_dir(&target);
            return Err(e);
        }
        let mut tm = TempMount {
            target,
            fd: None,
            _held: held,
        };
        tm.fd = Some(fsx::open_dir_path(&tm.target).ctx("open", &tm.target)?);
        Ok(View::Mount(tm))
    }

    #[allow(clippy::disallowed_methods)] // the short link is a driver file, not layer content
    fn build(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        rw: bool,
        fill: impl FnOnce(&Path, Option<std::os::fd::BorrowedFd<'_>>) -> Result<bool>,
    ) -> Result<()> {
        if id.as_str() == LINK_DIR {
            return Err(Error::invalid(
                format!("layer id {id}"),
                "reserved by overlay2",
            ));
        }
        let depth = {
            let _l = self.state.lock()?;
            self.state.check_new(id, parent)?
        };
        if depth > self.max_depth {
            return Err(Error::MaxDepth {
                depth,
                max: self.max_depth,
                driver: NAME.into(),
            });
        }
        let held = self.state.new_staging(id)?;
        let staging = held.path.clone();
        let short = short_name(id);
        let link = self.home.join(LINK_DIR).join(&short);
        let r = (|| {
            let diff = staging.join("diff");
            for d in [&diff, &staging.join("merged")] {
                fsx::mkdir_p(d, 0o755).ctx("create", d)?;
            }
            if rw {
                let w = staging.join("work");
                fsx::mkdir_p(&w, 0o700).ctx("create", &w)?;
            }
            let dfd = fsx::open_dir_path(&diff).ctx("open", &diff)?;
            let mut lower_links = Vec::new();
            let view = match parent {
                Some(p) => {
                    let chain = self.state.chain(p)?;
                    for m in visible(&chain) {
                        lower_links.push(format!(
                            "{LINK_DIR}/{}",
                            m.extra.get("link").cloned().unwrap_or_default()
                        ));
                    }
                    // the root directory's attributes come from the parent
                    let pdiff = self.diff_dir(p);
                    let pfd = fsx::open_dir_path(&pdiff).ctx("open", &pdiff)?;
                    copy_root_meta(pfd.as_fd(), dfd.as_fd()).ctx("copy root attributes", &pdiff)?;
                    Some(self.view(p)?)
                }
                None => {
                    rustix::fs::fchmod(&dfd, rustix::fs::Mode::from_raw_mode(0o755))
                        .ctx("chmod", &diff)?;
                    None
                }
            };
            std::fs::write(staging.join("link"), &short).ctx("write", staging.join("link"))?;
            std::fs::write(staging.join("lower"), lower_links.join(":"))
                .ctx("write", staging.join("lower"))?;
            let lower_fd = match &view {
                Some(v) => Some(v.fd()?),
                None => None,
            };
            let applied = fill(&diff, lower_fd)?;
            drop(view);
            // the short link first: dangling until the rename, and removed
            // on recovery if the rename never happens
            std::os::unix::fs::symlink(format!("../{id}/diff"), &link).ctx("symlink", &link)?;
            let mut meta = LayerMeta::new(id, parent, rw);
            meta.extra.insert("link".into(), short.clone());
            if applied {
                meta.extra.insert(APPLIED.into(), "true".into());
            }
            if self.flatten_if_root_opaque(dfd.as_fd(), &diff)? {
                meta.extra.insert(ROOT_OPAQUE.into(), "true".into());
            }
            self.state.commit(&staging, &meta)
        })();
        if r.is_err() {
            let _ = mounts::unmount_all_under(&staging);
            let _ = remove_plain_dir(&staging);
            let _ = std::fs::remove_file(&link);
        }
        r
    }

    fn apply_into<'a>(
        &self,
        diff: &Path,
        lower: Option<std::os::fd::BorrowedFd<'a>>,
        input: &mut (dyn Read + Send),
        raw: Option<&'a mut dyn strata_core::archive::tarfmt::RawSink>,
    ) -> Result<ApplyStats> {
        let fd = fsx::open_dir_path(diff).ctx("open", diff)?;
        archive::apply(
            fd.as_fd(),
            diff,
            input,
            ApplyOptions {
                whiteouts: Some(WhiteoutFormat::Overlay(self.xattr)),
                lower,
                raw,
                ..Default::default()
            },
        )
    }

    /// After an apply: a diff whose root was made opaque is flattened
    /// (see [`native::flatten_opaque_root`]); true when it was.
    fn flatten_if_root_opaque(&self, fd: std::os::fd::BorrowedFd<'_>, path: &Path) -> Result<bool> {
        let opaque = self
            .xattr
            .is_opaque(fsx::XattrTarget::Fd(fd))
            .ctx("read opaque xattr", path)?;
        if opaque {
            native::flatten_opaque_root(fd, self.xattr)?;
        }
        Ok(opaque)
    }

    /// The uppers from `id` down to (not including) `stop`, top first;
    /// `None` when `stop` is not an ancestor of `id`.
    fn uppers_until(&self, id: &LayerId, stop: Option<&LayerId>) -> Result<Option<Vec<LayerMeta>>> {
        let chain = self.state.chain(id)?;
        match stop {
            None => Ok(Some(chain)),
            Some(s) => match chain.iter().position(|m| &m.id == s) {
                Some(0) => Ok(Some(Vec::new())),
                Some(i) => Ok(Some(chain[..i].to_vec())),
                None => Ok(None),
            },
        }
    }

    fn resolve_base(&self, id: &LayerId, base: DiffBase<'_>) -> Result<Option<LayerId>> {
        Ok(match base {
            DiffBase::Empty => None,
            DiffBase::Parent => self.state.meta(id)?.parent,
            DiffBase::Layer(b) => {
                self.state.meta(b)?;
                Some(b.clone())
            }
        })
    }

    /// Walk the layer's changes against `base`: natively over the uppers
    /// when possible, else the core's naive walk over both views.
    fn walk_with(
        &self,
        id: &LayerId,
        base: DiffBase<'_>,
        for_changes: bool,
        f: &mut dyn FnMut(DiffItem<'_>) -> Result<()>,
    ) -> Result<&'static str> {
        let base_id = self.resolve_base(id, base)?;
        let base_view = match &base_id {
            Some(b) => Some(self.view(b)?),
            None => None,
        };
        let base_fd = match &base_view {
            Some(v) => Some(v.fd()?),
            None => None,
        };
        if !self.force_naive
            && let Some(all) = self.uppers_until(id, base_id.as_ref())?
        {
            // an upper with an opaque root ends what contributes
            let uppers = visible(&all);
            let hides_base = uppers.len() < all.len()
                || uppers
                    .last()
                    .is_some_and(|m| m.extra.contains_key(ROOT_OPAQUE));
            let fds: Vec<OwnedFd> = uppers
                .iter()
                .map(|m| {
                    let p = self.diff_dir(&m.id);
                    fsx::open_dir_path(&p).ctx("open", &p)
                })
                .collect::<Result<_>>()?;
            let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
            // A foreign feature found halfway would come after output has
            // gone out: a dry run (metadata only) looks first, unless every
            // upper is a read-only layer already found clean (read-only
            // layers do not change).
            let checked = uppers
                .iter()
                .all(|m| !m.rw && m.extra.contains_key(NATIVE_OK));
            let mut items_ok = true;
            let mut reason = String::new();
            if !checked {
                match native::walk(
                    &borrowed,
                    hides_base,
                    base_fd,
                    self.xattr,
                    true,
                    &mut |_| Ok(()),
                )? {
                    native::Walk::Done => {
                        for m in uppers
                            .iter()
                            .filter(|m| !m.rw && !m.extra.contains_key(NATIVE_OK))
                        {
                            // a cache only: failing to record it costs a dry run later
                            let _ = self.state.set_extra(&m.id, NATIVE_OK, "true");
                        }
                    }
                    native::Walk::Foreign(r) => {
                        items_ok = false;
                        reason = r;
                    }
                }
            }
            if items_ok {
                match native::walk(&borrowed, hides_base, base_fd, self.xattr, for_changes, f)? {
                    native::Walk::Done => return Ok("native"),
                    native::Walk::Foreign(r) => {
                        // a layer changed behind our back since it was checked
                        return Err(Error::Corrupt {
                            path: self.diff_dir(id),
                            reason: format!(
                                "overlay features native diff cannot read appeared: {r}"
                            ),
                        });
                    }
                }
            }
            self.naive_fallbacks.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(layer = %id, %reason, "overlay2: falling back to the naive diff");
        }
        let lv = self.view(id)?;
        changes::walk(lv.fd()?, base_fd, f)?;
        Ok("naive")
    }
}

/// Copy a root directory's owner, mode, xattrs and times.
fn copy_root_meta(
    src: std::os::fd::BorrowedFd<'_>,
    dst: std::os::fd::BorrowedFd<'_>,
) -> std::io::Result<()> {
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

fn strata_vfs_fs_name(p: &Path) -> String {
    match rustix::fs::statfs(p) {
        Ok(s) => match s.f_type as u64 {
            0xEF53 => "ext4".into(),
            0x9123683E => "btrfs".into(),
            0x58465342 => "xfs".into(),
            0x01021994 => "tmpfs".into(),
            other => format!("0x{other:x}"),
        },
        Err(_) => "unknown".into(),
    }
}

impl Driver for Overlay2 {
    fn name(&self) -> &'static str {
        NAME
    }

    fn root(&self) -> &Path {
        &self.root
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            native_diff: !self.force_naive,
            max_depth: Some(self.max_depth),
            shares_data: true,
            read_only_mounts: true,
            privileged: true,
            user_xattrs: true,
            trusted_xattrs: true,
        }
    }

    fn create(&self, id: &LayerId, parent: Option<&LayerId>, opts: &CreateOpts) -> Result<()> {
        opts.refuse_all(NAME)?;
        self.build(id, parent, false, |_, _| Ok(false))
    }

    fn create_rw(&self, id: &LayerId, parent: Option<&LayerId>, opts: &CreateOpts) -> Result<()> {
        opts.refuse_all(NAME)?;
        self.build(id, parent, true, |_, _| Ok(false))
    }

    fn apply_diff_split(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        diff: &mut (dyn Read + Send),
        mut raw: Option<&mut dyn strata_core::archive::tarfmt::RawSink>,
    ) -> Result<ApplyStats> {
        if self.state.exists(id) {
            let meta = self.state.begin_apply_in_place(id, parent)?;
            let r = (|| {
                let view = match &meta.parent {
                    Some(p) => Some(self.view(p)?),
                    None => None,
                };
                let lower = match &view {
                    Some(v) => Some(v.fd()?),
                    None => None,
                };
                let s = self.apply_into(
                    &self.diff_dir(id),
                    lower,
                    diff,
                    strata_core::archive::tarfmt::reborrow_sink(&mut raw),
                )?;
                drop(view);
                let mut meta = meta.clone();
                let dpath = self.diff_dir(id);
                let dfd = fsx::open_dir_path(&dpath).ctx("open", &dpath)?;
                if self.flatten_if_root_opaque(dfd.as_fd(), &dpath)? {
                    meta.extra.insert(ROOT_OPAQUE.into(), "true".into());
                }
                self.state.mark_applied(meta)?;
                Ok(s)
            })();
            if r.is_err() {
                tracing::info!(layer = %id, "apply failed; removing the half-made layer");
                let _ = self.remove(id);
            }
            return r;
        }
        let mut stats = None;
        self.build(id, parent, false, |diff_path, lower| {
            stats = Some(self.apply_into(
                diff_path,
                lower,
                diff,
                strata_core::archive::tarfmt::reborrow_sink(&mut raw),
            )?);
            Ok(true)
        })?;
        stats.ok_or_else(|| Error::invalid("apply", "no statistics"))
    }

    fn mount(&self, id: &LayerId) -> Result<PathBuf> {
        let _l = self.state.lock()?;
        let chain = self.state.chain(id)?;
        let n = self.state.mount_count(id);
        let target = self.merged(id);
        if n == 0 || !mounts::is_mounted(&target).ctx("read mounts", &target)? {
            let plan = self.plan(&chain, target.clone(), false);
            mount::execute(&plan, self.api, &self.home)?;
        }
        self.state.set_mount_count(id, n + 1)?;
        Ok(target)
    }

    fn unmount(&self, id: &LayerId) -> Result<()> {
        let _l = self.state.lock()?;
        self.state.meta(id)?;
        let n = self.state.mount_count(id);
        if n == 0 {
            return Ok(());
        }
        if n == 1 {
            let target = self.merged(id);
            mounts::unmount_path(&target).ctx("unmount", &target)?;
        }
        self.state.set_mount_count(id, n - 1)
    }

    fn diff(&self, id: &LayerId, base: DiffBase<'_>, out: &mut dyn Write) -> Result<DiffStats> {
        changes::write_diff_with(out, |emit| self.walk_with(id, base, false, emit))
    }

    fn changes(&self, id: &LayerId, base: DiffBase<'_>) -> Result<Vec<Change>> {
        changes::collect_changes(|emit| self.walk_with(id, base, true, emit).map(|_| ()))
    }

    fn diff_size(&self, id: &LayerId, base: DiffBase<'_>) -> Result<u64> {
        changes::collect_size(|emit| self.walk_with(id, base, true, emit).map(|_| ()))
    }

    fn remove(&self, id: &LayerId) -> Result<()> {
        let meta = self.state.meta(id)?;
        let t = self.state.begin_remove(id)?;
        let _ = std::fs::remove_file(self.link_of(&meta));
        remove_plain_dir(&t.path)
    }

    fn exists(&self, id: &LayerId) -> bool {
        self.state.exists(id)
    }

    fn layer(&self, id: &LayerId) -> Result<LayerInfo> {
        Ok(self.state.meta(id)?.info())
    }

    fn layers(&self) -> Result<Vec<LayerInfo>> {
        Ok(self.state.list()?.iter().map(|m| m.info()).collect())
    }

    fn status(&self) -> Pairs {
        let layers = self.state.list().map(|l| l.len()).unwrap_or(0);
        let fallbacks = self.naive_fallbacks.load(Ordering::Relaxed);
        vec![
            ("Driver".into(), NAME.into()),
            ("Root".into(), self.root.display().to_string()),
            ("Backing Filesystem".into(), self.backing.clone()),
            ("Mount API".into(), self.api.describe().into()),
            (
                "Max Depth".into(),
                format!(
                    "{} layers (measured on kernel {})",
                    self.max_depth,
                    kernel_release()
                ),
            ),
            (
                "Native Overlay Diff".into(),
                if self.force_naive {
                    "false (overlay2.naive_diff=true)".into()
                } else if fallbacks > 0 {
                    format!(
                        "true; {fallbacks} diff(s) fell back to naive (layers with redirect/metacopy xattrs)"
                    )
                } else {
                    "true (falls back to naive for layers with redirect/metacopy xattrs)".into()
                },
            ),
            (
                "Mount Options".into(),
                "redirect_dir=off,metacopy=off,index=off".into(),
            ),
            ("Layers".into(), layers.to_string()),
        ]
    }

    fn metadata(&self, id: &LayerId) -> Result<Pairs> {
        let chain = self.state.chain(id)?;
        let m = &chain[0];
        let lowers: Vec<String> = chain[1..]
            .iter()
            .map(|c| self.diff_dir(&c.id).display().to_string())
            .collect();
        let mut pairs: Pairs = vec![
            ("UpperDir".into(), self.diff_dir(id).display().to_string()),
            ("LowerDir".into(), lowers.join(":")),
            ("MergedDir".into(), self.merged(id).display().to_string()),
            (
                "WorkDir".into(),
                if m.rw {
                    self.dir(id).join("work").display().to_string()
                } else {
                    "-".into()
                },
            ),
            ("Link".into(), self.link_of(m).display().to_string()),
        ];
        pairs.extend(self.state.layer_pairs(&chain));
        Ok(pairs)
    }

    fn cleanup(&self) -> Result<()> {
        self.state.unmount_all(&self.home)
    }
}

/// Can overlay2 run with its root at `root`?
pub fn supported(root: &Path) -> Result<()> {
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        // the module may load on first use
        let _ = std::process::Command::new("modprobe")
            .arg("overlay")
            .status();
        let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
        if !fs
            .lines()
            .any(|l| l.split_whitespace().last() == Some("overlay"))
        {
            return Err(Error::unsupported(
                "overlay2",
                "the kernel has no overlay file system",
            ));
        }
    }
    if !fsx::is_root() {
        return Err(Error::unsupported(
            "overlay2",
            "mounting overlays needs root",
        ));
    }
    fsx::mkdir_p(root, 0o711).ctx("create root", root)?;
    let st = rustix::fs::statfs(root).ctx("statfs", root)?;
    if st.f_type as u64 == 0x794c7630 {
        return Err(Error::unsupported(
            format!("overlay2 on {}", root.display()),
            "the root is itself on overlayfs; overlay on overlay is refused (use vfs, or a root on ext4/xfs/btrfs/tmpfs)",
        ));
    }
    // a real test mount: whiteouts, opaque xattrs and d_type must work
    let t = root.join(format!(
        ".overlay2-check.{}",
        strata_core::state::unique_suffix()
    ));
    let r = (|| -> Result<()> {
        for d in ["l1", "l2", "u", "w", "m"] {
            fsx::mkdir_p(&t.join(d), 0o755).ctx("create", t.join(d))?;
        }
        std::fs::write(t.join("l1/f"), b"x").ctx("write", t.join("l1/f"))?;
        let plan = MountPlan::Overlay {
            lowers: vec![
                Lower {
                    diff: t.join("l2"),
                    link: t.join("l2"),
                },
                Lower {
                    diff: t.join("l1"),
                    link: t.join("l1"),
                },
            ],
            upper: Some((t.join("u"), t.join("w"))),
            target: t.join("m"),
        };
        let api = if mount::new_api_available(&t) {
            Api::New
        } else {
            Api::Legacy
        };
        mount::execute(&plan, api, &t).map_err(|e| {
            Error::unsupported(
                format!("overlay2 on {}", root.display()),
                format!("a test overlay mount failed: {e}"),
            )
        })?;
        let res = std::fs::remove_file(t.join("m/f"));
        let _ = mounts::unmount_path(&t.join("m"));
        res.map_err(|e| {
            Error::unsupported(
                format!("overlay2 on {}", root.display()),
                format!("the backing file system cannot hold overlay whiteouts: {e}"),
            )
        })?;
        let wst = rustix::fs::statat(
            rustix::fs::CWD,
            t.join("u/f"),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .ctx("stat", t.join("u/f"))?;
        if !fsx::is_whiteout(&wst) {
            return Err(Error::unsupported(
                format!("overlay2 on {}", root.display()),
                "deleting through the test overlay did not leave a whiteout",
            ));
        }
        Ok(())
    })();
    let _ = mounts::unmount_all_under(&t);
    let _ = remove_plain_dir(&t);
    r
}

/// Registry entry of the overlay2 driver.
#[derive(Debug, Default)]
pub struct Factory;

impl DriverFactory for Factory {
    fn name(&self) -> &'static str {
        NAME
    }

    fn supported(&self, root: &Path) -> Result<()> {
        supported(root)
    }

    fn open(&self, root: &Path, opts: DriverOptions) -> Result<Box<dyn Driver>> {
        Ok(Box::new(Overlay2::open(root, opts)?))
    }
}
