//! Tar streams, read and written by hand over the `tar` crate's header
//! layout ([`tar::Header`]).
//!
//! The stream structure (extension headers, PAX records, GNU long names,
//! sparse maps, padding) is walked here, not by the `tar` crate's entry
//! iterator, because that iterator (a) reads PAX and GNU long-name headers
//! into memory whatever their declared size (a hostile layer could ask for
//! gigabytes), (b) does not expose sparse maps (holes would come back as
//! zeros to be scanned), (c) ignores PAX `mtime` nanoseconds, (d) does not
//! report the raw bytes of headers and padding, which the store keeps to
//! re-create an imported tar byte for byte, and (e) wraps base-256 numbers
//! that do not fit in 64 bits. Every declared size is checked against a
//! limit before anything is allocated.
//!
//! Rooms: [`read`] (the entry reader), [`num`] (numeric header fields),
//! [`pax`] (PAX records), [`sparse`] (GNU and PAX sparse maps), [`write`](mod@write)
//! (the writer).

pub mod num;
pub mod pax;
pub mod read;
pub mod sparse;
pub mod write;

use std::io;

use crate::error::Error;

pub use read::TarReader;
pub use write::{TarWriter, WriteHead};

/// The tar block size.
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
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A hard link to an earlier entry.
    Hardlink,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A named pipe.
    Fifo,
}

/// One data segment of a sparse file: `len` bytes at `offset`.
pub use crate::fsx::Segment;

/// An entry's metadata, extension headers folded in.
#[derive(Debug, Clone)]
pub struct EntryHead {
    /// The entry's path, as bytes (PAX `path` applied).
    pub path: Vec<u8>,
    /// The link target (symlinks and hardlinks).
    pub link: Vec<u8>,
    /// What the entry is.
    pub kind: Kind,
    /// Permission bits, with setuid/setgid/sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time: seconds and nanoseconds.
    pub mtime: (i64, u32),
    /// Access time, when PAX gives one.
    pub atime: Option<(i64, u32)>,
    /// The file's size (the real size for sparse files).
    pub size: u64,
    /// Device major number.
    pub dev_major: u32,
    /// Device minor number.
    pub dev_minor: u32,
    /// Extended attributes from PAX `SCHILY.xattr.*` / `LIBARCHIVE.xattr.*`.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Data segments of a sparse file (the data in the archive is these
    /// segments back to back); `None` for ordinary files.
    pub sparse: Option<Vec<Segment>>,
    /// Offset in the stream of the first header of this entry.
    pub header_pos: u64,
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

/// A malformed archive.
pub(crate) fn bad(reason: impl Into<String>) -> Error {
    Error::archive(reason, None)
}

pub(crate) fn bad_io(e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        Error::archive("truncated archive (unexpected end of stream)", Some(e))
    } else {
        Error::archive("read error", Some(e))
    }
}

/// Hand raw bytes to a sink, if there is one.
pub(crate) fn to_sink(raw: &mut Option<&mut dyn RawSink>, bytes: &[u8]) -> crate::Result<()> {
    match raw {
        Some(s) => s
            .raw(bytes)
            .map_err(|e| Error::archive("tar-split", Some(e))),
        None => Ok(()),
    }
}
