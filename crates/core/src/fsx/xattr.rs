//! Extended attributes of inodes reached by fd, or by directory fd and
//! name (through `/proc/self/fd`, never following a symlink).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::fs as rfs;
use rustix::io::Errno;

use super::cstr;

/// `/proc/self/fd/DIRFD/NAME`: a path for the `l*xattr` calls (see module doc).
pub fn proc_path(dir: BorrowedFd<'_>, name: &[u8]) -> PathBuf {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    PathBuf::from(OsStr::from_bytes(&p))
}

/// Where to find an inode for xattr calls: an open fd (regular files and
/// directories) or a directory fd plus name (anything else).
#[derive(Debug, Clone, Copy)]
pub enum XattrTarget<'a> {
    /// An open file.
    Fd(BorrowedFd<'a>),
    /// A name in an open directory (symlinks are not followed).
    At(BorrowedFd<'a>, &'a [u8]),
}

fn grow_read<F>(mut f: F) -> io::Result<Vec<u8>>
where
    F: FnMut(&mut [u8]) -> Result<usize, Errno>,
{
    let mut cap = 256usize;
    loop {
        let mut buf = vec![0u8; cap];
        match f(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) if cap < (1 << 20) => cap *= 8,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Names of the extended attributes of an inode, sorted. File systems
/// without xattr support give an empty list.
pub fn xattr_names(t: XattrTarget<'_>) -> io::Result<Vec<Vec<u8>>> {
    let raw = match t {
        XattrTarget::Fd(fd) => grow_read(|b| rfs::flistxattr(fd, b)),
        XattrTarget::At(dir, name) => {
            let p = proc_path(dir, name);
            grow_read(|b| rfs::llistxattr(&p, b))
        }
    };
    let raw = match raw {
        Ok(r) => r,
        Err(e) if e.raw_os_error() == Some(Errno::OPNOTSUPP.raw_os_error()) => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut names: Vec<Vec<u8>> = raw
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| s.to_vec())
        .collect();
    names.sort();
    Ok(names)
}

/// Value of one extended attribute, `None` when absent.
pub fn xattr_get(t: XattrTarget<'_>, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let cname = cstr(name)?;
    let r = match t {
        XattrTarget::Fd(fd) => grow_read(|b| rfs::fgetxattr(fd, cname.as_c_str(), b)),
        XattrTarget::At(dir, n) => {
            let p = proc_path(dir, n);
            grow_read(|b| rfs::lgetxattr(&p, cname.as_c_str(), b))
        }
    };
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e)
            if e.raw_os_error() == Some(Errno::NODATA.raw_os_error())
                || e.raw_os_error() == Some(Errno::OPNOTSUPP.raw_os_error()) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Set one extended attribute.
pub fn xattr_set(t: XattrTarget<'_>, name: &[u8], value: &[u8]) -> io::Result<()> {
    let cname = cstr(name)?;
    match t {
        XattrTarget::Fd(fd) => {
            rfs::fsetxattr(fd, cname.as_c_str(), value, rfs::XattrFlags::empty())?
        }
        XattrTarget::At(dir, n) => {
            let p = proc_path(dir, n);
            rfs::lsetxattr(&p, cname.as_c_str(), value, rfs::XattrFlags::empty())?
        }
    }
    Ok(())
}

/// Remove one extended attribute (`Ok` when it was not there).
pub fn xattr_remove(t: XattrTarget<'_>, name: &[u8]) -> io::Result<()> {
    let cname = cstr(name)?;
    let r = match t {
        XattrTarget::Fd(fd) => rfs::fremovexattr(fd, cname.as_c_str()),
        XattrTarget::At(dir, n) => {
            let p = proc_path(dir, n);
            rfs::lremovexattr(&p, cname.as_c_str())
        }
    };
    match r {
        Ok(()) | Err(Errno::NODATA) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// All xattrs (name, value) of an inode, sorted by name.
pub fn xattrs(t: XattrTarget<'_>) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    for n in xattr_names(t)? {
        if let Some(v) = xattr_get(t, &n)? {
            out.push((n, v));
        }
    }
    Ok(out)
}
