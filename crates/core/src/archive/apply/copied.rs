//! Lower files with several names that a layer copied up (overlay form):
//! which upper path holds each copy, kept in bounded memory.

use std::fs::File;
use std::io::{self, BufWriter, Seek, Write};
use std::os::unix::fs::FileExt;
use std::rc::Rc;

use super::spill::{RunWriter, Runs, Scratch};
use crate::error::{Error, Result};

/// Bytes of copied-up paths kept in memory before they go to a file.
const COPIED_MEM: usize = 4 << 20;

/// Lower files with several names that this layer copied up, by (device,
/// inode): the upper path of the copy, so that the next name links to it
/// (overlay form only). In memory up to [`COPIED_MEM`] bytes of paths,
/// then on disk: the paths appended to one file, their offsets in runs.
#[derive(Debug, Default)]
pub(super) struct CopiedUp {
    mem: std::collections::HashMap<(u64, u64), Vec<u8>>,
    bytes: usize,
    runs: Runs,
    paths: Option<File>,
    end: u64,
    scratch: Rc<Scratch>,
    cap: usize,
}

fn inode_key((dev, ino): (u64, u64)) -> u128 {
    (u128::from(dev) << 64) | u128::from(ino)
}

impl CopiedUp {
    pub(super) fn new(scratch: Rc<Scratch>, cap: Option<usize>) -> CopiedUp {
        CopiedUp {
            scratch,
            cap: cap.unwrap_or(COPIED_MEM).max(1),
            ..CopiedUp::default()
        }
    }

    /// The upper path of the copy of lower inode `key`.
    pub(super) fn get(&self, key: (u64, u64)) -> Result<Option<Vec<u8>>> {
        if let Some(p) = self.mem.get(&key) {
            return Ok(Some(p.clone()));
        }
        let (Some(off), Some(f)) = (self.runs.get(inode_key(key)).map_err(spilled)?, &self.paths)
        else {
            return Ok(None);
        };
        let mut len = [0u8; 4];
        f.read_exact_at(&mut len, off).map_err(spilled)?;
        let mut p = vec![0u8; u32::from_le_bytes(len) as usize];
        f.read_exact_at(&mut p, off + 4).map_err(spilled)?;
        Ok(Some(p))
    }

    /// Remember that lower inode `key` was copied up to `path`.
    pub(super) fn insert(&mut self, key: (u64, u64), path: &[u8]) -> Result<()> {
        self.bytes += path.len() + 64;
        self.mem.insert(key, path.to_vec());
        if self.bytes >= self.cap {
            self.spill().map_err(spilled)?;
        }
        Ok(())
    }

    fn spill(&mut self) -> io::Result<()> {
        if self.paths.is_none() {
            self.paths = Some(self.scratch.file()?);
        }
        let mut recs = Vec::with_capacity(self.mem.len());
        if let Some(f) = &self.paths {
            let mut w = BufWriter::with_capacity(64 << 10, f);
            w.seek(io::SeekFrom::Start(self.end))?;
            for (k, p) in self.mem.drain() {
                let len = u32::try_from(p.len()).map_err(|_| io::Error::other("path too long"))?;
                w.write_all(&len.to_le_bytes())?;
                w.write_all(&p)?;
                recs.push((inode_key(k), self.end));
                self.end += 4 + p.len() as u64;
            }
            w.flush()?;
        }
        recs.sort_unstable();
        let mut w = RunWriter::new(&self.scratch)?;
        for (k, off) in recs {
            w.push(k, off)?;
        }
        self.bytes = 0;
        self.runs.push(&self.scratch, w.finish()?)
    }
}

fn spilled(e: io::Error) -> Error {
    Error::archive(
        "cannot keep the apply's copied-up paths in a temporary file",
        Some(e),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copied_up_paths_spill_and_come_back() {
        let mut c = CopiedUp::new(Rc::new(Scratch::default()), Some(200));
        for i in 0..1000u64 {
            c.insert((7, i * 3), format!("dir{}/file-{i}", i % 13).as_bytes())
                .unwrap();
        }
        assert!(!c.runs.is_empty() && c.mem.len() < 10, "spilled");
        for i in 0..1000u64 {
            let want = format!("dir{}/file-{i}", i % 13).into_bytes();
            assert_eq!(c.get((7, i * 3)).unwrap(), Some(want), "{i}");
            assert_eq!(c.get((7, i * 3 + 1)).unwrap(), None);
            assert_eq!(c.get((8, i * 3)).unwrap(), None);
        }
    }
}
