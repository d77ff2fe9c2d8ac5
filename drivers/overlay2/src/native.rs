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
use strata_core::archive::write::{DiffItem, DiffSource, exported_xattr};
use strata_core::fsx::{self, XattrTarget};
use strata_core::resolve::join;
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
    Error::io(op, String::from_utf8_lossy(path).as_ref(), e)
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
/// With `for_changes`, what an opaque directory hides is reported as
/// deletions instead of an opaque marker.
pub fn walk(
    uppers: &[BorrowedFd<'_>],
    hides_base: bool,
    base: Option<BorrowedFd<'_>>,
    x: OverlayXattr,
    for_changes: bool,
    emit: &mut dyn FnMut(DiffItem<'_>) -> Result<()>,
) -> Result<Walk> {
    let Some(top) = uppers.first() else {
        return Ok(Walk::Done);
    };
    let roots = uppers
        .iter()
        .map(|u| rustix::io::dup(u).map_err(|e| ioe("dup", b"/", e.into())))
        .collect::<Result<Vec<_>>>()?;
    let rst = rustix::fs::fstat(top).map_err(|e| ioe("stat", b"/", e.into()))?;
    let root_differs = match base {
        Some(b) => {
            let bst = rustix::fs::fstat(b).map_err(|e| ioe("stat", b"/", e.into()))?;
            rst.st_mode != bst.st_mode
                || rst.st_uid != bst.st_uid
                || rst.st_gid != bst.st_gid
                || xattrs(XattrTarget::Fd(*top), b"/")? != xattrs(XattrTarget::Fd(b), b"/")?
        }
        None => {
            rst.st_mode & 0o7777 != 0o755
                || rst.st_uid != 0
                || rst.st_gid != 0
                || !xattrs(XattrTarget::Fd(*top), b"/")?.is_empty()
        }
    };
    if root_differs {
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
        Some(b) if !hides_base || for_changes => {
            Some(rustix::io::dup(b).map_err(|e| ioe("dup", b"/", e.into()))?)
        }
        _ => None,
    };
    if hides_base && base.is_some() {
        opaque_items(b"", &rst, base, x, for_changes, emit, &roots)?;
    }
    let kids = match children(&roots, b"", x)? {
        Ok(c) => c,
        Err(reason) => return Ok(Walk::Foreign(reason)),
    };
    let mut stack = vec![Frame {
        path: Vec::new(),
        layers: roots,
        base: base_root,
        hidden: hides_base,
        st: rst,
        children: kids.into_iter(),
    }];
    while let Some(frame) = stack.last_mut() {
        let Some(ch) = frame.children.next() else {
            stack.pop();
            continue;
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
        let top_fd = frame.layers[ch.top].as_fd();
        match ch.kind {
            Top::Whiteout => {
                // (below an opaque directory its deletions are listed already)
                if base_st.is_some() && !frame.hidden {
                    emit(DiffItem::Whiteout {
                        path: &path,
                        mtime: (frame.st.st_mtime, frame.st.st_mtime_nsec as u32),
                    })?;
                }
            }
            Top::Other => {
                emit(DiffItem::Entry {
                    path: &path,
                    change,
                    st: &ch.st,
                    src: DiffSource::At(top_fd, &ch.name),
                })?;
            }
            Top::Dir { layers, hides_base } => {
                let hides_base = hides_base || frame.hidden;
                emit(DiffItem::Entry {
                    path: &path,
                    change,
                    st: &ch.st,
                    src: DiffSource::Dir(layers[0].as_fd()),
                })?;
                let base_is_dir = base_st
                    .as_ref()
                    .is_some_and(|s| fsx::file_type(s) == FileType::Directory);
                let base_dir = if base_is_dir {
                    match &frame.base {
                        Some(b) => Some(
                            fsx::open_dir_at(b.as_fd(), &ch.name)
                                .map_err(|e| ioe("open base", &path, e))?,
                        ),
                        None => None,
                    }
                } else {
                    None
                };
                if hides_base && base_dir.is_some() {
                    opaque_items(
                        &path,
                        &ch.st,
                        base_dir.as_ref().map(|b| b.as_fd()),
                        x,
                        for_changes,
                        emit,
                        &layers,
                    )?;
                }
                let kids = match children(&layers, &path, x)? {
                    Ok(c) => c,
                    Err(reason) => return Ok(Walk::Foreign(reason)),
                };
                let st = ch.st;
                stack.push(Frame {
                    path,
                    layers,
                    base: if hides_base && !for_changes {
                        None
                    } else {
                        base_dir
                    },
                    hidden: hides_base,
                    st,
                    children: kids.into_iter(),
                });
            }
        }
    }
    Ok(Walk::Done)
}

/// What an opaque directory hides: an opaque marker (diff) or a deletion
/// for each base entry the union does not hold (changes).
#[allow(clippy::too_many_arguments)]
fn opaque_items(
    path: &[u8],
    st: &Stat,
    base_dir: Option<BorrowedFd<'_>>,
    _x: OverlayXattr,
    for_changes: bool,
    emit: &mut dyn FnMut(DiffItem<'_>) -> Result<()>,
    layers: &[OwnedFd],
) -> Result<()> {
    let mtime = (st.st_mtime, st.st_mtime_nsec as u32);
    if !for_changes {
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

fn xattrs(t: XattrTarget<'_>, path: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut v = fsx::xattrs(t).map_err(|e| ioe("read xattrs", path, e))?;
    v.retain(|(k, _)| exported_xattr(k));
    Ok(v)
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
                return Ok(Err(format!(
                    "{} has a metacopy xattr",
                    String::from_utf8_lossy(&here)
                )));
            }
            rest.push(Child {
                name,
                top,
                st,
                kind: Top::Other,
            });
            continue;
        }
        // a directory: collect it from this layer down while it continues
        let mut sub = Vec::new();
        let mut hides_base = false;
        for (j, l) in layers.iter().enumerate().skip(top) {
            let s = if j == top {
                Some(st)
            } else {
                fsx::try_stat_at(l.as_fd(), &name).map_err(|e| ioe("stat", &here, e))?
            };
            match s {
                None => continue,
                Some(s) if fsx::file_type(&s) == FileType::Directory => {
                    let fd =
                        fsx::open_dir_at(l.as_fd(), &name).map_err(|e| ioe("open", &here, e))?;
                    if has_xattr(XattrTarget::Fd(fd.as_fd()), &redirect, &here)? {
                        return Ok(Err(format!(
                            "{} has a redirect xattr",
                            String::from_utf8_lossy(&here)
                        )));
                    }
                    let opaque = x
                        .is_opaque(XattrTarget::Fd(fd.as_fd()))
                        .map_err(|e| ioe("xattr", &here, e))?;
                    sub.push(fd);
                    if opaque {
                        hides_base = true;
                        break;
                    }
                }
                Some(_) => {
                    // a whiteout or a non-directory below: what is under it
                    // (and the base) is hidden
                    hides_base = true;
                    break;
                }
            }
        }
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
