//! The data segments of files with holes (SEEK_DATA / SEEK_HOLE).

use std::io;
use std::os::fd::BorrowedFd;

use rustix::fs::{self as rfs, SeekFrom};
use rustix::io::Errno;

/// One data segment of a file with holes: `len` bytes at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Where the data starts.
    pub offset: u64,
    /// How many bytes of data.
    pub len: u64,
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
