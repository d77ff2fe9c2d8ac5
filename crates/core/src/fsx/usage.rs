//! Disk usage of a tree, as `du` and containerd's `fs.DiskUsage` count it:
//! allocated blocks, each inode once.

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::FileType;

use super::{open_dir_at, open_dir_path, read_dir_sorted, stat_at};
use crate::driver::Usage;

/// The usage of the tree at `root` (its root directory included). Never
/// follows symlinks or leaves the tree; memory grows with the depth and
/// with the number of multiply-linked files only.
pub fn disk_usage(root: &Path) -> io::Result<Usage> {
    let fd = open_dir_path(root)?;
    let st = rustix::fs::fstat(&fd)?;
    let mut u = Usage {
        bytes: block_bytes(&st),
        inodes: 1,
    };
    let mut linked: HashSet<(u64, u64)> = HashSet::new();
    let mut stack: Vec<OwnedFd> = vec![fd];
    while let Some(d) = stack.pop() {
        for e in read_dir_sorted(d.as_fd())? {
            let st = stat_at(d.as_fd(), &e.name)?;
            if st.st_nlink > 1
                && super::file_type(&st) != FileType::Directory
                && !linked.insert((st.st_dev, st.st_ino))
            {
                continue;
            }
            u.inodes += 1;
            u.bytes += block_bytes(&st);
            if super::file_type(&st) == FileType::Directory {
                stack.push(open_dir_at(d.as_fd(), &e.name)?);
            }
        }
    }
    Ok(u)
}

fn block_bytes(st: &rustix::fs::Stat) -> u64 {
    (st.st_blocks as u64).saturating_mul(512)
}

#[cfg(test)]
// tests build their trees by path
#[allow(clippy::disallowed_methods, clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn counts_inodes_once_and_blocks() {
        let t = tempfile::tempdir().unwrap();
        let empty = disk_usage(t.path()).unwrap();
        assert_eq!(empty.inodes, 1);
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::fs::write(t.path().join("d/f"), vec![7u8; 64 * 1024]).unwrap();
        std::fs::hard_link(t.path().join("d/f"), t.path().join("g")).unwrap();
        std::os::unix::fs::symlink("d/f", t.path().join("s")).unwrap();
        let u = disk_usage(t.path()).unwrap();
        assert_eq!(u.inodes, 4, "root, d, f (twice linked), s");
        assert!(u.bytes >= 64 * 1024, "{u:?}");
        assert!(
            u.bytes < 2 * 64 * 1024 + empty.bytes * 4 + 16384,
            "hardlink counted twice: {u:?}"
        );
    }
}
