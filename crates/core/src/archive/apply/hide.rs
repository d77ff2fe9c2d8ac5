//! Whiteouts and opaque markers: they hide what lower layers had, never
//! entries of the same layer (OCI image spec). In the delete form the
//! lower content is removed; in the overlay form a 0/0 character device or
//! the opaque xattr is left for overlayfs, only where a lower has something
//! to hide.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{self as rfs, FileType, Mode};

use super::{Applier, sys};
use crate::error::{Error, Result};
use crate::fsx::{self, XattrTarget};
use crate::resolve::{self, Missing, join};
use crate::whiteout::{self, OverlayXattr, WhiteoutFormat};

impl Applier<'_> {
    pub(super) fn whiteout(&mut self, dir: &[u8], name: &[u8]) -> Result<()> {
        self.invalidate();
        match self.format {
            WhiteoutFormat::Delete => self.whiteout_delete(dir, name),
            WhiteoutFormat::Overlay(x) => self.whiteout_overlay(dir, name, x),
        }
    }

    /// A whiteout in the delete form: what lower layers had goes.
    fn whiteout_delete(&mut self, dir: &[u8], name: &[u8]) -> Result<()> {
        let cname = resolve::component(name)?;
        let parent = {
            let (res, mut hook) = self.hook();
            res.dir(dir, Missing::Stop, &mut hook)?
        };
        let Some(parent) = parent else {
            return Ok(()); // nothing below to delete
        };
        let rpath = join(&parent.path, name);
        if self.created.contains(&rpath) || self.created.holds(&rpath) {
            // entries of this layer are never hidden by its whiteouts;
            // a directory of (or holding entries of) this layer loses
            // what lower layers had
            if let Some(st) =
                fsx::try_stat_at(parent.fd.as_fd(), &cname).map_err(|e| sys("stat", &rpath, e))?
                && fsx::file_type(&st) == FileType::Directory
            {
                let fd = fsx::open_dir_at(parent.fd.as_fd(), &cname)
                    .map_err(|e| sys("open", &rpath, e))?;
                self.prune_not_created(fd, &rpath)?;
            }
            return Ok(());
        }
        fsx::remove_all_at(parent.fd.as_fd(), &cname).map_err(|e| sys("remove", &rpath, e))
    }

    /// A whiteout in overlayfs's form.
    fn whiteout_overlay(&mut self, dir: &[u8], name: &[u8], x: OverlayXattr) -> Result<()> {
        let cname = resolve::component(name)?;
        // A whiteout is made only where the lower view has something
        // to hide: overlayfs reads a directory with no lower (or an
        // opaque one) straight from the upper, so a whiteout there
        // would be listed yet fail to stat. Elsewhere it is a no-op,
        // as with the delete format.
        let found = {
            let (res, mut hook) = self.hook();
            res.dir_seeing_lower(dir, Missing::CreateIfLower, &mut hook)?
        };
        let Some((parent, lower_visible)) = found else {
            return Ok(());
        };
        let pfd = parent.fd.as_fd();
        let rpath = join(&parent.path, name);
        let existing = fsx::try_stat_at(pfd, &cname).map_err(|e| sys("stat", &rpath, e))?;
        if let Some(st) = &existing {
            if self.created.contains(&rpath) || self.created.holds(&rpath) {
                // this layer's own: only what the lower has there goes
                if fsx::file_type(st) == FileType::Directory
                    && lower_visible
                    && matches!(self.res.lower_stat(&rpath)?, Some((_, FileType::Directory)))
                {
                    let fd = fsx::open_dir_at(pfd, &cname).map_err(|e| sys("open", &rpath, e))?;
                    self.make_opaque(fd, &rpath, x)?;
                }
                return Ok(());
            }
            if fsx::is_whiteout(st) {
                return Ok(());
            }
            fsx::remove_all_at(pfd, &cname).map_err(|e| sys("remove", &rpath, e))?;
        }
        if !lower_visible || self.res.lower_stat(&rpath)?.is_none() {
            return Ok(());
        }
        rfs::mknodat(
            pfd,
            cname.as_c_str(),
            FileType::CharacterDevice,
            Mode::empty(),
            0,
        )
        .map_err(|e| sys("mknod whiteout", &rpath, e))?;
        Ok(())
    }

    pub(super) fn opaque(&mut self, dir: &[u8]) -> Result<()> {
        self.invalidate();
        let (d, lower_visible) = {
            let (res, mut hook) = self.hook();
            res.dir_seeing_lower(dir, Missing::Create, &mut hook)?
        }
        .ok_or_else(|| Error::not_found("opaque directory"))?;
        match self.format {
            WhiteoutFormat::Delete => {
                let path = d.path.clone();
                self.prune_not_created(d.fd, &path)
            }
            WhiteoutFormat::Overlay(x) => {
                // marked only where the lower view has a directory to hide:
                // a mark over nothing would show through a layer mounted
                // alone (a bind mount) and hides nothing anyway
                let hides = lower_visible
                    && (d.path.is_empty()
                        || matches!(
                            self.res.lower_stat(&d.path)?,
                            Some((_, FileType::Directory))
                        ));
                if !hides {
                    return Ok(());
                }
                let path = d.path.clone();
                self.make_opaque(d.fd, &path, x)
            }
        }
    }

    /// Mark an upper directory opaque. What its subtree held only to stand
    /// for or hide lower content (copied-up directories holding nothing of
    /// this layer, whiteouts, opaque marks) goes: nothing lower shows there
    /// any more, and overlayfs reads such a directory straight from the
    /// upper, where a whiteout would be listed yet fail to stat.
    fn make_opaque(&mut self, fd: OwnedFd, path: &[u8], x: OverlayXattr) -> Result<()> {
        self.invalidate();
        let dup = rustix::io::dup(&fd).map_err(|e| sys("dup", path, e))?;
        self.prune_not_created(dup, path)?;
        whiteout::strip_overlay_forms(fd.as_fd(), x)
            .map_err(|e| sys("remove overlay forms", path, e))?;
        x.set_opaque(XattrTarget::Fd(fd.as_fd()))
            .map_err(|e| sys("set opaque", path, e))
    }

    /// Remove, below `dir`, everything this layer did not create.
    fn prune_not_created(&self, dir: OwnedFd, path: &[u8]) -> Result<()> {
        let mut stack = vec![(dir, path.to_vec())];
        while let Some((fd, p)) = stack.pop() {
            for e in fsx::read_dir_sorted(fd.as_fd()).map_err(|e| sys("read dir", &p, e))? {
                let cp = join(&p, e.name.to_bytes());
                if !self.created.contains(&cp) && !self.created.holds(&cp) {
                    fsx::remove_all_at(fd.as_fd(), &e.name).map_err(|e| sys("remove", &cp, e))?;
                } else if e.file_type == FileType::Directory
                    || (e.file_type == FileType::Unknown
                        && fsx::stat_at(fd.as_fd(), &e.name)
                            .is_ok_and(|st| fsx::file_type(&st) == FileType::Directory))
                {
                    let sub =
                        fsx::open_dir_at(fd.as_fd(), &e.name).map_err(|e| sys("open", &cp, e))?;
                    stack.push((sub, cp));
                }
            }
        }
        Ok(())
    }
}
