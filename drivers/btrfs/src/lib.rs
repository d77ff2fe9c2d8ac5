//! The btrfs driver: every layer is a btrfs subvolume.
//!
//! A base layer is a new subvolume; a child is a snapshot of its parent
//! (O(1) whatever the layer's size); read-only layers are sealed read-only
//! subvolumes, so their views refuse writes, and a layer committed in place
//! is renamed and sealed. Layers live under `ROOT/btrfs/subvolumes/ID` and
//! are mounted as bind mounts under `ROOT/btrfs/mnt/ID`. All btrfs
//! operations are ioctls (see `sys`); nothing shells out to `btrfs`.
//!
//! Diff and changes are O(changes): the kernel's send (with no file data)
//! between the base and the layer names every path that differs, and the
//! core's walk compares the two trees at those paths only. Where the kernel
//! refuses send, the naive walk of both trees is used, and status says so.
//! Everything else is the core skeleton's ([`strata_core::layered`]).

#![deny(unsafe_code)]

pub mod send;
mod sys;

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use strata_core::changes::{self, WalkOpts};
use strata_core::error::IoContext;
use strata_core::layered::{MountPoint, NewLayer, View, WalkReq, naive_walk};
use strata_core::registry::Entry;
use strata_core::state::{DriverState, LayerMeta};
use strata_core::walk::{DiffMethod, Emit, WalkPurpose};
use strata_core::{
    Backend, Capabilities, DriverOptions, Error, Layered, Pairs, Result, fsx, mounts,
};

pub const NAME: &str = "btrfs";
const BTRFS_SUPER_MAGIC: u64 = 0x9123_683E;

/// The btrfs backend.
#[derive(Debug)]
pub struct Btrfs {
    mnt: PathBuf,
    force_naive: bool,
    naive_fallbacks: AtomicU64,
    last_fallback: std::sync::Mutex<Option<String>>,
}

fn cname(p: &Path) -> Result<CString> {
    let n = p
        .file_name()
        .ok_or_else(|| Error::invalid(format!("path {}", p.display()), "no file name"))?;
    CString::new(n.as_bytes())
        .map_err(|_| Error::invalid(format!("path {}", p.display()), "NUL byte"))
}

fn parent_fd(p: &Path) -> Result<OwnedFd> {
    let parent = p.parent().unwrap_or(Path::new("/"));
    fsx::open_dir_path(parent).ctx("open", parent)
}

/// Is `p` the root of a subvolume?
fn is_subvolume(p: &Path) -> bool {
    std::fs::symlink_metadata(p)
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.is_dir() && m.ino() == sys::FIRST_FREE_OBJECTID
        })
        .unwrap_or(false)
}

/// Delete the subvolume at `p` and any subvolumes nested in it (a
/// container may have made some); read-only ones too.
pub fn destroy_subvolume(p: &Path) -> Result<()> {
    let pfd = parent_fd(p)?;
    let name = cname(p)?;
    match sys::subvol_destroy(pfd.as_fd(), &name) {
        Ok(()) => return Ok(()),
        // removed meanwhile (by recovery in another process)
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {}
        Err(e) => return Err(Error::io("delete subvolume", p, e)),
    }
    // nested subvolumes: find them through the root tree, deepest first
    let fd = fsx::open_dir_path(p).ctx("open", p)?;
    let id = sys::subvol_id(fd.as_fd()).ctx("subvolume id", p)?;
    // a read-only subvolume cannot lose its children: make it writable
    let flags = sys::get_flags(fd.as_fd()).ctx("subvolume flags", p)?;
    if flags & sys::SUBVOL_RDONLY != 0 {
        sys::set_flags(fd.as_fd(), flags & !sys::SUBVOL_RDONLY).ctx("clear read-only", p)?;
    }
    for (_child, dirid, child_name) in
        sys::child_subvolumes(fd.as_fd(), id).ctx("list nested subvolumes", p)?
    {
        let (_, dir) = sys::ino_lookup(fd.as_fd(), id, dirid).ctx("resolve nested subvolume", p)?;
        let mut cp = p.to_path_buf();
        if !dir.is_empty() {
            cp.push(std::ffi::OsStr::from_bytes(
                dir.strip_suffix(b"/").unwrap_or(&dir),
            ));
        }
        cp.push(std::ffi::OsStr::from_bytes(&child_name));
        destroy_subvolume(&cp)?;
    }
    drop(fd);
    sys::subvol_destroy(pfd.as_fd(), &name).ctx("delete subvolume", p)
}

/// Remove a staging or trash entry: a subvolume, or a plain directory.
fn remove_any(p: &Path) -> Result<()> {
    if is_subvolume(p) {
        destroy_subvolume(p)
    } else {
        strata_core::state::remove_plain_dir(p)
    }
}

/// A read-only snapshot taken for a send, deleted when dropped.
struct TempSnapshot {
    path: PathBuf,
    _held: strata_core::state::Held,
}

impl Drop for TempSnapshot {
    fn drop(&mut self) {
        if let Err(e) = destroy_subvolume(&self.path) {
            tracing::warn!(path = %self.path.display(), "deleting a temporary snapshot: {e}");
        }
    }
}

/// Open the btrfs driver on `root` (which must be on btrfs; root only).
/// Option: `btrfs.naive_diff=true` never uses send.
pub fn open(root: &Path, mut opts: DriverOptions) -> Result<Layered<Btrfs>> {
    let force_naive = opts.take_bool("btrfs.naive_diff")?.unwrap_or(false);
    opts.finish(NAME)?;
    supported(root)?;
    let state = DriverState::open(NAME, root, "subvolumes", &[])?;
    let backend = Btrfs {
        mnt: state.private_dir("mnt")?,
        force_naive,
        naive_fallbacks: AtomicU64::new(0),
        last_fallback: std::sync::Mutex::new(None),
    };
    Layered::open(root, state, backend)
}

/// Set or clear a subvolume's read-only flag (plain directories: nothing).
fn set_subvol_read_only(p: &Path, read_only: bool) -> Result<()> {
    if !is_subvolume(p) {
        return Ok(());
    }
    let fd = fsx::open_dir_path(p).ctx("open", p)?;
    let f = sys::get_flags(fd.as_fd()).ctx("subvolume flags", p)?;
    let want = if read_only {
        f | sys::SUBVOL_RDONLY
    } else {
        f & !sys::SUBVOL_RDONLY
    };
    if want != f {
        sys::set_flags(fd.as_fd(), want).ctx("set subvolume read-only flag", p)?;
    }
    Ok(())
}

impl Btrfs {
    /// A read-only subvolume with the layer's content, for send: the layer
    /// itself when it is sealed, else a temporary read-only snapshot.
    fn readonly_source(
        &self,
        st: &DriverState,
        id: &strata_core::LayerId,
    ) -> Result<(PathBuf, Option<TempSnapshot>)> {
        let p = st.layer_path(id);
        let fd = fsx::open_dir_path(&p).ctx("open", &p)?;
        let flags = sys::get_flags(fd.as_fd()).ctx("subvolume flags", &p)?;
        if flags & sys::SUBVOL_RDONLY != 0 {
            return Ok((p, None));
        }
        let held = st.new_staging(id)?;
        let t = held.path.clone();
        let tdir = parent_fd(&t)?;
        sys::snapshot(fd.as_fd(), tdir.as_fd(), &cname(&t)?, true).ctx("snapshot", &t)?;
        Ok((
            t.clone(),
            Some(TempSnapshot {
                path: t,
                _held: held,
            }),
        ))
    }

    /// The paths that differ between `base` and `src` according to send.
    fn sent_paths(&self, src: &Path, base: &Path) -> std::io::Result<send::Touched> {
        let sfd = fsx::open_dir_path(src)?;
        let bfd = fsx::open_dir_path(base)?;
        let parent_id = sys::subvol_id(bfd.as_fd())?;
        let (rd, wr) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let reader = std::thread::spawn(move || {
            let mut f = std::fs::File::from(rd);
            let r = send::parse(&mut f);
            // drain whatever is left so the sender never blocks
            let _ = std::io::copy(&mut f, &mut std::io::sink());
            r
        });
        let r = sys::send(
            sfd.as_fd(),
            wr.as_fd(),
            Some(parent_id),
            sys::SEND_FLAG_NO_FILE_DATA,
        );
        drop(wr);
        let parsed = reader
            .join()
            .map_err(|_| std::io::Error::other("send reader panicked"))?;
        r?;
        parsed
    }

    /// The native walk: send names the candidates, the core's walk
    /// compares the two trees there; `None` when send was refused.
    fn send_walk(
        &self,
        st: &DriverState,
        chain: &[LayerMeta],
        base: &[LayerMeta],
        purpose: WalkPurpose,
        f: &mut Emit<'_>,
    ) -> Result<Option<DiffMethod>> {
        let (src, _tmp_src) = self.readonly_source(st, &chain[0].id)?;
        let (bpath, _tmp_base) = self.readonly_source(st, &base[0].id)?;
        let touched = match self.sent_paths(&src, &bpath) {
            Ok(t) => t,
            Err(e) => {
                self.naive_fallbacks.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut g) = self.last_fallback.lock() {
                    *g = Some(e.to_string());
                }
                tracing::warn!(layer = %chain[0].id, "btrfs: send refused ({e}); falling back to the naive diff");
                return Ok(None);
            }
        };
        let l = fsx::open_dir_path(&src).ctx("open", &src)?;
        let b = fsx::open_dir_path(&bpath).ctx("open", &bpath)?;
        let opts = WalkOpts {
            filter: Some(&touched.filter),
            compare_content: purpose.compare_content(),
        };
        changes::walk_with(l.as_fd(), Some(b.as_fd()), opts, f)?;
        Ok(Some(DiffMethod::Native))
    }
}

impl Backend for Btrfs {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::full(!self.force_naive, None)
    }

    /// A snapshot of the parent, or a new subvolume.
    fn make_layer(&self, st: &DriverState, new: NewLayer<'_>) -> Result<()> {
        let dir = new.dir;
        let sdir = parent_fd(dir)?;
        let name = cname(dir)?;
        if let Some(p) = new.parent.first() {
            let src = fsx::open_dir_path(&st.layer_path(&p.id))
                .map_err(|_| Error::not_found(format!("parent layer {}", p.id)))?;
            return sys::snapshot(src.as_fd(), sdir.as_fd(), &name, false).ctx("snapshot", dir);
        }
        sys::subvol_create(sdir.as_fd(), &name).ctx("create subvolume", dir)?;
        let fd = fsx::open_dir_path(dir).ctx("open", dir)?;
        rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(0o755)).ctx("chmod", dir)
    }

    fn destroy(&self, dir: &Path) -> Result<()> {
        remove_any(dir)
    }

    /// After a full disk the space must come back at once: a deleted
    /// subvolume is only freed by the cleaner (up to a commit interval
    /// later), files unlinked in it are freed by the next commit, which is
    /// forced here.
    fn discard(&self, dir: &Path, why: &Error) -> Result<()> {
        if why.raw_os_error() == Some(libc::ENOSPC)
            && let Ok(fd) = fsx::open_dir_path(dir)
        {
            let _ = fsx::clear_dir(fd.as_fd());
            let _ = sys::sync(fd.as_fd());
        }
        remove_any(dir)
    }

    fn set_read_only(&self, dir: &Path, read_only: bool) -> Result<()> {
        set_subvol_read_only(dir, read_only)
    }

    fn view(&self, st: &DriverState, chain: &[LayerMeta]) -> Result<View> {
        View::dir(&st.layer_path(&chain[0].id))
    }

    fn mount_point(&self, _: &DriverState, meta: &LayerMeta) -> MountPoint {
        MountPoint::At(self.mnt.join(meta.id.as_str()))
    }

    /// A bind mount of the subvolume (read-only for read-only layers).
    fn mount(&self, st: &DriverState, chain: &[LayerMeta], target: &Path) -> Result<()> {
        let src = st.layer_path(&chain[0].id);
        mounts::bind(&src, target, !chain[0].rw).ctx("bind mount", target)
    }

    fn mounts_dir(&self, _: &DriverState) -> PathBuf {
        self.mnt.clone()
    }

    fn walk(&self, st: &DriverState, req: WalkReq<'_>, f: &mut Emit<'_>) -> Result<DiffMethod> {
        if let Some(b) = req.base
            && !self.force_naive
            && let Some(m) = self.send_walk(st, req.chain, b, req.purpose, f)?
        {
            return Ok(m);
        }
        naive_walk(self, st, req, f)
    }

    fn status(&self, st: &DriverState) -> Pairs {
        let n = self.naive_fallbacks.load(Ordering::Relaxed);
        let native = if self.force_naive {
            "false (btrfs.naive_diff=true)".to_string()
        } else if n > 0 {
            let why = self
                .last_fallback
                .lock()
                .ok()
                .and_then(|g| g.clone())
                .unwrap_or_default();
            format!("send, but {n} diff(s) fell back to naive (kernel refused send: {why})")
        } else {
            "send (BTRFS_IOC_SEND, no file data) + walk of the touched paths".to_string()
        };
        vec![
            ("Subvolumes".into(), st.layers.display().to_string()),
            ("Native Diff".into(), native),
        ]
    }

    fn metadata(&self, st: &DriverState, chain: &[LayerMeta]) -> Result<Pairs> {
        let p = st.layer_path(&chain[0].id);
        let fd = fsx::open_dir_path(&p).ctx("open", &p)?;
        let sid = sys::subvol_id(fd.as_fd()).ctx("subvolume id", &p)?;
        let ro = sys::get_flags(fd.as_fd()).ctx("flags", &p)? & sys::SUBVOL_RDONLY != 0;
        Ok(vec![
            ("Subvolume".into(), p.display().to_string()),
            ("SubvolumeId".into(), sid.to_string()),
            ("ReadOnlySnapshot".into(), ro.to_string()),
        ])
    }

    /// After a crash: read-only layers a crash left writable are sealed.
    fn recover(&self, st: &DriverState, full: bool) -> Result<()> {
        if full {
            for m in st.list()?.iter().filter(|m| !m.rw) {
                set_subvol_read_only(&st.layer_path(&m.id), true)?;
            }
        }
        Ok(())
    }
}

/// Is `root` on btrfs (and are we root)?
pub fn supported(root: &Path) -> Result<()> {
    fsx::mkdir_p(root, 0o711).ctx("create root", root)?;
    let st = rustix::fs::statfs(root).ctx("statfs", root)?;
    if st.f_type as u64 != BTRFS_SUPER_MAGIC {
        return Err(Error::unsupported(
            format!("btrfs at {}", root.display()),
            "the root is not on a btrfs file system",
        ));
    }
    if !fsx::is_root() {
        return Err(Error::unsupported(
            "btrfs",
            "snapshots and subvolume deletion need root",
        ));
    }
    Ok(())
}

/// Registry entry of the btrfs driver.
pub const ENTRY: Entry = Entry {
    name: NAME,
    supported,
    open: |root, opts| Ok(Box::new(open(root, opts)?)),
    needs_root: true,
    scratch_fs: Some("btrfs"),
};
