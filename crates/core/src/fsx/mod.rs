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

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat, Timespec, Timestamps};
use rustix::io::Errno;

mod files;
mod holes;
mod usage;
mod xattr;

pub use files::*;
pub use holes::*;
pub use usage::disk_usage;
pub use xattr::*;

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

/// `fstatat` without following a final symlink.
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

/// The file type of a stat result.
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
    /// The entry's name.
    pub name: CString,
    /// Its type, as `getdents` reports it.
    pub file_type: FileType,
    /// Its inode number.
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

/// Set a file's access and modification times.
pub fn set_times_fd(fd: BorrowedFd<'_>, atime: Timespec, mtime: Timespec) -> io::Result<()> {
    let ts = Timestamps {
        last_access: atime,
        last_modification: mtime,
    };
    Ok(rfs::futimens(fd, &ts)?)
}

/// `fchownat` without following a final symlink.
pub fn chown_at(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    Ok(rfs::chownat(
        dir,
        name,
        Some(rustix::process::Uid::from_raw(uid)),
        Some(rustix::process::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// `fchown` of an open file.
pub fn chown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    Ok(rfs::fchown(
        fd,
        Some(rustix::process::Uid::from_raw(uid)),
        Some(rustix::process::Gid::from_raw(gid)),
    )?)
}

/// The modification time of a stat result.
pub fn mtime_of(st: &Stat) -> Timespec {
    Timespec {
        tv_sec: st.st_mtime,
        tv_nsec: st.st_mtime_nsec as _,
    }
}

/// The access time of a stat result.
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

/// The name of the file system type under `path` (for status lines).
pub fn fs_type_name(path: &Path) -> String {
    match rfs::statfs(path) {
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

/// Is the effective user root (and so able to chown, mknod and mount)?
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
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
