//! Creating the inodes of tar entries: directories, files (with their
//! content, holes kept), symlinks, devices and fifos. Whatever stood at an
//! entry's name is removed first, never written through.

use std::ffi::CStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{self as rfs, FileType, Mode, OFlags, Timespec};
use rustix::io::Errno;

use super::{Applier, Parent, owner, sys, ts};
use crate::archive::tar::{EntryHead, Kind, TarReader};
use crate::error::{Error, Result};
use crate::fsx::{self, XattrTarget};
use crate::resolve::{self, Missing, join};
use crate::whiteout::WhiteoutFormat;

/// What every kind of entry needs to be created.
pub(super) struct Slot<'p> {
    pub pfd: BorrowedFd<'p>,
    pub name: &'p CStr,
    /// The resolved path (for messages and bookkeeping).
    pub rpath: Vec<u8>,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits of the header.
    pub mode: u32,
    pub at: Timespec,
    pub mt: Timespec,
    /// New inodes already have the header's owner / mode.
    pub default_owner: bool,
    pub default_mode: bool,
}

impl Applier<'_> {
    /// Create the entry `head` as `base` in directory `dir`.
    pub(super) fn create<R: Read>(
        &mut self,
        head: &EntryHead,
        dir: &[u8],
        base: &[u8],
        xattrs: &[(&[u8], &[u8])],
        tr: &mut TarReader<R>,
    ) -> Result<()> {
        let cbase = resolve::component(base)?;
        let parent = self
            .parent_dir(dir, Missing::Create)?
            .ok_or_else(|| Error::not_found("parent directory"))?;
        let pfd = parent.dir.fd.as_fd();
        let rpath = join(&parent.dir.path, base);
        if head.kind == Kind::Hardlink {
            let existing = fsx::try_stat_at(pfd, &cbase).map_err(|e| sys("stat", &rpath, e))?;
            if existing.is_some() {
                self.invalidate();
            }
            return self.hardlink(head, pfd, &cbase, &rpath, existing.as_ref());
        }
        let slot = self.slot(head, &parent, pfd, &cbase, rpath)?;
        match head.kind {
            Kind::Dir => {
                self.forget_parent(&slot.rpath);
                return self.create_dir(head, &slot, xattrs);
            }
            Kind::File => self.create_file(head, &slot, xattrs, tr)?,
            Kind::Symlink => self.create_symlink(head, &slot, base, xattrs)?,
            Kind::Char | Kind::Block | Kind::Fifo => self.create_node(head, &slot, base, xattrs)?,
            Kind::Hardlink => return Err(Error::invalid("entry", "internal: a hardlink here")),
        }
        self.created.insert(&slot.rpath);
        Ok(())
    }

    fn slot<'p>(
        &self,
        head: &EntryHead,
        parent: &Parent,
        pfd: BorrowedFd<'p>,
        name: &'p CStr,
        rpath: Vec<u8>,
    ) -> Result<Slot<'p>> {
        let uid = owner(head.uid, "uid")?;
        let gid = owner(head.gid, "gid")?;
        let mode = head.mode & 0o7777;
        Ok(Slot {
            pfd,
            name,
            rpath,
            uid,
            gid,
            mode,
            at: ts(head.atime.unwrap_or(head.mtime)),
            mt: ts(head.mtime),
            default_owner: self.owner_is_default(parent, uid, gid),
            default_mode: self.mode_is_default(parent, mode),
        })
    }

    /// Run `make`; if the name is taken, clear it and run `make` again.
    fn make_fresh<T>(
        &mut self,
        s: &Slot<'_>,
        op: &'static str,
        make: impl Fn() -> rustix::io::Result<T>,
    ) -> Result<T> {
        match make() {
            Ok(v) => Ok(v),
            Err(Errno::EXIST) => {
                self.clear_slot(s.pfd, s.name, &s.rpath)?;
                make().map_err(|e| sys(op, &s.rpath, e))
            }
            Err(e) => Err(sys(op, &s.rpath, e)),
        }
    }

    fn set_xattrs(
        &self,
        t: XattrTarget<'_>,
        s: &Slot<'_>,
        xattrs: &[(&[u8], &[u8])],
    ) -> Result<()> {
        for (k, v) in xattrs {
            fsx::xattr_set(t, k, v).map_err(|e| sys("setxattr", &s.rpath, e))?;
        }
        Ok(())
    }

    /// chmod by name: only for an inode made by us just now, which no
    /// symlink can stand in for.
    fn chmod_new(&self, s: &Slot<'_>) -> Result<()> {
        rfs::chmodat(
            s.pfd,
            s.name,
            Mode::from_raw_mode(s.mode),
            rfs::AtFlags::empty(),
        )
        .map_err(|e| sys("chmod", &s.rpath, e))
    }

    fn create_dir(
        &mut self,
        head: &EntryHead,
        s: &Slot<'_>,
        xattrs: &[(&[u8], &[u8])],
    ) -> Result<()> {
        let mut opaque = false;
        let perm = Mode::from_raw_mode(s.mode & 0o777);
        match rfs::mkdirat(s.pfd, s.name, perm) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                let st = fsx::stat_at(s.pfd, s.name).map_err(|e| sys("stat", &s.rpath, e))?;
                if fsx::file_type(&st) == FileType::Directory {
                    // an existing directory gets the header's attributes
                    let fd =
                        fsx::open_dir_at(s.pfd, s.name).map_err(|e| sys("open", &s.rpath, e))?;
                    self.set_meta_fd(fd.as_fd(), &s.rpath, head, xattrs)?;
                    self.dir_times.push(&s.rpath, s.at, s.mt);
                    self.created.insert(&s.rpath);
                    return Ok(());
                }
                // a non-directory of this layer (or a whiteout) hid the
                // lower directory: the new one must go on hiding it
                let overlay = matches!(self.format, WhiteoutFormat::Overlay(_));
                opaque = overlay
                    && (fsx::is_whiteout(&st)
                        || matches!(
                            self.res.lower_stat(&s.rpath)?,
                            Some((_, FileType::Directory))
                        ));
                self.clear_slot(s.pfd, s.name, &s.rpath)?;
                rfs::mkdirat(s.pfd, s.name, perm).map_err(|e| sys("mkdir", &s.rpath, e))?;
            }
            Err(e) => return Err(sys("mkdir", &s.rpath, e)),
        }
        // new unless a lower directory shows through it (overlay form)
        let merged = !opaque
            && matches!(self.format, WhiteoutFormat::Overlay(_))
            && matches!(
                self.res.lower_stat(&s.rpath)?,
                Some((_, FileType::Directory))
            );
        if !s.default_owner {
            fsx::chown_at(s.pfd, s.name, s.uid, s.gid).map_err(|e| sys("chown", &s.rpath, e))?;
        }
        if !s.default_mode || !s.default_owner {
            self.chmod_new(s)?;
        }
        if !xattrs.is_empty() || opaque {
            let fd = fsx::open_dir_at(s.pfd, s.name).map_err(|e| sys("open", &s.rpath, e))?;
            self.set_xattrs(XattrTarget::Fd(fd.as_fd()), s, xattrs)?;
            if opaque && let WhiteoutFormat::Overlay(x) = self.format {
                x.set_opaque(XattrTarget::Fd(fd.as_fd()))
                    .map_err(|e| sys("set opaque", &s.rpath, e))?;
            }
        }
        self.dir_times.push(&s.rpath, s.at, s.mt);
        if merged {
            self.created.insert(&s.rpath);
        } else {
            self.created.insert_new_dir(&s.rpath);
        }
        Ok(())
    }

    fn create_file<R: Read>(
        &mut self,
        head: &EntryHead,
        s: &Slot<'_>,
        xattrs: &[(&[u8], &[u8])],
        tr: &mut TarReader<R>,
    ) -> Result<()> {
        let flags =
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let cmode = Mode::from_raw_mode(s.mode & 0o777);
        let fd = self.make_fresh(s, "create", || rfs::openat(s.pfd, s.name, flags, cmode))?;
        let file = std::fs::File::from(fd);
        self.write_content(&file, head, tr, &s.rpath)?;
        let fd = file.as_fd();
        if !s.default_owner {
            fsx::chown_fd(fd, s.uid, s.gid).map_err(|e| sys("chown", &s.rpath, e))?;
        }
        // chown clears setuid/setgid: the mode goes after it
        if !s.default_mode || !s.default_owner {
            rfs::fchmod(fd, Mode::from_raw_mode(s.mode)).map_err(|e| sys("chmod", &s.rpath, e))?;
        }
        self.set_xattrs(XattrTarget::Fd(fd), s, xattrs)?;
        fsx::set_times_fd(fd, s.at, s.mt).map_err(|e| sys("set times", &s.rpath, e))?;
        self.size += head.size;
        Ok(())
    }

    fn create_symlink(
        &mut self,
        head: &EntryHead,
        s: &Slot<'_>,
        base: &[u8],
        xattrs: &[(&[u8], &[u8])],
    ) -> Result<()> {
        if head.link.is_empty() {
            return Err(Error::invalid("symlink", "empty link target"));
        }
        let target = fsx::cstr(&head.link).map_err(|e| sys("symlink", &s.rpath, e))?;
        self.make_fresh(s, "symlink", || {
            rfs::symlinkat(target.as_c_str(), s.pfd, s.name)
        })?;
        if !s.default_owner {
            fsx::chown_at(s.pfd, s.name, s.uid, s.gid).map_err(|e| sys("chown", &s.rpath, e))?;
        }
        self.set_xattrs(XattrTarget::At(s.pfd, base), s, xattrs)?;
        fsx::set_times_at(s.pfd, s.name, s.at, s.mt).map_err(|e| sys("set times", &s.rpath, e))
    }

    fn create_node(
        &mut self,
        head: &EntryHead,
        s: &Slot<'_>,
        base: &[u8],
        xattrs: &[(&[u8], &[u8])],
    ) -> Result<()> {
        let ft = match head.kind {
            Kind::Char => FileType::CharacterDevice,
            Kind::Block => FileType::BlockDevice,
            _ => FileType::Fifo,
        };
        if head.kind == Kind::Char && head.dev_major == 0 && head.dev_minor == 0 {
            return Err(Error::invalid(
                "device",
                "a character device 0/0 is an overlay whiteout; layers use .wh. entries",
            ));
        }
        let dev = rfs::makedev(head.dev_major, head.dev_minor);
        let perm = Mode::from_raw_mode(0o600);
        self.make_fresh(s, "mknod", || rfs::mknodat(s.pfd, s.name, ft, perm, dev))?;
        fsx::chown_at(s.pfd, s.name, s.uid, s.gid).map_err(|e| sys("chown", &s.rpath, e))?;
        self.chmod_new(s)?;
        self.set_xattrs(XattrTarget::At(s.pfd, base), s, xattrs)?;
        fsx::set_times_at(s.pfd, s.name, s.at, s.mt).map_err(|e| sys("set times", &s.rpath, e))
    }

    /// Stream an entry's data into `file` (holes of a sparse file stay
    /// holes).
    fn write_content<R: Read>(
        &mut self,
        file: &std::fs::File,
        head: &EntryHead,
        tr: &mut TarReader<R>,
        rpath: &[u8],
    ) -> Result<()> {
        let Some(segs) = &head.sparse else {
            let mut f = file;
            loop {
                let n = tr.read_data(&mut self.buf)?;
                if n == 0 {
                    return Ok(());
                }
                f.write_all(&self.buf[..n])
                    .map_err(|e| sys("write", rpath, e))?;
            }
        };
        for s in segs {
            let mut off = s.offset;
            let mut left = s.len;
            while left > 0 {
                let want = (left.min(self.buf.len() as u64)) as usize;
                let n = tr.read_data(&mut self.buf[..want])?;
                let mut done = 0;
                while done < n {
                    let w = rustix::io::pwrite(file, &self.buf[done..n], off + done as u64)
                        .map_err(|e| sys("write", rpath, e))?;
                    done += w;
                }
                off += n as u64;
                left -= n as u64;
            }
        }
        rfs::ftruncate(file, head.size).map_err(|e| sys("truncate", rpath, e))
    }
}
