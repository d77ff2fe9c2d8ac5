//! Copying trees and inodes with every attribute: data (reflink where the
//! file system can, `copy_file_range` elsewhere, holes kept), mode, owner,
//! times to the nanosecond, xattrs, hardlinks, devices, fifos, sockets.
//! Used by the vfs backend to create a child layer and by overlay2 to copy
//! up a hardlink target. Everything is fd-relative and never follows links.

use std::collections::HashMap;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{self as rfs, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::archive::write::data_segments;
use crate::fsx::{self, XattrTarget};
use crate::resolve::{join, open_beneath, split_parent};
use crate::whiteout;

/// What a copy did (for status lines and benchmarks).
#[derive(Debug, Default)]
pub struct CopyStats {
    pub files: AtomicU64,
    pub reflinked: AtomicU64,
    pub bytes_copied: AtomicU64,
}

/// How file data is copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataCopy {
    /// Try FICLONE first, then copy_file_range, then read/write.
    Auto,
    /// Never share data: a plain read/write copy (for comparison, and for
    /// file systems whose sharing is not wanted).
    NoReflink,
}

/// What a copy learns as it goes and what decides default owners/modes.
#[derive(Debug)]
struct Ctx {
    /// FICLONE failed once as unsupported: do not try it again.
    no_ficlone: std::sync::atomic::AtomicBool,
    owner: (u32, u32),
    umask: u32,
}

impl Ctx {
    fn new() -> Ctx {
        Ctx {
            no_ficlone: std::sync::atomic::AtomicBool::new(false),
            owner: (
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
            ),
            umask: fsx::current_umask(),
        }
    }
}

/// What a new inode inherits from the directory it is made in.
#[derive(Debug, Clone, Copy)]
struct Parent {
    gid: u32,
    setgid: bool,
    default_acl: bool,
}

impl Parent {
    /// A parent about which nothing is known: chown and chmod always run.
    const UNKNOWN: Parent = Parent {
        gid: u32::MAX,
        setgid: true,
        default_acl: true,
    };

    /// Would a new inode already have this owner and mode?
    fn defaults(&self, ctx: &Ctx, st: &Stat) -> (bool, bool) {
        let mode = st.st_mode & 0o7777;
        let owner = st.st_uid == ctx.owner.0
            && st.st_gid == ctx.owner.1
            && self.gid == ctx.owner.1
            && !self.setgid;
        let perm = owner && !self.default_acl && mode & 0o7000 == 0 && mode & !ctx.umask == mode;
        (owner, perm)
    }
}

fn copy_data(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    size: u64,
    st: &Stat,
    mode: DataCopy,
    stats: Option<&CopyStats>,
    ctx: &Ctx,
) -> io::Result<()> {
    if mode == DataCopy::Auto && size > 0 && !ctx.no_ficlone.load(Ordering::Relaxed) {
        match rfs::ioctl_ficlone(dst, src) {
            Ok(()) => {
                if let Some(s) = stats {
                    s.reflinked.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(());
            }
            Err(
                Errno::OPNOTSUPP
                | Errno::XDEV
                | Errno::INVAL
                | Errno::NOTTY
                | Errno::NOSYS
                | Errno::PERM,
            ) => ctx.no_ficlone.store(true, Ordering::Relaxed),
            Err(e) => return Err(e.into()),
        }
    }
    let segs = if (st.st_blocks as u64) * 512 < size {
        data_segments(src, size)?
    } else {
        None
    };
    let segs = segs.unwrap_or_else(|| {
        vec![crate::archive::tarfmt::Segment {
            offset: 0,
            len: size,
        }]
    });
    let mut end = 0;
    for s in segs {
        copy_range(src, dst, s.offset, s.len, mode == DataCopy::Auto)?;
        end = s.offset + s.len;
        if let Some(st) = stats {
            st.bytes_copied.fetch_add(s.len, Ordering::Relaxed);
        }
    }
    if end != size {
        rfs::ftruncate(dst, size)?; // a hole at the end
    }
    Ok(())
}

/// Copy a byte range; `in_kernel` uses copy_file_range (which shares
/// extents on btrfs and xfs), else a plain read/write copy.
fn copy_range(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    offset: u64,
    len: u64,
    in_kernel: bool,
) -> io::Result<()> {
    let mut done = 0u64;
    let mut use_cfr = in_kernel;
    let mut buf = Vec::new();
    while done < len {
        let want = (len - done).min(1 << 30) as usize;
        if use_cfr {
            let mut off_in = offset + done;
            let mut off_out = offset + done;
            match rfs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want) {
                Ok(0) => break, // source shrank
                Ok(n) => {
                    done += n as u64;
                    continue;
                }
                Err(Errno::XDEV | Errno::NOSYS | Errno::OPNOTSUPP | Errno::INVAL) => {
                    use_cfr = false;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if buf.is_empty() {
            buf = vec![0u8; 256 * 1024];
        }
        let want = want.min(buf.len());
        let n = rustix::io::pread(src, &mut buf[..want], offset + done)?;
        if n == 0 {
            break;
        }
        let mut w = 0;
        while w < n {
            w += rustix::io::pwrite(dst, &buf[w..n], offset + done + w as u64)?;
        }
        done += n as u64;
    }
    Ok(())
}

fn copy_xattrs(src: XattrTarget<'_>, dst: XattrTarget<'_>, keep_overlay: bool) -> io::Result<()> {
    for (k, v) in fsx::xattrs(src)? {
        if !keep_overlay && whiteout::is_overlay_xattr(&k) {
            continue;
        }
        fsx::xattr_set(dst, &k, &v)?;
    }
    Ok(())
}

/// Copy one non-directory inode `sname` of `sdir` (whose stat is `st`) to
/// `dname` in `ddir`, which must not exist.
pub fn copy_node(
    sdir: BorrowedFd<'_>,
    sname: &CStr,
    st: &Stat,
    ddir: BorrowedFd<'_>,
    dname: &CStr,
    stats: Option<&CopyStats>,
) -> io::Result<()> {
    copy_node_with(
        sdir,
        sname,
        st,
        ddir,
        dname,
        DataCopy::Auto,
        stats,
        false,
        &Ctx::new(),
        Parent::UNKNOWN,
    )
}

#[allow(clippy::too_many_arguments)]
fn copy_node_with(
    sdir: BorrowedFd<'_>,
    sname: &CStr,
    st: &Stat,
    ddir: BorrowedFd<'_>,
    dname: &CStr,
    mode: DataCopy,
    stats: Option<&CopyStats>,
    keep_overlay: bool,
    ctx: &Ctx,
    parent: Parent,
) -> io::Result<()> {
    let ft = fsx::file_type(st);
    let perm = Mode::from_raw_mode(st.st_mode & 0o7777);
    let (default_owner, default_mode) = parent.defaults(ctx, st);
    match ft {
        FileType::RegularFile => {
            let sfd = fsx::open_file_at(sdir, sname)?;
            let dfd = rfs::openat(
                ddir,
                dname,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(st.st_mode & 0o777),
            )?;
            copy_data(
                sfd.as_fd(),
                dfd.as_fd(),
                st.st_size as u64,
                st,
                mode,
                stats,
                ctx,
            )?;
            if !default_owner {
                fsx::chown_fd(dfd.as_fd(), st.st_uid, st.st_gid)?;
            }
            if !default_mode {
                rfs::fchmod(&dfd, perm)?;
            }
            copy_xattrs(
                XattrTarget::Fd(sfd.as_fd()),
                XattrTarget::Fd(dfd.as_fd()),
                keep_overlay,
            )?;
            fsx::set_times_fd(dfd.as_fd(), fsx::atime_of(st), fsx::mtime_of(st))?;
            if let Some(s) = stats {
                s.files.fetch_add(1, Ordering::Relaxed);
            }
        }
        FileType::Symlink => {
            let t = rfs::readlinkat(sdir, sname, Vec::new())?;
            rfs::symlinkat(t.as_c_str(), ddir, dname)?;
            if !default_owner {
                fsx::chown_at(ddir, dname, st.st_uid, st.st_gid)?;
            }
            copy_xattrs(
                XattrTarget::At(sdir, sname.to_bytes()),
                XattrTarget::At(ddir, dname.to_bytes()),
                keep_overlay,
            )?;
            fsx::set_times_at(ddir, dname, fsx::atime_of(st), fsx::mtime_of(st))?;
        }
        FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo | FileType::Socket => {
            rfs::mknodat(ddir, dname, ft, Mode::from_raw_mode(0o600), st.st_rdev)?;
            fsx::chown_at(ddir, dname, st.st_uid, st.st_gid)?;
            rfs::chmodat(ddir, dname, perm, rfs::AtFlags::empty())?;
            copy_xattrs(
                XattrTarget::At(sdir, sname.to_bytes()),
                XattrTarget::At(ddir, dname.to_bytes()),
                keep_overlay,
            )?;
            fsx::set_times_at(ddir, dname, fsx::atime_of(st), fsx::mtime_of(st))?;
        }
        FileType::Directory | FileType::Unknown => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a copyable non-directory",
            ));
        }
    }
    Ok(())
}

/// Give a new directory the source's owner, mode and xattrs; returns what
/// its own children will inherit from it.
fn copy_dir_meta(
    sfd: BorrowedFd<'_>,
    st: &Stat,
    dfd: BorrowedFd<'_>,
    keep_overlay: bool,
    ctx: &Ctx,
    parent: Parent,
) -> io::Result<Parent> {
    let (default_owner, default_mode) = parent.defaults(ctx, st);
    if !default_owner {
        fsx::chown_fd(dfd, st.st_uid, st.st_gid)?;
    }
    if !default_mode {
        rfs::fchmod(dfd, Mode::from_raw_mode(st.st_mode & 0o7777))?;
    }
    let mut default_acl = false;
    for (k, v) in fsx::xattrs(XattrTarget::Fd(sfd))? {
        if !keep_overlay && whiteout::is_overlay_xattr(&k) {
            continue;
        }
        default_acl |= k == b"system.posix_acl_default";
        fsx::xattr_set(XattrTarget::Fd(dfd), &k, &v)?;
    }
    Ok(Parent {
        gid: st.st_gid,
        setgid: st.st_mode & 0o2000 != 0,
        default_acl,
    })
}

/// Options of [`copy_tree`].
#[derive(Debug, Clone, Copy)]
pub struct TreeCopy<'a> {
    pub data: DataCopy,
    pub stats: Option<&'a CopyStats>,
    /// Keep `*.overlay.*` xattrs (copying an overlay upper as is).
    pub keep_overlay_xattrs: bool,
}

impl Default for TreeCopy<'_> {
    fn default() -> Self {
        TreeCopy {
            data: DataCopy::Auto,
            stats: None,
            keep_overlay_xattrs: false,
        }
    }
}

/// Copy the whole tree under `src` into the (empty) directory `dst`,
/// including the root directory's own attributes. Hardlinks inside the
/// tree stay hardlinks. Errors name the path inside the tree.
pub fn copy_tree(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, opts: TreeCopy<'_>) -> io::Result<()> {
    struct Frame {
        sfd: OwnedFd,
        dfd: OwnedFd,
        st: Stat,
        path: Vec<u8>,
        entries: std::vec::IntoIter<fsx::DirEntry>,
        /// What entries made in `dfd` inherit.
        inherit: Parent,
    }
    let cx = Ctx::new();
    let ctx = |p: &[u8], e: io::Error| -> io::Error {
        io::Error::new(e.kind(), format!("{}: {e}", String::from_utf8_lossy(p)))
    };
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let sroot = rustix::io::dup(src)?;
    let droot = rustix::io::dup(dst)?;
    let st = rfs::fstat(&sroot)?;
    let inherit = copy_dir_meta(
        sroot.as_fd(),
        &st,
        droot.as_fd(),
        opts.keep_overlay_xattrs,
        &cx,
        Parent::UNKNOWN,
    )
    .map_err(|e| ctx(b"/", e))?;
    let entries = fsx::read_dir_sorted(sroot.as_fd())?.into_iter();
    let mut stack = vec![Frame {
        sfd: sroot,
        dfd: droot,
        st,
        path: Vec::new(),
        entries,
        inherit,
    }];
    while let Some(top) = stack.last_mut() {
        let Some(e) = top.entries.next() else {
            if let Some(f) = stack.pop() {
                fsx::set_times_fd(f.dfd.as_fd(), fsx::atime_of(&f.st), fsx::mtime_of(&f.st))
                    .map_err(|e| ctx(&f.path, e))?;
            }
            continue;
        };
        let path = join(&top.path, e.name.to_bytes());
        let st = fsx::stat_at(top.sfd.as_fd(), &e.name).map_err(|er| ctx(&path, er))?;
        let ft = fsx::file_type(&st);
        if ft == FileType::Directory {
            rfs::mkdirat(
                &top.dfd,
                e.name.as_c_str(),
                Mode::from_raw_mode(st.st_mode & 0o777),
            )
            .map_err(|er| ctx(&path, er.into()))?;
            let sfd = fsx::open_dir_at(top.sfd.as_fd(), &e.name).map_err(|er| ctx(&path, er))?;
            let dfd = fsx::open_dir_at(top.dfd.as_fd(), &e.name).map_err(|er| ctx(&path, er))?;
            let inherit = copy_dir_meta(
                sfd.as_fd(),
                &st,
                dfd.as_fd(),
                opts.keep_overlay_xattrs,
                &cx,
                top.inherit,
            )
            .map_err(|er| ctx(&path, er))?;
            let entries = fsx::read_dir_sorted(sfd.as_fd())
                .map_err(|er| ctx(&path, er))?
                .into_iter();
            stack.push(Frame {
                sfd,
                dfd,
                st,
                path,
                entries,
                inherit,
            });
            continue;
        }
        if st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = links.get(&key) {
                let (fdir, fbase) = split_parent(first);
                let fdirfd = open_beneath(
                    dst,
                    fdir,
                    OFlags::PATH | OFlags::DIRECTORY,
                    crate::resolve::openat2_available(),
                )
                .map_err(|er| ctx(&path, er))?;
                let fb = fsx::cstr(fbase)?;
                rfs::linkat(
                    &fdirfd,
                    fb.as_c_str(),
                    &top.dfd,
                    e.name.as_c_str(),
                    rfs::AtFlags::empty(),
                )
                .map_err(|er| ctx(&path, er.into()))?;
                continue;
            }
            links.insert(key, path.clone());
        }
        copy_node_with(
            top.sfd.as_fd(),
            &e.name,
            &st,
            top.dfd.as_fd(),
            &e.name,
            opts.data,
            opts.stats,
            opts.keep_overlay_xattrs,
            &cx,
            top.inherit,
        )
        .map_err(|er| ctx(&path, er))?;
    }
    Ok(())
}
