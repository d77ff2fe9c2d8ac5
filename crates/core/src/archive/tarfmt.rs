//! Tar stream reading and writing.
//!
//! Header fields are parsed by the `tar` crate's [`tar::Header`] (octal and
//! base-256 numbers, ustar prefixes). The stream structure (extension
//! headers, PAX records, GNU long names, sparse maps, padding) is walked
//! here, by hand, because the `tar` crate's entry iterator (a) reads PAX and
//! GNU long-name headers into memory whatever their declared size (a
//! hostile layer could ask for gigabytes), (b) does not expose sparse maps
//! (holes would come back as zeros to be scanned), (c) ignores PAX `mtime`
//! nanoseconds, and (d) does not report the raw bytes of headers and
//! padding, which the store keeps to re-create an imported tar byte for
//! byte. Every declared size here is checked against a limit before
//! anything is allocated.

use std::io::{self, Read, Write};

use tar::{EntryType, Header};

use crate::error::{Error, Result};

pub const BLOCK: u64 = 512;
/// Largest PAX extended header accepted (xattrs included).
pub const MAX_PAX: u64 = 16 << 20;
/// Largest GNU long name / long link accepted.
pub const MAX_LONGNAME: u64 = 1 << 20;
/// Most sparse map entries accepted for one file.
pub const MAX_SPARSE_ENTRIES: usize = 1 << 20;

/// Type of a tar entry after extension headers were folded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
}

/// One data segment of a sparse file: `len` bytes at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub len: u64,
}

/// An entry's metadata, extension headers folded in.
#[derive(Debug, Clone)]
pub struct EntryHead {
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: (i64, u32),
    pub atime: Option<(i64, u32)>,
    /// The file's size (the real size for sparse files).
    pub size: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Extended attributes from PAX `SCHILY.xattr.*` / `LIBARCHIVE.xattr.*`.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Data segments of a sparse file (the data in the archive is these
    /// segments back to back); `None` for ordinary files.
    pub sparse: Option<Vec<Segment>>,
    /// Offset in the stream of the first header of this entry.
    pub header_pos: u64,
}

fn bad(reason: impl Into<String>) -> Error {
    Error::archive(reason, None)
}

fn bad_io(e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        Error::archive("truncated archive (unexpected end of stream)", Some(e))
    } else {
        Error::archive("read error", Some(e))
    }
}

/// Observer of every raw byte of the stream that is not file content
/// (headers, extension data, padding, end blocks): what tar-split keeps.
/// File content is only announced: `content` says that the data of entry
/// `path` (its `len` bytes, or for a sparse file its data segments) comes
/// next in the stream.
pub trait RawSink {
    /// Raw bytes that are not file content.
    fn raw(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// The data of entry `path` follows here.
    fn content(&mut self, path: &[u8], len: u64, sparse: Option<&[Segment]>) -> io::Result<()>;
}

/// Reborrow an optional sink for a shorter time (the trait object's
/// lifetime shrinks with the reference).
pub fn reborrow_sink<'s>(r: &'s mut Option<&mut dyn RawSink>) -> Option<&'s mut dyn RawSink> {
    match r {
        Some(x) => Some(&mut **x),
        None => None,
    }
}

/// Streaming reader of tar entries.
#[derive(Debug)]
pub struct TarReader<R: Read> {
    r: R,
    pos: u64,
    /// Bytes of data left in the current entry.
    remaining: u64,
    /// Padding after the current entry's data.
    pad: u64,
    globals: Vec<(Vec<u8>, Vec<u8>)>,
    finished: bool,
    cur_path: Vec<u8>,
}

fn read_exact_or_eof<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
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

fn parse_pax_records(data: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break; // trailing NULs some writers leave
        }
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("PAX record without a length"))?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("PAX record length is not a number"))?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad("PAX record length does not match its content"));
        }
        let rec = &rest[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad("PAX record without '='"))?;
        out.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(out)
}

/// Parse a PAX time `SECONDS[.FRACTION]` (may be negative).
pub fn parse_pax_time(v: &[u8]) -> Result<(i64, u32)> {
    let s = std::str::from_utf8(v).map_err(|_| bad("PAX time is not text"))?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs
        .parse()
        .map_err(|_| bad(format!("PAX time {s:?} is not a number")))?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!("PAX time {s:?} is not a number")));
    }
    let mut ns: u32 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        ns += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
    }
    if neg {
        if ns == 0 {
            Ok((-secs, 0))
        } else {
            Ok((-secs - 1, 1_000_000_000 - ns))
        }
    } else {
        Ok((secs, ns))
    }
}

fn parse_u64(v: &[u8], what: &str) -> Result<u64> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            bad(format!(
                "{what} {:?} is not a number",
                String::from_utf8_lossy(v)
            ))
        })
}

/// Decode `%XX` escapes (LIBARCHIVE.xattr names).
fn percent_decode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' && i + 2 < v.len() {
            let h = std::str::from_utf8(&v[i + 1..i + 3])
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok());
            if let Some(b) = h {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(v[i]);
        i += 1;
    }
    out
}

fn base64_decode(v: &[u8]) -> Result<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let mut out = Vec::with_capacity(v.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in v {
        if c == b'=' || c == b'\n' {
            continue;
        }
        let d = val(c).ok_or_else(|| bad("LIBARCHIVE.xattr value is not base64"))?;
        acc = (acc << 6) | d;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

fn validate_sparse(map: &[Segment], real_size: u64) -> Result<u64> {
    let mut end = 0u64;
    let mut total = 0u64;
    for s in map {
        if s.offset < end {
            return Err(bad("sparse map segments overlap or are out of order"));
        }
        end = s
            .offset
            .checked_add(s.len)
            .ok_or_else(|| bad("sparse map offset overflows"))?;
        if end > real_size {
            return Err(bad("sparse map reaches past the file's size"));
        }
        total = total
            .checked_add(s.len)
            .ok_or_else(|| bad("sparse map size overflows"))?;
    }
    Ok(total)
}

impl<R: Read> TarReader<R> {
    pub fn new(r: R) -> Self {
        TarReader {
            r,
            pos: 0,
            remaining: 0,
            pad: 0,
            globals: Vec::new(),
            finished: false,
            cur_path: Vec::new(),
        }
    }

    pub fn into_inner(self) -> R {
        self.r
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn read_block(
        &mut self,
        buf: &mut [u8; 512],
        raw: &mut Option<&mut dyn RawSink>,
    ) -> Result<bool> {
        let n = read_exact_or_eof(&mut self.r, buf).map_err(bad_io)?;
        self.pos += n as u64;
        if let Some(s) = raw {
            s.raw(&buf[..n])
                .map_err(|e| Error::archive("tar-split", Some(e)))?;
        }
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
        if let Some(s) = raw {
            s.raw(&v[..n])
                .map_err(|e| Error::archive("tar-split", Some(e)))?;
        }
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
            if let Some(s) = raw {
                s.raw(&p[..n])
                    .map_err(|e| Error::archive("tar-split", Some(e)))?;
            }
            if (n as u64) < self.pad {
                // padding missing at the very end: GNU tar accepts it silently
                // only if nothing follows; we are strict.
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
        let mut longname: Option<Vec<u8>> = None;
        let mut longlink: Option<Vec<u8>> = None;
        let mut pax: Option<Vec<(Vec<u8>, Vec<u8>)>> = None;
        let mut header_pos = self.pos;
        let mut block = [0u8; 512];
        let mut extension_seen = false;
        loop {
            let at = self.pos;
            if !self.read_block(&mut block, &mut raw)? {
                if extension_seen {
                    return Err(bad("archive ends after an extension header"));
                }
                self.finished = true;
                return Ok(None);
            }
            if block.iter().all(|&b| b == 0) {
                if extension_seen {
                    return Err(bad("zero block after an extension header"));
                }
                // end of archive (the second zero block and anything after
                // it are drained by the caller for the diffID)
                self.finished = true;
                return Ok(None);
            }
            let h = Header::from_byte_slice(&block);
            check_checksum(h, at)?;
            let ty = h.entry_type();
            let size = h
                .entry_size()
                .map_err(|e| Error::archive(format!("bad size field at offset {at}"), Some(e)))?;
            match ty {
                EntryType::XHeader | EntryType::XGlobalHeader => {
                    let data = self.read_ext(size, MAX_PAX, "PAX header", &mut raw)?;
                    let recs = parse_pax_records(&data)?;
                    if ty == EntryType::XGlobalHeader {
                        for (k, v) in recs {
                            self.globals.retain(|(gk, _)| *gk != k);
                            if !v.is_empty() {
                                self.globals.push((k, v));
                            }
                        }
                        header_pos = self.pos;
                        continue;
                    }
                    if pax.is_some() {
                        return Err(bad(format!("two PAX headers for one entry at offset {at}")));
                    }
                    pax = Some(recs);
                    extension_seen = true;
                }
                EntryType::GNULongName => {
                    if longname.is_some() {
                        return Err(bad(format!(
                            "two GNU long names for one entry at offset {at}"
                        )));
                    }
                    let mut v = self.read_ext(size, MAX_LONGNAME, "GNU long name", &mut raw)?;
                    while v.last() == Some(&0) {
                        v.pop();
                    }
                    longname = Some(v);
                    extension_seen = true;
                }
                EntryType::GNULongLink => {
                    if longlink.is_some() {
                        return Err(bad(format!(
                            "two GNU long links for one entry at offset {at}"
                        )));
                    }
                    let mut v = self.read_ext(size, MAX_LONGNAME, "GNU long link", &mut raw)?;
                    while v.last() == Some(&0) {
                        v.pop();
                    }
                    longlink = Some(v);
                    extension_seen = true;
                }
                _ => {
                    let head = self
                        .finish_entry(h, size, longname, longlink, pax, header_pos, at, &mut raw)?;
                    if self.remaining > 0
                        && let Some(s) = raw.as_deref_mut()
                    {
                        s.content(&head.path, self.remaining, head.sparse.as_deref())
                            .map_err(|e| Error::archive("tar-split", Some(e)))?;
                    }
                    return Ok(Some(head));
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_entry(
        &mut self,
        h: &Header,
        header_size: u64,
        longname: Option<Vec<u8>>,
        longlink: Option<Vec<u8>>,
        pax: Option<Vec<(Vec<u8>, Vec<u8>)>>,
        header_pos: u64,
        at: u64,
        raw: &mut Option<&mut dyn RawSink>,
    ) -> Result<EntryHead> {
        let num = |r: io::Result<u64>, what: &str| -> Result<u64> {
            r.map_err(|e| Error::archive(format!("bad {what} field at offset {at}"), Some(e)))
        };
        let ty = h.entry_type();
        let mut path = longname.unwrap_or_else(|| h.path_bytes().into_owned());
        let mut link = longlink.unwrap_or_else(|| {
            h.link_name_bytes()
                .map(|c| c.into_owned())
                .unwrap_or_default()
        });
        let mode = h
            .mode()
            .map_err(|e| Error::archive(format!("bad mode field at offset {at}"), Some(e)))?;
        let mut uid = num(h.uid(), "uid")?;
        let mut gid = num(h.gid(), "gid")?;
        let mt = num(h.mtime(), "mtime")?;
        let mut mtime = (
            i64::try_from(mt).map_err(|_| bad(format!("mtime out of range at offset {at}")))?,
            0u32,
        );
        let mut atime = None;
        let mut data_size = header_size;
        let (mut dev_major, mut dev_minor) = (0u32, 0u32);
        if matches!(ty, EntryType::Char | EntryType::Block) {
            dev_major = h
                .device_major()
                .map_err(|e| Error::archive(format!("bad device major at offset {at}"), Some(e)))?
                .unwrap_or(0);
            dev_minor = h
                .device_minor()
                .map_err(|e| Error::archive(format!("bad device minor at offset {at}"), Some(e)))?
                .unwrap_or(0);
        }
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut sparse_name = None;
        let mut sparse_size = None;
        let mut sparse_map: Option<Vec<u64>> = None;
        let mut sparse_00: Vec<u64> = Vec::new();
        let mut sparse_major = None;
        let recs = self
            .globals
            .iter()
            .cloned()
            .chain(pax.into_iter().flatten());
        for (k, v) in recs {
            match k.as_slice() {
                b"path" => path = v,
                b"linkpath" => link = v,
                b"size" => data_size = parse_u64(&v, "PAX size")?,
                b"uid" => uid = parse_u64(&v, "PAX uid")?,
                b"gid" => gid = parse_u64(&v, "PAX gid")?,
                b"mtime" => mtime = parse_pax_time(&v)?,
                b"atime" => atime = Some(parse_pax_time(&v)?),
                b"SCHILY.devmajor" => {
                    dev_major = u32::try_from(parse_u64(&v, "devmajor")?)
                        .map_err(|_| bad("devmajor out of range"))?
                }
                b"SCHILY.devminor" => {
                    dev_minor = u32::try_from(parse_u64(&v, "devminor")?)
                        .map_err(|_| bad("devminor out of range"))?
                }
                b"GNU.sparse.name" => sparse_name = Some(v),
                b"GNU.sparse.size" | b"GNU.sparse.realsize" => {
                    sparse_size = Some(parse_u64(&v, "GNU.sparse.size")?)
                }
                b"GNU.sparse.major" => sparse_major = Some(parse_u64(&v, "GNU.sparse.major")?),
                b"GNU.sparse.map" => {
                    let mut m = Vec::new();
                    for part in v.split(|&b| b == b',') {
                        if m.len() > 2 * MAX_SPARSE_ENTRIES {
                            return Err(bad("sparse map too long"));
                        }
                        m.push(parse_u64(part, "GNU.sparse.map")?);
                    }
                    sparse_map = Some(m);
                }
                b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                    if sparse_00.len() > 2 * MAX_SPARSE_ENTRIES {
                        return Err(bad("sparse map too long"));
                    }
                    sparse_00.push(parse_u64(&v, "GNU.sparse.offset")?);
                }
                _ => {
                    if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                        xattrs.push((name.to_vec(), v));
                    } else if let Some(name) = k.strip_prefix(b"LIBARCHIVE.xattr.") {
                        xattrs.push((percent_decode(name), base64_decode(&v)?));
                    } else {
                        tracing::trace!(key = %String::from_utf8_lossy(&k), "ignoring PAX record");
                    }
                }
            }
        }
        // later records win; keep one value per xattr name
        {
            let mut seen = std::collections::HashSet::new();
            let mut dedup = Vec::new();
            for (k, v) in xattrs.into_iter().rev() {
                if seen.insert(k.clone()) {
                    dedup.push((k, v));
                }
            }
            dedup.sort();
            xattrs = dedup;
        }

        let kind = match ty {
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
            other => {
                let b = other.as_byte();
                if b == b'D' {
                    Kind::Dir // GNU dumpdir: a directory with a listing we skip
                } else {
                    return Err(Error::entry(
                        &path,
                        Error::unsupported(
                            format!("tar entry type {:?}", b as char),
                            "only files, directories, links, devices and fifos can be applied",
                        ),
                    ));
                }
            }
        };

        // sparse files
        let mut sparse = None;
        let mut size = data_size;
        if ty == EntryType::GNUSparse {
            let gnu = h
                .as_gnu()
                .ok_or_else(|| bad(format!("sparse entry without a GNU header at offset {at}")))?;
            let mut segs = Vec::new();
            let push = |segs: &mut Vec<Segment>, s: &tar::GnuSparseHeader| -> Result<()> {
                if s.is_empty() {
                    return Ok(());
                }
                let offset = s
                    .offset()
                    .map_err(|e| Error::archive("bad sparse offset", Some(e)))?;
                let len = s
                    .length()
                    .map_err(|e| Error::archive("bad sparse length", Some(e)))?;
                if segs.len() >= MAX_SPARSE_ENTRIES {
                    return Err(bad("sparse map too long"));
                }
                segs.push(Segment { offset, len });
                Ok(())
            };
            for s in gnu.sparse.iter() {
                push(&mut segs, s)?;
            }
            let mut ext = gnu.is_extended();
            while ext {
                let mut b = [0u8; 512];
                if !self.read_block(&mut b, raw)? {
                    return Err(bad("truncated archive inside a sparse header"));
                }
                let mut eh = tar::GnuExtSparseHeader::new();
                eh.as_mut_bytes().copy_from_slice(&b);
                for s in eh.sparse.iter() {
                    push(&mut segs, s)?;
                }
                ext = eh.is_extended();
            }
            let real = gnu
                .real_size()
                .map_err(|e| Error::archive("bad sparse real size", Some(e)))?;
            let total = validate_sparse(&segs, real)?;
            if total != data_size {
                return Err(bad(format!(
                    "sparse map describes {total} bytes but the entry holds {data_size}"
                )));
            }
            size = real;
            sparse = Some(segs);
        } else if kind == Kind::File
            && (sparse_major.is_some() || sparse_map.is_some() || !sparse_00.is_empty())
        {
            let real = sparse_size.ok_or_else(|| bad("PAX sparse file without GNU.sparse.size"))?;
            let mut nums = if sparse_major == Some(1) {
                // format 1.0: the map is at the start of the data
                let (nums, used) = self.read_sparse_map_10(data_size, raw)?;
                data_size -= used;
                nums
            } else if let Some(m) = sparse_map {
                m
            } else {
                std::mem::take(&mut sparse_00)
            };
            if nums.len() % 2 != 0 {
                return Err(bad("sparse map has an odd number of values"));
            }
            let segs: Vec<Segment> = nums
                .chunks(2)
                .map(|c| Segment {
                    offset: c[0],
                    len: c[1],
                })
                .collect();
            nums.clear();
            let total = validate_sparse(&segs, real)?;
            if total != data_size {
                return Err(bad(format!(
                    "sparse map describes {total} bytes but the entry holds {data_size}"
                )));
            }
            size = real;
            sparse = Some(segs);
            if let Some(n) = sparse_name {
                path = n;
            }
        }

        if !matches!(kind, Kind::File) && kind != Kind::Dir {
            // links, devices, fifos carry no data (some writers still set a
            // size for hardlinks; it is skipped)
        }
        if kind == Kind::Dir && ty.as_byte() != b'D' && data_size != 0 {
            // a directory with data is malformed, but the data is skipped
        }
        self.remaining = data_size;
        self.pad = (BLOCK - data_size % BLOCK) % BLOCK;
        self.cur_path = path.clone();
        Ok(EntryHead {
            path,
            link,
            kind,
            mode,
            uid,
            gid,
            mtime,
            atime,
            size,
            dev_major,
            dev_minor,
            xattrs,
            sparse,
            header_pos,
        })
    }

    fn read_sparse_map_10(
        &mut self,
        data_size: u64,
        raw: &mut Option<&mut dyn RawSink>,
    ) -> Result<(Vec<u64>, u64)> {
        // decimal numbers, one per line: count, then offset/size pairs,
        // padded to a block boundary
        let mut nums: Vec<u64> = Vec::new();
        let mut want: Option<u64> = None;
        let mut used = 0u64;
        let mut cur: Vec<u8> = Vec::new();
        loop {
            if used + BLOCK > data_size {
                return Err(bad("sparse map runs past the entry's data"));
            }
            let mut b = [0u8; 512];
            let n = read_exact_or_eof(&mut self.r, &mut b).map_err(bad_io)?;
            self.pos += n as u64;
            if let Some(s) = raw {
                s.raw(&b[..n])
                    .map_err(|e| Error::archive("tar-split", Some(e)))?;
            }
            if n < 512 {
                return Err(bad("truncated archive inside a sparse map"));
            }
            used += BLOCK;
            for &c in b.iter() {
                if c == b'\n' {
                    let v = parse_u64(&cur, "sparse map value")?;
                    cur.clear();
                    match want {
                        None => {
                            if v as usize > MAX_SPARSE_ENTRIES {
                                return Err(bad("sparse map too long"));
                            }
                            want = Some(v * 2);
                        }
                        Some(_) => nums.push(v),
                    }
                    if want == Some(nums.len() as u64) {
                        return Ok((nums, used));
                    }
                } else {
                    if cur.len() > 20 {
                        return Err(bad("sparse map value too long"));
                    }
                    cur.push(c);
                }
            }
        }
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

    /// Read and drop everything after the end of the archive (so a hash
    /// over the stream covers every byte).
    pub fn drain(&mut self, raw: Option<&mut dyn RawSink>) -> Result<u64> {
        let mut total = 0;
        let mut buf = vec![0u8; 64 * 1024];
        let mut raw = raw;
        loop {
            let n = match self.r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(bad_io(e)),
            };
            if let Some(s) = raw.as_deref_mut() {
                s.raw(&buf[..n])
                    .map_err(|e| Error::archive("tar-split", Some(e)))?;
            }
            self.pos += n as u64;
            total += n as u64;
        }
        Ok(total)
    }
}

fn check_checksum(h: &Header, at: u64) -> Result<()> {
    let b = h.as_bytes();
    let stored = h.cksum().map_err(|e| {
        Error::archive(format!("bad header checksum field at offset {at}"), Some(e))
    })?;
    let unsigned: u32 = b[..148]
        .iter()
        .chain(&b[156..])
        .map(|&x| x as u32)
        .sum::<u32>()
        + 8 * 32;
    let signed: i64 = b[..148]
        .iter()
        .chain(&b[156..])
        .map(|&x| x as i8 as i64)
        .sum::<i64>()
        + 8 * 32;
    if stored == unsigned || i64::from(stored) == signed {
        Ok(())
    } else {
        Err(bad(format!("header checksum mismatch at offset {at}")))
    }
}

// ------------------------------------------------------------------ writer

/// Writes tar entries: ustar headers, PAX extended headers where a value
/// does not fit (long names, large ids or sizes, nanoseconds, xattrs) and
/// PAX 1.0 sparse files. Output is deterministic for the same input.
#[derive(Debug)]
pub struct TarWriter<W: Write> {
    w: W,
    pub bytes: u64,
    pub entries: u64,
}

/// What to write for one entry.
#[derive(Debug, Clone)]
pub struct WriteHead<'a> {
    pub path: &'a [u8],
    pub kind: Kind,
    pub link: &'a [u8],
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: (i64, u32),
    pub size: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub xattrs: &'a [(Vec<u8>, Vec<u8>)],
    pub sparse: Option<&'a [Segment]>,
}

fn pax_record(out: &mut Vec<u8>, key: &[u8], val: &[u8]) {
    // "LEN KEY=VALUE\n" where LEN counts itself
    let body = key.len() + val.len() + 3; // ' ' '=' '\n'
    let mut len = body + 1;
    loop {
        let digits = len.to_string().len();
        if digits + body == len {
            break;
        }
        len = digits + body;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(val);
    out.push(b'\n');
}

const OCTAL8_MAX: u64 = 0o7777777;
const OCTAL12_MAX: u64 = 0o77777777777;

/// Split a path into ustar (prefix, name) if it fits.
fn ustar_split(p: &[u8]) -> Option<(&[u8], &[u8])> {
    if p.len() <= 100 {
        return Some((&[], p));
    }
    // find a '/' such that prefix <= 155 and name <= 100
    let start = p.len().saturating_sub(101);
    for i in start..p.len().min(156) {
        if p[i] == b'/' && i <= 155 && p.len() - i - 1 <= 100 && p.len() - i - 1 > 0 {
            return Some((&p[..i], &p[i + 1..]));
        }
    }
    None
}

impl<W: Write> TarWriter<W> {
    pub fn new(w: W) -> Self {
        TarWriter {
            w,
            bytes: 0,
            entries: 0,
        }
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.bytes += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let p = ((BLOCK - len % BLOCK) % BLOCK) as usize;
        if p > 0 {
            self.put(&[0u8; 512][..p])?;
        }
        Ok(())
    }

    /// Write the header(s) of an entry. For files, the caller then writes
    /// exactly `data_len` bytes with [`write_data`](Self::write_data) and
    /// calls [`finish_data`](Self::finish_data). Returns `data_len`.
    pub fn write_head(&mut self, e: &WriteHead<'_>) -> io::Result<u64> {
        let mut pax = Vec::new();
        let mut path = e.path.to_vec();
        if e.kind == Kind::Dir && !path.ends_with(b"/") {
            path.push(b'/');
        }
        let mut sparse_prefix: Vec<u8> = Vec::new();
        let data_len;
        let header_name: Vec<u8>;
        if let (Kind::File, Some(segs)) = (e.kind, e.sparse) {
            // PAX sparse format 1.0
            pax_record(&mut pax, b"GNU.sparse.major", b"1");
            pax_record(&mut pax, b"GNU.sparse.minor", b"0");
            pax_record(&mut pax, b"GNU.sparse.name", &path);
            pax_record(
                &mut pax,
                b"GNU.sparse.realsize",
                e.size.to_string().as_bytes(),
            );
            let mut m = format!("{}\n", segs.len()).into_bytes();
            for s in segs {
                m.extend_from_slice(format!("{}\n{}\n", s.offset, s.len).as_bytes());
            }
            let padded = (m.len() as u64).div_ceil(BLOCK) * BLOCK;
            m.resize(padded as usize, 0);
            data_len = padded + segs.iter().map(|s| s.len).sum::<u64>();
            sparse_prefix = m;
            let (dir, base) = crate::resolve::split_parent(&path);
            let mut n = dir.to_vec();
            if !n.is_empty() {
                n.push(b'/');
            }
            n.extend_from_slice(b"GNUSparseFile.0/");
            n.extend_from_slice(base);
            header_name = n;
        } else {
            data_len = if e.kind == Kind::File { e.size } else { 0 };
            header_name = path.clone();
        }
        let mut h = Header::new_ustar();
        let split = ustar_split(&header_name);
        match split {
            Some((prefix, name)) => {
                let u = h
                    .as_ustar_mut()
                    .ok_or_else(|| io::Error::other("ustar header"))?;
                u.name[..name.len()].copy_from_slice(name);
                u.prefix[..prefix.len()].copy_from_slice(prefix);
            }
            None => {
                if e.sparse.is_none() || e.kind != Kind::File {
                    pax_record(&mut pax, b"path", &path);
                }
                let cut = header_name.len().min(100);
                let u = h
                    .as_ustar_mut()
                    .ok_or_else(|| io::Error::other("ustar header"))?;
                u.name[..cut].copy_from_slice(&header_name[..cut]);
            }
        }
        if e.link.len() > 100 {
            pax_record(&mut pax, b"linkpath", e.link);
            let u = h
                .as_ustar_mut()
                .ok_or_else(|| io::Error::other("ustar header"))?;
            u.linkname.copy_from_slice(&e.link[..100]);
        } else {
            let u = h
                .as_ustar_mut()
                .ok_or_else(|| io::Error::other("ustar header"))?;
            u.linkname[..e.link.len()].copy_from_slice(e.link);
        }
        if e.uid > OCTAL8_MAX {
            pax_record(&mut pax, b"uid", e.uid.to_string().as_bytes());
            h.set_uid(0);
        } else {
            h.set_uid(e.uid);
        }
        if e.gid > OCTAL8_MAX {
            pax_record(&mut pax, b"gid", e.gid.to_string().as_bytes());
            h.set_gid(0);
        } else {
            h.set_gid(e.gid);
        }
        if data_len > OCTAL12_MAX {
            pax_record(&mut pax, b"size", data_len.to_string().as_bytes());
            h.set_size(0);
        } else {
            h.set_size(data_len);
        }
        let (sec, ns) = e.mtime;
        if ns != 0 || sec < 0 || sec as u64 > OCTAL12_MAX {
            let v = if sec < 0 && ns != 0 {
                format!("-{}.{:09}", -(sec + 1), 1_000_000_000 - ns)
            } else {
                format!("{sec}.{ns:09}")
            };
            let v = v.trim_end_matches('0').trim_end_matches('.').to_string();
            pax_record(&mut pax, b"mtime", v.as_bytes());
        }
        h.set_mtime(if (0..=OCTAL12_MAX as i64).contains(&sec) {
            sec as u64
        } else {
            0
        });
        for (k, v) in e.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            pax_record(&mut pax, &key, v);
        }
        h.set_mode(e.mode & 0o7777);
        h.set_entry_type(match e.kind {
            Kind::File => EntryType::Regular,
            Kind::Dir => EntryType::Directory,
            Kind::Symlink => EntryType::Symlink,
            Kind::Hardlink => EntryType::Link,
            Kind::Char => EntryType::Char,
            Kind::Block => EntryType::Block,
            Kind::Fifo => EntryType::Fifo,
        });
        if matches!(e.kind, Kind::Char | Kind::Block) {
            if u64::from(e.dev_major) > OCTAL8_MAX {
                pax_record(
                    &mut pax,
                    b"SCHILY.devmajor",
                    e.dev_major.to_string().as_bytes(),
                );
            }
            if u64::from(e.dev_minor) > OCTAL8_MAX {
                pax_record(
                    &mut pax,
                    b"SCHILY.devminor",
                    e.dev_minor.to_string().as_bytes(),
                );
            }
            h.set_device_major(e.dev_major.min(OCTAL8_MAX as u32))?;
            h.set_device_minor(e.dev_minor.min(OCTAL8_MAX as u32))?;
        } else {
            h.set_device_major(0)?;
            h.set_device_minor(0)?;
        }
        h.set_cksum();
        if !pax.is_empty() {
            let mut ph = Header::new_ustar();
            // the conventional name of a PAX header: "DIR/PaxHeaders.0/BASE"
            let (dir, base) = crate::resolve::split_parent(&header_name);
            let mut n = dir.to_vec();
            if !n.is_empty() {
                n.push(b'/');
            }
            n.extend_from_slice(b"PaxHeaders.0/");
            n.extend_from_slice(base);
            let cut = n.len().min(99);
            {
                let u = ph
                    .as_ustar_mut()
                    .ok_or_else(|| io::Error::other("ustar header"))?;
                u.name[..cut].copy_from_slice(&n[..cut]);
            }
            ph.set_size(pax.len() as u64);
            ph.set_mode(0o644);
            ph.set_mtime(h.mtime().unwrap_or(0));
            ph.set_entry_type(EntryType::XHeader);
            ph.set_cksum();
            self.put(ph.as_bytes())?;
            self.put(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        self.put(h.as_bytes())?;
        if !sparse_prefix.is_empty() {
            self.put(&sparse_prefix)?;
        }
        self.entries += 1;
        Ok(data_len - sparse_prefix.len() as u64)
    }

    pub fn write_data(&mut self, b: &[u8]) -> io::Result<()> {
        self.put(b)
    }

    /// Pad the data of an entry whose header declared `data_len` bytes
    /// (as returned by `write_head`, plus the sparse map for sparse files).
    pub fn finish_data(&mut self, total_len: u64) -> io::Result<()> {
        self.pad(total_len)
    }

    /// The end-of-archive marker (two zero blocks); returns the writer.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.put(&[0u8; 1024])?;
        self.w.flush()?;
        Ok((self.w, self.bytes))
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_time_parsing() {
        assert_eq!(
            parse_pax_time(b"1704067200.5").unwrap(),
            (1704067200, 500_000_000)
        );
        assert_eq!(parse_pax_time(b"1.000000001").unwrap(), (1, 1));
        assert_eq!(parse_pax_time(b"-1.5").unwrap(), (-2, 500_000_000));
        assert_eq!(parse_pax_time(b"12").unwrap(), (12, 0));
        assert!(parse_pax_time(b"x").is_err());
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let mut v = Vec::new();
        pax_record(&mut v, b"path", &[b'a'; 93]);
        let recs = parse_pax_records(&v).unwrap();
        assert_eq!(recs[0].1.len(), 93);
        let s = std::str::from_utf8(&v).unwrap();
        let (len, _) = s.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), v.len());
    }

    #[test]
    fn roundtrip_long_names_and_sparse() {
        let mut w = TarWriter::new(Vec::new());
        let long = vec![b'n'; 300];
        let xattrs = vec![(b"user.a".to_vec(), b"\x00\x01".to_vec())];
        let n = w
            .write_head(&WriteHead {
                path: &long,
                kind: Kind::File,
                link: b"",
                mode: 0o4755,
                uid: 1 << 40,
                gid: 5,
                mtime: (1704067200, 123),
                size: 3,
                dev_major: 0,
                dev_minor: 0,
                xattrs: &xattrs,
                sparse: None,
            })
            .unwrap();
        assert_eq!(n, 3);
        w.write_data(b"abc").unwrap();
        w.finish_data(3).unwrap();
        let segs = [Segment {
            offset: 4096,
            len: 2,
        }];
        let n = w
            .write_head(&WriteHead {
                path: b"dir/sparse",
                kind: Kind::File,
                link: b"",
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime: (5, 0),
                size: 1 << 30,
                dev_major: 0,
                dev_minor: 0,
                xattrs: &[],
                sparse: Some(&segs),
            })
            .unwrap();
        assert_eq!(n, 2);
        w.write_data(b"zz").unwrap();
        w.finish_data(512 + 2).unwrap();
        let (buf, _) = w.finish().unwrap();

        let mut r = TarReader::new(&buf[..]);
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.path, long);
        assert_eq!(e.uid, 1 << 40);
        assert_eq!(e.mtime, (1704067200, 123));
        assert_eq!(e.mode, 0o4755);
        assert_eq!(e.xattrs, xattrs);
        let mut d = [0u8; 10];
        let k = r.read_data(&mut d).unwrap();
        assert_eq!(&d[..k], b"abc");
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.path, b"dir/sparse");
        assert_eq!(e.size, 1 << 30);
        assert_eq!(e.sparse.as_deref(), Some(&segs[..]));
        let k = r.read_data(&mut d).unwrap();
        assert_eq!(&d[..k], b"zz");
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn huge_pax_header_is_refused_before_allocation() {
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::XHeader);
        h.set_size(1 << 40);
        h.set_cksum();
        let mut r = TarReader::new(&h.as_bytes()[..]);
        let e = r.next_entry().unwrap_err();
        assert!(e.to_string().contains("exceeds the limit"), "{e}");
    }

    #[test]
    fn bad_checksum_is_an_error() {
        let mut h = Header::new_ustar();
        h.set_path("x").unwrap();
        h.set_cksum();
        let mut b = h.as_bytes().to_vec();
        b[0] = b'y';
        let mut r = TarReader::new(&b[..]);
        assert!(r.next_entry().unwrap_err().to_string().contains("checksum"));
    }
}
