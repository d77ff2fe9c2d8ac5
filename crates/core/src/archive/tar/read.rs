//! The streaming entry reader: headers and extension headers in, one
//! [`EntryHead`] per entry out, data read on demand.

use std::io::{self, Read};

use tar::{EntryType, Header};

use super::pax::{self, Record};
use super::{BLOCK, EntryHead, Kind, MAX_LONGNAME, MAX_PAX, RawSink, bad, bad_io, num, to_sink};
use crate::error::{Error, Result};

/// Streaming reader of tar entries.
#[derive(Debug)]
pub struct TarReader<R: Read> {
    pub(super) r: R,
    pub(super) pos: u64,
    /// Bytes of data left in the current entry.
    remaining: u64,
    /// Padding after the current entry's data.
    pad: u64,
    globals: Vec<Record>,
    finished: bool,
}

/// Extension headers seen before an entry's own header.
#[derive(Default)]
struct Ext {
    longname: Option<Vec<u8>>,
    longlink: Option<Vec<u8>>,
    pax: Option<Vec<Record>>,
    header_pos: u64,
}

impl Ext {
    fn seen(&self) -> bool {
        self.longname.is_some() || self.longlink.is_some() || self.pax.is_some()
    }
}

pub(super) fn read_exact_or_eof<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn check_checksum(h: &Header, at: u64) -> Result<()> {
    let b = h.as_bytes();
    let stored = num::unsigned::<u32>(&h.as_old().cksum)
        .ok_or_else(|| bad(format!("bad header checksum field at offset {at}")))?;
    let rest = || b[..148].iter().chain(&b[156..]);
    let unsigned: u32 = rest().map(|&x| u32::from(x)).sum::<u32>() + 8 * 32;
    let signed: i64 = rest().map(|&x| i64::from(x as i8)).sum::<i64>() + 8 * 32;
    if stored == unsigned || i64::from(stored) == signed {
        Ok(())
    } else {
        Err(bad(format!("header checksum mismatch at offset {at}")))
    }
}

/// A numeric header field of entry `path` that must fit `T`.
fn field<T: TryFrom<i64>>(raw: &[u8], what: &str, path: &[u8]) -> Result<T> {
    num::unsigned(raw).ok_or_else(|| {
        Error::entry(
            path,
            bad(format!("the {what} field is malformed or out of range")),
        )
    })
}

/// The entry type, from the type flag (and, for v7 archives, a trailing
/// slash).
fn entry_kind(h: &Header, path: &[u8]) -> Result<Kind> {
    let ty = h.entry_type();
    Ok(match ty {
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
            // old (v7) archives mark directories by a trailing slash only
            if ty == EntryType::Regular
                && path.ends_with(b"/")
                && h.as_ustar().is_none()
                && h.as_gnu().is_none()
            {
                Kind::Dir
            } else {
                Kind::File
            }
        }
        EntryType::Link => Kind::Hardlink,
        EntryType::Symlink => Kind::Symlink,
        EntryType::Char => Kind::Char,
        EntryType::Block => Kind::Block,
        EntryType::Directory => Kind::Dir,
        EntryType::Fifo => Kind::Fifo,
        // GNU dumpdir: a directory with a listing we skip
        other if other.as_byte() == b'D' => Kind::Dir,
        other => {
            return Err(Error::entry(
                path,
                Error::unsupported(
                    format!("tar entry type {:?}", other.as_byte() as char),
                    "only files, directories, links, devices and fifos can be applied",
                ),
            ));
        }
    })
}

/// The device number fields of a ustar or GNU header.
fn dev_fields(h: &Header) -> Option<(&[u8; 8], &[u8; 8])> {
    if let Some(u) = h.as_ustar() {
        return Some((&u.dev_major, &u.dev_minor));
    }
    h.as_gnu().map(|g| (&g.dev_major, &g.dev_minor))
}

impl<R: Read> TarReader<R> {
    /// A reader of the tar stream `r`.
    pub fn new(r: R) -> Self {
        TarReader {
            r,
            pos: 0,
            remaining: 0,
            pad: 0,
            globals: Vec::new(),
            finished: false,
        }
    }

    /// The underlying stream (for draining what follows the trailer).
    pub fn into_inner(self) -> R {
        self.r
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Read one header block; `false` at a clean end of stream.
    pub(super) fn read_block(
        &mut self,
        buf: &mut [u8; 512],
        raw: &mut Option<&mut dyn RawSink>,
    ) -> Result<bool> {
        let n = read_exact_or_eof(&mut self.r, buf).map_err(bad_io)?;
        self.pos += n as u64;
        to_sink(raw, &buf[..n])?;
        if n == 0 {
            return Ok(false);
        }
        if n < 512 {
            return Err(bad(format!(
                "truncated archive: a header block ends after {n} bytes at offset {}",
                self.pos - n as u64
            )));
        }
        Ok(true)
    }

    /// Read `len` bytes of extension data (with padding) into memory.
    fn read_ext(
        &mut self,
        len: u64,
        limit: u64,
        what: &str,
        raw: &mut Option<&mut dyn RawSink>,
    ) -> Result<Vec<u8>> {
        if len > limit {
            return Err(bad(format!(
                "{what} of {len} bytes exceeds the limit of {limit} bytes"
            )));
        }
        let padded = len.div_ceil(BLOCK) * BLOCK;
        let mut v = vec![0u8; padded as usize];
        let n = read_exact_or_eof(&mut self.r, &mut v).map_err(bad_io)?;
        self.pos += n as u64;
        to_sink(raw, &v[..n])?;
        if (n as u64) < padded {
            return Err(bad(format!("truncated archive inside a {what}")));
        }
        v.truncate(len as usize);
        Ok(v)
    }

    /// Skip whatever is left of the current entry's data and padding.
    fn skip_rest(&mut self, raw: &mut Option<&mut dyn RawSink>) -> Result<()> {
        if self.remaining > 0 {
            let n = io::copy(&mut (&mut self.r).take(self.remaining), &mut io::sink())
                .map_err(bad_io)?;
            self.pos += n;
            if n < self.remaining {
                return Err(bad("truncated archive: file data ends early"));
            }
            self.remaining = 0;
        }
        if self.pad > 0 {
            let mut p = [0u8; 512];
            let n = read_exact_or_eof(&mut self.r, &mut p[..self.pad as usize]).map_err(bad_io)?;
            self.pos += n as u64;
            to_sink(raw, &p[..n])?;
            if (n as u64) < self.pad {
                // GNU tar accepts missing padding at the very end; we are strict
                return Err(bad("truncated archive: padding after file data is missing"));
            }
            self.pad = 0;
        }
        Ok(())
    }

    /// The next entry, or `None` at the end of the archive.
    pub fn next_entry(&mut self) -> Result<Option<EntryHead>> {
        self.next_entry_raw(None)
    }

    /// Like [`next_entry`](Self::next_entry), reporting raw bytes to `raw`.
    pub fn next_entry_raw(
        &mut self,
        mut raw: Option<&mut dyn RawSink>,
    ) -> Result<Option<EntryHead>> {
        if self.finished {
            return Ok(None);
        }
        self.skip_rest(&mut raw)?;
        let mut ext = Ext {
            header_pos: self.pos,
            ..Ext::default()
        };
        let mut block = [0u8; 512];
        loop {
            let at = self.pos;
            let more = self.read_block(&mut block, &mut raw)?;
            if !more || block.iter().all(|&b| b == 0) {
                if ext.seen() {
                    return Err(bad(if more {
                        "zero block after an extension header"
                    } else {
                        "archive ends after an extension header"
                    }));
                }
                // end of archive (the second zero block and anything after
                // it are drained by the caller for the diffID)
                self.finished = true;
                return Ok(None);
            }
            let h = Header::from_byte_slice(&block);
            check_checksum(h, at)?;
            let size = num::unsigned::<u64>(&h.as_old().size)
                .ok_or_else(|| bad(format!("bad size field at offset {at}")))?;
            if self.read_extension(h, size, at, &mut ext, &mut raw)? {
                continue;
            }
            let head = self.finish_entry(h, size, ext, at, &mut raw)?;
            if self.remaining > 0
                && let Some(s) = raw.as_deref_mut()
            {
                s.content(&head.path, self.remaining, head.sparse.as_deref())
                    .map_err(|e| Error::archive("tar-split", Some(e)))?;
            }
            return Ok(Some(head));
        }
    }

    /// Take an extension header (PAX, GNU long name or link) into `ext`;
    /// `false` when `h` is an entry's own header.
    fn read_extension(
        &mut self,
        h: &Header,
        size: u64,
        at: u64,
        ext: &mut Ext,
        raw: &mut Option<&mut dyn RawSink>,
    ) -> Result<bool> {
        let twice = |what: &str| bad(format!("two {what} for one entry at offset {at}"));
        match h.entry_type() {
            EntryType::XGlobalHeader => {
                let data = self.read_ext(size, MAX_PAX, "PAX header", raw)?;
                for (k, v) in pax::parse_records(&data)? {
                    self.globals.retain(|(gk, _)| *gk != k);
                    if !v.is_empty() {
                        self.globals.push((k, v));
                    }
                }
                ext.header_pos = self.pos;
            }
            EntryType::XHeader => {
                if ext.pax.is_some() {
                    return Err(twice("PAX headers"));
                }
                let data = self.read_ext(size, MAX_PAX, "PAX header", raw)?;
                ext.pax = Some(pax::parse_records(&data)?);
            }
            ty @ (EntryType::GNULongName | EntryType::GNULongLink) => {
                let (slot, what) = if ty == EntryType::GNULongName {
                    (&mut ext.longname, "GNU long name")
                } else {
                    (&mut ext.longlink, "GNU long link")
                };
                if slot.is_some() {
                    return Err(twice(&format!("{what}s")));
                }
                let mut v = self.read_ext(size, MAX_LONGNAME, what, raw)?;
                while v.last() == Some(&0) {
                    v.pop();
                }
                *slot = Some(v);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Fold the extension headers and the entry's own header into an
    /// [`EntryHead`]; numbers that do not fit are errors naming the entry.
    fn finish_entry(
        &mut self,
        h: &Header,
        header_size: u64,
        ext: Ext,
        at: u64,
        raw: &mut Option<&mut dyn RawSink>,
    ) -> Result<EntryHead> {
        let p = pax::Fields::fold(
            self.globals
                .iter()
                .cloned()
                .chain(ext.pax.into_iter().flatten()),
        )?;
        let mut path = p
            .path
            .or(ext.longname)
            .unwrap_or_else(|| h.path_bytes().into_owned());
        let link = p.link.or(ext.longlink).unwrap_or_else(|| {
            h.link_name_bytes()
                .map(|c| c.into_owned())
                .unwrap_or_default()
        });
        let old = h.as_old();
        let mode = field::<u32>(&old.mode, "mode", &path)?;
        let uid = match p.uid {
            Some(v) => v,
            None => field(&old.uid, "uid", &path)?,
        };
        let gid = match p.gid {
            Some(v) => v,
            None => field(&old.gid, "gid", &path)?,
        };
        let mtime = match p.mtime {
            Some(t) => t,
            None => (
                num::parse(&old.mtime).ok_or_else(|| {
                    Error::entry(&path, bad("the mtime field is malformed or out of range"))
                })?,
                0,
            ),
        };
        let kind = entry_kind(h, &path)?;
        let (mut dev_major, mut dev_minor) = (0u32, 0u32);
        if matches!(kind, Kind::Char | Kind::Block)
            && let Some((ma, mi)) = dev_fields(h)
        {
            dev_major = p
                .dev_major
                .map_or_else(|| field(ma, "device major", &path), Ok)?;
            dev_minor = p
                .dev_minor
                .map_or_else(|| field(mi, "device minor", &path), Ok)?;
        }
        let data_size = p.size.unwrap_or(header_size);
        let layout = self
            .sparse_layout(h, kind, data_size, p.sparse, at, raw)
            .map_err(|e| Error::entry(&path, e))?;
        if let Some(n) = layout.name {
            path = n;
        }
        self.remaining = layout.data_size;
        self.pad = (BLOCK - layout.data_size % BLOCK) % BLOCK;
        Ok(EntryHead {
            path,
            link,
            kind,
            mode,
            uid,
            gid,
            mtime,
            atime: p.atime,
            size: layout.size,
            dev_major,
            dev_minor,
            xattrs: p.xattrs,
            sparse: layout.segments,
            header_pos: ext.header_pos,
        })
    }

    /// Read the current entry's data (at most what is left).
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = loop {
            match self.r.read(&mut buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(bad_io(e)),
            }
        };
        if n == 0 {
            return Err(bad("truncated archive: file data ends early"));
        }
        self.pos += n as u64;
        self.remaining -= n as u64;
        Ok(n)
    }

    /// Bytes of data left in the current entry.
    pub fn data_remaining(&self) -> u64 {
        self.remaining
    }

    /// Read and drop what follows the end of the archive, so that a hash
    /// over the stream covers every byte; at most `limit` bytes (writers
    /// pad to a record size, so a few KiB are normal; an endless stream is
    /// not). Returns the bytes drained.
    pub fn drain(&mut self, raw: Option<&mut dyn RawSink>, limit: u64) -> Result<u64> {
        let mut total = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        let mut raw = raw;
        loop {
            let n = match self.r.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(bad_io(e)),
            };
            to_sink(&mut raw, &buf[..n])?;
            self.pos += n as u64;
            total += n as u64;
            if total > limit {
                return Err(bad(format!(
                    "more than {limit} bytes follow the end-of-archive marker (at offset {})",
                    self.pos - total
                )));
            }
        }
    }
}
