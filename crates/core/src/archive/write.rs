//! Writing a layer diff: a sorted stream of [`DiffItem`]s becomes an OCI
//! layer tar (PAX where ustar is too small, hardlinks kept as hardlinks,
//! sparse files as PAX 1.0 sparse entries, whiteouts as `.wh.` files).
//!
//! The items come from a change walk (the core's naive walk of two trees, or
//! a backend's native one); the writer only reads the inodes they point at.

use std::collections::HashMap;
use std::ffi::CStr;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{self as rfs, FileType, SeekFrom, Stat};
use rustix::io::Errno;

use super::tarfmt::{Kind, Segment, TarWriter, WriteHead};
use crate::driver::ChangeKind;
use crate::error::{Error, Result};
use crate::fsx::{self, XattrTarget};
use crate::resolve::join;
use crate::whiteout;

/// Where to read an inode from.
#[derive(Debug, Clone, Copy)]
pub enum DiffSource<'a> {
    /// A directory, by its own fd.
    Dir(BorrowedFd<'a>),
    /// Any inode, by its parent directory and name.
    At(BorrowedFd<'a>, &'a CStr),
}

/// One element of a layer diff, in tar order.
#[derive(Debug, Clone, Copy)]
pub enum DiffItem<'a> {
    /// A path that is new or changed in the layer.
    Entry {
        path: &'a [u8],
        change: ChangeKind,
        st: &'a Stat,
        src: DiffSource<'a>,
    },
    /// A path that was deleted: `.wh.NAME` beside it. `mtime` is used for
    /// the whiteout file (the parent directory's, so output is stable).
    Whiteout { path: &'a [u8], mtime: (i64, u32) },
    /// A directory that hides everything its lower layers had.
    Opaque { dir: &'a [u8], mtime: (i64, u32) },
}

impl DiffItem<'_> {
    /// The change this item stands for (`None` for opaque markers).
    pub fn change(&self) -> Option<(ChangeKind, &[u8])> {
        match self {
            DiffItem::Entry { path, change, .. } => Some((*change, path)),
            DiffItem::Whiteout { path, .. } => Some((ChangeKind::Deleted, path)),
            DiffItem::Opaque { .. } => None,
        }
    }
}

/// Is this xattr exported into diffs? Backend markers and host labels stay.
pub fn exported_xattr(name: &[u8]) -> bool {
    !whiteout::is_overlay_xattr(name) && name != b"security.selinux"
}

/// Streams diff items into a tar.
pub struct DiffWriter<W: Write> {
    tar: TarWriter<W>,
    links: HashMap<(u64, u64), Vec<u8>>,
    buf: Vec<u8>,
}

impl<W: Write> std::fmt::Debug for DiffWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiffWriter")
            .field("entries", &self.tar.entries)
            .finish()
    }
}

fn werr(path: &[u8], e: io::Error) -> Error {
    Error::io(
        "write diff entry",
        String::from_utf8_lossy(path).as_ref(),
        e,
    )
}

fn mtime(st: &Stat) -> (i64, u32) {
    (st.st_mtime, st.st_mtime_nsec as u32)
}

/// The data segments of a file with holes (`None` when it has none).
pub fn data_segments(fd: BorrowedFd<'_>, size: u64) -> io::Result<Option<Vec<Segment>>> {
    let mut segs = Vec::new();
    let mut pos = 0u64;
    let mut holes = false;
    while pos < size {
        let data = match rfs::seek(fd, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(Errno::NXIO) => {
                holes = true; // a hole up to the end
                break;
            }
            Err(Errno::INVAL) | Err(Errno::OPNOTSUPP) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if data >= size {
            holes = true;
            break;
        }
        if data > pos {
            holes = true;
        }
        let hole = match rfs::seek(fd, SeekFrom::Hole(data)) {
            Ok(h) => h.min(size),
            Err(e) => return Err(e.into()),
        };
        segs.push(Segment {
            offset: data,
            len: hole - data,
        });
        pos = hole;
    }
    rfs::seek(fd, SeekFrom::Start(0))?;
    if !holes {
        return Ok(None);
    }
    if size > 0 && segs.last().is_none_or(|s| s.offset + s.len < size) {
        // GNU tar wants the map to reach the end: a zero-length last segment
        segs.push(Segment {
            offset: size,
            len: 0,
        });
    }
    Ok(Some(segs))
}

impl<W: Write> DiffWriter<W> {
    pub fn new(w: W) -> Self {
        DiffWriter {
            tar: TarWriter::new(w),
            links: HashMap::new(),
            buf: vec![0u8; 256 * 1024],
        }
    }

    pub fn entries(&self) -> u64 {
        self.tar.entries
    }

    /// End the archive; returns the writer and the bytes written.
    pub fn finish(self) -> Result<(W, u64)> {
        self.tar
            .finish()
            .map_err(|e| Error::io("write diff", "end of archive", e))
    }

    fn marker(&mut self, dir: &[u8], name: &[u8], mtime: (i64, u32)) -> Result<()> {
        let p = join(dir, name);
        self.tar
            .write_head(&WriteHead {
                path: &p,
                kind: Kind::File,
                link: b"",
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime,
                size: 0,
                dev_major: 0,
                dev_minor: 0,
                xattrs: &[],
                sparse: None,
            })
            .map_err(|e| werr(&p, e))?;
        Ok(())
    }

    pub fn item(&mut self, item: DiffItem<'_>) -> Result<()> {
        match item {
            DiffItem::Whiteout { path, mtime } => {
                let (dir, base) = crate::resolve::split_parent(path);
                self.marker(dir, &whiteout::whiteout_name(base), mtime)
            }
            DiffItem::Opaque { dir, mtime } => self.marker(dir, whiteout::OPAQUE_MARKER, mtime),
            DiffItem::Entry { path, st, src, .. } => self.entry(path, st, src),
        }
    }

    fn entry(&mut self, path: &[u8], st: &Stat, src: DiffSource<'_>) -> Result<()> {
        let ft = fsx::file_type(st);
        let xt = match src {
            DiffSource::Dir(fd) => XattrTarget::Fd(fd),
            DiffSource::At(d, n) => XattrTarget::At(d, n.to_bytes()),
        };
        let mut xattrs = fsx::xattrs(xt).map_err(|e| werr(path, e))?;
        xattrs.retain(|(k, _)| exported_xattr(k));
        let mut head = WriteHead {
            path,
            kind: Kind::File,
            link: b"",
            mode: st.st_mode & 0o7777,
            uid: u64::from(st.st_uid),
            gid: u64::from(st.st_gid),
            mtime: mtime(st),
            size: 0,
            dev_major: 0,
            dev_minor: 0,
            xattrs: &xattrs,
            sparse: None,
        };
        let link_target;
        match ft {
            FileType::Directory => {
                head.kind = Kind::Dir;
                if path.is_empty() {
                    head.path = b".";
                }
            }
            FileType::Symlink => {
                let DiffSource::At(d, n) = src else {
                    return Err(werr(path, io::Error::other("symlink without parent")));
                };
                link_target = rfs::readlinkat(d, n, Vec::new())
                    .map_err(|e| werr(path, e.into()))?
                    .into_bytes();
                head.kind = Kind::Symlink;
                head.link = &link_target;
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                if ft == FileType::CharacterDevice && st.st_rdev == 0 {
                    return Err(Error::invalid(
                        format!("entry {}", crate::error::Name(path.to_vec())),
                        "an overlay whiteout device cannot be written into a diff",
                    ));
                }
                head.kind = if ft == FileType::CharacterDevice {
                    Kind::Char
                } else {
                    Kind::Block
                };
                head.dev_major = rfs::major(st.st_rdev);
                head.dev_minor = rfs::minor(st.st_rdev);
            }
            FileType::Fifo => head.kind = Kind::Fifo,
            FileType::Socket => {
                tracing::warn!(path = %String::from_utf8_lossy(path), "skipping socket (tar cannot hold one)");
                return Ok(());
            }
            FileType::RegularFile => {}
            FileType::Unknown => {
                return Err(werr(path, io::Error::other("unknown file type")));
            }
        }
        // hardlinks within the diff stay hardlinks
        if ft != FileType::Directory && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key) {
                let first = first.clone();
                head.kind = Kind::Hardlink;
                head.link = &first;
                head.size = 0;
                self.tar.write_head(&head).map_err(|e| werr(path, e))?;
                return Ok(());
            }
            self.links.insert(key, path.to_vec());
        }
        if ft != FileType::RegularFile {
            self.tar.write_head(&head).map_err(|e| werr(path, e))?;
            return Ok(());
        }
        let DiffSource::At(d, n) = src else {
            return Err(werr(path, io::Error::other("file without parent")));
        };
        let fd = fsx::open_file_at(d, n).map_err(|e| werr(path, e))?;
        let size = st.st_size as u64;
        head.size = size;
        let segs = if (st.st_blocks as u64) * 512 < size {
            data_segments(fd.as_fd(), size).map_err(|e| werr(path, e))?
        } else {
            None
        };
        head.sparse = segs.as_deref();
        let data_len = self.tar.write_head(&head).map_err(|e| werr(path, e))?;
        let map_len = match &segs {
            Some(_) => {
                // write_head returned the data bytes after the map
                let total: u64 = segs.iter().flatten().map(|s| s.len).sum();
                debug_assert_eq!(total, data_len);
                0
            }
            None => 0,
        };
        let _ = map_len;
        let mut f = std::fs::File::from(fd);
        let mut written = 0u64;
        match &segs {
            None => {
                written += self.copy_range(&mut f, 0, size, path)?;
            }
            Some(segs) => {
                for s in segs {
                    written += self.copy_range(&mut f, s.offset, s.len, path)?;
                }
            }
        }
        debug_assert_eq!(written, data_len);
        // the sparse map block(s) were padded to 512 already
        self.tar.finish_data(data_len).map_err(|e| werr(path, e))?;
        Ok(())
    }

    /// Copy exactly `len` bytes from `offset`; a file that shrank meanwhile
    /// is padded with zeros (the header is already out).
    fn copy_range(
        &mut self,
        f: &mut std::fs::File,
        offset: u64,
        len: u64,
        path: &[u8],
    ) -> Result<u64> {
        use std::os::unix::fs::FileExt;
        let mut done = 0u64;
        while done < len {
            let want = (len - done).min(self.buf.len() as u64) as usize;
            let n = f
                .read_at(&mut self.buf[..want], offset + done)
                .map_err(|e| werr(path, e))?;
            if n == 0 {
                self.buf[..want].fill(0);
                self.tar
                    .write_data(&self.buf[..want])
                    .map_err(|e| werr(path, e))?;
                done += want as u64;
                continue;
            }
            self.tar
                .write_data(&self.buf[..n])
                .map_err(|e| werr(path, e))?;
            done += n as u64;
        }
        Ok(done)
    }
}

/// Write every item produced by `walk` as a tar into `out`.
pub fn write_diff<W: Write>(
    out: W,
    walk: impl FnOnce(&mut dyn FnMut(DiffItem<'_>) -> Result<()>) -> Result<()>,
) -> Result<(W, u64, u64)> {
    let mut w = DiffWriter::new(out);
    walk(&mut |item| w.item(item))?;
    let entries = w.entries();
    let (out, bytes) = w.finish()?;
    Ok((out, bytes, entries))
}
