//! Change detection between two full trees (the "naive" diff every backend
//! can fall back to): walk the layer's view and its base side by side,
//! sorted, and report what differs.
//!
//! Two inodes are the same when type, permission bits, owner, device
//! number, xattrs, and (for non-directories) size, mtime to the nanosecond,
//! link count (hardlink identity) and symlink target agree. When both
//! mtimes have a zero nanosecond part (timestamps that may have been
//! truncated, as tars without PAX times give) and sizes agree, contents
//! are compared, as containerd does: the metadata cannot decide there.
//! Directory mtimes are not compared (they change whenever an entry is
//! added); a directory that contains a change is reported as modified
//! itself, as `docker diff` does, and comes before its children in the tar.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{FileType, Stat};

use crate::error::{Error, Result};
use crate::fsx::{self, XattrTarget};
use crate::resolve::join;
use crate::walk::{Change, ChangeKind, DiffItem, DiffMethod, DiffSource, Emit, exported_xattr};

struct Child {
    name: CString,
    l: Option<Stat>,
    p: Option<Stat>,
}

/// The paths a walk looks at: a trie of candidate paths (from a backend's
/// own change tracking). A node marked `all` (and anything below a path
/// that is new in the layer) is walked completely.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    children: std::collections::BTreeMap<Vec<u8>, Filter>,
    all: bool,
}

impl Filter {
    /// Look at `path` (and the directories leading to it).
    pub fn insert(&mut self, path: &[u8]) -> &mut Filter {
        let mut node = self;
        for c in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            node = node.children.entry(c.to_vec()).or_default();
        }
        node
    }

    /// Look at `path` and everything below it.
    pub fn insert_all(&mut self, path: &[u8]) {
        self.insert(path).all = true;
    }

    /// Whether there is no change at all.
    pub fn is_empty(&self) -> bool {
        !self.all && self.children.is_empty()
    }

    fn child(&self, name: &[u8]) -> Option<&Filter> {
        self.children.get(name)
    }
}

/// Options of [`walk_with`].
#[derive(Debug, Clone, Copy)]
pub struct WalkOpts<'a> {
    /// Only these paths (default: everything).
    pub filter: Option<&'a Filter>,
    /// Compare contents where metadata cannot decide (default: yes; a
    /// size estimate turns it off so that no file is read).
    pub compare_content: bool,
}

impl Default for WalkOpts<'_> {
    fn default() -> Self {
        WalkOpts {
            filter: None,
            compare_content: true,
        }
    }
}

struct Frame<'f> {
    filter: Option<&'f Filter>,
    lfd: OwnedFd,
    pfd: Option<OwnedFd>,
    path: Vec<u8>,
    st: Stat,
    children: std::vec::IntoIter<Child>,
    /// The directory's own entry is out (or not needed for the root).
    emitted: bool,
}

fn ioe(op: &'static str, path: &[u8], e: std::io::Error) -> Error {
    Error::io_at(op, path, e)
}

fn list(fd: BorrowedFd<'_>, path: &[u8]) -> Result<Vec<(CString, Stat)>> {
    let mut v = Vec::new();
    for e in fsx::read_dir_sorted(fd).map_err(|e| ioe("read dir", path, e))? {
        let st = fsx::stat_at(fd, &e.name).map_err(|e| ioe("stat", path, e))?;
        v.push((e.name, st));
    }
    Ok(v)
}

fn merge(l: Vec<(CString, Stat)>, p: Vec<(CString, Stat)>) -> Vec<Child> {
    let mut deleted = Vec::new();
    let mut rest = Vec::new();
    let mut li = l.into_iter().peekable();
    let mut pi = p.into_iter().peekable();
    loop {
        match (li.peek(), pi.peek()) {
            (None, None) => break,
            (Some(_), None) => {
                if let Some((n, s)) = li.next() {
                    rest.push(Child {
                        name: n,
                        l: Some(s),
                        p: None,
                    });
                }
            }
            (None, Some(_)) => {
                if let Some((n, s)) = pi.next() {
                    deleted.push(Child {
                        name: n,
                        l: None,
                        p: Some(s),
                    });
                }
            }
            (Some((ln, _)), Some((pn, _))) => match ln.as_bytes().cmp(pn.as_bytes()) {
                std::cmp::Ordering::Less => {
                    if let Some((n, s)) = li.next() {
                        rest.push(Child {
                            name: n,
                            l: Some(s),
                            p: None,
                        });
                    }
                }
                std::cmp::Ordering::Greater => {
                    if let Some((n, s)) = pi.next() {
                        deleted.push(Child {
                            name: n,
                            l: None,
                            p: Some(s),
                        });
                    }
                }
                std::cmp::Ordering::Equal => {
                    if let (Some((n, ls)), Some((_, ps))) = (li.next(), pi.next()) {
                        rest.push(Child {
                            name: n,
                            l: Some(ls),
                            p: Some(ps),
                        });
                    }
                }
            },
        }
    }
    // whiteouts of a directory come before its other entries
    deleted.extend(rest);
    deleted
}

fn xattrs_of(t: XattrTarget<'_>, path: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut v = fsx::xattrs(t).map_err(|e| ioe("read xattrs", path, e))?;
    v.retain(|(k, _)| exported_xattr(k));
    Ok(v)
}

/// Compare contents of two regular files of equal size.
fn same_content(a: BorrowedFd<'_>, an: &CString, b: BorrowedFd<'_>, path: &[u8]) -> Result<bool> {
    let fa = fsx::open_file_at(a, an).map_err(|e| ioe("open", path, e))?;
    let fb = fsx::open_file_at(b, an).map_err(|e| ioe("open", path, e))?;
    let mut fa = std::fs::File::from(fa);
    let mut fb = std::fs::File::from(fb);
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(|e| ioe("read", path, e))?;
        let nb = read_full(&mut fb, &mut bb).map_err(|e| ioe("read", path, e))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Do two inodes of the same type differ? (See the module doc.)
#[allow(clippy::too_many_arguments)]
fn differs(
    ldir: BorrowedFd<'_>,
    pdir: BorrowedFd<'_>,
    name: &CString,
    ls: &Stat,
    ps: &Stat,
    path: &[u8],
    compare_content: bool,
) -> Result<bool> {
    let ft = fsx::file_type(ls);
    if ls.st_mode != ps.st_mode || ls.st_uid != ps.st_uid || ls.st_gid != ps.st_gid {
        return Ok(true);
    }
    if matches!(ft, FileType::CharacterDevice | FileType::BlockDevice) && ls.st_rdev != ps.st_rdev {
        return Ok(true);
    }
    if ft != FileType::Directory
        && (ls.st_size != ps.st_size
            || ls.st_mtime != ps.st_mtime
            || ls.st_mtime_nsec != ps.st_mtime_nsec
            || ls.st_nlink != ps.st_nlink)
    {
        return Ok(true);
    }
    if ft == FileType::Symlink {
        let a = rustix::fs::readlinkat(ldir, name.as_c_str(), Vec::new())
            .map_err(|e| ioe("readlink", path, e.into()))?;
        let b = rustix::fs::readlinkat(pdir, name.as_c_str(), Vec::new())
            .map_err(|e| ioe("readlink", path, e.into()))?;
        if a != b {
            return Ok(true);
        }
    }
    let (lx, px) = if ft == FileType::Directory {
        let lf = fsx::open_dir_at(ldir, name).map_err(|e| ioe("open", path, e))?;
        let pf = fsx::open_dir_at(pdir, name).map_err(|e| ioe("open", path, e))?;
        (
            xattrs_of(XattrTarget::Fd(lf.as_fd()), path)?,
            xattrs_of(XattrTarget::Fd(pf.as_fd()), path)?,
        )
    } else {
        (
            xattrs_of(XattrTarget::At(ldir, name.as_bytes()), path)?,
            xattrs_of(XattrTarget::At(pdir, name.as_bytes()), path)?,
        )
    };
    if lx != px {
        return Ok(true);
    }
    if compare_content
        && ft == FileType::RegularFile
        && ls.st_mtime_nsec == 0
        && ps.st_mtime_nsec == 0
        && ls.st_size > 0
        && !(ls.st_dev == ps.st_dev && ls.st_ino == ps.st_ino)
    {
        return Ok(!same_content(ldir, name, pdir, path)?);
    }
    Ok(false)
}

/// Walk `layer` against `base` (`None`: an empty tree) and emit the diff
/// items in tar order. Both are directory fds of full trees.
pub fn walk(
    layer: BorrowedFd<'_>,
    base: Option<BorrowedFd<'_>>,
    emit: &mut Emit<'_>,
) -> Result<()> {
    walk_with(layer, base, WalkOpts::default(), emit)
}

fn keep(filter: Option<&Filter>, children: Vec<Child>) -> Vec<Child> {
    match filter {
        Some(f) if !f.all => children
            .into_iter()
            .filter(|c| f.children.contains_key(c.name.as_bytes()))
            .collect(),
        _ => children,
    }
}

/// [`walk`] with options: a filter of candidate paths (O(changes) walks
/// for backends that track changes) and content comparison on or off.
pub fn walk_with(
    layer: BorrowedFd<'_>,
    base: Option<BorrowedFd<'_>>,
    opts: WalkOpts<'_>,
    emit: &mut Emit<'_>,
) -> Result<()> {
    let lroot = rustix::io::dup(layer).map_err(|e| ioe("dup", b"/", e.into()))?;
    let lst = rustix::fs::fstat(&lroot).map_err(|e| ioe("stat", b"/", e.into()))?;
    if root_differs(lroot.as_fd(), &lst, base)? {
        // the root's own metadata: emitted as "./"
        emit(DiffItem::Entry {
            path: b"",
            change: ChangeKind::Modified,
            st: &lst,
            src: DiffSource::Dir(lroot.as_fd()),
        })?;
    }
    let pfd = match base {
        Some(b) => Some(rustix::io::dup(b).map_err(|e| ioe("dup", b"/", e.into()))?),
        None => None,
    };
    let root = Frame::new(
        opts.filter.filter(|f| !f.all),
        lroot,
        pfd,
        Vec::new(),
        lst,
        true,
    )?;
    let mut w = Walker {
        stack: vec![root],
        compare_content: opts.compare_content,
    };
    while let Some(top) = w.stack.last_mut() {
        match top.children.next() {
            Some(ch) => w.visit(ch, emit)?,
            None => {
                w.stack.pop();
            }
        }
    }
    Ok(())
}

/// Does the root's own metadata differ from the base's (or, without a
/// base, from an empty tree's: 0755 root:root, no xattrs)?
pub fn root_differs(
    lroot: BorrowedFd<'_>,
    lst: &Stat,
    base: Option<BorrowedFd<'_>>,
) -> Result<bool> {
    let lx = xattrs_of(XattrTarget::Fd(lroot), b"/")?;
    Ok(match base {
        Some(b) => {
            let bst = rustix::fs::fstat(b).map_err(|e| ioe("stat", b"/", e.into()))?;
            lst.st_mode != bst.st_mode
                || lst.st_uid != bst.st_uid
                || lst.st_gid != bst.st_gid
                || lx != xattrs_of(XattrTarget::Fd(b), b"/")?
        }
        None => {
            lst.st_mode & 0o7777 != 0o755 || lst.st_uid != 0 || lst.st_gid != 0 || !lx.is_empty()
        }
    })
}

impl<'f> Frame<'f> {
    /// A directory to walk: its children merged from both sides and kept
    /// to `filter`.
    fn new(
        filter: Option<&'f Filter>,
        lfd: OwnedFd,
        pfd: Option<OwnedFd>,
        path: Vec<u8>,
        st: Stat,
        emitted: bool,
    ) -> Result<Frame<'f>> {
        let base = match &pfd {
            Some(p) => list(p.as_fd(), &path)?,
            None => Vec::new(),
        };
        let children = keep(filter, merge(list(lfd.as_fd(), &path)?, base));
        Ok(Frame {
            filter,
            lfd,
            pfd,
            path,
            st,
            children: children.into_iter(),
            emitted,
        })
    }
}

/// The walk's state: the directories being walked, the root first.
struct Walker<'f> {
    stack: Vec<Frame<'f>>,
    compare_content: bool,
}

impl<'f> Walker<'f> {
    /// Emit the entries of the directories on the way that are not out yet
    /// (a directory holding a change is itself reported as modified).
    fn flush(&mut self, emit: &mut Emit<'_>) -> Result<()> {
        for f in self.stack.iter_mut().filter(|f| !f.emitted) {
            f.emitted = true;
            emit(DiffItem::Entry {
                path: &f.path,
                change: ChangeKind::Modified,
                st: &f.st,
                src: DiffSource::Dir(f.lfd.as_fd()),
            })?;
        }
        Ok(())
    }

    /// One child of the top directory.
    fn visit(&mut self, ch: Child, emit: &mut Emit<'_>) -> Result<()> {
        let Some(top) = self.stack.last() else {
            return Ok(());
        };
        let path = join(&top.path, ch.name.as_bytes());
        let Some(ls) = ch.l else {
            if ch.p.is_some() {
                let mtime = (top.st.st_mtime, top.st.st_mtime_nsec as u32);
                self.flush(emit)?;
                emit(DiffItem::Whiteout { path: &path, mtime })?;
            }
            return Ok(());
        };
        let ft = fsx::file_type(&ls);
        let same_type = ch.p.as_ref().is_some_and(|ps| fsx::file_type(ps) == ft);
        let changed = self.change_of(&ch.name, &ls, ch.p.as_ref(), same_type, &path)?;
        let sub = if ft == FileType::Directory {
            Some(self.open_sub(&ch.name, same_type, &path)?)
        } else {
            None
        };
        if let Some(kind) = changed {
            self.flush(emit)?;
            let Some(parent) = self.stack.last().map(|t| t.lfd.as_fd()) else {
                return Ok(());
            };
            let src = match &sub {
                Some((lfd, _)) => DiffSource::Dir(lfd.as_fd()),
                None => DiffSource::At(parent, &ch.name),
            };
            emit(DiffItem::Entry {
                path: &path,
                change: kind,
                st: &ls,
                src,
            })?;
        }
        if let Some((lfd, pfd)) = sub {
            self.descend(&ch.name, lfd, pfd, path, ls, changed.is_some())?;
        }
        Ok(())
    }

    /// Added, modified, or unchanged (`None`).
    fn change_of(
        &self,
        name: &CString,
        ls: &Stat,
        p: Option<&Stat>,
        same_type: bool,
        path: &[u8],
    ) -> Result<Option<ChangeKind>> {
        let Some(ps) = p else {
            return Ok(Some(ChangeKind::Added));
        };
        if !same_type {
            return Ok(Some(ChangeKind::Modified));
        }
        let Some(top) = self.stack.last() else {
            return Ok(None);
        };
        let Some(pdir) = top.pfd.as_ref() else {
            return Err(ioe("walk", path, std::io::Error::other("no base dir")));
        };
        let d = differs(
            top.lfd.as_fd(),
            pdir.as_fd(),
            name,
            ls,
            ps,
            path,
            self.compare_content,
        )?;
        Ok(d.then_some(ChangeKind::Modified))
    }

    /// Open a child directory on both sides (the base side only when it is
    /// a directory there too).
    fn open_sub(
        &self,
        name: &CString,
        same_type: bool,
        path: &[u8],
    ) -> Result<(OwnedFd, Option<OwnedFd>)> {
        let Some(top) = self.stack.last() else {
            return Err(ioe("walk", path, std::io::Error::other("no directory")));
        };
        let lfd = fsx::open_dir_at(top.lfd.as_fd(), name).map_err(|e| ioe("open", path, e))?;
        let pfd = match (&top.pfd, same_type) {
            (Some(p), true) => {
                Some(fsx::open_dir_at(p.as_fd(), name).map_err(|e| ioe("open", path, e))?)
            }
            _ => None,
        };
        Ok((lfd, pfd))
    }

    /// Walk into a child directory: everything under a new directory; else
    /// the filter's subtree (nothing when it has none).
    fn descend(
        &mut self,
        name: &CString,
        lfd: OwnedFd,
        pfd: Option<OwnedFd>,
        path: Vec<u8>,
        st: Stat,
        emitted: bool,
    ) -> Result<()> {
        let parent_filter = self.stack.last().and_then(|t| t.filter);
        let sub_filter = match (parent_filter, pfd.is_some()) {
            (_, false) | (None, true) => None,
            (Some(f), true) => match f.child(name.as_bytes()) {
                Some(c) if c.all => None,
                Some(c) => Some(c),
                None => Some(&EMPTY),
            },
        };
        if sub_filter.is_some_and(|f| f.is_empty()) {
            return Ok(());
        }
        let frame = Frame::new(sub_filter, lfd, pfd, path, st, emitted)?;
        self.stack.push(frame);
        Ok(())
    }
}

static EMPTY: Filter = Filter {
    children: std::collections::BTreeMap::new(),
    all: false,
};

/// Collect the changes of a walk, sorted like `docker diff`.
pub fn collect_changes(walk_fn: impl FnOnce(&mut Emit<'_>) -> Result<()>) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    walk_fn(&mut |item| {
        if let Some((kind, path)) = item.change()
            && !path.is_empty()
        {
            out.push(Change::new(kind, path));
        }
        Ok(())
    })?;
    out.sort();
    out.dedup();
    Ok(out)
}

/// Bytes of regular-file content added or changed by a walk.
pub fn collect_size(walk_fn: impl FnOnce(&mut Emit<'_>) -> Result<()>) -> Result<u64> {
    let mut total = 0u64;
    let mut seen = std::collections::HashSet::new();
    walk_fn(&mut |item| {
        if let DiffItem::Entry { st, .. } = item
            && fsx::file_type(st) == FileType::RegularFile
            && (st.st_nlink <= 1 || seen.insert((st.st_dev, st.st_ino)))
        {
            total += st.st_size as u64;
        }
        Ok(())
    })?;
    Ok(total)
}

/// A driver's diff built from its walk: writes the tar and reports which
/// walk made it.
pub fn write_diff_with(
    out: &mut dyn std::io::Write,
    walk_fn: impl FnOnce(&mut Emit<'_>) -> Result<DiffMethod>,
) -> Result<crate::DiffStats> {
    let mut method = DiffMethod::Naive;
    let (_, bytes, entries) = crate::archive::write_diff(out, |emit| {
        method = walk_fn(emit)?;
        Ok(())
    })?;
    Ok(crate::DiffStats {
        tar_bytes: bytes,
        entries,
        method,
    })
}
