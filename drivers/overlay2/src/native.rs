//! Native diff: walk only the upper `diff/` directories of the layers
//! between a layer and the base asked for (O(changes), not O(layer)),
//! turning overlay whiteouts (0/0 char devices) and opaque directories back
//! into OCI `.wh.` entries. The base view (the base layer's merged tree) is
//! looked up only for paths found in the uppers, to tell Added from
//! Modified and to list what an opaque directory hides.
//!
//! The uppers are merged top first the way overlayfs does: the topmost
//! entry of a name wins; a directory continues into lower uppers until one
//! of them is opaque or holds a non-directory (or whiteout) there.
//!
//! Layers carrying `redirect` or `metacopy` xattrs (made by a foreign tool
//! with those features on) cannot be read this way: the walk stops with
//! [`Walk::Foreign`] and the caller falls back to the naive diff.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{FileType, Stat};
use strata_core::fsx::{self, XattrTarget};
use strata_core::resolve::join;
use strata_core::walk::{DiffItem, DiffSource, Emit};
use strata_core::whiteout::OverlayXattr;
use strata_core::{ChangeKind, Error, Result};

/// How the walk ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Walk {
    Done,
    /// A layer uses overlay features native diff cannot read.
    Foreign(String),
}

fn ioe(op: &'static str, path: &[u8], e: std::io::Error) -> Error {
    Error::io_at(op, path, e)
}

enum Top {
    Whiteout,
    Dir {
        /// Dir fds of this name in the contributing uppers (top first).
        layers: Vec<OwnedFd>,
        /// The union hides the base's directory here.
        hides_base: bool,
    },
    Other,
}

struct Child {
    name: CString,
    /// Index (in the frame's layers) of the upper holding the winning entry.
    top: usize,
    st: Stat,
    kind: Top,
}

struct Frame {
    path: Vec<u8>,
    layers: Vec<OwnedFd>,
    base: Option<OwnedFd>,
    /// Below an opaque directory: nothing of the base shows here.
    hidden: bool,
    st: Stat,
    children: std::vec::IntoIter<Child>,
}

/// Walk the uppers `uppers` (top first) against `base` (the base's merged
/// view, `None` for an empty base). `hides_base`: the last upper has an
/// opaque root (see [`flatten_opaque_root`]), so nothing of the base shows.
/// With `deletions`, what an opaque directory hides is reported as
/// deletions instead of an opaque marker.
pub fn walk(
    uppers: &[BorrowedFd<'_>],
    hides_base: bool,
    base: Option<BorrowedFd<'_>>,
    x: OverlayXattr,
    deletions: bool,
    emit: &mut Emit<'_>,
) -> Result<Walk> {
    let Some(top) = uppers.first() else {
        return Ok(Walk::Done);
    };
    let roots = uppers
        .iter()
        .map(|u| rustix::io::dup(u).map_err(|e| ioe("dup", b"/", e.into())))
        .collect::<Result<Vec<_>>>()?;
    let rst = rustix::fs::fstat(top).map_err(|e| ioe("stat", b"/", e.into()))?;
    if strata_core::changes::root_differs(*top, &rst, base)? {
        emit(DiffItem::Entry {
            path: b"",
            change: ChangeKind::Modified,
            st: &rst,
            src: DiffSource::Dir(*top),
        })?;
    }
    // Below an opaque directory a diff needs nothing of the base (the
    // marker says it all); changes still look there to tell Added from
    // Modified and to list what each directory no longer holds, as the
    // naive walk over the merged views does.
    let base_root = match base {
        Some(b) if !hides_base || deletions => {
            Some(rustix::io::dup(b).map_err(|e| ioe("dup", b"/", e.into()))?)
        }
        _ => None,
    };
    if hides_base && base.is_some() {
        opaque_items(b"", &rst, base, deletions, emit, &roots)?;
    }
    let mut w = Walker {
        stack: Vec::new(),
        x,
        deletions,
    };
    if let Err(reason) = w.push(Vec::new(), roots, base_root, hides_base, rst)? {
        return Ok(Walk::Foreign(reason));
    }
    while let Some(frame) = w.stack.last_mut() {
        let Some(ch) = frame.children.next() else {
            w.stack.pop();
            continue;
        };
        if let Err(reason) = w.visit(ch, emit)? {
            return Ok(Walk::Foreign(reason));
        }
    }
    Ok(Walk::Done)
}

/// Why the uppers cannot be read natively (a foreign overlay feature).
type Foreign = std::result::Result<(), String>;

/// A directory of the union met by the walk.
struct MergedDir {
    name: CString,
    st: Stat,
    path: Vec<u8>,
    change: ChangeKind,
    /// Its fds in the contributing uppers, top first.
    layers: Vec<OwnedFd>,
    /// The union hides the base's directory here.
    hides_base: bool,
    base_is_dir: bool,
}

/// The walk's state: the directories being walked, the root first.
struct Walker {
    stack: Vec<Frame>,
    x: OverlayXattr,
    deletions: bool,
}

impl Walker {
    /// Walk into a directory present in `layers` (top first).
    fn push(
        &mut self,
        path: Vec<u8>,
        layers: Vec<OwnedFd>,
        base: Option<OwnedFd>,
        hidden: bool,
        st: Stat,
    ) -> Result<Foreign> {
        let kids = match children(&layers, &path, self.x)? {
            Ok(c) => c,
            Err(reason) => return Ok(Err(reason)),
        };
        self.stack.push(Frame {
            path,
            layers,
            base,
            hidden,
            st,
            children: kids.into_iter(),
        });
        Ok(Ok(()))
    }

    /// One merged child of the top directory.
    fn visit(&mut self, ch: Child, emit: &mut Emit<'_>) -> Result<Foreign> {
        let Some(frame) = self.stack.last() else {
            return Ok(Ok(()));
        };
        let path = join(&frame.path, ch.name.as_bytes());
        let base_st = match &frame.base {
            Some(b) => {
                fsx::try_stat_at(b.as_fd(), &ch.name).map_err(|e| ioe("stat base", &path, e))?
            }
            None => None,
        };
        let change = if base_st.is_some() {
            ChangeKind::Modified
        } else {
            ChangeKind::Added
        };
        match ch.kind {
            // (below an opaque directory its deletions are listed already)
            Top::Whiteout if base_st.is_some() && !frame.hidden => emit(DiffItem::Whiteout {
                path: &path,
                mtime: (frame.st.st_mtime, frame.st.st_mtime_nsec as u32),
            })?,
            Top::Whiteout => {}
            Top::Other => emit(DiffItem::Entry {
                path: &path,
                change,
                st: &ch.st,
                src: DiffSource::At(frame.layers[ch.top].as_fd(), &ch.name),
            })?,
            Top::Dir { layers, hides_base } => {
                let d = MergedDir {
                    base_is_dir: base_st.is_some_and(|s| fsx::file_type(&s) == FileType::Directory),
                    name: ch.name,
                    st: ch.st,
                    path,
                    change,
                    layers,
                    hides_base,
                };
                return self.dir(d, emit);
            }
        }
        Ok(Ok(()))
    }

    /// A merged directory: its entry, what it hides when it is opaque,
    /// then its children.
    fn dir(&mut self, d: MergedDir, emit: &mut Emit<'_>) -> Result<Foreign> {
        let MergedDir {
            name,
            st,
            path,
            change,
            layers,
            hides_base,
            base_is_dir,
        } = d;
        let Some(frame) = self.stack.last() else {
            return Ok(Ok(()));
        };
        let hides_base = hides_base || frame.hidden;
        emit(DiffItem::Entry {
            path: &path,
            change,
            st: &st,
            src: DiffSource::Dir(layers[0].as_fd()),
        })?;
        let base_dir = match (&frame.base, base_is_dir) {
            (Some(b), true) => {
                Some(fsx::open_dir_at(b.as_fd(), &name).map_err(|e| ioe("open base", &path, e))?)
            }
            _ => None,
        };
        if hides_base && base_dir.is_some() {
            let bfd = base_dir.as_ref().map(|b| b.as_fd());
            opaque_items(&path, &st, bfd, self.deletions, emit, &layers)?;
        }
        let base = if hides_base && !self.deletions {
            None
        } else {
            base_dir
        };
        self.push(path, layers, base, hides_base, st)
    }
}

/// What an opaque directory hides: an opaque marker (diff) or a deletion
/// for each base entry the union does not hold (changes).
fn opaque_items(
    path: &[u8],
    st: &Stat,
    base_dir: Option<BorrowedFd<'_>>,
    deletions: bool,
    emit: &mut Emit<'_>,
    layers: &[OwnedFd],
) -> Result<()> {
    let mtime = (st.st_mtime, st.st_mtime_nsec as u32);
    if !deletions {
        return emit(DiffItem::Opaque { dir: path, mtime });
    }
    let Some(b) = base_dir else { return Ok(()) };
    for e in fsx::read_dir_sorted(b).map_err(|e| ioe("read base", path, e))? {
        let mut present = false;
        for l in layers {
            if let Some(s) =
                fsx::try_stat_at(l.as_fd(), &e.name).map_err(|e| ioe("stat", path, e))?
            {
                present = !fsx::is_whiteout(&s);
                break;
            }
        }
        if !present {
            let p = join(path, e.name.as_bytes());
            emit(DiffItem::Whiteout { path: &p, mtime })?;
        }
    }
    Ok(())
}

/// A layer whose root is opaque hides every layer below it; overlayfs
/// ignores the opaque xattr on a layer's root, so such a layer is mounted
/// without the layers below, and its overlay forms (whiteouts, opaque
/// xattrs, the root's mark) hide nothing any more: they are removed here,
/// leaving a plain tree that reads the same alone (even bind-mounted). The
/// caller records the opaque root in the layer's metadata.
pub fn flatten_opaque_root(root: BorrowedFd<'_>, x: OverlayXattr) -> Result<()> {
    x.unset_opaque(XattrTarget::Fd(root))
        .map_err(|e| ioe("remove opaque xattr", b"/", e))?;
    strata_core::whiteout::strip_overlay_forms(root, x)
        .map_err(|e| ioe("remove overlay forms", b"/", e))
}

fn has_xattr(t: XattrTarget<'_>, name: &[u8], path: &[u8]) -> Result<bool> {
    Ok(fsx::xattr_get(t, name)
        .map_err(|e| ioe("read xattr", path, e))?
        .is_some())
}

fn foreign_name(x: OverlayXattr, what: &str) -> Vec<u8> {
    let mut n = x.prefix().to_vec();
    n.extend_from_slice(what.as_bytes());
    n
}

/// A directory `name` whose topmost entry is in `layers[top]`: its fds
/// from that layer down while it continues (until a layer where it is
/// opaque, or a whiteout or non-directory hides what is below), and
/// whether the union hides the base there.
fn dir_layers(
    layers: &[OwnedFd],
    top: usize,
    st: Stat,
    name: &CString,
    here: &[u8],
    x: OverlayXattr,
    redirect: &[u8],
) -> Result<std::result::Result<(Vec<OwnedFd>, bool), String>> {
    let mut sub = Vec::new();
    for (j, l) in layers.iter().enumerate().skip(top) {
        let s = if j == top {
            Some(st)
        } else {
            fsx::try_stat_at(l.as_fd(), name).map_err(|e| ioe("stat", here, e))?
        };
        match s {
            None => continue,
            Some(s) if fsx::file_type(&s) == FileType::Directory => {
                let fd = fsx::open_dir_at(l.as_fd(), name).map_err(|e| ioe("open", here, e))?;
                if has_xattr(XattrTarget::Fd(fd.as_fd()), redirect, here)? {
                    let why = format!(
                        "{} has a redirect xattr",
                        strata_core::error::Name(here.to_vec())
                    );
                    return Ok(Err(why));
                }
                let opaque = x
                    .is_opaque(XattrTarget::Fd(fd.as_fd()))
                    .map_err(|e| ioe("xattr", here, e))?;
                sub.push(fd);
                if opaque {
                    return Ok(Ok((sub, true)));
                }
            }
            // a whiteout or a non-directory below: what is under it (and
            // the base) is hidden
            Some(_) => return Ok(Ok((sub, true))),
        }
    }
    Ok(Ok((sub, false)))
}

/// The merged children of a directory present in `layers` (top first):
/// whiteouts first, then the rest, each by name. `Err(reason)` when a
/// foreign overlay feature shows up.
fn children(
    layers: &[OwnedFd],
    path: &[u8],
    x: OverlayXattr,
) -> Result<std::result::Result<Vec<Child>, String>> {
    let redirect = foreign_name(x, "redirect");
    let metacopy = foreign_name(x, "metacopy");
    // (name -> index of the first layer that has it)
    let mut names: std::collections::BTreeMap<CString, usize> = std::collections::BTreeMap::new();
    for (i, l) in layers.iter().enumerate() {
        for e in fsx::read_dir_sorted(l.as_fd()).map_err(|e| ioe("read dir", path, e))? {
            names.entry(e.name).or_insert(i);
        }
    }
    let mut whiteouts = Vec::new();
    let mut rest = Vec::new();
    for (name, top) in names {
        let here = join(path, name.as_bytes());
        let st = fsx::stat_at(layers[top].as_fd(), &name).map_err(|e| ioe("stat", &here, e))?;
        let ft = fsx::file_type(&st);
        if fsx::is_whiteout(&st) {
            whiteouts.push(Child {
                name,
                top,
                st,
                kind: Top::Whiteout,
            });
            continue;
        }
        if ft != FileType::Directory {
            if ft == FileType::RegularFile
                && has_xattr(
                    XattrTarget::At(layers[top].as_fd(), name.as_bytes()),
                    &metacopy,
                    &here,
                )?
            {
                let why = format!("{} has a metacopy xattr", strata_core::error::Name(here));
                return Ok(Err(why));
            }
            rest.push(Child {
                name,
                top,
                st,
                kind: Top::Other,
            });
            continue;
        }
        let (sub, hides_base) = match dir_layers(layers, top, st, &name, &here, x, &redirect)? {
            Ok(v) => v,
            Err(reason) => return Ok(Err(reason)),
        };
        rest.push(Child {
            name,
            top,
            st,
            kind: Top::Dir {
                layers: sub,
                hides_base,
            },
        });
    }
    whiteouts.extend(rest);
    Ok(Ok(whiteouts))
}
