//! Reading the mount table and unmounting safely.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::mount::{UnmountFlags, unmount};

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The file system type (`overlay`, `btrfs`...).
    pub fs_type: String,
    /// The mount source.
    pub source: String,
    /// Per-mount options.
    pub options: String,
    /// Per-super-block options.
    pub super_options: String,
}

fn unescape(s: &str) -> Vec<u8> {
    // mountinfo escapes space, tab, newline and backslash as \ooo
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x"), 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Parse mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    let mut v = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 6 || post.len() < 3 {
            continue;
        }
        v.push(MountInfo {
            mount_point: PathBuf::from(std::ffi::OsStr::from_bytes(&unescape(pre[4]))),
            options: pre[5].to_string(),
            fs_type: post[0].to_string(),
            source: String::from_utf8_lossy(&unescape(post[1])).into_owned(),
            super_options: post[2].to_string(),
        });
    }
    v
}

/// The current mount table.
pub fn mounts() -> io::Result<Vec<MountInfo>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// Mounts at or below `prefix`, deepest first (the order to unmount them).
pub fn mounts_under(prefix: &Path) -> io::Result<Vec<MountInfo>> {
    let mut v: Vec<MountInfo> = mounts()?
        .into_iter()
        .filter(|m| m.mount_point.starts_with(prefix))
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.mount_point.as_os_str().len()));
    Ok(v)
}

/// Is something mounted exactly at `path`?
pub fn is_mounted(path: &Path) -> io::Result<bool> {
    Ok(mounts()?.iter().any(|m| m.mount_point == path))
}

/// Unmount `path` (no-op when nothing is mounted there). Retries a busy
/// mount a few times, then detaches it lazily so it cannot linger.
pub fn unmount_path(path: &Path) -> io::Result<()> {
    for attempt in 0..5 {
        match unmount(path, UnmountFlags::NOFOLLOW) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => return Ok(()),
            Err(rustix::io::Errno::BUSY) if attempt < 4 => {
                std::thread::sleep(std::time::Duration::from_millis(20 << attempt));
            }
            Err(rustix::io::Errno::BUSY) => {
                tracing::warn!(path = %path.display(), "mount busy; detaching lazily");
                unmount(path, UnmountFlags::NOFOLLOW | UnmountFlags::DETACH)?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Bind-mount `source` at `target`; a read-only one is also `nosuid` and
/// `nodev` (a bind mount takes its flags from a remount, not from the
/// first call).
pub fn bind(source: &Path, target: &Path, read_only: bool) -> io::Result<()> {
    rustix::mount::mount_bind(source, target)?;
    if !read_only {
        return Ok(());
    }
    let flags = rustix::mount::MountFlags::BIND
        | rustix::mount::MountFlags::RDONLY
        | rustix::mount::MountFlags::NOSUID
        | rustix::mount::MountFlags::NODEV;
    if let Err(e) = rustix::mount::mount_remount(target, flags, c"") {
        let _ = unmount_path(target);
        return Err(e.into());
    }
    Ok(())
}

/// Unmount everything at or below `prefix`; returns how many.
pub fn unmount_all_under(prefix: &Path) -> io::Result<usize> {
    let ms = mounts_under(prefix)?;
    let n = ms.len();
    for m in ms {
        unmount_path(&m.mount_point)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_escaped_mount_points() {
        let t = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n";
        let m = parse_mountinfo(t);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(m[0].fs_type, "ext3");
        assert_eq!(m[0].options, "rw,noatime");
    }
}
