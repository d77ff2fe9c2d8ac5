//! Keeping an imported tar re-creatable byte for byte (like tar-split):
//! while a layer is applied, every byte that is not file content (headers,
//! PAX records, padding, end blocks, trailing bytes) is recorded, and each
//! file's content is recorded as a reference to the file in the layer.
//! Exporting reads the references back from the layer's view, so the
//! re-created tar has the same diffID without the store keeping a second
//! copy of the data.
//!
//! Format (zstd-compressed): `STRATA-SPLIT-1\n`, then records
//! `R len:u64 bytes` (raw), `C pathlen:u32 path len:u64 nseg:u32
//! (offset:u64 len:u64)*` (content), and `E` at the end.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use sha2::{Digest as _, Sha256};
use strata_core::archive::tar::{RawSink, Segment};
use strata_core::resolve::{self, Missing, Resolver};

const MAGIC: &[u8] = b"STRATA-SPLIT-1\n";

/// Records a tar's skeleton while it is applied.
pub struct SplitWriter<W: Write> {
    enc: zstd::stream::write::Encoder<'static, W>,
    pending: Vec<u8>,
}

impl<W: Write> std::fmt::Debug for SplitWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplitWriter").finish()
    }
}

impl<W: Write> SplitWriter<W> {
    /// A tar-split written (zstd-compressed) to `w`.
    pub fn new(w: W) -> io::Result<Self> {
        // level 1: headers compress well at any level, and this runs on the
        // applying thread of every import
        let mut enc = zstd::stream::write::Encoder::new(w, 1)?;
        enc.write_all(MAGIC)?;
        Ok(SplitWriter {
            enc,
            pending: Vec::with_capacity(64 * 1024),
        })
    }

    fn flush_raw(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.enc.write_all(b"R")?;
            self.enc
                .write_all(&(self.pending.len() as u64).to_le_bytes())?;
            self.enc.write_all(&self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }

    /// End the tar-split; returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_raw()?;
        self.enc.write_all(b"E")?;
        self.enc.finish()
    }
}

impl<W: Write> RawSink for SplitWriter<W> {
    fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= 1 << 20 {
            self.flush_raw()?;
        }
        Ok(())
    }

    fn content(&mut self, path: &[u8], len: u64, sparse: Option<&[Segment]>) -> io::Result<()> {
        self.flush_raw()?;
        self.enc.write_all(b"C")?;
        self.enc.write_all(&(path.len() as u32).to_le_bytes())?;
        self.enc.write_all(path)?;
        self.enc.write_all(&len.to_le_bytes())?;
        let segs = sparse.unwrap_or(&[]);
        self.enc.write_all(&(segs.len() as u32).to_le_bytes())?;
        for s in segs {
            self.enc.write_all(&s.offset.to_le_bytes())?;
            self.enc.write_all(&s.len.to_le_bytes())?;
        }
        Ok(())
    }
}

/// Record the skeleton of the tar read from `r`: its content is read and
/// dropped (it lives in a layer that export reads it back from). Returns
/// the bytes of file content (the layer's size as Docker counts it).
pub fn split_stream(r: impl Read, w: impl Write) -> io::Result<u64> {
    use strata_core::archive::tar::{Kind, TarReader};
    let mut split = SplitWriter::new(w)?;
    let mut tr = TarReader::new(r);
    let mut size = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let other = |e: strata_core::Error| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
    while let Some(h) = tr.next_entry_raw(Some(&mut split)).map_err(other)? {
        if h.kind == Kind::File {
            size += h.size;
        }
        while tr.read_data(&mut buf).map_err(other)? > 0 {}
    }
    tr.drain(Some(&mut split), strata_core::archive::apply::MAX_TRAILER)
        .map_err(other)?;
    split.finish()?;
    Ok(size)
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn read_u32(r: &mut dyn Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut dyn Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Re-create the tar from its skeleton `split` and the layer's view
/// `view` (a directory fd of the layer's merged tree) into `out`. Returns
/// the bytes written and their sha256 (`sha256:HEX`), which the caller
/// compares with the layer's diffID.
pub fn assemble(
    split: impl Read,
    view: BorrowedFd<'_>,
    view_path: &Path,
    out: &mut dyn Write,
) -> io::Result<(u64, String)> {
    let mut dec = zstd::stream::read::Decoder::new(split)?;
    let mut magic = vec![0u8; MAGIC.len()];
    dec.read_exact(&mut magic)?;
    if magic != MAGIC {
        return Err(bad("not a tar-split file"));
    }
    let mut res = Resolver::new(view, view_path);
    res.use_openat2 = resolve::openat2_available();
    let mut a = Assembler {
        out,
        hasher: Sha256::new(),
        total: 0,
        buf: vec![0u8; 256 * 1024],
    };
    loop {
        let mut tag = [0u8; 1];
        dec.read_exact(&mut tag)?;
        match tag[0] {
            b'E' => break,
            b'R' => {
                let len = read_u64(&mut dec)?;
                a.raw(&mut dec, len)?;
            }
            b'C' => {
                let c = Content::read(&mut dec)?;
                a.content(&mut res, &c)?;
            }
            other => return Err(bad(format!("unknown tar-split record {other:#x}"))),
        }
    }
    Ok((
        a.total,
        format!("sha256:{}", hex::encode(a.hasher.finalize())),
    ))
}

/// A content record: which file's bytes, how many, and, for a sparse
/// file, which of its ranges.
struct Content {
    path: Vec<u8>,
    len: u64,
    segs: Vec<Segment>,
}

impl Content {
    fn read(dec: &mut dyn Read) -> io::Result<Content> {
        let plen = read_u32(dec)? as usize;
        if plen > 1 << 20 {
            return Err(bad("path too long"));
        }
        let mut path = vec![0u8; plen];
        dec.read_exact(&mut path)?;
        let len = read_u64(dec)?;
        let nseg = read_u32(dec)? as usize;
        let mut segs = Vec::with_capacity(nseg.min(1 << 16));
        for _ in 0..nseg {
            segs.push(Segment {
                offset: read_u64(dec)?,
                len: read_u64(dec)?,
            });
        }
        Ok(Content { path, len, segs })
    }

    fn name(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.path)
    }
}

/// Writes the re-made tar, hashing and counting it.
struct Assembler<'a> {
    out: &'a mut dyn Write,
    hasher: Sha256,
    total: u64,
    buf: Vec<u8>,
}

impl Assembler<'_> {
    fn emit(&mut self, n: usize) -> io::Result<()> {
        let b = &self.buf[..n];
        self.out.write_all(b)?;
        self.hasher.update(b);
        self.total += n as u64;
        Ok(())
    }

    /// `len` bytes kept verbatim in the skeleton (headers, padding).
    fn raw(&mut self, dec: &mut dyn Read, mut len: u64) -> io::Result<()> {
        while len > 0 {
            let n = len.min(self.buf.len() as u64) as usize;
            dec.read_exact(&mut self.buf[..n])?;
            self.emit(n)?;
            len -= n as u64;
        }
        Ok(())
    }

    /// A file's bytes, read from the layer's view.
    fn content(&mut self, res: &mut Resolver<'_>, c: &Content) -> io::Result<()> {
        let rel = resolve::normalize(&c.path).map_err(|e| bad(e.to_string()))?;
        let (dir, base) = resolve::split_parent(&rel);
        let parent = res
            .dir(dir, Missing::Stop, &mut ())
            .map_err(|e| bad(e.to_string()))?
            .ok_or_else(|| bad(format!("{} is missing from the layer", c.name())))?;
        let cb = resolve::component(base).map_err(|e| bad(e.to_string()))?;
        let fd = strata_core::fsx::open_file_at(parent.fd.as_fd(), &cb)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", c.name())))?;
        let f = std::fs::File::from(fd);
        let ranges: Vec<(u64, u64)> = if c.segs.is_empty() {
            vec![(0, c.len)]
        } else {
            c.segs.iter().map(|s| (s.offset, s.len)).collect()
        };
        let mut written = 0u64;
        for (off, l) in ranges {
            let mut done = 0u64;
            while done < l {
                let n = (l - done).min(self.buf.len() as u64) as usize;
                let k = std::os::unix::fs::FileExt::read_at(&f, &mut self.buf[..n], off + done)?;
                if k == 0 {
                    let why = format!("{} is shorter in the layer than in the tar", c.name());
                    return Err(bad(why));
                }
                self.emit(k)?;
                done += k as u64;
            }
            written += l;
        }
        if written != c.len {
            return Err(bad(format!("{}: sparse map does not add up", c.name())));
        }
        Ok(())
    }
}
