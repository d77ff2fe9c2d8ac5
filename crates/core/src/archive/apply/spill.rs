//! Where the apply's bookkeeping goes once it passes a fixed budget:
//! unnamed temporary files, so that memory stays flat however many entries
//! a layer has (a set of keys becomes sorted runs on disk, the list of
//! directory times a file read back once at the end).
//!
//! The files are made with `O_TMPFILE` in the directory being applied
//! (the layer's own file system, never linked, so never visible in the
//! layer and gone with the process), or in the system's temporary
//! directory where that file system has no `O_TMPFILE`.
//!
//! Written by hand: no crate offers an on-disk sorted set of fixed-size
//! keys with lookups and no daemon or database of its own; this is ~200
//! lines of sorted runs, merged as a binary counter.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;

use rustix::fs::{self as rfs, Mode, OFlags};

/// Makes the unnamed temporary files.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    dir: Option<OwnedFd>,
}

impl Scratch {
    /// Temporary files go beside `dir` (on its file system) when it can.
    pub(super) fn beside(dir: BorrowedFd<'_>) -> Scratch {
        Scratch {
            dir: rustix::io::fcntl_dupfd_cloexec(dir, 0).ok(),
        }
    }

    pub(super) fn file(&self) -> io::Result<File> {
        if let Some(d) = &self.dir {
            let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
            if let Ok(fd) = rfs::openat(d, c".", flags, Mode::from_raw_mode(0o600)) {
                return Ok(File::from(fd));
            }
        }
        tempfile::tempfile()
    }
}

/// Records of one 24 KiB block of a run; the run's index holds each
/// block's first key (1 byte of memory for 1,536 bytes on disk).
const BLOCK_KEYS: usize = 1024;
/// A record: a 16-byte key and an 8-byte value.
const REC: usize = 24;

/// One sorted run of (key, value) records on disk, one record a key.
#[derive(Debug)]
pub(super) struct Run {
    file: File,
    keys: u64,
    index: Vec<u128>,
}

/// Writes a run from keys in ascending order (of equal keys, the first
/// is kept).
pub(super) struct RunWriter {
    out: BufWriter<File>,
    keys: u64,
    index: Vec<u128>,
    last: Option<u128>,
}

impl RunWriter {
    pub(super) fn new(scratch: &Scratch) -> io::Result<RunWriter> {
        Ok(RunWriter {
            out: BufWriter::with_capacity(64 << 10, scratch.file()?),
            keys: 0,
            index: Vec::new(),
            last: None,
        })
    }

    pub(super) fn push(&mut self, k: u128, v: u64) -> io::Result<()> {
        if self.last == Some(k) {
            return Ok(());
        }
        if self.keys.is_multiple_of(BLOCK_KEYS as u64) {
            self.index.push(k);
        }
        self.out.write_all(&k.to_le_bytes())?;
        self.out.write_all(&v.to_le_bytes())?;
        self.keys += 1;
        self.last = Some(k);
        Ok(())
    }

    pub(super) fn finish(self) -> io::Result<Run> {
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        Ok(Run {
            file,
            keys: self.keys,
            index: self.index,
        })
    }
}

/// The record at `i` of a block.
fn record_at(b: &[u8], i: usize) -> (u128, u64) {
    let (mut k, mut v) = ([0u8; 16], [0u8; 8]);
    k.copy_from_slice(&b[i * REC..i * REC + 16]);
    v.copy_from_slice(&b[i * REC + 16..(i + 1) * REC]);
    (u128::from_le_bytes(k), u64::from_le_bytes(v))
}

impl Run {
    /// A run of `keys`, sorted here.
    #[cfg(test)]
    pub(super) fn write(scratch: &Scratch, keys: &mut [u128]) -> io::Result<Run> {
        keys.sort_unstable();
        let mut w = RunWriter::new(scratch)?;
        for &k in keys.iter() {
            w.push(k, 0)?;
        }
        w.finish()
    }

    pub(super) fn keys(&self) -> u64 {
        self.keys
    }

    /// The value of key `k`, if the run has it.
    pub(super) fn get(&self, k: u128) -> io::Result<Option<u64>> {
        // the last block whose first key is <= k
        let b = match self.index.partition_point(|&f| f <= k) {
            0 => return Ok(None),
            n => n - 1,
        };
        let first = b as u64 * BLOCK_KEYS as u64;
        let n = (self.keys - first).min(BLOCK_KEYS as u64) as usize;
        let mut buf = [0u8; BLOCK_KEYS * REC];
        self.file
            .read_exact_at(&mut buf[..n * REC], first * REC as u64)?;
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (mk, v) = record_at(&buf, mid);
            match mk.cmp(&k) {
                std::cmp::Ordering::Equal => return Ok(Some(v)),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Ok(None)
    }

    fn reader(&self) -> RunReader<'_> {
        RunReader {
            src: BufReader::with_capacity(
                64 << 10,
                ReadAt {
                    f: &self.file,
                    pos: 0,
                },
            ),
            left: self.keys,
        }
    }

    /// One run of the records of `a` and the newer `b` (whose value wins
    /// for a key both have).
    pub(super) fn merge(scratch: &Scratch, a: &Run, b: &Run) -> io::Result<Run> {
        let mut w = RunWriter::new(scratch)?;
        let (mut ra, mut rb) = (a.reader(), b.reader());
        let (mut x, mut y) = (ra.next()?, rb.next()?);
        loop {
            match (x, y) {
                (Some(p), Some(q)) if p.0 < q.0 => {
                    w.push(p.0, p.1)?;
                    x = ra.next()?;
                }
                (_, Some(q)) => {
                    w.push(q.0, q.1)?;
                    y = rb.next()?;
                }
                (Some(p), None) => {
                    w.push(p.0, p.1)?;
                    x = ra.next()?;
                }
                (None, None) => return w.finish(),
            }
        }
    }
}

/// Reads a file from a position of its own (the file's offset is shared
/// with nothing else, but `read_at` keeps a run usable for lookups while
/// it is merged).
struct ReadAt<'f> {
    f: &'f File,
    pos: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.f.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

struct RunReader<'f> {
    src: BufReader<ReadAt<'f>>,
    left: u64,
}

impl RunReader<'_> {
    fn next(&mut self) -> io::Result<Option<(u128, u64)>> {
        if self.left == 0 {
            return Ok(None);
        }
        let mut r = [0u8; REC];
        self.src.read_exact(&mut r)?;
        self.left -= 1;
        Ok(Some(record_at(&r, 0)))
    }
}

/// Sorted runs kept as a binary counter: a new run merges with the one
/// before while that one is no bigger, so there are at most log2(keys /
/// run size) + 1 runs and each key is rewritten that many times.
#[derive(Debug, Default)]
pub(super) struct Runs {
    runs: Vec<Run>,
}

impl Runs {
    pub(super) fn push(&mut self, scratch: &Scratch, mut run: Run) -> io::Result<()> {
        while let Some(prev) = self.runs.last() {
            if prev.keys() > run.keys() {
                break;
            }
            run = Run::merge(scratch, prev, &run)?;
            self.runs.pop();
        }
        self.runs.push(run);
        Ok(())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The value of key `k` in the newest run that has it.
    pub(super) fn get(&self, k: u128) -> io::Result<Option<u64>> {
        for r in self.runs.iter().rev() {
            if let Some(v) = r.get(k)? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.runs.len()
    }
}

/// The first error of a spill, kept until the applier asks (the sets are
/// used from hooks that cannot return one); the apply then fails.
#[derive(Debug, Default)]
pub(super) struct Sticky(RefCell<Option<io::Error>>);

impl Sticky {
    pub(super) fn set(&self, e: io::Error) {
        let mut s = self.0.borrow_mut();
        if s.is_none() {
            *s = Some(e);
        }
    }

    pub(super) fn take(&self) -> Option<io::Error> {
        self.0.borrow_mut().take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_find_their_keys_across_blocks_and_merges() {
        let s = Scratch::default();
        let mut runs = Runs::default();
        let mut all = Vec::new();
        for r in 0..5u128 {
            // 3,000 keys a run: several blocks, interleaved with other runs
            let mut keys: Vec<u128> = (0..3000u128).map(|i| (i * 5 + r) << 64 | i).collect();
            all.extend_from_slice(&keys);
            keys.extend_from_slice(&keys.clone()[..10]); // duplicates
            runs.push(&s, Run::write(&s, &mut keys).unwrap()).unwrap();
        }
        assert!(runs.len() <= 3, "binary counter: {} runs", runs.len());
        for &k in &all {
            assert_eq!(runs.get(k).unwrap(), Some(0), "{k:x}");
            assert_eq!(runs.get(k + 1).unwrap(), None, "{:x}", k + 1);
        }
        assert_eq!(runs.get(u128::MAX).unwrap(), None);
        let total: u64 = runs.runs.iter().map(Run::keys).sum();
        assert_eq!(total, all.len() as u64, "merges drop duplicates");
    }
}
