//! Writing a layer diff: a sorted stream of [`DiffItem`]s becomes an OCI
//! layer tar (PAX where ustar is too small, hardlinks kept as hardlinks,
//! sparse files as PAX 1.0 sparse entries, whiteouts as `.wh.` files).
//!
//! The items come from a change walk (the core's naive walk of two trees, or
//! a backend's native one); the writer only reads the inodes they point at.

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::AsFd;

use rustix::fs::{self as rfs, FileType, Stat};

use super::tar::{Kind, Segment, TarWriter, WriteHead};
use crate::error::{Error, Result};
use crate::fsx::{self, XattrTarget};
use crate::resolve::join;
use crate::walk::{DiffItem, DiffSource, Emit, exported_xattr};
use crate::whiteout;

/// Streams diff items into a tar.
pub struct DiffWriter<W: Write> {
    tar: TarWriter<W>,
    /// First path written of each multiply-linked inode.
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
    Error::io_at("write diff entry", path, e)
}

fn mtime(st: &Stat) -> (i64, u32) {
    (st.st_mtime, st.st_mtime_nsec as u32)
}

/// The header of an entry, its kind and link target left to the caller.
fn base_head<'a>(path: &'a [u8], st: &Stat, xattrs: &'a [(Vec<u8>, Vec<u8>)]) -> WriteHead<'a> {
    WriteHead {
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
        xattrs,
        sparse: None,
    }
}

impl<W: Write> DiffWriter<W> {
    /// A layer-tar writer into `w`.
    pub fn new(w: W) -> Self {
        DiffWriter {
            tar: TarWriter::new(w),
            links: HashMap::new(),
            buf: vec![0u8; 256 * 1024],
        }
    }

    /// Entries written so far.
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
        let st_like = WriteHead {
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
        };
        self.tar.write_head(&st_like).map_err(|e| werr(&p, e))?;
        Ok(())
    }

    /// Write one item.
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
        let xt = match src {
            DiffSource::Dir(fd) => XattrTarget::Fd(fd),
            DiffSource::At(d, n) => XattrTarget::At(d, n.to_bytes()),
        };
        let mut xattrs = fsx::xattrs(xt).map_err(|e| werr(path, e))?;
        xattrs.retain(|(k, _)| exported_xattr(k));
        let mut head = base_head(path, st, &xattrs);
        let ft = fsx::file_type(st);
        let mut link_target = Vec::new();
        if !self.set_kind(&mut head, ft, st, src, &mut link_target)? {
            return Ok(());
        }
        if !link_target.is_empty() {
            head.link = &link_target;
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
        self.file(head, st, src)
    }

    /// Set the header's kind (and device numbers, link target) from the
    /// inode's type; `false` for what a tar cannot hold (sockets).
    fn set_kind(
        &self,
        head: &mut WriteHead<'_>,
        ft: FileType,
        st: &Stat,
        src: DiffSource<'_>,
        link_target: &mut Vec<u8>,
    ) -> Result<bool> {
        let path = head.path;
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
                *link_target = rfs::readlinkat(d, n, Vec::new())
                    .map_err(|e| werr(path, e.into()))?
                    .into_bytes();
                head.kind = Kind::Symlink;
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
                tracing::warn!(path = %crate::error::Name(path.to_vec()), "skipping socket (tar cannot hold one)");
                return Ok(false);
            }
            FileType::RegularFile => {}
            FileType::Unknown => {
                return Err(werr(path, io::Error::other("unknown file type")));
            }
        }
        Ok(true)
    }

    /// A regular file: its header, then its data (only the data segments
    /// of a file with holes).
    fn file(&mut self, head: WriteHead<'_>, st: &Stat, src: DiffSource<'_>) -> Result<()> {
        let path = head.path;
        let DiffSource::At(d, n) = src else {
            return Err(werr(path, io::Error::other("file without parent")));
        };
        let fd = fsx::open_file_at(d, n).map_err(|e| werr(path, e))?;
        let size = st.st_size as u64;
        let segs = if (st.st_blocks as u64) * 512 < size {
            fsx::data_segments(fd.as_fd(), size).map_err(|e| werr(path, e))?
        } else {
            None
        };
        let head = WriteHead {
            size,
            sparse: segs.as_deref(),
            ..head
        };
        // for a sparse file: the data bytes after the (already padded) map
        let data_len = self.tar.write_head(&head).map_err(|e| werr(path, e))?;
        let mut f = std::fs::File::from(fd);
        let ranges: Vec<Segment> = match &segs {
            None => vec![Segment {
                offset: 0,
                len: size,
            }],
            Some(s) => s.clone(),
        };
        let mut written = 0u64;
        for s in ranges {
            written += self.copy_range(&mut f, s.offset, s.len, path)?;
        }
        debug_assert_eq!(written, data_len);
        self.tar.finish_data(data_len).map_err(|e| werr(path, e))
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

/// Write every item produced by `walk` as a tar into `out`; returns the
/// writer, the bytes written and the entries.
pub fn write_diff<W: Write>(
    out: W,
    walk: impl FnOnce(&mut Emit<'_>) -> Result<()>,
) -> Result<(W, u64, u64)> {
    let mut w = DiffWriter::new(out);
    walk(&mut |item| w.item(item))?;
    let entries = w.entries();
    let (out, bytes) = w.finish()?;
    Ok((out, bytes, entries))
}
