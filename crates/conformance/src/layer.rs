//! Describing layers as data and turning them into tars.

use std::io::Write;

use strata_core::archive::tar::{Kind, Segment, TarWriter, WriteHead};

/// What a tar entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File(Vec<u8>),
    /// A sparse file: total size and data segments (offset, bytes).
    Sparse(u64, Vec<(u64, Vec<u8>)>),
    Dir,
    Symlink(Vec<u8>),
    Hardlink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

/// One tar entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct E {
    pub path: Vec<u8>,
    pub node: Node,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: (i64, u32),
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Default mtime of generated entries (2024-01-01T00:00:00Z).
pub const MTIME: i64 = 1_704_067_200;

fn e(path: impl AsRef<[u8]>, node: Node, mode: u32) -> E {
    E {
        path: path.as_ref().to_vec(),
        node,
        mode,
        uid: 0,
        gid: 0,
        mtime: (MTIME, 0),
        xattrs: Vec::new(),
    }
}

pub fn file(path: impl AsRef<[u8]>, content: impl AsRef<[u8]>) -> E {
    e(path, Node::File(content.as_ref().to_vec()), 0o644)
}
pub fn dir(path: impl AsRef<[u8]>) -> E {
    e(path, Node::Dir, 0o755)
}
pub fn symlink(path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> E {
    e(path, Node::Symlink(target.as_ref().to_vec()), 0o777)
}
pub fn hardlink(path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> E {
    e(path, Node::Hardlink(target.as_ref().to_vec()), 0o644)
}
pub fn fifo(path: impl AsRef<[u8]>) -> E {
    e(path, Node::Fifo, 0o644)
}
pub fn chardev(path: impl AsRef<[u8]>, major: u32, minor: u32) -> E {
    e(path, Node::Char(major, minor), 0o666)
}
pub fn blockdev(path: impl AsRef<[u8]>, major: u32, minor: u32) -> E {
    e(path, Node::Block(major, minor), 0o660)
}
pub fn sparse(path: impl AsRef<[u8]>, size: u64, segs: Vec<(u64, Vec<u8>)>) -> E {
    e(path, Node::Sparse(size, segs), 0o644)
}
/// `DIR/.wh.NAME`: deletes DIR/NAME.
pub fn whiteout(path: &str) -> E {
    let (d, b) = match path.rsplit_once('/') {
        Some((d, b)) => (format!("{d}/"), b),
        None => (String::new(), path),
    };
    file(format!("{d}.wh.{b}"), b"")
}
/// `DIR/.wh..wh..opq`: DIR hides what lower layers had in it.
pub fn opaque(dir: &str) -> E {
    let p = if dir.is_empty() {
        ".wh..wh..opq".to_string()
    } else {
        format!("{dir}/.wh..wh..opq")
    };
    file(p, b"")
}

impl E {
    pub fn mode(mut self, m: u32) -> Self {
        self.mode = m;
        self
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, s: i64, ns: u32) -> Self {
        self.mtime = (s, ns);
        self
    }
    pub fn xattr(mut self, k: impl AsRef<[u8]>, v: impl AsRef<[u8]>) -> Self {
        self.xattrs.push((k.as_ref().to_vec(), v.as_ref().to_vec()));
        self.xattrs.sort();
        self
    }
}

/// Write the entries as a tar (PAX where needed) followed by the end blocks.
pub fn tar(entries: &[E]) -> Vec<u8> {
    let mut w = TarWriter::new(Vec::new());
    for en in entries {
        write_entry(&mut w, en);
    }
    match w.finish() {
        Ok((v, _)) => v,
        Err(e) => panic!("writing to memory cannot fail: {e}"),
    }
}

/// Kind, link target, size, device numbers and sparse map of a node.
type Shape<'a> = (Kind, &'a [u8], u64, (u32, u32), Option<Vec<Segment>>);

fn write_entry<W: Write>(w: &mut TarWriter<W>, en: &E) {
    let (kind, link, size, dev, segs): Shape<'_> = match &en.node {
        Node::File(c) => (Kind::File, b"", c.len() as u64, (0, 0), None),
        Node::Sparse(size, s) => (
            Kind::File,
            b"",
            *size,
            (0, 0),
            Some(
                s.iter()
                    .map(|(o, d)| Segment {
                        offset: *o,
                        len: d.len() as u64,
                    })
                    .collect(),
            ),
        ),
        Node::Dir => (Kind::Dir, b"", 0, (0, 0), None),
        Node::Symlink(t) => (Kind::Symlink, t.as_slice(), 0, (0, 0), None),
        Node::Hardlink(t) => (Kind::Hardlink, t.as_slice(), 0, (0, 0), None),
        Node::Char(a, b) => (Kind::Char, b"", 0, (*a, *b), None),
        Node::Block(a, b) => (Kind::Block, b"", 0, (*a, *b), None),
        Node::Fifo => (Kind::Fifo, b"", 0, (0, 0), None),
    };
    let head = WriteHead {
        path: &en.path,
        kind,
        link,
        mode: en.mode,
        uid: en.uid,
        gid: en.gid,
        mtime: en.mtime,
        size,
        dev_major: dev.0,
        dev_minor: dev.1,
        xattrs: &en.xattrs,
        sparse: segs.as_deref(),
    };
    let r = (|| -> std::io::Result<()> {
        let n = w.write_head(&head)?;
        match &en.node {
            Node::File(c) => {
                w.write_data(c)?;
                w.finish_data(n)?;
            }
            Node::Sparse(_, s) => {
                for (_, d) in s {
                    w.write_data(d)?;
                }
                w.finish_data(n)?;
            }
            _ => {}
        }
        Ok(())
    })();
    if let Err(e) = r {
        panic!("writing to memory cannot fail: {e}");
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap_or_default()
}

pub fn sha256(data: &[u8]) -> strata_core::Digest {
    strata_core::Digest::of(data)
}
