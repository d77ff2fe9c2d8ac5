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
//! bookkeeping of [`strata_core::state`].

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, mount_bind, mount_remount};
use strata_core::archive::{self, ApplyOptions};
use strata_core::changes;
use strata_core::copy::{self, CopyStats, DataCopy, TreeCopy};
use strata_core::error::IoContext;
use strata_core::state::{DriverState, LayerMeta, remove_plain_dir};
use strata_core::{
    ApplyStats, Capabilities, Change, CreateOpts, DiffBase, DiffStats, Driver, DriverFactory,
    DriverOptions, Error, LayerId, LayerInfo, Pairs, Result, fsx, mounts,
};

pub const NAME: &str = "vfs";

/// The vfs driver.
#[derive(Debug)]
pub struct Vfs {
    root: PathBuf,
    state: DriverState,
    mnt: PathBuf,
    privileged: bool,
    data: DataCopy,
    probe: Probe,
}

#[derive(Debug, Clone, Copy)]
struct Probe {
    reflink: bool,
    user_xattrs: bool,
    trusted_xattrs: bool,
}

fn probe(dir: &Path) -> Result<Probe> {
    let d = fsx::open_dir_path(dir).ctx("open", dir)?;
    let a = c".probe-a";
    let b = c".probe-b";
    let _ = fsx::remove_all_at(d.as_fd(), a);
    let _ = fsx::remove_all_at(d.as_fd(), b);
    let fa = rustix::fs::openat(
        &d,
        a,
        rustix::fs::OFlags::CREATE | rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .ctx("create probe", dir)?;
    rustix::io::write(&fa, b"probe").ctx("write probe", dir)?;
    let fb = rustix::fs::openat(
        &d,
        b,
        rustix::fs::OFlags::CREATE | rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .ctx("create probe", dir)?;
    let reflink = rustix::fs::ioctl_ficlone(&fb, &fa).is_ok();
    let user_xattrs =
        fsx::xattr_set(fsx::XattrTarget::Fd(fa.as_fd()), b"user.strata.probe", b"1").is_ok();
    let trusted_xattrs = fsx::xattr_set(
        fsx::XattrTarget::Fd(fa.as_fd()),
        b"trusted.strata.probe",
        b"1",
    )
    .is_ok();
    let _ = fsx::remove_all_at(d.as_fd(), a);
    let _ = fsx::remove_all_at(d.as_fd(), b);
    Ok(Probe {
        reflink,
        user_xattrs,
        trusted_xattrs,
    })
}

/// Name of the file system type under `path` (for status lines).
pub fn fs_type_name(path: &Path) -> String {
    match rustix::fs::statfs(path) {
        Ok(s) => match s.f_type as u64 {
            0xEF53 => "ext4".into(),
            0x9123683E => "btrfs".into(),
            0x58465342 => "xfs".into(),
            0x01021994 => "tmpfs".into(),
            0x794c7630 => "overlayfs".into(),
            0x2FC12FC1 => "zfs".into(),
            0xE0F5E1E2 => "erofs".into(),
            0x65735546 => "fuse".into(),
            0x6969 => "nfs".into(),
            other => format!("0x{other:x}"),
        },
        Err(e) => format!("unknown ({e})"),
    }
}

impl Vfs {
    pub fn open(root: &Path, mut opts: DriverOptions) -> Result<Self> {
        let no_reflink = opts.take_bool("vfs.no_reflink")?.unwrap_or(false);
        opts.finish(NAME)?;
        let home = root.join(NAME);
        let layers = home.join("dir");
        let state = DriverState::open(NAME, &home, &layers, &[])?;
        let mnt = home.join("mnt");
        fsx::mkdir_p(&mnt, 0o700).ctx("create directory", &mnt)?;
        let probe = probe(&home)?;
        let v = Vfs {
            root: root.to_path_buf(),
            state,
            mnt,
            privileged: fsx::is_root(),
            data: if no_reflink {
                DataCopy::NoReflink
            } else {
                DataCopy::Auto
            },
            probe,
        };
        v.recover()?;
        Ok(v)
    }

    /// Clean crash leftovers: staging and trash directories, metadata
    /// without layers, mount counts whose mount is gone, mounts without a
    /// count.
    fn recover(&self) -> Result<()> {
        let _l = self.state.lock()?;
        let r = self.state.recover(&remove_plain_dir)?;
        if !r.is_empty() {
            tracing::info!(?r, "vfs: recovered from an interrupted operation");
        }
        let mounted = mounts::mounts_under(&self.mnt).ctx("read mounts", &self.mnt)?;
        for id in self.state.mounted_ids()? {
            let meta = match self.state.meta(&id) {
                Ok(m) => m,
                Err(_) => {
                    self.state.set_mount_count(&id, 0)?;
                    continue;
                }
            };
            if self.needs_bind(&meta)
                && !mounted
                    .iter()
                    .any(|m| m.mount_point == self.mnt.join(id.as_str()))
            {
                tracing::info!(layer = %id, "vfs: mount count without a mount; reset");
                self.state.set_mount_count(&id, 0)?;
            }
        }
        for m in mounted {
            let id = m
                .mount_point
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|s| LayerId::new(s).ok());
            let counted = id.as_ref().is_some_and(|id| self.state.mount_count(id) > 0);
            if !counted {
                tracing::info!(path = %m.mount_point.display(), "vfs: unmounting a stale mount");
                mounts::unmount_path(&m.mount_point).ctx("unmount", &m.mount_point)?;
            }
        }
        Ok(())
    }

    fn needs_bind(&self, meta: &LayerMeta) -> bool {
        !meta.rw && self.privileged
    }

    fn tree(&self, id: &LayerId) -> PathBuf {
        self.state.layer_path(id)
    }

    /// Build a new layer in a staging directory: a copy of the parent,
    /// then `fill`; commit atomically, or remove everything on error.
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
        let r = (|| {
            fsx::mkdir_p(&staging, 0o755).ctx("create staging", &staging)?;
            let dst = fsx::open_dir_path(&staging).ctx("open", &staging)?;
            match parent {
                Some(p) => {
                    let src_path = self.tree(p);
                    let src = fsx::open_dir_path(&src_path)
                        .map_err(|_| Error::not_found(format!("parent layer {p}")))?;
                    let stats = CopyStats::default();
                    copy::copy_tree(
                        src.as_fd(),
                        dst.as_fd(),
                        TreeCopy {
                            data: self.data,
                            stats: Some(&stats),
                            keep_overlay_xattrs: false,
                        },
                    )
                    .ctx("copy parent layer", &src_path)?;
                    tracing::debug!(?stats, "vfs: copied parent");
                }
                None => {
                    rustix::fs::fchmod(&dst, rustix::fs::Mode::from_raw_mode(0o755))
                        .ctx("chmod", &staging)?;
                }
            }
            let applied = fill(&staging)?;
            let mut meta = LayerMeta::new(id, parent, rw);
            if applied {
                meta.extra
                    .insert(strata_core::state::APPLIED.into(), "true".into());
            }
            self.state.commit(&staging, &meta)
        })();
        if r.is_err() {
            let _ = remove_plain_dir(&staging);
        }
        r
    }

    fn view(&self, id: &LayerId) -> Result<PathBuf> {
        self.state.meta(id)?;
        Ok(self.tree(id))
    }

    fn base_view(&self, id: &LayerId, base: DiffBase<'_>) -> Result<Option<PathBuf>> {
        Ok(match base {
            DiffBase::Empty => None,
            DiffBase::Parent => match self.state.meta(id)?.parent {
                Some(p) => Some(self.view(&p)?),
                None => None,
            },
            DiffBase::Layer(p) => Some(self.view(p)?),
        })
    }

    fn walk_with(
        &self,
        id: &LayerId,
        base: DiffBase<'_>,
        compare_content: bool,
        f: &mut dyn FnMut(strata_core::archive::write::DiffItem<'_>) -> Result<()>,
    ) -> Result<()> {
        let lp = self.view(id)?;
        let bp = self.base_view(id, base)?;
        let l = fsx::open_dir_path(&lp).ctx("open", &lp)?;
        let b = match &bp {
            Some(p) => Some(fsx::open_dir_path(p).ctx("open", p)?),
            None => None,
        };
        let opts = changes::WalkOpts {
            filter: None,
            compare_content,
        };
        changes::walk_with(l.as_fd(), b.as_ref().map(|b| b.as_fd()), opts, f)
    }
}

impl Driver for Vfs {
    fn name(&self) -> &'static str {
        NAME
    }

    fn root(&self) -> &Path {
        &self.root
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            native_diff: false,
            max_depth: None,
            shares_data: self.probe.reflink && self.data == DataCopy::Auto,
            read_only_mounts: self.privileged,
            privileged: self.privileged,
            user_xattrs: self.probe.user_xattrs,
            trusted_xattrs: self.probe.trusted_xattrs,
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
            // in place, into a layer made by `create`
            let meta = self.state.begin_apply_in_place(id, parent)?;
            let p = self.tree(id);
            let fd = fsx::open_dir_path(&p).ctx("open", &p)?;
            let r = archive::apply(
                fd.as_fd(),
                &p,
                diff,
                ApplyOptions {
                    raw: strata_core::archive::tarfmt::reborrow_sink(&mut raw),
                    ..Default::default()
                },
            )
            .and_then(|s| self.state.mark_applied(meta.clone()).map(|()| s));
            if r.is_err() {
                tracing::info!(layer = %id, "apply failed; removing the half-made layer");
                let _ = self.remove(&meta.id);
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
        if !self.needs_bind(&meta) {
            self.state.set_mount_count(id, n + 1)?;
            return Ok(self.tree(id));
        }
        let mp = self.mnt.join(id.as_str());
        if n == 0 || !mounts::is_mounted(&mp).ctx("read mounts", &mp)? {
            fsx::mkdir_p(&mp, 0o755).ctx("create mount point", &mp)?;
            let src = self.tree(id);
            mount_bind(&src, &mp).ctx("bind mount", &mp)?;
            if let Err(e) = mount_remount(
                &mp,
                MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
                c"",
            ) {
                let _ = mounts::unmount_path(&mp);
                return Err(Error::io("remount read-only", &mp, e));
            }
        }
        self.state.set_mount_count(id, n + 1)?;
        Ok(mp)
    }

    fn unmount(&self, id: &LayerId) -> Result<()> {
        let _l = self.state.lock()?;
        let meta = self.state.meta(id)?;
        let n = self.state.mount_count(id);
        if n == 0 {
            return Ok(());
        }
        if n == 1 && self.needs_bind(&meta) {
            let mp = self.mnt.join(id.as_str());
            mounts::unmount_path(&mp).ctx("unmount", &mp)?;
            let _ = std::fs::remove_dir(&mp);
        }
        self.state.set_mount_count(id, n - 1)
    }

    fn diff(&self, id: &LayerId, base: DiffBase<'_>, out: &mut dyn Write) -> Result<DiffStats> {
        changes::write_diff_with(out, |emit| {
            self.walk_with(id, base, true, emit).map(|()| "naive")
        })
    }

    fn changes(&self, id: &LayerId, base: DiffBase<'_>) -> Result<Vec<Change>> {
        changes::collect_changes(|emit| self.walk_with(id, base, true, emit))
    }

    fn diff_size(&self, id: &LayerId, base: DiffBase<'_>) -> Result<u64> {
        changes::collect_size(|emit| self.walk_with(id, base, false, emit))
    }

    fn remove(&self, id: &LayerId) -> Result<()> {
        let t = self.state.begin_remove(id)?;
        let _ = std::fs::remove_dir(self.mnt.join(id.as_str()));
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
        vec![
            ("Driver".into(), NAME.into()),
            ("Root".into(), self.root.display().to_string()),
            ("Backing Filesystem".into(), fs_type_name(&self.state.home)),
            (
                "Reflink".into(),
                if self.probe.reflink && self.data == DataCopy::Auto {
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
            ("Layers".into(), layers.to_string()),
        ]
    }

    fn metadata(&self, id: &LayerId) -> Result<Pairs> {
        let chain = self.state.chain(id)?;
        let mut pairs: Pairs = vec![("Path".into(), self.tree(id).display().to_string())];
        pairs.extend(self.state.layer_pairs(&chain));
        Ok(pairs)
    }

    fn cleanup(&self) -> Result<()> {
        self.state.unmount_all(&self.mnt)
    }
}

/// Registry entry of the vfs driver.
#[derive(Debug, Default)]
pub struct Factory;

impl DriverFactory for Factory {
    fn name(&self) -> &'static str {
        NAME
    }

    fn supported(&self, _root: &Path) -> Result<()> {
        Ok(())
    }

    fn open(&self, root: &Path, opts: DriverOptions) -> Result<Box<dyn Driver>> {
        Ok(Box::new(Vfs::open(root, opts)?))
    }
}
