//! The apply's bookkeeping, kept small whatever the layer: which resolved
//! paths this layer created (and which directories hold them), as 128-bit
//! keyed hashes (16 bytes a path, not the path), and the directories whose
//! times are set at the end, as one byte arena (no allocation per entry).
//!
//! The hashes are keyed with random keys per apply (`RandomState`), so a
//! layer cannot be built to make two paths collide; by chance, two of a
//! billion paths collide with odds below 1e-20.

use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::rc::Rc;

use rustix::fs::Timespec;

use super::spill::{RunWriter, Runs, Scratch, Sticky};
use crate::error::{Error, Result};

/// Hashes the keys of [`KeySet`] by taking their low bits: they are keyed
/// hashes already (random per apply), so hashing them again buys nothing.
#[derive(Debug, Default)]
struct Passthrough(u64);

impl Hasher for Passthrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, k: u128) {
        self.0 = k as u64;
    }
}

/// Keys a set holds in memory before they go to a run on disk (about
/// 4.5 MiB of tables at most).
const MEM_KEYS: usize = 1 << 17;

/// A set of 128-bit keys: in memory in 256 tables chosen by the key's top
/// byte (one small table grows at a time, so there is no spike of a big
/// table doubling), and past [`MEM_KEYS`] in sorted runs on disk.
#[derive(Debug)]
struct KeySet {
    shards: Vec<HashSet<u128, BuildHasherDefault<Passthrough>>>,
    mem: usize,
    runs: Runs,
    /// Keys held in memory before a spill.
    cap: usize,
}

impl Default for KeySet {
    fn default() -> Self {
        KeySet {
            shards: (0..256).map(|_| HashSet::default()).collect(),
            mem: 0,
            runs: Runs::default(),
            cap: MEM_KEYS,
        }
    }
}

impl KeySet {
    fn shard(&self, k: u128) -> usize {
        (k >> 120) as usize
    }

    /// Adds `k`; false if it was in memory already (a key that went to
    /// disk may come back: runs drop duplicates when they merge).
    fn insert(&mut self, k: u128, sp: &Spill) -> bool {
        let i = self.shard(k);
        let new = self.shards[i].insert(k);
        self.mem += usize::from(new);
        if self.mem >= self.cap
            && let Err(e) = self.spill(&sp.scratch)
        {
            sp.err.set(e);
        }
        new
    }

    /// Writes the keys in memory as one run (the tables keep their room).
    fn spill(&mut self, scratch: &Scratch) -> std::io::Result<()> {
        let mut w = RunWriter::new(scratch)?;
        let mut sorted = Vec::new();
        // the tables are in key order by their top byte
        for t in &mut self.shards {
            sorted.clear();
            sorted.extend(t.drain());
            sorted.sort_unstable();
            for &k in &sorted {
                w.push(k, 0)?;
            }
        }
        self.mem = 0;
        self.runs.push(scratch, w.finish()?)
    }

    fn contains(&self, k: &u128, sp: &Spill) -> bool {
        if self.shards[self.shard(*k)].contains(k) {
            return true;
        }
        if self.runs.is_empty() {
            return false;
        }
        self.runs.get(*k).map(|v| v.is_some()).unwrap_or_else(|e| {
            sp.err.set(e);
            false
        })
    }

    fn is_empty(&self) -> bool {
        self.mem == 0 && self.runs.is_empty()
    }
}

/// Where the sets spill, and the first error doing so.
#[derive(Debug, Default)]
struct Spill {
    scratch: Rc<Scratch>,
    err: Sticky,
}

/// The resolved paths a layer created, and the directories on the way to
/// them: its whiteouts and opaque markers must spare both (a whiteout of a
/// lower directory that holds entries of this layer empties it of the
/// lower's content but keeps the layer's own).
///
/// Everything below a directory this layer made new (no lower directory
/// shows through it) is this layer's, so such entries are not recorded one
/// by one: a layer that adds a million files in new directories records
/// only the directories. What is recorded is 16 bytes a path.
#[derive(Debug, Default)]
pub(super) struct Created {
    keys: (RandomState, RandomState),
    /// Entries (and directories a lower one shows through) outside new
    /// directories.
    paths: KeySet,
    /// Directories made new, outside other new directories.
    new_dirs: KeySet,
    /// Directories something recorded sits below.
    holders: KeySet,
    /// The last directory asked about, and whether it is covered.
    last: std::cell::RefCell<Option<(Vec<u8>, bool)>>,
    spill: Spill,
}

fn parent_of(path: &[u8]) -> Option<&[u8]> {
    path.iter().rposition(|&b| b == b'/').map(|i| &path[..i])
}

impl Created {
    /// Bookkeeping that spills to temporary files made by `scratch`.
    pub(super) fn new(scratch: Rc<Scratch>, cap: Option<usize>) -> Created {
        let mut c = Created {
            spill: Spill {
                scratch,
                err: Sticky::default(),
            },
            ..Created::default()
        };
        let cap = cap.unwrap_or(MEM_KEYS).max(1);
        for s in [&mut c.paths, &mut c.new_dirs, &mut c.holders] {
            s.cap = cap;
        }
        c
    }

    /// The first error of the files it spilled to (then its answers may
    /// be wrong, and the apply must fail).
    pub(super) fn take_error(&self) -> Option<std::io::Error> {
        self.spill.err.take()
    }

    fn key(&self, path: &[u8]) -> u128 {
        (u128::from(self.keys.0.hash_one(path)) << 64) | u128::from(self.keys.1.hash_one(path))
    }

    /// Is `dir` a new directory of this layer, or inside one?
    fn covered(&self, dir: &[u8]) -> bool {
        if self.new_dirs.is_empty() {
            return false;
        }
        if let Some((d, c)) = self.last.borrow().as_ref()
            && d.as_slice() == dir
        {
            return *c;
        }
        let mut p = Some(dir);
        let mut c = false;
        while let Some(d) = p {
            if self.new_dirs.contains(&self.key(d), &self.spill) {
                c = true;
                break;
            }
            p = parent_of(d);
        }
        *self.last.borrow_mut() = Some((dir.to_vec(), c));
        c
    }

    fn hold(&mut self, path: &[u8]) {
        let mut p = path;
        while let Some(i) = p.iter().rposition(|&b| b == b'/') {
            p = &p[..i];
            let k = self.key(p);
            if !self.holders.insert(k, &self.spill) {
                break; // its ancestors are in already
            }
        }
    }

    /// This layer made or set `path` (a directory here is one a lower
    /// directory may show through).
    pub(super) fn insert(&mut self, path: &[u8]) {
        if parent_of(path).is_some_and(|d| self.covered(d)) {
            return;
        }
        self.hold(path);
        let k = self.key(path);
        self.paths.insert(k, &self.spill);
    }

    /// This layer made `path` a new directory: nothing of a lower layer
    /// shows below it.
    pub(super) fn insert_new_dir(&mut self, path: &[u8]) {
        if parent_of(path).is_some_and(|d| self.covered(d)) {
            return;
        }
        self.hold(path);
        let k = self.key(path);
        self.new_dirs.insert(k, &self.spill);
        *self.last.borrow_mut() = None;
    }

    /// Did this layer create `path`?
    pub(super) fn contains(&self, path: &[u8]) -> bool {
        let k = self.key(path);
        self.paths.contains(&k, &self.spill)
            || self.new_dirs.contains(&k, &self.spill)
            || parent_of(path).is_some_and(|d| self.covered(d))
    }

    /// Did this layer create something below `path`?
    pub(super) fn holds(&self, path: &[u8]) -> bool {
        self.holders.contains(&self.key(path), &self.spill) || self.covered(path)
    }
}

/// Bytes of directory times kept in memory before they go to a file.
const DIR_TIMES_MEM: usize = 4 << 20;

/// Directories whose access and modification times are set once every
/// entry is in (creating entries inside a directory moves its mtime): in
/// one byte arena (no allocation per entry), and past [`DIR_TIMES_MEM`]
/// appended to a temporary file that is read back once, in order.
#[derive(Debug, Default)]
pub(super) struct DirTimes {
    arena: Vec<u8>,
    items: Vec<DirTime>,
    scratch: Rc<Scratch>,
    disk: Option<BufWriter<File>>,
    err: Sticky,
    /// Bytes held in memory before a spill (0: the default).
    cap: usize,
}

#[derive(Debug, Clone, Copy)]
struct DirTime {
    end: usize,
    at: (i64, u32),
    mt: (i64, u32),
}

fn pack(t: Timespec) -> (i64, u32) {
    (t.tv_sec, u32::try_from(t.tv_nsec).unwrap_or(0))
}

fn unpack(t: (i64, u32)) -> Timespec {
    Timespec {
        tv_sec: t.0,
        tv_nsec: i64::from(t.1),
    }
}

/// A record on disk: path length, path, atime, mtime (little-endian).
fn write_record(w: &mut impl Write, path: &[u8], d: &DirTime) -> io::Result<()> {
    let len = u32::try_from(path.len()).map_err(|_| io::Error::other("path too long"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(path)?;
    for (s, n) in [d.at, d.mt] {
        w.write_all(&s.to_le_bytes())?;
        w.write_all(&n.to_le_bytes())?;
    }
    Ok(())
}

fn read_record(r: &mut impl Read, path: &mut Vec<u8>) -> io::Result<Option<DirTime>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        r => r?,
    }
    path.resize(u32::from_le_bytes(len) as usize, 0);
    r.read_exact(path)?;
    let mut t = [0u8; 24];
    r.read_exact(&mut t)?;
    // (seconds, nanoseconds) at byte `a`: 8 bytes and 4
    let half = |a: usize| {
        let (mut s, mut n) = ([0u8; 8], [0u8; 4]);
        s.copy_from_slice(&t[a..a + 8]);
        n.copy_from_slice(&t[a + 8..a + 12]);
        (i64::from_le_bytes(s), u32::from_le_bytes(n))
    };
    Ok(Some(DirTime {
        end: 0,
        at: half(0),
        mt: half(12),
    }))
}

impl DirTimes {
    /// Times that spill to temporary files made by `scratch`.
    pub(super) fn new(scratch: Rc<Scratch>, cap: Option<usize>) -> DirTimes {
        DirTimes {
            scratch,
            cap: cap.unwrap_or(DIR_TIMES_MEM),
            ..DirTimes::default()
        }
    }

    pub(super) fn push(&mut self, path: &[u8], at: Timespec, mt: Timespec) {
        self.arena.extend_from_slice(path);
        self.items.push(DirTime {
            end: self.arena.len(),
            at: pack(at),
            mt: pack(mt),
        });
        let cap = if self.cap == 0 {
            DIR_TIMES_MEM
        } else {
            self.cap
        };
        if self.arena.len() + self.items.len() * std::mem::size_of::<DirTime>() > cap
            && let Err(e) = self.spill()
        {
            self.err.set(e);
        }
    }

    fn spill(&mut self) -> io::Result<()> {
        if self.disk.is_none() {
            self.disk = Some(BufWriter::with_capacity(64 << 10, self.scratch.file()?));
        }
        if let Some(w) = &mut self.disk {
            let mut start = 0;
            for d in &self.items {
                write_record(w, &self.arena[start..d.end], d)?;
                start = d.end;
            }
        }
        self.arena.clear();
        self.items.clear();
        Ok(())
    }

    /// The first error of the file it spilled to.
    pub(super) fn take_error(&self) -> Option<io::Error> {
        self.err.take()
    }

    /// Calls `f` with every directory in the order pushed: (path, atime,
    /// mtime).
    pub(super) fn for_each(
        self,
        mut f: impl FnMut(&[u8], Timespec, Timespec) -> Result<()>,
    ) -> Result<()> {
        let back = |e| Error::archive("cannot read back the apply's directory times", Some(e));
        if let Some(e) = self.err.take() {
            return Err(back(e));
        }
        if let Some(w) = self.disk {
            let mut file = w.into_inner().map_err(|e| back(e.into_error()))?;
            file.seek(io::SeekFrom::Start(0)).map_err(back)?;
            let mut r = BufReader::with_capacity(64 << 10, file);
            let mut path = Vec::new();
            while let Some(d) = read_record(&mut r, &mut path).map_err(back)? {
                f(&path, unpack(d.at), unpack(d.mt))?;
            }
        }
        let mut start = 0;
        for d in &self.items {
            f(&self.arena[start..d.end], unpack(d.at), unpack(d.mt))?;
            start = d.end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_directories_cover_what_is_below() {
        let mut c = Created::default();
        c.insert_new_dir(b"new");
        c.insert(b"new/a/b");
        c.insert(b"old/x");
        assert!(c.contains(b"new") && c.contains(b"new/a/b") && c.contains(b"new/anything"));
        assert!(c.holds(b"new/a") && c.holds(b"old") && !c.holds(b"other"));
        assert!(c.contains(b"old/x") && !c.contains(b"old/y") && !c.contains(b"old"));
        assert!(
            c.paths.mem == 1 && c.new_dirs.mem == 1,
            "below a new dir nothing is recorded"
        );
    }

    #[test]
    fn created_paths_and_their_holders() {
        let mut c = Created::default();
        c.insert(b"a/b/c");
        c.insert(b"x");
        assert!(c.contains(b"a/b/c") && c.contains(b"x"));
        assert!(!c.contains(b"a/b") && c.holds(b"a/b") && c.holds(b"a"));
        assert!(!c.holds(b"a/b/c") && !c.contains(b"a/b/d") && !c.holds(b"x"));
    }

    fn times(d: DirTimes) -> Vec<(Vec<u8>, i64, i64, i64)> {
        let mut v = Vec::new();
        d.for_each(|p, a, m| {
            v.push((p.to_vec(), a.tv_sec, m.tv_sec, m.tv_nsec));
            Ok(())
        })
        .unwrap();
        v
    }

    #[test]
    fn dir_times_come_back_in_order() {
        let mut d = DirTimes::default();
        let t = |s| Timespec {
            tv_sec: s,
            tv_nsec: 5,
        };
        d.push(b"", t(1), t(2));
        d.push(b"etc/x", t(3), t(4));
        assert_eq!(
            times(d),
            [(b"".to_vec(), 1, 2, 5), (b"etc/x".to_vec(), 3, 4, 5)]
        );
    }

    #[test]
    fn dir_times_spill_to_a_file_and_come_back_in_order() {
        let mut d = DirTimes::default();
        let n = 200_000i64;
        for i in 0..n {
            let t = Timespec {
                tv_sec: i,
                tv_nsec: 999_999_999,
            };
            d.push(format!("dir/{i:08}").as_bytes(), t, t);
        }
        assert!(d.disk.is_some(), "spilled");
        assert!(d.arena.len() < DIR_TIMES_MEM, "memory bounded");
        let v = times(d);
        assert_eq!(v.len(), n as usize);
        for (i, (p, a, m, ns)) in v.into_iter().enumerate() {
            assert_eq!(p, format!("dir/{i:08}").into_bytes());
            assert_eq!((a, m, ns), (i as i64, i as i64, 999_999_999));
        }
    }

    #[test]
    fn created_sets_spill_to_disk_and_still_answer() {
        let mut c = Created::default();
        let n = MEM_KEYS * 2 + 1000;
        for i in 0..n {
            c.insert(format!("old/d{}/f{i}", i % 7).as_bytes());
        }
        assert!(!c.paths.runs.is_empty(), "spilled");
        assert!(c.paths.mem < MEM_KEYS && c.holders.mem < MEM_KEYS);
        for i in (0..n).step_by(97) {
            assert!(c.contains(format!("old/d{}/f{i}", i % 7).as_bytes()), "{i}");
            assert!(
                !c.contains(format!("old/d{}/g{i}", i % 7).as_bytes()),
                "{i}"
            );
        }
        assert!(c.holds(b"old/d3") && c.holds(b"old") && !c.holds(b"new"));
        assert!(c.take_error().is_none());
    }
}
