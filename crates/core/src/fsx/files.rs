//! Driver and store bookkeeping files: atomic replacement, exclusive
//! creation, lock files, random names, driver-owned directories by path.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, Mode, OFlags};
use rustix::io::Errno;

use super::{cstr, open_dir_path, remove_all_at};

/// `fsync` a directory by path (after renames inside it).
pub fn fsync_dir(path: &Path) -> io::Result<()> {
    let fd = open_dir_path(path)?;
    rfs::fsync(&fd)?;
    Ok(())
}

/// `fsync` a bookkeeping file by path (opened read-only, no symlink
/// followed).
pub fn fsync_path(path: &Path) -> io::Result<()> {
    let fd = rfs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    rfs::fsync(&fd)?;
    Ok(())
}

/// `n` random bytes as hex, from the kernel's generator (names of
/// temporary files that nobody can guess in advance).
pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        match rustix::rand::getrandom(&mut b[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(k) => filled += k,
            Err(Errno::INTR) => {}
            Err(_) => {
                // no getrandom(2): a unique, if guessable, name (files are
                // still created with O_EXCL, so a planted one only fails)
                return format!("{}{:x}", std::process::id(), unique_counter());
            }
        }
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unique_counter() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A fresh temporary path beside `path`: `.tmp-NAME-RANDOM`.
pub fn temp_beside(path: &Path) -> io::Result<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let fname = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut tmpname = std::ffi::OsString::from(".tmp-");
    tmpname.push(fname);
    tmpname.push(format!("-{}", random_hex(8)));
    Ok(dir.join(tmpname))
}

/// Create a new file, never through a symlink and never over anything
/// (`O_CREAT | O_EXCL | O_NOFOLLOW`), mode 0600.
pub fn create_new(path: &Path) -> io::Result<std::fs::File> {
    let fd = rfs::open(
        path,
        OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    Ok(std::fs::File::from(fd))
}

/// Write `data` to `path` atomically: a new temporary file beside it, fsync,
/// rename, fsync of the directory. Readers see the old or the new content,
/// never a mix, also after a crash.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    replace_with(path, data, true)
}

/// Replace `path` with `data` atomically (temporary file and rename) but
/// without forcing it to disk: for state that does not outlive a reboot.
pub fn write_replace(path: &Path, data: &[u8]) -> io::Result<()> {
    replace_with(path, data, false)
}

#[allow(clippy::disallowed_methods)] // driver metadata, not layer content
fn replace_with(path: &Path, data: &[u8], durable: bool) -> io::Result<()> {
    use std::io::Write;
    let tmp = temp_beside(path)?;
    let r = (|| {
        let mut f = create_new(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if durable {
            fsync_dir(path.parent().unwrap_or(Path::new(".")))?;
        }
        Ok(())
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// How to take a lock file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Wait for an exclusive lock.
    Exclusive,
    /// Wait for a shared lock.
    Shared,
    /// An exclusive lock if free now, else `None`.
    TryExclusive,
}

/// Open (creating, mode 0600) the lock file `path` without following a
/// symlink, and `flock` it. The lock lives as long as the file.
pub fn lock_file(path: &Path, mode: LockMode) -> io::Result<Option<std::fs::File>> {
    let fd = rfs::open(
        path,
        OFlags::CREATE | OFlags::NOFOLLOW | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    let op = match mode {
        LockMode::Exclusive => rfs::FlockOperation::LockExclusive,
        LockMode::Shared => rfs::FlockOperation::LockShared,
        LockMode::TryExclusive => rfs::FlockOperation::NonBlockingLockExclusive,
    };
    match rfs::flock(&fd, op) {
        Ok(()) => Ok(Some(std::fs::File::from(fd))),
        Err(Errno::WOULDBLOCK) if mode == LockMode::TryExclusive => Ok(None),
        Err(e) => Err(e.into()),
    }
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

/// Refuse a directory another user could have prepared or can change: it
/// must be a real directory (not a symlink), ours, and writable by us
/// alone. Returns why not, for the caller to name the directory.
pub fn check_private_dir(p: &Path) -> io::Result<Option<String>> {
    let st = rfs::lstat(p)?;
    let me = rustix::process::geteuid().as_raw();
    Ok(if super::file_type(&st) != rfs::FileType::Directory {
        Some("is not a directory (a symlink?)".to_string())
    } else if st.st_uid != me {
        Some(format!("is owned by uid {}, not by uid {me}", st.st_uid))
    } else if st.st_mode & 0o022 != 0 {
        Some(format!(
            "is writable by group or others (mode {:o})",
            st.st_mode & 0o7777
        ))
    } else {
        None
    })
}
