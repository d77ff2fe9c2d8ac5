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

use std::collections::VecDeque;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU8, Ordering};

use rustix::fs::{self as rfs, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::error::{Error, IoContext, Result};
use crate::fsx::{self, XattrTarget};
use crate::whiteout::OverlayXattr;

/// Symlinks followed in one resolution before giving up (Linux: 40).
const MAX_SYMLINKS: usize = 40;

/// Normalise a layer-diff path: returns the components joined by `/`
/// (empty for the root itself).
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
    Ok(out.join(&b'/'))
}

/// Split a normalised path into (parent, base name); the root has no base.
pub fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&b""[..], path),
    }
}

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
    pub root: BorrowedFd<'a>,
    pub root_path: &'a std::path::Path,
    /// The parent's merged view (overlay layers only).
    pub lower: Option<BorrowedFd<'a>>,
    /// Overlay on-disk forms in the upper: 0/0 whiteouts and opaque xattrs.
    pub overlay: Option<OverlayXattr>,
    pub use_openat2: bool,
}

impl<'a> Resolver<'a> {
    pub fn new(root: BorrowedFd<'a>, root_path: &'a std::path::Path) -> Self {
        Resolver {
            root,
            root_path,
            lower: None,
            overlay: None,
            use_openat2: openat2_available(),
        }
    }

    fn err(&self, op: &'static str, path: &[u8], e: impl Into<io::Error>) -> Error {
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

    fn walk(
        &self,
        path: &[u8],
        missing: Missing,
        hook: &mut dyn ResolveHook,
    ) -> Result<Option<(ResolvedDir, bool)>> {
        struct Level {
            fd: OwnedFd,
            name: Vec<u8>,
            lower_visible: bool,
        }
        let root_fd = rfs::openat(self.root, c".", fsx::DIR_FLAGS, Mode::empty())
            .ctx("open", self.root_path)?;
        let root_lower = self.lower.is_some() && !self.is_opaque(root_fd.as_fd())?;
        let mut stack: Vec<Level> = vec![Level {
            fd: root_fd,
            name: Vec::new(),
            lower_visible: root_lower,
        }];
        let cur_path = |stack: &[Level]| -> Vec<u8> {
            stack[1..]
                .iter()
                .map(|l| l.name.as_slice())
                .collect::<Vec<_>>()
                .join(&b'/')
        };
        let mut queue: VecDeque<Vec<u8>> = path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .map(|c| c.to_vec())
            .collect();
        let mut links = 0usize;

        while let Some(c) = queue.pop_front() {
            if c.is_empty() || c == b"." {
                continue;
            }
            if c == b".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let top = stack.last().map(|l| (l.fd.as_fd(), l.lower_visible));
            let Some((top_fd, lower_visible)) = top else {
                break;
            };
            let here = join(&cur_path(&stack), &c);
            let cc = fsx::cstr(&c).map_err(|e| self.err("resolve", &here, e))?;
            let st = fsx::try_stat_at(top_fd, &cc).map_err(|e| self.err("stat", &here, e))?;
            let (kind, in_upper) = match &st {
                Some(st) if self.overlay.is_some() && fsx::is_whiteout(st) => {
                    // deleted in this layer: missing, and the lower is hidden
                    (None, true)
                }
                Some(st) => (Some(fsx::file_type(st)), true),
                None => (None, false),
            };
            match kind {
                Some(FileType::Directory) => {
                    let fd =
                        fsx::open_dir_at(top_fd, &cc).map_err(|e| self.err("open", &here, e))?;
                    let lv = lower_visible && !self.is_opaque(fd.as_fd())?;
                    stack.push(Level {
                        fd,
                        name: c,
                        lower_visible: lv,
                    });
                    continue;
                }
                Some(FileType::Symlink) => {
                    let target = rfs::readlinkat(top_fd, cc.as_c_str(), Vec::new())
                        .map_err(|e| self.err("readlink", &here, e))?;
                    self.follow(&mut links, &here, target.as_bytes(), &mut queue)?;
                    if target.as_bytes().starts_with(b"/") {
                        stack.truncate(1);
                    }
                    continue;
                }
                Some(_) => {
                    return Err(self.err("resolve", &here, Errno::NOTDIR));
                }
                None => {}
            }
            // Not in the upper (or whited out there).
            let lower_kind = if lower_visible && !in_upper {
                self.lower_stat(&here)?
            } else {
                None
            };
            match lower_kind {
                Some((st, FileType::Symlink)) => {
                    let _ = st;
                    let target = self.lower_readlink(&here)?;
                    self.follow(&mut links, &here, &target, &mut queue)?;
                    if target.starts_with(b"/") {
                        stack.truncate(1);
                    }
                    continue;
                }
                Some((_, FileType::Directory)) | None => {}
                Some(_) => return Err(self.err("resolve", &here, Errno::NOTDIR)),
            }
            let lower_dir = matches!(lower_kind, Some((_, FileType::Directory)));
            if missing == Missing::Stop || (missing == Missing::CreateIfLower && !lower_dir) {
                return Ok(None);
            }
            // A name reached through a symlink target is not checked like
            // entry names are: a `.wh.` directory made here could never be
            // diffed faithfully (it would read back as a whiteout).
            if c.starts_with(crate::whiteout::WHITEOUT_PREFIX) {
                return Err(Error::invalid(
                    format!("path {}", crate::error::Name(here)),
                    "a symlink leads to a missing directory with a whiteout (.wh.) name",
                ));
            }
            // Create the directory in the upper.
            if in_upper {
                // an overlay whiteout: replace it by an opaque directory
                rfs::unlinkat(top_fd, cc.as_c_str(), rfs::AtFlags::empty())
                    .map_err(|e| self.err("remove whiteout", &here, e))?;
            }
            rfs::mkdirat(top_fd, cc.as_c_str(), Mode::from_raw_mode(0o755))
                .map_err(|e| self.err("mkdir", &here, e))?;
            let fd = fsx::open_dir_at(top_fd, &cc).map_err(|e| self.err("open", &here, e))?;
            let mut restore = None;
            let mut lv = false;
            if let Some((lst, FileType::Directory)) = lower_kind {
                self.copy_up_dir_meta(fd.as_fd(), &here, &lst)?;
                restore = Some(fsx::mtime_of(&lst));
                lv = true;
            } else if in_upper && let Some(x) = self.overlay {
                x.set_opaque(XattrTarget::Fd(fd.as_fd()))
                    .map_err(|e| self.err("set opaque", &here, e))?;
            }
            hook.created_dir(&here, restore);
            stack.push(Level {
                fd,
                name: c,
                lower_visible: lv,
            });
        }
        let path = cur_path(&stack);
        Ok(stack
            .pop()
            .map(|l| (ResolvedDir { fd: l.fd, path }, l.lower_visible)))
    }

    fn follow(
        &self,
        links: &mut usize,
        here: &[u8],
        target: &[u8],
        queue: &mut VecDeque<Vec<u8>>,
    ) -> Result<()> {
        *links += 1;
        if *links > MAX_SYMLINKS {
            return Err(self.err("resolve", here, Errno::LOOP));
        }
        if target.is_empty() {
            return Err(self.err("resolve", here, Errno::NOENT));
        }
        for c in target.split(|&b| b == b'/').rev() {
            if !c.is_empty() {
                queue.push_front(c.to_vec());
            }
        }
        Ok(())
    }

    fn is_opaque(&self, fd: BorrowedFd<'_>) -> Result<bool> {
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
                return Ok(None);
            }
            Err(e) => {
                return Err(Error::io(
                    "open lower",
                    String::from_utf8_lossy(dir).as_ref(),
                    e,
                ));
            }
        };
        let cb = fsx::cstr(base).map_err(|e| Error::io("lower", "", e))?;
        match fsx::try_stat_at(dfd.as_fd(), &cb) {
            Ok(Some(st)) => {
                let ft = fsx::file_type(&st);
                Ok(Some((st, ft)))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(Error::io(
                "stat lower",
                String::from_utf8_lossy(path).as_ref(),
                e,
            )),
        }
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
            Err(e) => Err(Error::io(
                "open lower",
                String::from_utf8_lossy(dir).as_ref(),
                e,
            )),
        }
    }

    fn lower_readlink(&self, path: &[u8]) -> Result<Vec<u8>> {
        let Some((dfd, base)) = self.lower_parent(path)? else {
            return Err(Error::not_found(format!(
                "lower {}",
                String::from_utf8_lossy(path)
            )));
        };
        let cb = fsx::cstr(&base).map_err(|e| Error::io("lower", "", e))?;
        let t = rfs::readlinkat(&dfd, cb.as_c_str(), Vec::new())
            .ctx("readlink lower", String::from_utf8_lossy(path).as_ref())?;
        Ok(t.into_bytes())
    }

    /// Give a directory just made in the upper the lower directory's owner,
    /// mode and xattrs (what the kernel's copy-up does).
    fn copy_up_dir_meta(&self, fd: BorrowedFd<'_>, path: &[u8], lst: &rfs::Stat) -> Result<()> {
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

pub fn cstr_ref(c: &std::ffi::CString) -> &CStr {
    c.as_c_str()
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn normalize_rules() {
        assert_eq!(normalize(b"/etc//passwd").unwrap(), b"etc/passwd");
        assert_eq!(normalize(b"./a/./b/../c/").unwrap(), b"a/c");
        assert_eq!(normalize(b"./").unwrap(), b"");
        assert_eq!(
            normalize(b"../x").unwrap_err().kind(),
            crate::ErrorKind::PathEscape
        );
        assert_eq!(
            normalize(b"a/../../x").unwrap_err().kind(),
            crate::ErrorKind::PathEscape
        );
        assert!(normalize(b"a\0b").is_err());
    }

    fn walk_both(f: impl Fn(&Resolver<'_>)) {
        for use2 in [true, false] {
            let t = tempfile::tempdir().unwrap();
            let fd = fsx::open_dir_path(t.path()).unwrap();
            let mut r = Resolver::new(fd.as_fd(), t.path());
            r.use_openat2 = use2 && openat2_available();
            f(&r);
        }
    }

    #[test]
    fn symlinks_stay_in_root() {
        walk_both(|r| {
            let outside = tempfile::tempdir().unwrap();
            let root = r.root_path;
            std::os::unix::fs::symlink(outside.path(), root.join("abs")).unwrap();
            std::os::unix::fs::symlink("../../../..", root.join("up")).unwrap();
            let d = r
                .dir(b"abs/sub", Missing::Create, &mut ())
                .unwrap()
                .unwrap();
            // the absolute target was re-rooted inside the layer
            let expect = normalize(outside.path().as_os_str().as_encoded_bytes()).unwrap();
            assert_eq!(d.path, join(&expect, b"sub"));
            assert!(root.join(std::str::from_utf8(&d.path).unwrap()).is_dir());
            assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
            let d = r.dir(b"up/x", Missing::Create, &mut ()).unwrap().unwrap();
            assert_eq!(d.path, b"x");
            assert!(root.join("x").is_dir());
        });
    }

    #[test]
    fn symlink_loops_are_errors() {
        walk_both(|r| {
            std::os::unix::fs::symlink("b", r.root_path.join("a")).unwrap();
            std::os::unix::fs::symlink("a", r.root_path.join("b")).unwrap();
            let e = r.dir(b"a/x", Missing::Create, &mut ()).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(Errno::LOOP.raw_os_error()));
        });
    }

    #[test]
    fn whiteout_named_dirs_are_not_created_through_symlinks() {
        walk_both(|r| {
            std::os::unix::fs::symlink(".wh.a", r.root_path.join("l")).unwrap();
            let e = r.dir(b"l/x", Missing::Create, &mut ()).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{e}");
            assert!(e.to_string().contains(".wh.a"), "{e}");
            assert!(!r.root_path.join(".wh.a").exists());
            // an existing directory behind the link is fine
            std::fs::create_dir(r.root_path.join("d")).unwrap();
            std::os::unix::fs::symlink("d", r.root_path.join("m")).unwrap();
            assert_eq!(
                r.dir(b"m", Missing::Create, &mut ()).unwrap().unwrap().path,
                b"d"
            );
        });
    }

    #[test]
    fn missing_stop_returns_none() {
        walk_both(|r| {
            assert!(r.dir(b"no/such", Missing::Stop, &mut ()).unwrap().is_none());
            assert!(!r.root_path.join("no").exists());
            std::fs::write(r.root_path.join("file"), b"").unwrap();
            let e = r.dir(b"file/x", Missing::Create, &mut ()).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(Errno::NOTDIR.raw_os_error()));
        });
    }
}
