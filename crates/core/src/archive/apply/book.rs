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

use rustix::fs::Timespec;

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

/// A set of 128-bit keys in 256 tables chosen by the key's top byte. One
/// table of a million keys doubles at once, holding old and new (~53 MB
/// for a moment); here one small table grows at a time, so memory follows
/// the number of keys without that spike.
#[derive(Debug)]
struct KeySet {
    shards: Vec<HashSet<u128, BuildHasherDefault<Passthrough>>>,
    len: usize,
}

impl Default for KeySet {
    fn default() -> Self {
        KeySet {
            shards: (0..256).map(|_| HashSet::default()).collect(),
            len: 0,
        }
    }
}

impl KeySet {
    fn shard(&self, k: u128) -> usize {
        (k >> 120) as usize
    }
    fn insert(&mut self, k: u128) -> bool {
        let i = self.shard(k);
        let new = self.shards[i].insert(k);
        self.len += usize::from(new);
        new
    }
    fn contains(&self, k: &u128) -> bool {
        self.shards[self.shard(*k)].contains(k)
    }
    fn is_empty(&self) -> bool {
        self.len == 0
    }
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }
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
}

fn parent_of(path: &[u8]) -> Option<&[u8]> {
    path.iter().rposition(|&b| b == b'/').map(|i| &path[..i])
}

impl Created {
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
            if self.new_dirs.contains(&self.key(d)) {
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
            if !self.holders.insert(k) {
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
        self.paths.insert(k);
    }

    /// This layer made `path` a new directory: nothing of a lower layer
    /// shows below it.
    pub(super) fn insert_new_dir(&mut self, path: &[u8]) {
        if parent_of(path).is_some_and(|d| self.covered(d)) {
            return;
        }
        self.hold(path);
        let k = self.key(path);
        self.new_dirs.insert(k);
        *self.last.borrow_mut() = None;
    }

    /// Did this layer create `path`?
    pub(super) fn contains(&self, path: &[u8]) -> bool {
        let k = self.key(path);
        self.paths.contains(&k)
            || self.new_dirs.contains(&k)
            || parent_of(path).is_some_and(|d| self.covered(d))
    }

    /// Did this layer create something below `path`?
    pub(super) fn holds(&self, path: &[u8]) -> bool {
        self.holders.contains(&self.key(path)) || self.covered(path)
    }
}

/// Directories whose access and modification times are set once every
/// entry is in (creating entries inside a directory moves its mtime).
#[derive(Debug, Default)]
pub(super) struct DirTimes {
    arena: Vec<u8>,
    items: Vec<DirTime>,
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

impl DirTimes {
    pub(super) fn push(&mut self, path: &[u8], at: Timespec, mt: Timespec) {
        self.arena.extend_from_slice(path);
        self.items.push(DirTime {
            end: self.arena.len(),
            at: pack(at),
            mt: pack(mt),
        });
    }

    /// Every directory in the order pushed: (path, atime, mtime).
    pub(super) fn iter(&self) -> impl Iterator<Item = (&[u8], Timespec, Timespec)> {
        let mut start = 0;
        self.items.iter().map(move |d| {
            let p = &self.arena[start..d.end];
            start = d.end;
            (p, unpack(d.at), unpack(d.mt))
        })
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
            c.paths.len() == 1 && c.new_dirs.len() == 1,
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

    #[test]
    fn dir_times_come_back_in_order() {
        let mut d = DirTimes::default();
        let t = |s| Timespec {
            tv_sec: s,
            tv_nsec: 5,
        };
        d.push(b"", t(1), t(2));
        d.push(b"etc/x", t(3), t(4));
        let v: Vec<_> = d
            .iter()
            .map(|(p, a, m)| (p.to_vec(), a.tv_sec, m.tv_sec, m.tv_nsec))
            .collect();
        assert_eq!(v, [(b"".to_vec(), 1, 2, 5), (b"etc/x".to_vec(), 3, 4, 5)]);
    }
}
