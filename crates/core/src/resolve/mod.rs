//! In-root path resolution for layer contents.
//!
//! Names from a layer diff are normalised lexically first ([`normalize`]):
//! a leading `/` is dropped, `.` and empty components vanish, and a `..`
//! that would climb above the root is a [`PathEscape`](crate::ErrorKind)
//! error. The remaining components are then resolved against the layer's
//! directory fd, following symlinks only *inside* the root: an absolute
//! target restarts at the layer root and `..` never goes above it (the
//! semantics of `openat2(RESOLVE_IN_ROOT)`, done component by component so
//! that missing directories can be created and, for overlay layers, looked
//! up and copied up from the parent's merged view).
//!
//! The ladder (STYLE habit 7): paths without symlinks are opened in one
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV)` call;
//! when the kernel lacks openat2 (ENOSYS, or a seccomp filter's EPERM) the
//! same is done with an `O_NOFOLLOW` walk. Everything else (a symlink on
//! the way, a missing directory, an overlay whiteout) takes the component
//! walk, which never asks the kernel to follow a link.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU8, Ordering};

use rustix::fs::{self as rfs, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::error::{Error, IoContext, Result};
use crate::fsx::{self, XattrTarget};
use crate::whiteout::OverlayXattr;

mod walk;

/// Symlinks followed in one resolution before giving up (Linux: 40).
const MAX_SYMLINKS: usize = 40;
/// The longest path a resolution may reach (Linux's PATH_MAX, with the
/// NUL): symlinks that expand past it are refused, which also bounds the
/// directories one entry can make.
pub const PATH_MAX: usize = 4095;

/// Normalise a layer-diff path: returns the components joined by `/`
/// (empty for the root itself). Longer than [`PATH_MAX`] is an error.
pub fn normalize(name: &[u8]) -> Result<Vec<u8>> {
    if name.contains(&0) {
        return Err(Error::invalid(
            format!("path {}", crate::error::Name(name.to_vec())),
            "contains a NUL byte",
        ));
    }
    let mut out: Vec<&[u8]> = Vec::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err(Error::escape(name, "`..` climbs above the layer root"));
                }
            }
            c => out.push(c),
        }
    }
    let joined = out.join(&b'/');
    if joined.len() > PATH_MAX {
        return Err(Error::invalid(
            format!("path {}…", crate::error::Name(joined[..64].to_vec())),
            format!(
                "{} bytes long, more than PATH_MAX ({PATH_MAX})",
                joined.len()
            ),
        ));
    }
    Ok(joined)
}

/// Split a normalised path into (parent, base name); the root has no base.
pub fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&b""[..], path),
    }
}

/// `a/b`, or `b` when `a` is empty.
pub fn join(a: &[u8], b: &[u8]) -> Vec<u8> {
    if a.is_empty() {
        return b.to_vec();
    }
    let mut v = Vec::with_capacity(a.len() + 1 + b.len());
    v.extend_from_slice(a);
    v.push(b'/');
    v.extend_from_slice(b);
    v
}

static OPENAT2: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 works, 2 unavailable

/// Does this kernel have a usable openat2? Probed once, then cached.
pub fn openat2_available() -> bool {
    match OPENAT2.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let ok = !matches!(
                rfs::openat2(
                    rfs::CWD,
                    c"/",
                    OFlags::PATH | OFlags::CLOEXEC,
                    Mode::empty(),
                    ResolveFlags::BENEATH,
                ),
                Err(Errno::NOSYS) | Err(Errno::PERM) | Err(Errno::INVAL)
            );
            OPENAT2.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
            ok
        }
    }
}

/// Open `path` (normalised, no symlinks expected) beneath `dir`, refusing
/// to follow any symlink and to cross mounts. `dir_only` adds
/// O_DIRECTORY. Uses openat2 when `use_openat2`, else an O_NOFOLLOW walk.
pub fn open_beneath(
    dir: BorrowedFd<'_>,
    path: &[u8],
    flags: OFlags,
    use_openat2: bool,
) -> io::Result<OwnedFd> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    if path.is_empty() {
        return Ok(rfs::openat(dir, c".", flags, Mode::empty())?);
    }
    if use_openat2 {
        let p = fsx::cstr(path)?;
        loop {
            match rfs::openat2(
                dir,
                p.as_c_str(),
                flags,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV,
            ) {
                Err(Errno::AGAIN) => continue,
                r => return Ok(r?),
            }
        }
    }
    // Fallback rung: every intermediate component is opened O_NOFOLLOW |
    // O_DIRECTORY, so a symlink on the way fails with ELOOP / ENOTDIR.
    let comps: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    let mut cur = rustix::io::dup(dir)?;
    for c in &comps[..comps.len() - 1] {
        let cc = fsx::cstr(c)?;
        cur = rfs::openat(
            &cur,
            cc.as_c_str(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
    }
    let last = fsx::cstr(comps[comps.len() - 1])?;
    Ok(rfs::openat(&cur, last.as_c_str(), flags, Mode::empty())?)
}

/// Does this error from [`open_beneath`] in the lower view mean that
/// nothing is there (rather than a failure)?
fn lower_hides(e: &io::Error) -> bool {
    matches!(
        Errno::from_io_error(e),
        Some(Errno::NOENT | Errno::NOTDIR | Errno::LOOP)
    )
}

/// A resolved directory inside the layer root.
#[derive(Debug)]
pub struct ResolvedDir {
    /// An `O_RDONLY | O_DIRECTORY` fd (usable for `*at` and `f*xattr`).
    pub fd: OwnedFd,
    /// The resolved path (symlinks replaced by their targets).
    pub path: Vec<u8>,
}

/// How missing directories are treated by [`Resolver::dir`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Return `None`.
    Stop,
    /// Create them (copied up from the lower view when it has them).
    Create,
    /// Copy them up where the lower view has a directory; return `None`
    /// where it has none (nothing there for a whiteout to hide).
    CreateIfLower,
}

/// Events of a resolution the apply engine wants to know about.
pub trait ResolveHook {
    /// A directory was created at `path` (implicitly); `restore_mtime` is the
    /// lower directory's mtime when it was copied up.
    fn created_dir(&mut self, path: &[u8], restore_mtime: Option<rfs::Timespec>);
}

impl ResolveHook for () {
    fn created_dir(&mut self, _: &[u8], _: Option<rfs::Timespec>) {}
}

/// Resolves paths inside one layer directory (the upper), optionally over a
/// lower view (the parent's merged tree, for overlay layers).
#[derive(Debug)]
pub struct Resolver<'a> {
    /// The layer directory.
    pub root: BorrowedFd<'a>,
    /// Its path (for messages).
    pub root_path: &'a std::path::Path,
    /// The parent's merged view (overlay layers only).
    pub lower: Option<BorrowedFd<'a>>,
    /// Overlay on-disk forms in the upper: 0/0 whiteouts and opaque xattrs.
    pub overlay: Option<OverlayXattr>,
    /// Resolve with `openat2(RESOLVE_IN_ROOT)` where the kernel has it.
    pub use_openat2: bool,
    /// Directories the lower view lacks (the view does not change while
    /// a layer is applied): nothing below them is looked up again.
    lower_missing: std::cell::RefCell<Vec<Vec<u8>>>,
}

/// Lower directories remembered as missing.
const LOWER_MISSING_KEPT: usize = 16;

impl<'a> Resolver<'a> {
    /// A resolver of paths in `root`, with no lower view.
    pub fn new(root: BorrowedFd<'a>, root_path: &'a std::path::Path) -> Self {
        Resolver {
            root,
            root_path,
            lower: None,
            overlay: None,
            use_openat2: openat2_available(),
            lower_missing: std::cell::RefCell::new(Vec::new()),
        }
    }

    pub(crate) fn err(&self, op: &'static str, path: &[u8], e: impl Into<io::Error>) -> Error {
        let mut p = self.root_path.as_os_str().to_owned();
        if !path.is_empty() {
            p.push("/");
            p.push(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(path));
        }
        Error::io(op, p, e)
    }

    /// Open directory `path` (normalised) of the layer, following symlinks
    /// in-root, creating what is missing when `missing == Create`.
    pub fn dir(
        &self,
        path: &[u8],
        missing: Missing,
        hook: &mut dyn ResolveHook,
    ) -> Result<Option<ResolvedDir>> {
        match open_beneath(
            self.root,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY,
            self.use_openat2,
        ) {
            Ok(fd) => {
                return Ok(Some(ResolvedDir {
                    fd,
                    path: path.to_vec(),
                }));
            }
            // a symlink on the way, something missing, a non-directory (or
            // an overlay whiteout) on the way: take the careful walk
            Err(e)
                if matches!(
                    Errno::from_io_error(&e),
                    Some(Errno::LOOP | Errno::NOENT | Errno::NOTDIR | Errno::XDEV)
                ) => {}
            Err(e) => return Err(self.err("open directory", path, e)),
        }
        Ok(self.walk(path, missing, hook)?.map(|(d, _)| d))
    }

    /// Like [`Resolver::dir`], and whether the lower view shows through
    /// the directory (there is a lower and no opaque directory on the way).
    pub fn dir_seeing_lower(
        &self,
        path: &[u8],
        missing: Missing,
        hook: &mut dyn ResolveHook,
    ) -> Result<Option<(ResolvedDir, bool)>> {
        self.walk(path, missing, hook)
    }

    pub(crate) fn is_opaque(&self, fd: BorrowedFd<'_>) -> Result<bool> {
        match (self.overlay, self.lower) {
            (Some(x), Some(_)) => x
                .is_opaque(XattrTarget::Fd(fd))
                .ctx("read opaque xattr", self.root_path),
            _ => Ok(false),
        }
    }

    /// Stat `path` (normalised) in the lower view, as overlayfs looks it
    /// up: `None` when a component on the way is missing, not a directory,
    /// or a symlink.
    pub fn lower_stat(&self, path: &[u8]) -> Result<Option<(rfs::Stat, FileType)>> {
        let Some(lower) = self.lower else {
            return Ok(None);
        };
        let (dir, base) = split_parent(path);
        if self.lower_lacks(dir) {
            return Ok(None);
        }
        let dfd = match open_beneath(
            lower,
            dir,
            OFlags::PATH | OFlags::DIRECTORY,
            self.use_openat2,
        ) {
            Ok(fd) => fd,
            // a missing name, a non-directory or a symlink on the way:
            // overlayfs merges directories by name and never follows a
            // lower symlink, so nothing of the lower shows below it
            Err(e) if lower_hides(&e) => {
                self.remember_lower_missing(dir);
                return Ok(None);
            }
            Err(e) => {
                return Err(Error::io_at("open lower", dir, e));
            }
        };
        let cb = fsx::cstr(base).map_err(|e| Error::io("lower", "", e))?;
        match fsx::try_stat_at(dfd.as_fd(), &cb) {
            Ok(Some(st)) => {
                let ft = fsx::file_type(&st);
                Ok(Some((st, ft)))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(Error::io_at("stat lower", path, e)),
        }
    }

    /// Whether `dir` is at or below a directory the lower view lacks.
    fn lower_lacks(&self, dir: &[u8]) -> bool {
        self.lower_missing
            .borrow()
            .iter()
            .any(|m| dir.starts_with(m) && (dir.len() == m.len() || dir[m.len()] == b'/'))
    }

    fn remember_lower_missing(&self, dir: &[u8]) {
        let mut m = self.lower_missing.borrow_mut();
        if m.len() >= LOWER_MISSING_KEPT {
            m.remove(0);
        }
        m.push(dir.to_vec());
    }

    /// Open the lower view's parent directory of `path` (for copy-up).
    pub fn lower_parent(&self, path: &[u8]) -> Result<Option<(OwnedFd, Vec<u8>)>> {
        let Some(lower) = self.lower else {
            return Ok(None);
        };
        let (dir, base) = split_parent(path);
        match open_beneath(
            lower,
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY,
            self.use_openat2,
        ) {
            Ok(fd) => Ok(Some((fd, base.to_vec()))),
            // a missing name, a non-directory or a symlink on the way:
            // overlayfs merges directories by name and never follows a
            // lower symlink, so nothing of the lower shows below it
            Err(e) if lower_hides(&e) => Ok(None),
            Err(e) => Err(Error::io_at("open lower", dir, e)),
        }
    }

    pub(crate) fn lower_readlink(&self, path: &[u8]) -> Result<Vec<u8>> {
        let Some((dfd, base)) = self.lower_parent(path)? else {
            return Err(Error::not_found(format!(
                "lower {}",
                crate::error::Name(path.to_vec())
            )));
        };
        let cb = fsx::cstr(&base).map_err(|e| Error::io("lower", "", e))?;
        let t = rfs::readlinkat(&dfd, cb.as_c_str(), Vec::new())
            .map_err(|e| Error::io_at("readlink lower", path, e))?;
        Ok(t.into_bytes())
    }

    /// Give a directory just made in the upper the lower directory's owner,
    /// mode and xattrs (what the kernel's copy-up does).
    pub(crate) fn copy_up_dir_meta(
        &self,
        fd: BorrowedFd<'_>,
        path: &[u8],
        lst: &rfs::Stat,
    ) -> Result<()> {
        fsx::chown_fd(fd, lst.st_uid, lst.st_gid).map_err(|e| self.err("chown", path, e))?;
        rfs::fchmod(fd, Mode::from_raw_mode(lst.st_mode & 0o7777))
            .map_err(|e| self.err("chmod", path, e))?;
        if let Some((lfd, base)) = self.lower_parent(path)? {
            let cb = fsx::cstr(&base).map_err(|e| self.err("copy up", path, e))?;
            let ldir =
                fsx::open_dir_at(lfd.as_fd(), &cb).map_err(|e| self.err("open lower", path, e))?;
            for (k, v) in fsx::xattrs(XattrTarget::Fd(ldir.as_fd()))
                .map_err(|e| self.err("read lower xattrs", path, e))?
            {
                if crate::whiteout::is_overlay_xattr(&k) {
                    continue;
                }
                fsx::xattr_set(XattrTarget::Fd(fd), &k, &v)
                    .map_err(|e| self.err("copy up xattr", path, e))?;
            }
        }
        Ok(())
    }
}

/// Convenience: a C string of a (validated) single component.
pub fn component(name: &[u8]) -> Result<std::ffi::CString> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(Error::invalid(
            format!("name {}", crate::error::Name(name.to_vec())),
            "not a single path component",
        ));
    }
    fsx::cstr(name).map_err(|_| {
        Error::invalid(
            format!("name {}", crate::error::Name(name.to_vec())),
            "contains a NUL byte",
        )
    })
}

/// The `CStr` of a `CString`.
pub fn cstr_ref(c: &std::ffi::CString) -> &CStr {
    c.as_c_str()
}

#[cfg(test)]
mod tests;
