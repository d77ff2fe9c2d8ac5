//! Archives that cannot be read by seeking as they are: compressed ones
//! (gzip, zstd, as `docker load` accepts them) and streams (standard
//! input) are first written, decompressed, into an anonymous temporary
//! file in the store. Before that, the first block must be a tar header:
//! junk (a text file, random bytes, `/dev/zero`) is refused at once and
//! none of it is echoed.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use strata_core::archive::Compression;

use crate::Store;
use crate::error::{Error, IoCtx, Result};

/// The archive at `path`, ready to be indexed: the file itself when it is
/// a plain tar, else a decompressed copy.
pub(super) fn archive_file(s: &Store, path: &Path) -> Result<File> {
    let mut f = File::open(path).ctx("open", path)?;
    let mut magic = [0u8; 6];
    let n = read_full(&mut f, &mut magic).ctx("read", path)?;
    let kind =
        Compression::detect(&magic[..n]).map_err(|e| Error::bad_archive(path, e.to_string()))?;
    f.seek(SeekFrom::Start(0)).ctx("seek", path)?;
    if kind == Compression::None {
        check_tar_start(&mut f, path)?;
        f.seek(SeekFrom::Start(0)).ctx("seek", path)?;
        return Ok(f);
    }
    let mut r = BufReader::with_capacity(1 << 20, f);
    spool(s, &mut r, path)
}

/// Standard input (maybe compressed) into a temporary file.
pub(super) fn stream(s: &Store, r: &mut (dyn Read + Send)) -> Result<File> {
    spool(s, r, Path::new("(standard input)"))
}

fn spool(s: &Store, r: &mut (dyn Read + Send), what: &Path) -> Result<File> {
    let mut dec = strata_core::archive::compress::decompress(r)
        .map_err(|e| Error::bad_archive(what, e.to_string()))?;
    let mut head = [0u8; 512];
    let n = read_full(&mut dec, &mut head).map_err(|e| Error::bad_archive(what, e.to_string()))?;
    check_header(&head[..n], what)?;
    let mut out = tempfile::tempfile_in(s.tmp_dir()).ctx("create temp", s.tmp_dir())?;
    std::io::Write::write_all(&mut out, &head[..n]).ctx("write temp", s.tmp_dir())?;
    std::io::copy(&mut dec, &mut out).map_err(|e| match e.raw_os_error() {
        Some(_) => Error::Io {
            op: "write temp",
            path: s.tmp_dir(),
            err: e,
        },
        None => Error::bad_archive(what, format!("decompressing: {e}")),
    })?;
    out.seek(SeekFrom::Start(0)).ctx("seek", s.tmp_dir())?;
    Ok(out)
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn check_tar_start(f: &mut File, what: &Path) -> Result<()> {
    let mut head = [0u8; 512];
    let n = read_full(f, &mut head).ctx("read", what)?;
    check_header(&head[..n], what)
}

/// The first block must be a tar header (its checksum right).
fn check_header(b: &[u8], what: &Path) -> Result<()> {
    let no = |why: &str| Error::bad_archive(what, why.to_string());
    if b.len() < 512 {
        return Err(no("it is too short to be a tar archive"));
    }
    if b.iter().all(|&x| x == 0) {
        return Err(no(
            "it starts with an empty block (not a tar archive, or an empty one)",
        ));
    }
    let h = tar::Header::from_byte_slice(b);
    let sum: u32 = b[..148]
        .iter()
        .chain(&b[156..512])
        .map(|&x| u32::from(x))
        .sum::<u32>()
        + 8 * 32;
    match h.cksum() {
        Ok(c) if c == sum => Ok(()),
        _ => Err(no("it is not a tar archive (its first header is not one)")),
    }
}
