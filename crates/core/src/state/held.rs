//! Paths held by a live operation, and the driver's lock.
//!
//! A staging or trash entry (`PATH`) is held through its lock file
//! (`PATH.lock`), flocked until the guard drops: recovery in any process
//! leaves held paths alone and removes only those of dead operations.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, IoContext, Result};
use crate::fsx::{self, LockMode};

/// A unique suffix for temporary names (pid, time, counter).
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}.{t:x}.{n}", std::process::id())
}

/// An exclusive lock (a flocked file); released when dropped.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Take the exclusive lock `path` (waiting for it).
pub fn lock(path: &Path) -> Result<Lock> {
    match fsx::lock_file(path, LockMode::Exclusive).ctx("lock", path)? {
        Some(f) => Ok(Lock { _file: f }),
        None => Err(Error::io("lock", path, std::io::Error::other("not taken"))),
    }
}

/// A staging or trash path held by a live operation: its lock file
/// (`PATH.lock`) is flocked until the guard drops, so that recovery in any
/// process leaves the path alone.
#[derive(Debug)]
pub struct Held {
    /// The held path.
    pub path: PathBuf,
    lock: PathBuf,
    _f: File,
}

impl Drop for Held {
    #[allow(clippy::disallowed_methods)] // driver bookkeeping, not layer content
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.lock);
    }
}

pub(crate) fn lock_path_of(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// Take `path`: create its lock file already locked (made under a
/// temporary name and renamed, so an unlocked `.lock` is never seen).
#[allow(clippy::disallowed_methods)] // driver bookkeeping, not layer content
pub fn hold(path: PathBuf) -> Result<Held> {
    let lock = lock_path_of(&path);
    let mut tmp = lock.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", unique_suffix()));
    let tmp = PathBuf::from(tmp);
    let f = fsx::create_new(&tmp).ctx("create lock", &tmp)?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).ctx("lock", &tmp)?;
    if let Err(e) = std::fs::rename(&tmp, &lock) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io("rename lock", &lock, e));
    }
    Ok(Held { path, lock, _f: f })
}

/// Is the lock file at `p` held by a live process (this one included)?
pub(crate) fn is_held(p: &Path) -> bool {
    let Ok(fd) = rustix::fs::open(
        p,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) else {
        return false;
    };
    matches!(
        rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockShared),
        Err(rustix::io::Errno::WOULDBLOCK)
    )
}
