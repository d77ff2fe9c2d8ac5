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

/// Keys of one 16 KiB block of a run; the run's index holds each block's
/// first key (1 byte of memory for 1,024 bytes on disk).
const BLOCK_KEYS: usize = 1024;
const KEY: usize = 16;

/// One sorted, duplicate-free run of keys on disk.
#[derive(Debug)]
pub(super) struct Run {
    file: File,
    keys: u64,
    index: Vec<u128>,
}

/// Writes a run from keys in ascending order (duplicates dropped).
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

    pub(super) fn push(&mut self, k: u128) -> io::Result<()> {
        if self.last == Some(k) {
            return Ok(());
        }
        if self.keys.is_multiple_of(BLOCK_KEYS as u64) {
            self.index.push(k);
        }
        self.out.write_all(&k.to_le_bytes())?;
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

fn key_at(b: &[u8], i: usize) -> u128 {
    let mut k = [0u8; KEY];
    k.copy_from_slice(&b[i * KEY..(i + 1) * KEY]);
    u128::from_le_bytes(k)
}

impl Run {
    /// A run of `keys`, sorted here.
    #[cfg(test)]
    pub(super) fn write(scratch: &Scratch, keys: &mut [u128]) -> io::Result<Run> {
        keys.sort_unstable();
        let mut w = RunWriter::new(scratch)?;
        for &k in keys.iter() {
            w.push(k)?;
        }
        w.finish()
    }

    pub(super) fn keys(&self) -> u64 {
        self.keys
    }

    pub(super) fn contains(&self, k: u128) -> io::Result<bool> {
        // the last block whose first key is <= k
        let b = match self.index.partition_point(|&f| f <= k) {
            0 => return Ok(false),
            n => n - 1,
        };
        let first = b as u64 * BLOCK_KEYS as u64;
        let n = (self.keys - first).min(BLOCK_KEYS as u64) as usize;
        let mut buf = [0u8; BLOCK_KEYS * KEY];
        self.file
            .read_exact_at(&mut buf[..n * KEY], first * KEY as u64)?;
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match key_at(&buf, mid).cmp(&k) {
                std::cmp::Ordering::Equal => return Ok(true),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Ok(false)
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

    /// One run of the keys of `a` and `b`.
    pub(super) fn merge(scratch: &Scratch, a: &Run, b: &Run) -> io::Result<Run> {
        let mut w = RunWriter::new(scratch)?;
        let (mut ra, mut rb) = (a.reader(), b.reader());
        let (mut x, mut y) = (ra.next()?, rb.next()?);
        loop {
            match (x, y) {
                (Some(p), Some(q)) if p <= q => {
                    w.push(p)?;
                    x = ra.next()?;
                }
                (_, Some(q)) => {
                    w.push(q)?;
                    y = rb.next()?;
                }
                (Some(p), None) => {
                    w.push(p)?;
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
    fn next(&mut self) -> io::Result<Option<u128>> {
        if self.left == 0 {
            return Ok(None);
        }
        let mut k = [0u8; KEY];
        self.src.read_exact(&mut k)?;
        self.left -= 1;
        Ok(Some(u128::from_le_bytes(k)))
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

    pub(super) fn contains(&self, k: u128) -> io::Result<bool> {
        for r in &self.runs {
            if r.contains(k)? {
                return Ok(true);
            }
        }
        Ok(false)
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
            assert!(runs.contains(k).unwrap(), "{k:x}");
            assert!(!runs.contains(k + 1).unwrap(), "{:x}", k + 1);
        }
        assert!(!runs.contains(u128::MAX).unwrap());
        let total: u64 = runs.runs.iter().map(Run::keys).sum();
        assert_eq!(total, all.len() as u64, "merges drop duplicates");
    }
}
