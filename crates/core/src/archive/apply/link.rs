//! Hardlinks: the target resolves in the root like any path and must be
//! an existing non-directory; with overlay whiteouts, a target that lives in
//! a lower layer is copied up first (as overlayfs does without `index=on`).

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{self as rfs, FileType};

use super::{Applier, sys};
use crate::archive::tar::EntryHead;
use crate::error::{Error, Result};
use crate::fsx;
use crate::resolve::{self, Missing, join, normalize, split_parent};
use crate::whiteout::WhiteoutFormat;

impl Applier<'_> {
    pub(super) fn hardlink(
        &mut self,
        head: &EntryHead,
        pfd: BorrowedFd<'_>,
        cbase: &CStr,
        rpath: &[u8],
        existing: Option<&rfs::Stat>,
    ) -> Result<()> {
        let target = normalize(&head.link)?;
        if target.is_empty() {
            return Err(Error::invalid("hardlink", "target is the layer root"));
        }
        let (tdir, tbase) = split_parent(&target);
        let ctbase = resolve::component(tbase)?;
        let overlay = matches!(self.format, WhiteoutFormat::Overlay(_));
        let (tparent, lower_visible) = {
            let missing = if overlay {
                Missing::CreateIfLower
            } else {
                Missing::Stop
            };
            let (res, mut hook) = self.hook();
            res.dir_seeing_lower(tdir, missing, &mut hook)?
        }
        .ok_or_else(|| {
            Error::not_found(format!(
                "hardlink target {}",
                crate::error::Name(head.link.clone())
            ))
        })?;
        let trpath = join(&tparent.path, tbase);
        let mut tst =
            fsx::try_stat_at(tparent.fd.as_fd(), &ctbase).map_err(|e| sys("stat", &trpath, e))?;
        let mut existing = existing.copied();
        if overlay
            && tst.is_none()
            && lower_visible
            && self.copy_up(tparent.fd.as_fd(), &ctbase, &trpath)?
        {
            tst = fsx::try_stat_at(tparent.fd.as_fd(), &ctbase)
                .map_err(|e| sys("stat", &trpath, e))?;
            // the copy may have landed on the entry's own name (a link to
            // itself)
            existing = fsx::try_stat_at(pfd, cbase).map_err(|e| sys("stat", rpath, e))?;
        }
        let tst = match tst {
            Some(st) if !(overlay && fsx::is_whiteout(&st)) => st,
            _ => {
                return Err(Error::not_found(format!(
                    "hardlink target {}",
                    crate::error::Name(head.link.clone())
                )));
            }
        };
        if fsx::file_type(&tst) == FileType::Directory {
            return Err(Error::invalid("hardlink", "target is a directory"));
        }
        if let Some(st) = existing {
            if st.st_dev == tst.st_dev && st.st_ino == tst.st_ino {
                // already the same file; still this layer's entry, which a
                // later opaque marker or whiteout of the dir must spare
                self.created.insert(rpath);
                return Ok(());
            }
            fsx::remove_all_at(pfd, cbase).map_err(|e| sys("remove", rpath, e))?;
        }
        rfs::linkat(
            tparent.fd.as_fd(),
            ctbase.as_c_str(),
            pfd,
            cbase,
            rfs::AtFlags::empty(),
        )
        .map_err(|e| sys("link", rpath, e))?;
        self.created.insert(rpath);
        Ok(())
    }

    /// A link target that lives in a lower layer is copied up into
    /// `dir`/`base` first; `false` when there is no such lower file. When
    /// another name of the same lower file was copied up by this layer
    /// already, the new name is linked to that copy: names of one group
    /// that all end up in the upper stay one inode.
    fn copy_up(&mut self, dir: BorrowedFd<'_>, base: &CStr, trpath: &[u8]) -> Result<bool> {
        let Some((lst, ft)) = self.res.lower_stat(trpath)? else {
            return Ok(false);
        };
        if ft == FileType::Directory {
            return Ok(false);
        }
        let key = (lst.st_dev, lst.st_ino);
        if lst.st_nlink > 1
            && let Some(first) = self.copied_up.get(key)?
            && self.link_to_copy(&first, dir, base)?
        {
            return Ok(true);
        }
        let Some((lfd, lbase)) = self.res.lower_parent(trpath)? else {
            return Ok(false);
        };
        let clbase = resolve::component(&lbase)?;
        crate::copy::copy_node(lfd.as_fd(), &clbase, &lst, dir, base, None)
            .map_err(|e| sys("copy up", trpath, e))?;
        if lst.st_nlink > 1 {
            self.copied_up.insert(key, trpath)?;
        }
        Ok(true)
    }

    /// Link `dir`/`base` to the upper copy at `first`; `false` when that
    /// copy is gone (removed or replaced later in the layer).
    fn link_to_copy(&mut self, first: &[u8], dir: BorrowedFd<'_>, base: &CStr) -> Result<bool> {
        let (fdir, fbase) = split_parent(first);
        let Ok(ffd) = resolve::open_beneath(
            self.res.root,
            fdir,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
            self.res.use_openat2,
        ) else {
            return Ok(false);
        };
        let cf = resolve::component(fbase)?;
        match fsx::try_stat_at(ffd.as_fd(), &cf).map_err(|e| sys("stat", first, e))? {
            Some(st) if fsx::file_type(&st) != FileType::Directory && !fsx::is_whiteout(&st) => {}
            _ => return Ok(false),
        }
        rfs::linkat(ffd.as_fd(), cf.as_c_str(), dir, base, rfs::AtFlags::empty())
            .map_err(|e| sys("link", first, e))?;
        Ok(true)
    }
}
