//! The component walk: one component at a time from the layer root,
//! following symlinks in-root (the layer's own, and, for overlay layers,
//! those of the lower view), creating missing directories when asked
//! (copied up from the lower view where it has them).
//!
//! Bounded work: at most [`MAX_SYMLINKS`] links are followed, and the
//! resolved path may not grow past [`PATH_MAX`] bytes, so one entry can
//! make at most a few thousand directories however its symlinks nest. The
//! resolved path is kept as one buffer (pushed and popped per component),
//! never rebuilt from the levels.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{self as rfs, FileType, Mode, Stat};
use rustix::io::Errno;

use super::{MAX_SYMLINKS, Missing, PATH_MAX, ResolveHook, ResolvedDir, Resolver};
use crate::error::{Error, IoContext, Result};
use crate::fsx::{self, XattrTarget};

/// One directory on the way.
struct Level {
    fd: OwnedFd,
    /// Bytes of the resolved path before this level's name.
    start: usize,
    /// The lower view shows through here.
    lower_visible: bool,
}

/// What a component is in the upper (the layer directory).
enum Upper {
    Dir,
    Symlink,
    Other,
    /// Missing; `true` when an overlay whiteout stands there (the lower
    /// is hidden).
    Missing(bool),
}

struct Walk<'r, 'a, 'h> {
    res: &'r Resolver<'a>,
    stack: Vec<Level>,
    /// The resolved path so far (components joined by `/`).
    path: Vec<u8>,
    queue: VecDeque<Vec<u8>>,
    links: usize,
    missing: Missing,
    hook: &'h mut dyn ResolveHook,
}

impl Resolver<'_> {
    /// Resolve directory `path` component by component; `None` when it is
    /// missing and `missing` does not create it. Also says whether the
    /// lower view shows through the directory.
    pub(super) fn walk(
        &self,
        path: &[u8],
        missing: Missing,
        hook: &mut dyn ResolveHook,
    ) -> Result<Option<(ResolvedDir, bool)>> {
        let root_fd = rfs::openat(self.root, c".", fsx::DIR_FLAGS, Mode::empty())
            .ctx("open", self.root_path)?;
        let root_lower = self.lower.is_some() && !self.is_opaque(root_fd.as_fd())?;
        let mut w = Walk {
            res: self,
            stack: vec![Level {
                fd: root_fd,
                start: 0,
                lower_visible: root_lower,
            }],
            path: Vec::new(),
            queue: components(path),
            links: 0,
            missing,
            hook,
        };
        while let Some(c) = w.queue.pop_front() {
            if !w.step(c)? {
                return Ok(None);
            }
        }
        let Some(top) = w.stack.pop() else {
            return Ok(None);
        };
        let dir = ResolvedDir {
            fd: top.fd,
            path: w.path,
        };
        Ok(Some((dir, top.lower_visible)))
    }
}

fn components(path: &[u8]) -> VecDeque<Vec<u8>> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .map(|c| c.to_vec())
        .collect()
}

impl Walk<'_, '_, '_> {
    /// Resolve one component; `false` when resolution stops at a missing
    /// directory.
    fn step(&mut self, c: Vec<u8>) -> Result<bool> {
        if c == b"." {
            return Ok(true);
        }
        if c == b".." {
            self.pop();
            return Ok(true);
        }
        let here = self.here(&c)?;
        let cc = fsx::cstr(&c).map_err(|e| self.res.err("resolve", &here, e))?;
        let (top_fd, lower_visible) = match self.stack.last() {
            Some(l) => (l.fd.as_fd(), l.lower_visible),
            None => return Ok(false),
        };
        let st = fsx::try_stat_at(top_fd, &cc).map_err(|e| self.res.err("stat", &here, e))?;
        match self.upper_kind(st.as_ref()) {
            Upper::Dir => {
                let fd =
                    fsx::open_dir_at(top_fd, &cc).map_err(|e| self.res.err("open", &here, e))?;
                let lv = lower_visible && !self.res.is_opaque(fd.as_fd())?;
                self.push(fd, &c, lv);
                Ok(true)
            }
            Upper::Symlink => {
                let target = rfs::readlinkat(top_fd, cc.as_c_str(), Vec::new())
                    .map_err(|e| self.res.err("readlink", &here, e))?;
                self.follow(&here, target.as_bytes())?;
                Ok(true)
            }
            Upper::Other => Err(self.res.err("resolve", &here, Errno::NOTDIR)),
            Upper::Missing(whited_out) => {
                self.missing_dir(c, &here, lower_visible && !whited_out, whited_out)
            }
        }
    }

    fn upper_kind(&self, st: Option<&Stat>) -> Upper {
        match st {
            // deleted in this layer: missing, and the lower is hidden
            Some(st) if self.res.overlay.is_some() && fsx::is_whiteout(st) => Upper::Missing(true),
            Some(st) => match fsx::file_type(st) {
                FileType::Directory => Upper::Dir,
                FileType::Symlink => Upper::Symlink,
                _ => Upper::Other,
            },
            None => Upper::Missing(false),
        }
    }

    /// The path of component `c` below the current directory; refused
    /// past PATH_MAX.
    fn here(&self, c: &[u8]) -> Result<Vec<u8>> {
        if self.path.len() + 1 + c.len() > PATH_MAX {
            return Err(Error::invalid(
                format!(
                    "path {}…",
                    crate::error::Name(self.path[..self.path.len().min(64)].to_vec())
                ),
                format!("symlinks expand it past {PATH_MAX} bytes (PATH_MAX)"),
            ));
        }
        Ok(super::join(&self.path, c))
    }

    fn push(&mut self, fd: OwnedFd, name: &[u8], lower_visible: bool) {
        let start = self.path.len();
        if !self.path.is_empty() {
            self.path.push(b'/');
        }
        self.path.extend_from_slice(name);
        self.stack.push(Level {
            fd,
            start,
            lower_visible,
        });
    }

    /// `..`: up one level, never above the root.
    fn pop(&mut self) {
        if self.stack.len() > 1
            && let Some(l) = self.stack.pop()
        {
            self.path.truncate(l.start);
        }
    }

    /// Queue a symlink's target; an absolute one restarts at the root.
    fn follow(&mut self, here: &[u8], target: &[u8]) -> Result<()> {
        self.links += 1;
        if self.links > MAX_SYMLINKS {
            return Err(self.res.err("resolve", here, Errno::LOOP));
        }
        if target.is_empty() {
            return Err(self.res.err("resolve", here, Errno::NOENT));
        }
        for c in target.split(|&b| b == b'/').rev() {
            if !c.is_empty() {
                self.queue.push_front(c.to_vec());
            }
        }
        if target.starts_with(b"/") {
            self.stack.truncate(1);
            self.path.clear();
        }
        Ok(())
    }

    /// A component missing from the upper: the lower view's symlink is
    /// followed, its directory copied up, or a new directory made (when
    /// asked to).
    fn missing_dir(
        &mut self,
        c: Vec<u8>,
        here: &[u8],
        look_lower: bool,
        whited_out: bool,
    ) -> Result<bool> {
        let lower_kind = if look_lower {
            self.res.lower_stat(here)?
        } else {
            None
        };
        let lower_dir = match &lower_kind {
            Some((_, FileType::Symlink)) => {
                let target = self.res.lower_readlink(here)?;
                self.follow(here, &target)?;
                return Ok(true);
            }
            Some((st, FileType::Directory)) => Some(*st),
            Some(_) => return Err(self.res.err("resolve", here, Errno::NOTDIR)),
            None => None,
        };
        if self.missing == Missing::Stop
            || (self.missing == Missing::CreateIfLower && lower_dir.is_none())
        {
            return Ok(false);
        }
        // A name reached through a symlink target is not checked like
        // entry names are: a `.wh.` directory made here could never be
        // diffed faithfully (it would read back as a whiteout).
        if c.starts_with(crate::whiteout::WHITEOUT_PREFIX) {
            return Err(Error::invalid(
                format!("path {}", crate::error::Name(here.to_vec())),
                "a symlink leads to a missing directory with a whiteout (.wh.) name",
            ));
        }
        self.make_dir(c, here, lower_dir, whited_out)?;
        Ok(true)
    }

    /// Make directory `c` in the upper: a copy-up of the lower's (its
    /// owner, mode, xattrs, mtime), or a new one (opaque where it replaces
    /// an overlay whiteout).
    fn make_dir(
        &mut self,
        c: Vec<u8>,
        here: &[u8],
        lower: Option<Stat>,
        whited_out: bool,
    ) -> Result<()> {
        let Some(top_fd) = self.stack.last().map(|l| l.fd.as_fd()) else {
            return Ok(());
        };
        let cc = fsx::cstr(&c).map_err(|e| self.res.err("resolve", here, e))?;
        if whited_out {
            rfs::unlinkat(top_fd, cc.as_c_str(), rfs::AtFlags::empty())
                .map_err(|e| self.res.err("remove whiteout", here, e))?;
        }
        rfs::mkdirat(top_fd, cc.as_c_str(), Mode::from_raw_mode(0o755))
            .map_err(|e| self.res.err("mkdir", here, e))?;
        let fd = fsx::open_dir_at(top_fd, &cc).map_err(|e| self.res.err("open", here, e))?;
        let restore = match &lower {
            Some(lst) => {
                self.res.copy_up_dir_meta(fd.as_fd(), here, lst)?;
                Some(fsx::mtime_of(lst))
            }
            None => {
                if whited_out && let Some(x) = self.res.overlay {
                    x.set_opaque(XattrTarget::Fd(fd.as_fd()))
                        .map_err(|e| self.res.err("set opaque", here, e))?;
                }
                None
            }
        };
        self.hook.created_dir(here, restore);
        self.push(fd, &c, lower.is_some());
        Ok(())
    }
}
