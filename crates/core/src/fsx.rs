//! Safe, fd-relative file system helpers over `rustix`.
//!
//! Everything that touches the inside of a layer goes through a directory fd
//! and a single path component (`*at` calls with `AT_SYMLINK_NOFOLLOW` /
//! `O_NOFOLLOW`), so nothing here ever follows a symlink planted by a layer.
//!
//! Extended attributes of inodes that cannot be opened safely (symlinks,
//! devices, fifos) are reached through `/proc/self/fd/DIRFD/NAME` with the
//! `l*xattr` calls: the directory fd was resolved in-root, the magic link
//! only re-enters that directory, and the final component is not followed.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat, Timespec, Timestamps};
use rustix::io::Errno;

/// `O_CLOEXEC | O_NOFOLLOW` and friends for opening a directory to read it.
pub const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Open a trusted directory path (a driver's own root, never layer content).
pub fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    Ok(rfs::open(path, DIR_FLAGS, Mode::empty())?)
}

/// Open the directory `name` inside `dir` without following a symlink.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    Ok(rfs::openat(dir, name, DIR_FLAGS, Mode::empty())?)
}

/// `O_PATH` handle of `name` inside `dir`, never following a symlink.
pub fn open_path_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    Ok(rfs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Open a regular file for reading, refusing anything else.
pub fn open_file_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    let fd = rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )?;
    let st = rfs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(fd)
}

pub fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Stat> {
    Ok(rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// `stat_at` that maps ENOENT to `None`.
pub fn try_stat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<Stat>> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// Is this stat an overlayfs whiteout (char device 0/0)?
pub fn is_whiteout(st: &Stat) -> bool {
    file_type(st) == FileType::CharacterDevice && st.st_rdev == 0
}

/// A name as a C string; names from layers may not contain NUL.
pub fn cstr(name: &[u8]) -> io::Result<CString> {
    CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))
}

/// One directory entry: name and type as reported by getdents (may be
/// `Unknown` on some file systems; callers stat when they need to).
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: CString,
    pub file_type: FileType,
    pub ino: u64,
}

/// All entries of `dir` except `.` and `..`, sorted by name bytes.
pub fn read_dir_sorted(dir: BorrowedFd<'_>) -> io::Result<Vec<DirEntry>> {
    let mut out = Vec::new();
    let mut d = rfs::Dir::read_from(dir)?;
    while let Some(ent) = d.read() {
        let ent = ent?;
        let name = ent.file_name();
        let b = name.to_bytes();
        if b == b"." || b == b".." {
            continue;
        }
        out.push(DirEntry {
            name: name.to_owned(),
            file_type: ent.file_type(),
            ino: ent.ino(),
        });
    }
    out.sort_unstable_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(out)
}

/// Remove `name` inside `dir`, recursively if it is a directory; never
/// follows symlinks. Missing is not an error.
pub fn remove_all_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e.into()),
    }
    let sub = match open_dir_at(dir, name) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc_enoent()) => return Ok(()),
        Err(e) => return Err(e),
    };
    clear_dir(sub.as_fd())?;
    drop(sub);
    match rfs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn libc_enoent() -> i32 {
    Errno::NOENT.raw_os_error()
}

/// Remove everything inside `dir` (iteratively deep, fd-relative).
pub fn clear_dir(dir: BorrowedFd<'_>) -> io::Result<()> {
    // An explicit stack instead of recursion: layers may nest 10,000 deep.
    struct Frame {
        fd: OwnedFd,
        entries: std::vec::IntoIter<DirEntry>,
        pending_rmdir: Option<CString>,
    }
    let first = rustix::io::dup(dir)?;
    let entries = read_dir_sorted(first.as_fd())?.into_iter();
    let mut stack = vec![Frame {
        fd: first,
        entries,
        pending_rmdir: None,
    }];
    while let Some(top) = stack.last_mut() {
        if let Some(name) = top.pending_rmdir.take() {
            match rfs::unlinkat(&top.fd, &name, AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let Some(e) = top.entries.next() else {
            stack.pop();
            continue;
        };
        if e.file_type != FileType::Directory {
            match rfs::unlinkat(&top.fd, &e.name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => continue,
                Err(Errno::ISDIR) | Err(Errno::PERM) => {}
                Err(e) => return Err(e.into()),
            }
        }
        match rfs::unlinkat(&top.fd, &e.name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => continue,
            Err(Errno::NOTEMPTY) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let sub = open_dir_at(top.fd.as_fd(), &e.name)?;
        let entries = read_dir_sorted(sub.as_fd())?.into_iter();
        top.pending_rmdir = Some(e.name);
        stack.push(Frame {
            fd: sub,
            entries,
            pending_rmdir: None,
        });
    }
    Ok(())
}

/// `/proc/self/fd/DIRFD/NAME`: a path for the `l*xattr` calls (see module doc).
pub fn proc_path(dir: BorrowedFd<'_>, name: &[u8]) -> PathBuf {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    PathBuf::from(OsStr::from_bytes(&p))
}

/// Where to find an inode for xattr calls: an open fd (regular files and
/// directories) or a directory fd plus name (anything else).
#[derive(Debug, Clone, Copy)]
pub enum XattrTarget<'a> {
    Fd(BorrowedFd<'a>),
    At(BorrowedFd<'a>, &'a [u8]),
}

fn grow_read<F>(mut f: F) -> io::Result<Vec<u8>>
where
    F: FnMut(&mut [u8]) -> Result<usize, Errno>,
{
    let mut cap = 256usize;
    loop {
        let mut buf = vec![0u8; cap];
        match f(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) if cap < (1 << 20) => cap *= 8,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Names of the extended attributes of an inode, sorted. File systems
/// without xattr support give an empty list.
pub fn xattr_names(t: XattrTarget<'_>) -> io::Result<Vec<Vec<u8>>> {
    let raw = match t {
        XattrTarget::Fd(fd) => grow_read(|b| rfs::flistxattr(fd, b)),
        XattrTarget::At(dir, name) => {
            let p = proc_path(dir, name);
            grow_read(|b| rfs::llistxattr(&p, b))
        }
    };
    let raw = match raw {
        Ok(r) => r,
        Err(e) if e.raw_os_error() == Some(Errno::OPNOTSUPP.raw_os_error()) => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut names: Vec<Vec<u8>> = raw
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| s.to_vec())
        .collect();
    names.sort();
    Ok(names)
}

/// Value of one extended attribute, `None` when absent.
pub fn xattr_get(t: XattrTarget<'_>, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let cname = cstr(name)?;
    let r = match t {
        XattrTarget::Fd(fd) => grow_read(|b| rfs::fgetxattr(fd, cname.as_c_str(), b)),
        XattrTarget::At(dir, n) => {
            let p = proc_path(dir, n);
            grow_read(|b| rfs::lgetxattr(&p, cname.as_c_str(), b))
        }
    };
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e)
            if e.raw_os_error() == Some(Errno::NODATA.raw_os_error())
                || e.raw_os_error() == Some(Errno::OPNOTSUPP.raw_os_error()) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

pub fn xattr_set(t: XattrTarget<'_>, name: &[u8], value: &[u8]) -> io::Result<()> {
    let cname = cstr(name)?;
    match t {
        XattrTarget::Fd(fd) => {
            rfs::fsetxattr(fd, cname.as_c_str(), value, rfs::XattrFlags::empty())?
        }
        XattrTarget::At(dir, n) => {
            let p = proc_path(dir, n);
            rfs::lsetxattr(&p, cname.as_c_str(), value, rfs::XattrFlags::empty())?
        }
    }
    Ok(())
}

pub fn xattr_remove(t: XattrTarget<'_>, name: &[u8]) -> io::Result<()> {
    let cname = cstr(name)?;
    let r = match t {
        XattrTarget::Fd(fd) => rfs::fremovexattr(fd, cname.as_c_str()),
        XattrTarget::At(dir, n) => {
            let p = proc_path(dir, n);
            rfs::lremovexattr(&p, cname.as_c_str())
        }
    };
    match r {
        Ok(()) | Err(Errno::NODATA) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// All xattrs (name, value) of an inode, sorted by name.
pub fn xattrs(t: XattrTarget<'_>) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    for n in xattr_names(t)? {
        if let Some(v) = xattr_get(t, &n)? {
            out.push((n, v));
        }
    }
    Ok(out)
}

/// Set atime and mtime of `name` inside `dir` without following symlinks.
pub fn set_times_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    atime: Timespec,
    mtime: Timespec,
) -> io::Result<()> {
    let ts = Timestamps {
        last_access: atime,
        last_modification: mtime,
    };
    Ok(rfs::utimensat(dir, name, &ts, AtFlags::SYMLINK_NOFOLLOW)?)
}

pub fn set_times_fd(fd: BorrowedFd<'_>, atime: Timespec, mtime: Timespec) -> io::Result<()> {
    let ts = Timestamps {
        last_access: atime,
        last_modification: mtime,
    };
    Ok(rfs::futimens(fd, &ts)?)
}

pub fn chown_at(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    Ok(rfs::chownat(
        dir,
        name,
        Some(rustix::process::Uid::from_raw(uid)),
        Some(rustix::process::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

pub fn chown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    Ok(rfs::fchown(
        fd,
        Some(rustix::process::Uid::from_raw(uid)),
        Some(rustix::process::Gid::from_raw(gid)),
    )?)
}

pub fn mtime_of(st: &Stat) -> Timespec {
    Timespec {
        tv_sec: st.st_mtime,
        tv_nsec: st.st_mtime_nsec as _,
    }
}

pub fn atime_of(st: &Stat) -> Timespec {
    Timespec {
        tv_sec: st.st_atime,
        tv_nsec: st.st_atime_nsec as _,
    }
}

/// The process umask, read without changing it.
pub fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Umask:"))
                .and_then(|l| u32::from_str_radix(l.split_whitespace().nth(1)?, 8).ok())
        })
        .unwrap_or(0o777)
}

/// Is the effective user root (and so able to chown, mknod and mount)?
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `fsync` a directory by path (after renames inside it).
pub fn fsync_dir(path: &Path) -> io::Result<()> {
    let fd = open_dir_path(path)?;
    rfs::fsync(&fd)?;
    Ok(())
}

/// Write `data` to `path` atomically: temporary file in the same directory,
/// fsync, rename, fsync of the directory. Readers see the old or the new
/// content, never a mix, also after a crash.
#[allow(clippy::disallowed_methods)] // driver metadata, not layer content
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let fname = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut tmpname = std::ffi::OsString::from(".tmp-");
    tmpname.push(fname);
    tmpname.push(format!("-{}", std::process::id()));
    let tmp = dir.join(tmpname);
    let r = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        fsync_dir(dir)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Replace `path` with `data` atomically (temporary file and rename) but
/// without forcing it to disk: for state that does not outlive a reboot.
#[allow(clippy::disallowed_methods)] // driver metadata, not layer content
pub fn write_replace(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let fname = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut tmpname = std::ffi::OsString::from(".tmp-");
    tmpname.push(fname);
    tmpname.push(format!("-{}", std::process::id()));
    let tmp = dir.join(tmpname);
    let r = std::fs::write(&tmp, data).and_then(|()| std::fs::rename(&tmp, path));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Size in bytes of the blocks a tree uses (like `du -s --apparent-size`
/// would give apparent sizes; this counts apparent sizes of non-directories,
/// each hardlinked inode once).
pub fn tree_size(dir: BorrowedFd<'_>) -> io::Result<u64> {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut stack: Vec<OwnedFd> = vec![rustix::io::dup(dir)?];
    while let Some(d) = stack.pop() {
        for e in read_dir_sorted(d.as_fd())? {
            let st = stat_at(d.as_fd(), &e.name)?;
            match file_type(&st) {
                FileType::Directory => stack.push(open_dir_at(d.as_fd(), &e.name)?),
                FileType::RegularFile | FileType::Symlink => {
                    if st.st_nlink > 1 && !seen.insert((st.st_dev, st.st_ino)) {
                        continue;
                    }
                    total += st.st_size as u64;
                }
                _ => {}
            }
        }
    }
    Ok(total)
}

/// Make a directory path and all its parents (driver-owned paths only).
#[allow(clippy::disallowed_methods)]
pub fn mkdir_p(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
}

/// Remove a driver-owned directory tree by path (no symlinks followed inside).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let pfd = match open_dir_path(parent) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    remove_all_at(pfd.as_fd(), &cstr(name.as_bytes())?)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    #[test]
    fn remove_all_handles_deep_trees_and_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let root = open_dir_path(t.path()).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), b"x").unwrap();
        let mut p = t.path().join("top");
        std::fs::create_dir(&p).unwrap();
        for i in 0..300 {
            p = p.join(format!("d{i}"));
            std::fs::create_dir(&p).unwrap();
        }
        std::os::unix::fs::symlink(outside.path(), p.join("link")).unwrap();
        std::fs::write(p.join("f"), b"y").unwrap();
        remove_all_at(root.as_fd(), c"top").unwrap();
        assert!(!t.path().join("top").exists());
        assert!(outside.path().join("keep").exists());
    }

    #[test]
    fn xattrs_roundtrip_on_symlink_parent_dir() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), b"x").unwrap();
        let root = open_dir_path(t.path()).unwrap();
        match xattr_set(XattrTarget::At(root.as_fd(), b"f"), b"user.k", b"v") {
            Ok(()) => {
                let got = xattrs(XattrTarget::At(root.as_fd(), b"f")).unwrap();
                assert_eq!(got, vec![(b"user.k".to_vec(), b"v".to_vec())]);
            }
            Err(e) => eprintln!("skip: no user xattrs on this fs: {e}"),
        }
    }
}
