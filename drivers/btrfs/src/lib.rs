//! The btrfs driver: every layer is a btrfs subvolume.
//!
//! A base layer is a new subvolume; a child is a snapshot of its parent
//! (O(1) whatever the layer's size); read-only layers are read-only
//! snapshots, so their views refuse writes. Layers live under
//! `ROOT/btrfs/subvolumes/ID` and are mounted as bind mounts under
//! `ROOT/btrfs/mnt/ID`. All btrfs operations are ioctls (see `sys`);
//! nothing shells out to `btrfs`.
//!
//! Diff and changes are O(changes): the kernel's send (with no file data)
//! between the base and the layer names every path that differs, and the
//! core's walk compares the two trees at those paths only. Where the kernel
//! refuses send, the naive walk of both trees is used, and status says so.

#![deny(unsafe_code)]

pub mod send;
mod sys;

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::mount::{MountFlags, mount_bind, mount_remount};
use strata_core::archive::write::DiffItem;
use strata_core::archive::{self, ApplyOptions};
use strata_core::changes::{self, WalkOpts};
use strata_core::error::IoContext;
use strata_core::state::{APPLIED, DriverState, LayerMeta};
use strata_core::{
    ApplyStats, Capabilities, Change, CreateOpts, DiffBase, DiffStats, Driver, DriverFactory,
    DriverOptions, Error, LayerId, LayerInfo, Pairs, Result, fsx, mounts,
};

pub const NAME: &str = "btrfs";
const BTRFS_SUPER_MAGIC: u64 = 0x9123_683E;

/// The btrfs driver.
#[derive(Debug)]
pub struct Btrfs {
    root: PathBuf,
    state: DriverState,
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

impl Btrfs {
    pub fn open(root: &Path, mut opts: DriverOptions) -> Result<Self> {
        let force_naive = opts.take_bool("btrfs.naive_diff")?.unwrap_or(false);
        opts.finish(NAME)?;
        supported(root)?;
        let home = root.join(NAME);
        let state = DriverState::open(NAME, &home, &home.join("subvolumes"), &[])?;
        let mnt = home.join("mnt");
        fsx::mkdir_p(&mnt, 0o700).ctx("create", &mnt)?;
        let d = Btrfs {
            root: root.to_path_buf(),
            state,
            mnt,
            force_naive,
            naive_fallbacks: AtomicU64::new(0),
            last_fallback: std::sync::Mutex::new(None),
        };
        d.recover()?;
        Ok(d)
    }

    fn recover(&self) -> Result<()> {
        let _l = self.state.lock()?;
        let r = self.state.recover(&remove_any)?;
        if !r.is_empty() {
            tracing::info!(?r, "btrfs: recovered from an interrupted operation");
        }
        for m in self.state.list()? {
            if !m.rw {
                self.seal(&m.id)?;
            }
        }
        let table = mounts::mounts_under(&self.mnt).ctx("read mounts", &self.mnt)?;
        for id in self.state.mounted_ids()? {
            if !table
                .iter()
                .any(|m| m.mount_point == self.mnt.join(id.as_str()))
            {
                self.state.set_mount_count(&id, 0)?;
            }
        }
        for m in table {
            let id = m
                .mount_point
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|s| LayerId::new(s).ok());
            if id.as_ref().is_none_or(|id| self.state.mount_count(id) == 0) {
                tracing::info!(path = %m.mount_point.display(), "btrfs: unmounting a stale mount");
                mounts::unmount_path(&m.mount_point).ctx("unmount", &m.mount_point)?;
            }
        }
        Ok(())
    }

    fn subvol(&self, id: &LayerId) -> PathBuf {
        self.state.layer_path(id)
    }

    fn build(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        rw: bool,
        fill: impl FnOnce(&Path) -> Result<bool>,
    ) -> Result<()> {
        {
            let _l = self.state.lock()?;
            self.state.check_new(id, parent)?;
        }
        let held = self.state.new_staging(id)?;
        let staging = held.path.clone();
        let r: Result<()> = (|| {
            let sdir = parent_fd(&staging)?;
            let name = cname(&staging)?;
            match parent {
                Some(p) => {
                    let src = fsx::open_dir_path(&self.subvol(p))
                        .map_err(|_| Error::not_found(format!("parent layer {p}")))?;
                    sys::snapshot(src.as_fd(), sdir.as_fd(), &name, false)
                        .ctx("snapshot", &staging)?;
                }
                None => {
                    sys::subvol_create(sdir.as_fd(), &name).ctx("create subvolume", &staging)?;
                    let fd = fsx::open_dir_path(&staging).ctx("open", &staging)?;
                    rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(0o755))
                        .ctx("chmod", &staging)?;
                }
            }
            let applied = fill(&staging)?;
            let mut meta = LayerMeta::new(id, parent, rw);
            if applied {
                meta.extra.insert(APPLIED.into(), "true".into());
            }
            // a read-only subvolume cannot be renamed: seal it after the
            // commit (recovery seals any read-only layer a crash left open)
            self.state.commit(&staging, &meta)?;
            if !rw {
                self.seal(id)?;
            }
            Ok(())
        })();
        if let Err(e) = &r
            && staging.exists()
        {
            // after a full disk the space must come back at once: a deleted
            // subvolume is only freed by the cleaner (up to a commit
            // interval later), files unlinked in it are freed by the next
            // commit, which we force
            if e.raw_os_error() == Some(libc::ENOSPC)
                && let Ok(fd) = fsx::open_dir_path(&staging)
            {
                let _ = fsx::clear_dir(fd.as_fd());
                let _ = sys::sync(fd.as_fd());
            }
            let _ = remove_any(&staging);
        }
        r
    }

    /// Make a read-only layer's subvolume read-only.
    fn seal(&self, id: &LayerId) -> Result<()> {
        let p = self.subvol(id);
        let fd = fsx::open_dir_path(&p).ctx("open", &p)?;
        let f = sys::get_flags(fd.as_fd()).ctx("subvolume flags", &p)?;
        if f & sys::SUBVOL_RDONLY == 0 {
            sys::set_flags(fd.as_fd(), f | sys::SUBVOL_RDONLY).ctx("make read-only", &p)?;
        }
        Ok(())
    }

    /// A read-only subvolume with the layer's content, for send: the layer
    /// itself when it is read-only, else a temporary snapshot.
    fn readonly_source(&self, id: &LayerId) -> Result<(PathBuf, Option<TempSnapshot>)> {
        let p = self.subvol(id);
        let fd = fsx::open_dir_path(&p).ctx("open", &p)?;
        let flags = sys::get_flags(fd.as_fd()).ctx("subvolume flags", &p)?;
        if flags & sys::SUBVOL_RDONLY != 0 {
            return Ok((p, None));
        }
        let held = self.state.new_staging(id)?;
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

    fn walk_with(
        &self,
        id: &LayerId,
        base: DiffBase<'_>,
        compare_content: bool,
        f: &mut dyn FnMut(DiffItem<'_>) -> Result<()>,
    ) -> Result<&'static str> {
        self.state.meta(id)?;
        let base_id = self.resolve_base(id, base)?;
        let Some(b) = base_id else {
            let p = self.subvol(id);
            let l = fsx::open_dir_path(&p).ctx("open", &p)?;
            changes::walk_with(
                l.as_fd(),
                None,
                WalkOpts {
                    filter: None,
                    compare_content,
                },
                f,
            )?;
            return Ok("full");
        };
        let (src, _tmp_src) = self.readonly_source(id)?;
        let (bpath, _tmp_base) = self.readonly_source(&b)?;
        let l = fsx::open_dir_path(&src).ctx("open", &src)?;
        let bf = fsx::open_dir_path(&bpath).ctx("open", &bpath)?;
        if !self.force_naive {
            match self.sent_paths(&src, &bpath) {
                Ok(t) => {
                    changes::walk_with(
                        l.as_fd(),
                        Some(bf.as_fd()),
                        WalkOpts {
                            filter: Some(&t.filter),
                            compare_content,
                        },
                        f,
                    )?;
                    return Ok("native");
                }
                Err(e) => {
                    self.naive_fallbacks.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut g) = self.last_fallback.lock() {
                        *g = Some(e.to_string());
                    }
                    tracing::warn!(layer = %id, "btrfs: send refused ({e}); falling back to the naive diff");
                }
            }
        }
        changes::walk_with(
            l.as_fd(),
            Some(bf.as_fd()),
            WalkOpts {
                filter: None,
                compare_content,
            },
            f,
        )?;
        Ok("naive")
    }

    fn needs_bind_ro(&self, meta: &LayerMeta) -> bool {
        !meta.rw
    }
}

impl Driver for Btrfs {
    fn name(&self) -> &'static str {
        NAME
    }

    fn root(&self) -> &Path {
        &self.root
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            native_diff: !self.force_naive,
            max_depth: None,
            shares_data: true,
            read_only_mounts: true,
            privileged: true,
            user_xattrs: true,
            trusted_xattrs: true,
        }
    }

    fn create(&self, id: &LayerId, parent: Option<&LayerId>, opts: &CreateOpts) -> Result<()> {
        opts.refuse_all(NAME)?;
        self.build(id, parent, false, |_| Ok(false))
    }

    fn create_rw(&self, id: &LayerId, parent: Option<&LayerId>, opts: &CreateOpts) -> Result<()> {
        opts.refuse_all(NAME)?;
        self.build(id, parent, true, |_| Ok(false))
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
            let p = self.subvol(id);
            let r = (|| {
                let fd = fsx::open_dir_path(&p).ctx("open", &p)?;
                // a read-only layer made by `create` is filled, then sealed again
                let flags = sys::get_flags(fd.as_fd()).ctx("subvolume flags", &p)?;
                sys::set_flags(fd.as_fd(), flags & !sys::SUBVOL_RDONLY).ctx("make writable", &p)?;
                let s = archive::apply(
                    fd.as_fd(),
                    &p,
                    diff,
                    ApplyOptions {
                        raw: strata_core::archive::tarfmt::reborrow_sink(&mut raw),
                        ..Default::default()
                    },
                )?;
                sys::set_flags(fd.as_fd(), flags).ctx("make read-only", &p)?;
                self.state.mark_applied(meta.clone())?;
                Ok(s)
            })();
            if r.is_err() {
                tracing::info!(layer = %id, "apply failed; removing the half-made layer");
                let _ = self.remove(id);
            }
            return r;
        }
        let mut stats = None;
        self.build(id, parent, false, |staging| {
            let fd = fsx::open_dir_path(staging).ctx("open", staging)?;
            stats = Some(archive::apply(
                fd.as_fd(),
                staging,
                diff,
                ApplyOptions {
                    raw: strata_core::archive::tarfmt::reborrow_sink(&mut raw),
                    ..Default::default()
                },
            )?);
            Ok(true)
        })?;
        stats.ok_or_else(|| Error::invalid("apply", "no statistics"))
    }

    fn mount(&self, id: &LayerId) -> Result<PathBuf> {
        let _l = self.state.lock()?;
        let meta = self.state.meta(id)?;
        let n = self.state.mount_count(id);
        let mp = self.mnt.join(id.as_str());
        if n == 0 || !mounts::is_mounted(&mp).ctx("read mounts", &mp)? {
            fsx::mkdir_p(&mp, 0o755).ctx("create mount point", &mp)?;
            mount_bind(self.subvol(id), &mp).ctx("bind mount", &mp)?;
            if self.needs_bind_ro(&meta)
                && let Err(e) = mount_remount(
                    &mp,
                    MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
                    c"",
                )
            {
                let _ = mounts::unmount_path(&mp);
                return Err(Error::io("remount read-only", &mp, e));
            }
        }
        self.state.set_mount_count(id, n + 1)?;
        Ok(mp)
    }

    fn unmount(&self, id: &LayerId) -> Result<()> {
        let _l = self.state.lock()?;
        self.state.meta(id)?;
        let n = self.state.mount_count(id);
        if n == 0 {
            return Ok(());
        }
        if n == 1 {
            let mp = self.mnt.join(id.as_str());
            mounts::unmount_path(&mp).ctx("unmount", &mp)?;
            let _ = std::fs::remove_dir(&mp);
        }
        self.state.set_mount_count(id, n - 1)
    }

    fn diff(&self, id: &LayerId, base: DiffBase<'_>, out: &mut dyn Write) -> Result<DiffStats> {
        changes::write_diff_with(out, |emit| self.walk_with(id, base, true, emit))
    }

    fn changes(&self, id: &LayerId, base: DiffBase<'_>) -> Result<Vec<Change>> {
        changes::collect_changes(|emit| self.walk_with(id, base, true, emit).map(|_| ()))
    }

    fn diff_size(&self, id: &LayerId, base: DiffBase<'_>) -> Result<u64> {
        changes::collect_size(|emit| self.walk_with(id, base, false, emit).map(|_| ()))
    }

    fn remove(&self, id: &LayerId) -> Result<()> {
        let p = self.state.begin_remove_in_place(id)?;
        let _ = std::fs::remove_dir(self.mnt.join(id.as_str()));
        remove_any(&p)
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
            ("Driver".into(), NAME.into()),
            ("Root".into(), self.root.display().to_string()),
            ("Backing Filesystem".into(), "btrfs".into()),
            ("Subvolumes".into(), self.state.layers.display().to_string()),
            ("Native Diff".into(), native),
            ("Layers".into(), layers.to_string()),
        ]
    }

    fn metadata(&self, id: &LayerId) -> Result<Pairs> {
        let chain = self.state.chain(id)?;
        let p = self.subvol(id);
        let fd = fsx::open_dir_path(&p).ctx("open", &p)?;
        let sid = sys::subvol_id(fd.as_fd()).ctx("subvolume id", &p)?;
        let ro = sys::get_flags(fd.as_fd()).ctx("flags", &p)? & sys::SUBVOL_RDONLY != 0;
        let mut pairs: Pairs = vec![
            ("Subvolume".into(), p.display().to_string()),
            ("SubvolumeId".into(), sid.to_string()),
            ("ReadOnlySnapshot".into(), ro.to_string()),
        ];
        pairs.extend(self.state.layer_pairs(&chain));
        Ok(pairs)
    }

    fn cleanup(&self) -> Result<()> {
        self.state.unmount_all(&self.mnt)
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
        Ok(Box::new(Btrfs::open(root, opts)?))
    }
}
