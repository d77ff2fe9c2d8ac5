//! Hardlink groups in diffs. A walk emits the names that changed; when one
//! name of a group changed and the others did not (a name added, removed
//! or moved leaves the rest unchanged), a diff of only the changed name
//! would, applied elsewhere, split the group. So after the walk, the
//! missing names of every group the diff touched are found in the layer's
//! view and emitted too, as hardlinks to the first: the diff re-creates
//! the group whole. This costs a walk of the view, and only when a group
//! was left incomplete.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::FileType;

use crate::error::{Error, Result};
use crate::fsx;
use crate::walk::{ChangeKind, DiffItem, DiffSource, Emit};

/// What the walk emitted of each multiply-linked inode.
#[derive(Debug, Default)]
pub(super) struct Groups {
    /// (dev, ino) -> (names emitted, link count).
    seen: HashMap<(u64, u64), (u64, u64)>,
    /// Every path the walk emitted or deleted.
    touched: HashSet<Vec<u8>>,
}

impl Groups {
    /// Note one emitted item.
    pub(super) fn note(&mut self, item: &DiffItem<'_>) {
        match item {
            DiffItem::Entry { path, st, .. } => {
                if st.st_nlink > 1 && fsx::file_type(st) != FileType::Directory {
                    let e = self.seen.entry((st.st_dev, st.st_ino)).or_insert((0, 0));
                    e.0 += 1;
                    e.1 = st.st_nlink;
                    self.touched.insert(path.to_vec());
                }
            }
            DiffItem::Whiteout { path, .. } => {
                self.touched.insert(path.to_vec());
            }
            DiffItem::Opaque { .. } => {}
        }
    }

    /// Was a group left incomplete (on any device)?
    pub(super) fn needs_view(&self) -> bool {
        self.seen.values().any(|(n, links)| n < links)
    }

    /// Groups whose names were not all emitted.
    fn incomplete(&self, dev: u64) -> HashSet<(u64, u64)> {
        self.seen
            .iter()
            .filter(|(k, (n, links))| k.0 == dev && n < links)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Emit the missing names of incomplete groups found in the view
    /// `root` (the layer's merged tree).
    pub(super) fn complete(&self, root: BorrowedFd<'_>, f: &mut Emit<'_>) -> Result<()> {
        let dev = rustix::fs::fstat(root)
            .map_err(|e| Error::io("stat", "layer view", e))?
            .st_dev;
        let want = self.incomplete(dev);
        if want.is_empty() {
            return Ok(());
        }
        let io = |op, p: &[u8], e: std::io::Error| Error::io_at(op, p, e);
        let mut stack: Vec<(OwnedFd, Vec<u8>)> = Vec::new();
        let first = rustix::fs::openat(
            root,
            c".",
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| Error::io("open", "layer view", e))?;
        stack.push((first, Vec::new()));
        while let Some((d, p)) = stack.pop() {
            for e in fsx::read_dir_sorted(d.as_fd()).map_err(|e| io("read", &p, e))? {
                let path = if p.is_empty() {
                    e.name.to_bytes().to_vec()
                } else {
                    [p.as_slice(), b"/", e.name.to_bytes()].concat()
                };
                let st = fsx::stat_at(d.as_fd(), &e.name).map_err(|er| io("stat", &path, er))?;
                let ft = fsx::file_type(&st);
                if ft == FileType::Directory {
                    let sub =
                        fsx::open_dir_at(d.as_fd(), &e.name).map_err(|er| io("open", &path, er))?;
                    stack.push((sub, path));
                    continue;
                }
                if st.st_nlink > 1
                    && want.contains(&(st.st_dev, st.st_ino))
                    && !self.touched.contains(&path)
                {
                    f(DiffItem::Entry {
                        path: &path,
                        change: ChangeKind::Modified,
                        st: &st,
                        src: DiffSource::At(d.as_fd(), &e.name),
                    })?;
                }
            }
        }
        Ok(())
    }
}
