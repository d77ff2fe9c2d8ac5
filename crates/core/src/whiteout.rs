//! Whiteout conventions.
//!
//! In a layer diff (OCI image-spec changesets) a deleted path `DIR/NAME` is
//! an empty file `DIR/.wh.NAME`, and `DIR/.wh..wh..opq` says that `DIR`
//! hides everything lower layers had in it ("opaque"). Both only ever apply
//! to lower layers: entries of the same layer are never hidden by them.
//!
//! On disk every backend keeps its own form:
//! - [`WhiteoutFormat::Delete`] (vfs, btrfs): a layer is a full tree, so a
//!   whiteout deletes the path and an opaque marker empties the directory
//!   of what lower layers put there.
//! - [`WhiteoutFormat::Overlay`] (overlay2): a whiteout is a character
//!   device 0/0 and an opaque directory carries the xattr
//!   `trusted.overlay.opaque=y` (`user.overlay.opaque` when the mount uses
//!   `userxattr`).
//!
//! Diff tars never contain these on-disk forms, and applying a tar never
//! lets it create them: a 0/0 char device or an `*.overlay.*` xattr in a
//! tar is refused.

use std::os::fd::{AsFd, BorrowedFd};

use crate::fsx::{self, XattrTarget};

/// Prefix of a whiteout file name in a layer diff.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Prefix of whiteout metadata names (AUFS era: `.wh..wh.plnk`, ...).
pub const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
/// The opaque-directory marker of a layer diff.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// How whiteouts are kept on disk by a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutFormat {
    /// Apply deletes in place; the layer is a complete tree.
    Delete,
    /// overlayfs forms: 0/0 char devices and opaque xattrs.
    Overlay(OverlayXattr),
}

/// Which xattr namespace overlayfs reads its markers from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlayXattr {
    /// `trusted.overlay.*` (the default; needs CAP_SYS_ADMIN).
    Trusted,
    /// `user.overlay.*` (mounts with `userxattr`, rootless).
    User,
}

impl OverlayXattr {
    /// The opaque xattr's name.
    pub fn opaque_name(self) -> &'static [u8] {
        match self {
            OverlayXattr::Trusted => b"trusted.overlay.opaque",
            OverlayXattr::User => b"user.overlay.opaque",
        }
    }

    /// The xattr prefix (`trusted.overlay.` or `user.overlay.`).
    pub fn prefix(self) -> &'static [u8] {
        match self {
            OverlayXattr::Trusted => b"trusted.overlay.",
            OverlayXattr::User => b"user.overlay.",
        }
    }

    /// Mark a directory opaque.
    pub fn set_opaque(self, t: XattrTarget<'_>) -> std::io::Result<()> {
        fsx::xattr_set(t, self.opaque_name(), b"y")
    }

    /// Remove the opaque mark (absent is fine).
    pub fn unset_opaque(self, t: XattrTarget<'_>) -> std::io::Result<()> {
        match fsx::xattr_remove(t, self.opaque_name()) {
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NODATA.raw_os_error()) => Ok(()),
            r => r,
        }
    }

    /// Whether a directory is marked opaque.
    pub fn is_opaque(self, t: XattrTarget<'_>) -> std::io::Result<bool> {
        Ok(matches!(
            fsx::xattr_get(t, self.opaque_name())?.as_deref(),
            Some(b"y")
        ))
    }
}

/// Remove the overlay forms below `dir` (not from `dir` itself): every
/// whiteout and every opaque mark. Used when `dir` comes to hide all that
/// is below it (it turns opaque): overlayfs then reads it and its subtree
/// straight from the upper, where a whiteout would be listed yet fail to
/// stat, and those forms hide nothing any more anyway.
pub fn strip_overlay_forms(dir: BorrowedFd<'_>, x: OverlayXattr) -> std::io::Result<()> {
    let mut stack = vec![rustix::io::dup(dir)?];
    while let Some(fd) = stack.pop() {
        for e in fsx::read_dir_sorted(fd.as_fd())? {
            let st = fsx::stat_at(fd.as_fd(), &e.name)?;
            if fsx::is_whiteout(&st) {
                rustix::fs::unlinkat(fd.as_fd(), e.name.as_c_str(), rustix::fs::AtFlags::empty())?;
            } else if fsx::file_type(&st) == rustix::fs::FileType::Directory {
                let sub = fsx::open_dir_at(fd.as_fd(), &e.name)?;
                x.unset_opaque(XattrTarget::Fd(sub.as_fd()))?;
                stack.push(sub);
            }
        }
    }
    Ok(())
}

/// Is this xattr name one of overlayfs's own (in either namespace)?
pub fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// What a layer-diff base name means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker<'a> {
    /// An ordinary name.
    None,
    /// `.wh..wh..opq`
    Opaque,
    /// `.wh.NAME`: NAME is deleted.
    Whiteout(&'a [u8]),
    /// Other `.wh..wh.*` names (AUFS metadata).
    Meta,
}

/// What a base name of a layer diff means.
pub fn classify(base: &[u8]) -> Marker<'_> {
    if base == OPAQUE_MARKER {
        Marker::Opaque
    } else if base.starts_with(WHITEOUT_META_PREFIX) {
        Marker::Meta
    } else if let Some(rest) = base.strip_prefix(WHITEOUT_PREFIX) {
        Marker::Whiteout(rest)
    } else {
        Marker::None
    }
}

/// The diff-tar name of a whiteout for `name`.
pub fn whiteout_name(name: &[u8]) -> Vec<u8> {
    let mut v = WHITEOUT_PREFIX.to_vec();
    v.extend_from_slice(name);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_names() {
        assert_eq!(classify(b".wh..wh..opq"), Marker::Opaque);
        assert_eq!(classify(b".wh.foo"), Marker::Whiteout(b"foo"));
        assert_eq!(classify(b".wh..wh.plnk"), Marker::Meta);
        assert_eq!(classify(b"foo.wh."), Marker::None);
        assert_eq!(classify(b".wh."), Marker::Whiteout(b""));
    }
}
