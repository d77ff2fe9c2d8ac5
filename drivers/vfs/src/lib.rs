//! The vfs driver: every layer is a complete directory tree.
//!
//! A child layer starts as a copy of its parent with every attribute,
//! hardlink, xattr and hole kept; file data is shared by reflink (FICLONE)
//! where the file system can (btrfs, xfs), copied in the kernel with
//! `copy_file_range` elsewhere. It works on any file system and needs no
//! privileges, which makes it the portable fallback and the reference the
//! other backends are compared with.
//!
//! Layout under `ROOT/vfs`: `dir/ID` (the layer's tree), `mnt/ID`
//! (read-only bind mount of a read-only layer, when root), and the shared
//! bookkeeping of [`strata_core::state`]. Everything else (staging,
//! rollback, mount counts, the naive diff) is the core skeleton's
//! ([`strata_core::layered`]); a layer in place is committed by a rename.

#![forbid(unsafe_code)]

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use strata_core::copy::{self, CopyStats, DataCopy, TreeCopy};
use strata_core::error::IoContext;
use strata_core::layered::{MountPoint, NewLayer, View};
use strata_core::registry::Entry;
use strata_core::state::{DriverState, LayerMeta, remove_plain_dir};
use strata_core::{
    Backend, Capabilities, DriverOptions, Error, Layered, Pairs, Result, fsx, mounts,
};

pub const NAME: &str = "vfs";

/// The vfs backend.
#[derive(Debug)]
pub struct Vfs {
    mnt: PathBuf,
    privileged: bool,
    data: DataCopy,
    probe: Probe,
}

/// What the backing file system can do, found at open.
#[derive(Debug, Clone, Copy)]
struct Probe {
    reflink: bool,
    user_xattrs: bool,
    trusted_xattrs: bool,
}

fn probe(dir: &Path) -> Result<Probe> {
    use rustix::fs::{Mode, OFlags, openat};
    let d = fsx::open_dir_path(dir).ctx("open", dir)?;
    // names of this process's own: other processes probe at the same time
    let tag = strata_core::state::unique_suffix();
    let a = fsx::cstr(format!(".probe-{tag}-a").as_bytes()).ctx("probe", dir)?;
    let b = fsx::cstr(format!(".probe-{tag}-b").as_bytes()).ctx("probe", dir)?;
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::CLOEXEC;
    let r = (|| {
        let fa = openat(&d, &a, flags, Mode::from_raw_mode(0o600)).ctx("create probe", dir)?;
        rustix::io::write(&fa, b"probe").ctx("write probe", dir)?;
        let fb = openat(&d, &b, flags, Mode::from_raw_mode(0o600)).ctx("create probe", dir)?;
        let target = fsx::XattrTarget::Fd(fa.as_fd());
        Ok(Probe {
            reflink: rustix::fs::ioctl_ficlone(&fb, &fa).is_ok(),
            user_xattrs: fsx::xattr_set(target, b"user.strata.probe", b"1").is_ok(),
            trusted_xattrs: fsx::xattr_set(target, b"trusted.strata.probe", b"1").is_ok(),
        })
    })();
    let _ = fsx::remove_all_at(d.as_fd(), &a);
    let _ = fsx::remove_all_at(d.as_fd(), &b);
    r
}

/// Open the vfs driver on `root`. Option: `vfs.no_reflink=true` copies
/// data even where the file system could share it.
pub fn open(root: &Path, mut opts: DriverOptions) -> Result<Layered<Vfs>> {
    let no_reflink = opts.take_bool("vfs.no_reflink")?.unwrap_or(false);
    opts.finish(NAME)?;
    let state = DriverState::open(NAME, root, "dir", &[])?;
    let backend = Vfs {
        mnt: state.private_dir("mnt")?,
        privileged: fsx::is_root(),
        data: if no_reflink {
            DataCopy::NoReflink
        } else {
            DataCopy::Auto
        },
        probe: probe(&state.home)?,
    };
    Layered::open(root, state, backend)
}

impl Vfs {
    fn reflinks(&self) -> bool {
        self.probe.reflink && self.data == DataCopy::Auto
    }
}

impl Backend for Vfs {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            native_diff: false,
            max_depth: None,
            shares_data: self.reflinks(),
            read_only_mounts: self.privileged,
            privileged: self.privileged,
            user_xattrs: self.probe.user_xattrs,
            trusted_xattrs: self.probe.trusted_xattrs,
        }
    }

    /// A copy of the parent's tree (data shared by reflink where possible).
    fn make_layer(&self, st: &DriverState, new: NewLayer<'_>) -> Result<()> {
        let dir = new.dir;
        fsx::mkdir_p(dir, 0o755).ctx("create staging", dir)?;
        let dst = fsx::open_dir_path(dir).ctx("open", dir)?;
        let Some(p) = new.parent.first() else {
            return rustix::fs::fchmod(&dst, rustix::fs::Mode::from_raw_mode(0o755))
                .ctx("chmod", dir);
        };
        let src_path = st.layer_path(&p.id);
        let src = fsx::open_dir_path(&src_path)
            .map_err(|_| Error::not_found(format!("parent layer {}", p.id)))?;
        let stats = CopyStats::default();
        let opts = TreeCopy {
            data: self.data,
            stats: Some(&stats),
            keep_overlay_xattrs: false,
        };
        copy::copy_tree(src.as_fd(), dst.as_fd(), opts).ctx("copy parent layer", &src_path)?;
        tracing::debug!(?stats, "vfs: copied parent");
        Ok(())
    }

    fn destroy(&self, dir: &Path) -> Result<()> {
        remove_plain_dir(dir)
    }

    fn view(&self, st: &DriverState, chain: &[LayerMeta]) -> Result<View> {
        View::dir(&st.layer_path(&chain[0].id))
    }

    /// A read-only layer is bind-mounted read-only (when root); otherwise
    /// the tree itself is the view.
    fn mount_point(&self, st: &DriverState, meta: &LayerMeta) -> MountPoint {
        if meta.rw || !self.privileged {
            MountPoint::Direct(st.layer_path(&meta.id))
        } else {
            MountPoint::At(self.mnt.join(meta.id.as_str()))
        }
    }

    fn mount(&self, st: &DriverState, chain: &[LayerMeta], target: &Path) -> Result<()> {
        let src = st.layer_path(&chain[0].id);
        mounts::bind(&src, target, true).ctx("bind mount read-only", target)
    }

    fn mounts_dir(&self, _: &DriverState) -> PathBuf {
        self.mnt.clone()
    }

    fn status(&self, _: &DriverState) -> Pairs {
        vec![
            (
                "Reflink".into(),
                if self.reflinks() {
                    "yes (FICLONE)".into()
                } else {
                    "no (copy_file_range / read-write)".into()
                },
            ),
            (
                "Read-only Mounts".into(),
                if self.privileged {
                    "bind mount, ro".into()
                } else {
                    "no (not root)".into()
                },
            ),
        ]
    }

    fn metadata(&self, st: &DriverState, chain: &[LayerMeta]) -> Result<Pairs> {
        Ok(vec![(
            "Path".into(),
            st.layer_path(&chain[0].id).display().to_string(),
        )])
    }
}

/// Registry entry of the vfs driver.
pub const ENTRY: Entry = Entry {
    name: NAME,
    supported: |_| Ok(()),
    open: |root, opts| Ok(Box::new(open(root, opts)?)),
    needs_root: false,
    scratch_fs: None,
};
