//! Normalised listings of trees, compared as text: one line per path with
//! type, mode, owner, size, mtime, xattrs, link target or content digest,
//! and hardlink groups.

use std::collections::HashMap;
use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use anyhow::{Context, Result};
use rustix::fs::FileType;
use strata_core::fsx::{self, XattrTarget};

/// What to leave out of a listing.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListOpts {
    /// Leave out directory mtimes (they move when entries are added).
    pub no_dir_mtime: bool,
    /// Leave out all mtimes.
    pub no_mtime: bool,
    /// Leave out the root directory's line.
    pub no_root: bool,
}

fn esc(b: &[u8]) -> String {
    strata_core::error::Name(b.to_vec())
        .to_string()
        .replace(' ', "\\s")
}

/// List the tree under `root` (never following symlinks).
pub fn listing(root: &Path, opts: ListOpts) -> Result<Vec<String>> {
    let fd = fsx::open_dir_path(root).with_context(|| format!("open {}", root.display()))?;
    let mut out = Vec::new();
    let mut links: HashMap<(u64, u64), String> = HashMap::new();
    let st = rustix::fs::fstat(&fd)?;
    if !opts.no_root {
        out.push(line(
            "/",
            &st,
            &fsx::xattrs(XattrTarget::Fd(fd.as_fd()))?,
            "",
            opts,
        ));
    }
    let mut stack = vec![(fd, Vec::<u8>::new())];
    while let Some((d, p)) = stack.pop() {
        let ents = fsx::read_dir_sorted(d.as_fd())?;
        let mut subdirs = Vec::new();
        for e in ents {
            let path = if p.is_empty() {
                e.name.to_bytes().to_vec()
            } else {
                [p.as_slice(), b"/", e.name.to_bytes()].concat()
            };
            let shown = format!("/{}", esc(&path));
            let st = fsx::stat_at(d.as_fd(), &e.name)?;
            let ft = fsx::file_type(&st);
            let (xattrs, mut extra) = describe(d.as_fd(), &e.name, &st, &mut subdirs, &path)?;
            if ft != FileType::Directory && st.st_nlink > 1 {
                let key = (st.st_dev, st.st_ino);
                match links.get(&key) {
                    Some(first) => extra.push_str(&format!(" link={first}")),
                    None => {
                        links.insert(key, shown.clone());
                    }
                }
            }
            out.push(line(&shown, &st, &xattrs, &extra, opts));
        }
        // depth-first in name order
        subdirs.reverse();
        stack.extend(subdirs);
    }
    out.sort();
    Ok(out)
}

/// Extended attributes: (name, value) pairs.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// The xattrs and the type-specific part of an entry's line; a
/// directory is opened and queued in `subdirs`.
fn describe(
    d: BorrowedFd<'_>,
    name: &CStr,
    st: &rustix::fs::Stat,
    subdirs: &mut Vec<(OwnedFd, Vec<u8>)>,
    path: &[u8],
) -> Result<(Xattrs, String)> {
    let at = || fsx::xattrs(XattrTarget::At(d, name.to_bytes()));
    Ok(match fsx::file_type(st) {
        FileType::Directory => {
            let sub = fsx::open_dir_at(d, name)?;
            let x = fsx::xattrs(XattrTarget::Fd(sub.as_fd()))?;
            subdirs.push((sub, path.to_vec()));
            (x, String::new())
        }
        FileType::Symlink => {
            let t = rustix::fs::readlinkat(d, name, Vec::new())?;
            (at()?, format!("-> {}", esc(t.as_bytes())))
        }
        FileType::RegularFile => {
            let f = fsx::open_file_at(d, name)?;
            let x = fsx::xattrs(XattrTarget::Fd(f.as_fd()))?;
            let mut h = strata_core::Hashing::new(std::io::sink());
            std::io::copy(&mut std::fs::File::from(f), &mut h)?;
            let (_, digest, _) = h.finish();
            (x, format!("sha256:{}", &digest.hex()[..16]))
        }
        FileType::CharacterDevice | FileType::BlockDevice => {
            let (ma, mi) = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
            (at()?, format!("dev {ma}:{mi}"))
        }
        _ => (at()?, String::new()),
    })
}

fn line(
    path: &str,
    st: &rustix::fs::Stat,
    xattrs: &[(Vec<u8>, Vec<u8>)],
    extra: &str,
    opts: ListOpts,
) -> String {
    let ft = fsx::file_type(st);
    let t = match ft {
        FileType::Directory => "dir",
        FileType::RegularFile => "file",
        FileType::Symlink => "symlink",
        FileType::CharacterDevice => "char",
        FileType::BlockDevice => "block",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        FileType::Unknown => "unknown",
    };
    let size = if ft == FileType::RegularFile || ft == FileType::Symlink {
        st.st_size.to_string()
    } else {
        "-".into()
    };
    let mtime = if opts.no_mtime
        || (opts.no_dir_mtime && ft == FileType::Directory)
        || ft == FileType::Symlink && opts.no_dir_mtime
    {
        "-".to_string()
    } else {
        format!("{}.{:09}", st.st_mtime, st.st_mtime_nsec)
    };
    let xs: Vec<String> = xattrs
        .iter()
        .filter(|(k, _)| k.as_slice() != b"security.selinux")
        .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
        .collect();
    let mode = st.st_mode & 0o7777;
    format!(
        "{path} {t} {mode:04o} {}:{} {size} {mtime} [{}] {extra}",
        st.st_uid,
        st.st_gid,
        xs.join(",")
    )
    .trim_end()
    .to_string()
}

/// Lines only in `a` and only in `b`, for failure messages.
pub fn diff_listings(a: &[String], b: &[String]) -> String {
    let sa: std::collections::BTreeSet<&String> = a.iter().collect();
    let sb: std::collections::BTreeSet<&String> = b.iter().collect();
    let mut s = String::new();
    for l in sa.difference(&sb) {
        s.push_str(&format!("\n  - {l}"));
    }
    for l in sb.difference(&sa) {
        s.push_str(&format!("\n  + {l}"));
    }
    s
}
