//! The tar writer: ustar headers, PAX extended headers where a value does
//! not fit (long names, large ids or sizes, nanoseconds, xattrs) and PAX
//! 1.0 sparse files. Output is deterministic for the same input.

use std::io::{self, Write};

use tar::{EntryType, Header};

use super::pax::push_record;
use super::{BLOCK, Kind, Segment};

/// Writes tar entries.
#[derive(Debug)]
pub struct TarWriter<W: Write> {
    w: W,
    /// Bytes written.
    pub bytes: u64,
    /// Entries written.
    pub entries: u64,
}

/// What to write for one entry.
#[derive(Debug, Clone)]
pub struct WriteHead<'a> {
    /// The path inside the layer.
    pub path: &'a [u8],
    /// What the entry is.
    pub kind: Kind,
    /// The link target (symlinks and hardlinks).
    pub link: &'a [u8],
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time: seconds and nanoseconds.
    pub mtime: (i64, u32),
    /// The file's size (its real size when sparse).
    pub size: u64,
    /// Device major number.
    pub dev_major: u32,
    /// Device minor number.
    pub dev_minor: u32,
    /// Extended attributes, written as PAX `SCHILY.xattr.*`.
    pub xattrs: &'a [(Vec<u8>, Vec<u8>)],
    /// Data segments of a sparse file.
    pub sparse: Option<&'a [Segment]>,
}

const OCTAL8_MAX: u64 = 0o7777777;
const OCTAL12_MAX: u64 = 0o77777777777;

/// Split a path into ustar (prefix, name) if it fits.
fn ustar_split(p: &[u8]) -> Option<(&[u8], &[u8])> {
    if p.len() <= 100 {
        return Some((&[], p));
    }
    // a '/' such that the prefix is at most 155 and the name 1 to 100 bytes
    let start = p.len().saturating_sub(101);
    (start..p.len().min(156))
        .find(|&i| p[i] == b'/' && p.len() - i - 1 <= 100 && p.len() - i - 1 > 0)
        .map(|i| (&p[..i], &p[i + 1..]))
}

/// `DIR/MARKER/BASE`: the conventional names of PAX headers and of the
/// stand-in name of a sparse file.
fn marked_name(path: &[u8], marker: &[u8]) -> Vec<u8> {
    let (dir, base) = crate::resolve::split_parent(path);
    let mut n = dir.to_vec();
    if !n.is_empty() {
        n.push(b'/');
    }
    n.extend_from_slice(marker);
    n.extend_from_slice(base);
    n
}

fn ustar(h: &mut Header) -> io::Result<&mut tar::UstarHeader> {
    h.as_ustar_mut()
        .ok_or_else(|| io::Error::other("ustar header"))
}

/// A PAX time value: `SEC[.FRACTION]`, trailing zeros dropped.
fn pax_time(sec: i64, ns: u32) -> String {
    let v = if sec < 0 && ns != 0 {
        format!("-{}.{:09}", -(sec + 1), 1_000_000_000 - ns)
    } else {
        format!("{sec}.{ns:09}")
    };
    v.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The header, PAX records and (for sparse files) the map that precedes
/// the data, of one entry.
struct Built {
    header: Header,
    pax: Vec<u8>,
    header_name: Vec<u8>,
    sparse_map: Vec<u8>,
    data_len: u64,
}

impl Built {
    fn new(e: &WriteHead<'_>) -> Built {
        let mut path = e.path.to_vec();
        if e.kind == Kind::Dir && !path.ends_with(b"/") {
            path.push(b'/');
        }
        let mut b = Built {
            header: Header::new_ustar(),
            pax: Vec::new(),
            header_name: path.clone(),
            sparse_map: Vec::new(),
            data_len: if e.kind == Kind::File { e.size } else { 0 },
        };
        if let (Kind::File, Some(segs)) = (e.kind, e.sparse) {
            b.sparse_10(&path, e.size, segs);
        }
        b
    }

    /// PAX sparse format 1.0: records name the file, the map precedes the
    /// data, the header carries a stand-in name.
    fn sparse_10(&mut self, path: &[u8], size: u64, segs: &[Segment]) {
        push_record(&mut self.pax, b"GNU.sparse.major", b"1");
        push_record(&mut self.pax, b"GNU.sparse.minor", b"0");
        push_record(&mut self.pax, b"GNU.sparse.name", path);
        push_record(
            &mut self.pax,
            b"GNU.sparse.realsize",
            size.to_string().as_bytes(),
        );
        let mut m = format!("{}\n", segs.len()).into_bytes();
        for s in segs {
            m.extend_from_slice(format!("{}\n{}\n", s.offset, s.len).as_bytes());
        }
        let padded = (m.len() as u64).div_ceil(BLOCK) * BLOCK;
        m.resize(padded as usize, 0);
        self.data_len = padded + segs.iter().map(|s| s.len).sum::<u64>();
        self.sparse_map = m;
        self.header_name = marked_name(path, b"GNUSparseFile.0/");
    }

    fn names(&mut self, e: &WriteHead<'_>) -> io::Result<()> {
        let name = self.header_name.clone();
        match ustar_split(&name) {
            Some((prefix, base)) => {
                let u = ustar(&mut self.header)?;
                u.name[..base.len()].copy_from_slice(base);
                u.prefix[..prefix.len()].copy_from_slice(prefix);
            }
            None => {
                if self.sparse_map.is_empty() {
                    let mut path = e.path.to_vec();
                    if e.kind == Kind::Dir && !path.ends_with(b"/") {
                        path.push(b'/');
                    }
                    push_record(&mut self.pax, b"path", &path);
                }
                let cut = name.len().min(100);
                ustar(&mut self.header)?.name[..cut].copy_from_slice(&name[..cut]);
            }
        }
        if e.link.len() > 100 {
            push_record(&mut self.pax, b"linkpath", e.link);
        }
        let cut = e.link.len().min(100);
        ustar(&mut self.header)?.linkname[..cut].copy_from_slice(&e.link[..cut]);
        Ok(())
    }

    /// A number in its header field, or in a PAX record when it does not
    /// fit (the field then holds 0).
    fn number(&mut self, key: &[u8], v: u64, max: u64) -> u64 {
        if v > max {
            push_record(&mut self.pax, key, v.to_string().as_bytes());
            0
        } else {
            v
        }
    }

    fn numbers(&mut self, e: &WriteHead<'_>) {
        let uid = self.number(b"uid", e.uid, OCTAL8_MAX);
        self.header.set_uid(uid);
        let gid = self.number(b"gid", e.gid, OCTAL8_MAX);
        self.header.set_gid(gid);
        let size = self.number(b"size", self.data_len, OCTAL12_MAX);
        self.header.set_size(size);
        let (sec, ns) = e.mtime;
        if ns != 0 || sec < 0 || sec as u64 > OCTAL12_MAX {
            push_record(&mut self.pax, b"mtime", pax_time(sec, ns).as_bytes());
        }
        self.header
            .set_mtime(if (0..=OCTAL12_MAX as i64).contains(&sec) {
                sec as u64
            } else {
                0
            });
    }

    fn devices(&mut self, e: &WriteHead<'_>) -> io::Result<()> {
        if matches!(e.kind, Kind::Char | Kind::Block) {
            let ma = self.number(b"SCHILY.devmajor", e.dev_major.into(), OCTAL8_MAX);
            let mi = self.number(b"SCHILY.devminor", e.dev_minor.into(), OCTAL8_MAX);
            self.header.set_device_major(ma as u32)?;
            self.header.set_device_minor(mi as u32)?;
        } else {
            self.header.set_device_major(0)?;
            self.header.set_device_minor(0)?;
        }
        Ok(())
    }

    /// The PAX header that precedes the entry's own header.
    fn pax_header(&self) -> io::Result<Header> {
        let mut ph = Header::new_ustar();
        let n = marked_name(&self.header_name, b"PaxHeaders.0/");
        let cut = n.len().min(99);
        ustar(&mut ph)?.name[..cut].copy_from_slice(&n[..cut]);
        ph.set_size(self.pax.len() as u64);
        ph.set_mode(0o644);
        ph.set_mtime(self.header.mtime().unwrap_or(0));
        ph.set_entry_type(EntryType::XHeader);
        ph.set_cksum();
        Ok(ph)
    }
}

fn entry_type(k: Kind) -> EntryType {
    match k {
        Kind::File => EntryType::Regular,
        Kind::Dir => EntryType::Directory,
        Kind::Symlink => EntryType::Symlink,
        Kind::Hardlink => EntryType::Link,
        Kind::Char => EntryType::Char,
        Kind::Block => EntryType::Block,
        Kind::Fifo => EntryType::Fifo,
    }
}

impl<W: Write> TarWriter<W> {
    /// A writer of a tar stream into `w`.
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
    /// exactly the returned number of bytes with
    /// [`write_data`](Self::write_data) and calls
    /// [`finish_data`](Self::finish_data).
    pub fn write_head(&mut self, e: &WriteHead<'_>) -> io::Result<u64> {
        let mut b = Built::new(e);
        b.names(e)?;
        b.numbers(e);
        for (k, v) in e.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            push_record(&mut b.pax, &key, v);
        }
        b.devices(e)?;
        b.header.set_mode(e.mode & 0o7777);
        b.header.set_entry_type(entry_type(e.kind));
        b.header.set_cksum();
        if !b.pax.is_empty() {
            let ph = b.pax_header()?;
            self.put(ph.as_bytes())?;
            self.put(&b.pax)?;
            self.pad(b.pax.len() as u64)?;
        }
        self.put(b.header.as_bytes())?;
        self.put(&b.sparse_map)?;
        self.entries += 1;
        Ok(b.data_len - b.sparse_map.len() as u64)
    }

    /// Write the current entry's data (padding comes with the next header).
    pub fn write_data(&mut self, b: &[u8]) -> io::Result<()> {
        self.put(b)
    }

    /// Pad the data of an entry whose header declared `total_len` bytes
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

    /// The underlying writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.w
    }
}

#[cfg(test)]
mod tests {
    use super::super::TarReader;
    use super::*;

    fn head<'a>(path: &'a [u8], xattrs: &'a [(Vec<u8>, Vec<u8>)]) -> WriteHead<'a> {
        WriteHead {
            path,
            kind: Kind::File,
            link: b"",
            mode: 0o4755,
            uid: 1 << 40,
            gid: 5,
            mtime: (1704067200, 123),
            size: 3,
            dev_major: 0,
            dev_minor: 0,
            xattrs,
            sparse: None,
        }
    }

    #[test]
    fn roundtrip_long_names_and_sparse() {
        let mut w = TarWriter::new(Vec::new());
        let long = vec![b'n'; 300];
        let xattrs = vec![(b"user.a".to_vec(), b"\x00\x01".to_vec())];
        assert_eq!(w.write_head(&head(&long, &xattrs)).unwrap(), 3);
        w.write_data(b"abc").unwrap();
        w.finish_data(3).unwrap();
        let segs = [Segment {
            offset: 4096,
            len: 2,
        }];
        let sparse = WriteHead {
            path: b"dir/sparse",
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: (5, 0),
            size: 1 << 30,
            xattrs: &[],
            sparse: Some(&segs),
            ..head(b"", &[])
        };
        assert_eq!(w.write_head(&sparse).unwrap(), 2);
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

    #[test]
    fn base256_size_beyond_64_bits_names_the_entry() {
        let mut h = Header::new_gnu();
        h.set_path("big").unwrap();
        h.set_entry_type(EntryType::Regular);
        let size = &mut h.as_old_mut().size;
        *size = [0; 12];
        size[0] = 0x80;
        size[3] = 1; // bit 64: would wrap to 0 in the tar crate
        h.set_cksum();
        let mut r = TarReader::new(&h.as_bytes()[..]);
        let e = r.next_entry().unwrap_err();
        assert!(e.to_string().contains("size"), "{e}");
        let mut h2 = Header::new_gnu();
        h2.set_path("uid").unwrap();
        h2.set_size(0);
        h2.as_old_mut().uid = [0xff; 8]; // -1
        h2.set_cksum();
        let mut r = TarReader::new(&h2.as_bytes()[..]);
        let e = r.next_entry().unwrap_err();
        assert!(e.to_string().contains("tar entry uid"), "{e}");
    }
}
