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

use crate::fsx::{self, XattrTarget};
use crate::resolve::{join, open_beneath, split_parent};
use crate::whiteout;

/// What a copy did (for status lines and benchmarks).
#[derive(Debug, Default)]
pub struct CopyStats {
    /// Files copied.
    pub files: AtomicU64,
    /// Files whose data was reflinked rather than copied.
    pub reflinked: AtomicU64,
    /// Bytes copied (not reflinked).
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
        fsx::data_segments(src, size)?
    } else {
        None
    };
    let segs = segs.unwrap_or_else(|| {
        vec![fsx::Segment {
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
    let opts = TreeCopy {
        stats,
        ..TreeCopy::default()
    };
    let c = Copier::new(opts);
    let src = Node {
        dir: sdir,
        name: sname,
        st,
    };
    c.node(src, ddir, dname, Parent::UNKNOWN)
}

/// A source inode: its directory, its name, its stat.
#[derive(Clone, Copy)]
struct Node<'a> {
    dir: BorrowedFd<'a>,
    name: &'a CStr,
    st: &'a Stat,
}

/// What a copy carries along: its options and what decides defaults.
struct Copier<'o> {
    opts: TreeCopy<'o>,
    ctx: Ctx,
}

impl<'o> Copier<'o> {
    fn new(opts: TreeCopy<'o>) -> Copier<'o> {
        Copier {
            opts,
            ctx: Ctx::new(),
        }
    }

    fn xattrs(&self, src: XattrTarget<'_>, dst: XattrTarget<'_>) -> io::Result<()> {
        copy_xattrs(src, dst, self.opts.keep_overlay_xattrs)
    }

    /// Copy a non-directory to `dname` in `ddir` (made in a directory
    /// whose defaults are `parent`).
    fn node(
        &self,
        src: Node<'_>,
        ddir: BorrowedFd<'_>,
        dname: &CStr,
        parent: Parent,
    ) -> io::Result<()> {
        let st = src.st;
        let (default_owner, default_mode) = parent.defaults(&self.ctx, st);
        let ft = fsx::file_type(st);
        match ft {
            FileType::RegularFile => {
                return self.file(src, ddir, dname, (default_owner, default_mode));
            }
            FileType::Symlink => {
                let t = rfs::readlinkat(src.dir, src.name, Vec::new())?;
                rfs::symlinkat(t.as_c_str(), ddir, dname)?;
                if !default_owner {
                    fsx::chown_at(ddir, dname, st.st_uid, st.st_gid)?;
                }
            }
            FileType::CharacterDevice
            | FileType::BlockDevice
            | FileType::Fifo
            | FileType::Socket => {
                rfs::mknodat(ddir, dname, ft, Mode::from_raw_mode(0o600), st.st_rdev)?;
                fsx::chown_at(ddir, dname, st.st_uid, st.st_gid)?;
                let perm = Mode::from_raw_mode(st.st_mode & 0o7777);
                rfs::chmodat(ddir, dname, perm, rfs::AtFlags::empty())?;
            }
            FileType::Directory | FileType::Unknown => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a copyable non-directory",
                ));
            }
        }
        self.xattrs(
            XattrTarget::At(src.dir, src.name.to_bytes()),
            XattrTarget::At(ddir, dname.to_bytes()),
        )?;
        fsx::set_times_at(ddir, dname, fsx::atime_of(st), fsx::mtime_of(st))
    }

    /// A regular file: its data (shared, copied in the kernel, or read and
    /// written, holes kept), then its attributes.
    fn file(
        &self,
        src: Node<'_>,
        ddir: BorrowedFd<'_>,
        dname: &CStr,
        defaults: (bool, bool),
    ) -> io::Result<()> {
        let st = src.st;
        let sfd = fsx::open_file_at(src.dir, src.name)?;
        let flags =
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let dfd = rfs::openat(ddir, dname, flags, Mode::from_raw_mode(st.st_mode & 0o777))?;
        let size = st.st_size as u64;
        copy_data(
            sfd.as_fd(),
            dfd.as_fd(),
            size,
            st,
            self.opts.data,
            self.opts.stats,
            &self.ctx,
        )?;
        let (default_owner, default_mode) = defaults;
        if !default_owner {
            fsx::chown_fd(dfd.as_fd(), st.st_uid, st.st_gid)?;
        }
        if !default_mode {
            rfs::fchmod(&dfd, Mode::from_raw_mode(st.st_mode & 0o7777))?;
        }
        self.xattrs(XattrTarget::Fd(sfd.as_fd()), XattrTarget::Fd(dfd.as_fd()))?;
        fsx::set_times_fd(dfd.as_fd(), fsx::atime_of(st), fsx::mtime_of(st))?;
        if let Some(s) = self.opts.stats {
            s.files.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
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
    /// How file data is copied.
    pub data: DataCopy,
    /// Counters to add to, if any.
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
    let mut t = TreeCopier {
        c: Copier::new(opts),
        dst,
        links: HashMap::new(),
        stack: Vec::new(),
    };
    let sroot = rustix::io::dup(src)?;
    let droot = rustix::io::dup(dst)?;
    let st = rfs::fstat(&sroot)?;
    t.enter(sroot, droot, st, Vec::new(), Parent::UNKNOWN)?;
    while let Some(top) = t.stack.last_mut() {
        match top.entries.next() {
            Some(e) => t.entry(e)?,
            None => t.leave()?,
        }
    }
    Ok(())
}

/// A directory being copied.
struct Frame {
    sfd: OwnedFd,
    dfd: OwnedFd,
    st: Stat,
    path: Vec<u8>,
    entries: std::vec::IntoIter<fsx::DirEntry>,
    /// What entries made in `dfd` inherit.
    inherit: Parent,
}

/// A tree copy: the directories on the way, and the first copy of each
/// multiply-linked inode.
struct TreeCopier<'o, 'd> {
    c: Copier<'o>,
    dst: BorrowedFd<'d>,
    links: HashMap<(u64, u64), Vec<u8>>,
    stack: Vec<Frame>,
}

/// An error naming the path inside the tree.
fn at(p: &[u8], e: impl Into<io::Error>) -> io::Error {
    let e = e.into();
    io::Error::new(e.kind(), format!("{}: {e}", crate::error::Name(p.to_vec())))
}

impl TreeCopier<'_, '_> {
    /// Give a new directory its attributes and walk into it.
    fn enter(
        &mut self,
        sfd: OwnedFd,
        dfd: OwnedFd,
        st: Stat,
        path: Vec<u8>,
        parent: Parent,
    ) -> io::Result<()> {
        let keep = self.c.opts.keep_overlay_xattrs;
        let inherit = copy_dir_meta(sfd.as_fd(), &st, dfd.as_fd(), keep, &self.c.ctx, parent)
            .map_err(|e| at(&path, e))?;
        let entries = fsx::read_dir_sorted(sfd.as_fd())
            .map_err(|e| at(&path, e))?
            .into_iter();
        self.stack.push(Frame {
            sfd,
            dfd,
            st,
            path,
            entries,
            inherit,
        });
        Ok(())
    }

    /// A directory is done: its times go last (its entries changed them).
    fn leave(&mut self) -> io::Result<()> {
        if let Some(f) = self.stack.pop() {
            fsx::set_times_fd(f.dfd.as_fd(), fsx::atime_of(&f.st), fsx::mtime_of(&f.st))
                .map_err(|e| at(&f.path, e))?;
        }
        Ok(())
    }

    fn entry(&mut self, e: fsx::DirEntry) -> io::Result<()> {
        let Some(top) = self.stack.last() else {
            return Ok(());
        };
        let path = join(&top.path, e.name.to_bytes());
        let st = fsx::stat_at(top.sfd.as_fd(), &e.name).map_err(|er| at(&path, er))?;
        if fsx::file_type(&st) == FileType::Directory {
            let perm = Mode::from_raw_mode(st.st_mode & 0o777);
            rfs::mkdirat(&top.dfd, e.name.as_c_str(), perm).map_err(|er| at(&path, er))?;
            let sfd = fsx::open_dir_at(top.sfd.as_fd(), &e.name).map_err(|er| at(&path, er))?;
            let dfd = fsx::open_dir_at(top.dfd.as_fd(), &e.name).map_err(|er| at(&path, er))?;
            let inherit = top.inherit;
            return self.enter(sfd, dfd, st, path, inherit);
        }
        if st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key) {
                return self.link_again(first.clone(), &e.name, &path);
            }
            self.links.insert(key, path.clone());
        }
        let src = Node {
            dir: top.sfd.as_fd(),
            name: &e.name,
            st: &st,
        };
        self.c
            .node(src, top.dfd.as_fd(), &e.name, top.inherit)
            .map_err(|er| at(&path, er))
    }

    /// Another name of an inode copied already: a hardlink to the copy.
    fn link_again(&self, first: Vec<u8>, name: &CStr, path: &[u8]) -> io::Result<()> {
        let Some(top) = self.stack.last() else {
            return Ok(());
        };
        let (fdir, fbase) = split_parent(&first);
        let flags = OFlags::PATH | OFlags::DIRECTORY;
        let fdirfd = open_beneath(self.dst, fdir, flags, crate::resolve::openat2_available())
            .map_err(|er| at(path, er))?;
        let fb = fsx::cstr(fbase)?;
        rfs::linkat(
            &fdirfd,
            fb.as_c_str(),
            &top.dfd,
            name,
            rfs::AtFlags::empty(),
        )
        .map_err(|er| at(path, er))
    }
}
