//! Applying a layer diff to a directory.
//!
//! # Security
//!
//! Layer tars are written by strangers and applied as root. What is
//! defended here:
//!
//! - **Paths stay in the root.** Every entry name, hardlink target and
//!   whiteout is normalised lexically ([`normalize`]): a leading `/` is
//!   dropped (as GNU tar does), and a `..` that would climb above the root
//!   fails the whole apply with a `PathEscape` error naming the entry
//!   (Docker's choice: such a layer is hostile, not sloppy). Parents are then
//!   resolved with [`Resolver`], which follows symlinks only inside the root
//!   (absolute targets restart at the layer root, `..` stops there), whether
//!   the symlink came from this layer or a lower one. The final component is
//!   never followed: files are created `O_CREAT | O_EXCL | O_NOFOLLOW`, and
//!   whatever stood there before is removed first (not written through).
//! - **Hardlinks** point at an existing non-directory inside the root,
//!   resolved the same way; `linkat` is called without
//!   `AT_SYMLINK_FOLLOW`, so a link to a symlink links the symlink itself.
//! - **No backend forms from a tar.** A character device 0/0 (an overlay
//!   whiteout) and any `trusted.overlay.*` / `user.overlay.*` xattr are
//!   refused; `security.*` xattrs other than `security.capability` are
//!   refused too (`security.selinux` labels are host policy and are dropped
//!   with a warning, as runtimes relabel anyway).
//! - **Bounded memory.** Extension headers are size-limited before they are
//!   read (see [`tar`](super::tar)); file data streams through one
//!   fixed buffer; per-entry state is the set of paths this layer created
//!   (needed to honour opaque markers) and its directories' timestamps.
//! - **All or nothing.** Any entry that cannot be applied faithfully (an
//!   owner that cannot be set, an xattr the file system refuses, an unknown
//!   entry type, a truncated stream, a bad checksum) is an error naming the
//!   entry; the caller (the driver) then removes the half-made layer.
//!
//! Out of scope: the content of files (setuid binaries, device nodes other
//! than 0/0 are legitimate layer content and are created faithfully when
//! running as root), and resource use bounded only by the disk (a
//! compression bomb fills the disk and fails with ENOSPC).
//!
//! Whiteouts follow the OCI rules (see [`crate::whiteout`]): they hide
//! lower-layer content only, never entries of the same layer.

mod book;
mod copied;
mod create;
mod hide;
mod link;
mod pipeline;
mod spill;

use book::{Created, DirTimes};
use copied::CopiedUp;

use std::ffi::CStr;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::mpsc;

use rustix::fs::{self as rfs, Mode, OFlags, Timespec};
use rustix::io::Errno;

use super::compress;
use super::tar::{EntryHead, Kind, RawSink, TarReader, reborrow_sink as reborrow};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::fsx::{self, XattrTarget};
use crate::resolve::{self, Missing, ResolveHook, ResolvedDir, Resolver, normalize, split_parent};
use crate::whiteout::{self, Marker, WhiteoutFormat};
use pipeline::{ChunkReader, PIPE_DEPTH, produce};

/// Options of [`apply`].
#[derive(Default)]
pub struct ApplyOptions<'a> {
    /// On-disk whiteout form of the target (default: delete in place).
    pub whiteouts: Option<WhiteoutFormat>,
    /// The parent's merged view, for backends whose layer directory holds
    /// only the layer's own files (overlay2): used to copy up directories
    /// and hardlink targets and to follow symlinks of lower layers.
    pub lower: Option<BorrowedFd<'a>>,
    /// Force the openat2 rung on or off (tests of the fallback ladder).
    pub use_openat2: Option<bool>,
    /// Keys (of created paths) and bytes (of directory times) kept in
    /// memory before the bookkeeping spills to temporary files; default
    /// 131,072 keys a set and 4 MiB (tests of the spill path set it low).
    pub spill_after: Option<usize>,
    /// Receives every raw byte that is not file content (tar-split).
    pub raw: Option<&'a mut dyn RawSink>,
}

impl std::fmt::Debug for ApplyOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplyOptions")
            .field("whiteouts", &self.whiteouts)
            .field("lower", &self.lower)
            .field("use_openat2", &self.use_openat2)
            .field("spill_after", &self.spill_after)
            .finish()
    }
}

const BUF: usize = 256 * 1024;

/// Parent directories kept resolved (each holds an open directory fd).
const PARENTS_CACHED: usize = 16;

/// Most bytes accepted after the end-of-archive marker (writers pad to a
/// record size, tar-split keeps what follows; an endless stream is refused).
pub const MAX_TRAILER: u64 = 4 << 20;

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApplyStats {
    /// Digest of the uncompressed tar stream (every byte, including the
    /// end-of-archive blocks and what follows them): the layer's diffID.
    pub diff_id: Digest,
    /// Bytes of the uncompressed tar stream.
    pub tar_bytes: u64,
    /// Bytes of file content the layer received (its size, as Docker counts).
    pub size: u64,
    /// Tar entries applied (headers of PAX / GNU extensions not counted).
    pub entries: u64,
}

/// Apply the layer diff read from `input` (plain, gzip or zstd) to the
/// directory `root` (whose path, for messages, is `root_path`).
///
/// Reading, decompressing and hashing (the diffID) run on a helper thread
/// that hands 1 MiB chunks to this one, which parses and writes: on two
/// cores the hash and the decompression come off the critical path.
pub fn apply(
    root: BorrowedFd<'_>,
    root_path: &Path,
    input: &mut (dyn Read + Send),
    opts: ApplyOptions<'_>,
) -> Result<ApplyStats> {
    let decoded = compress::decompress(input)?;
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(PIPE_DEPTH);
        let (back_tx, back_rx) = mpsc::channel::<Vec<u8>>();
        let producer = s.spawn(move || produce(decoded, tx, back_rx));
        let reader = ChunkReader {
            rx,
            back: back_tx,
            cur: Vec::new(),
            pos: 0,
        };
        let r = apply_stream(root, root_path, reader, opts);
        // on error the reader is gone and the producer stops at its next send
        let produced = producer.join();
        let (size, entries, tar_bytes_seen) = r?;
        let (digest, tar_bytes) = match produced {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(Error::archive("read error", Some(e))),
            Err(_) => return Err(Error::archive("the reading thread panicked", None)),
        };
        debug_assert_eq!(tar_bytes, tar_bytes_seen);
        Ok(ApplyStats {
            diff_id: digest,
            tar_bytes,
            size,
            entries,
        })
    })
}

/// Apply a tar stream; returns (bytes of file content, entries, tar bytes).
fn apply_stream<R: Read>(
    root: BorrowedFd<'_>,
    root_path: &Path,
    input: R,
    opts: ApplyOptions<'_>,
) -> Result<(u64, u64, u64)> {
    let mut tr = TarReader::new(input);
    let format = opts.whiteouts.unwrap_or(WhiteoutFormat::Delete);
    let mut res = Resolver::new(root, root_path);
    if let WhiteoutFormat::Overlay(x) = format {
        res.overlay = Some(x);
        res.lower = opts.lower;
    }
    if let Some(u) = opts.use_openat2 {
        res.use_openat2 = u && resolve::openat2_available();
    }
    let scratch = std::rc::Rc::new(spill::Scratch::beside(root));
    let mut a = Applier {
        res,
        format,
        created: Created::new(scratch.clone(), opts.spill_after),
        copied_up: CopiedUp::new(scratch.clone(), opts.spill_after),
        dir_times: DirTimes::new(scratch, opts.spill_after),
        buf: vec![0u8; BUF],
        size: 0,
        entries: 0,
        parents: Vec::new(),
        owner: (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        ),
        umask: fsx::current_umask(),
    };
    let mut raw = opts.raw;
    while let Some(head) = tr.next_entry_raw(reborrow(&mut raw))? {
        a.entry(&head, &mut tr)
            .and_then(|()| a.spill_error())
            .map_err(|e| Error::entry(&head.path, e))?;
        a.entries += 1;
    }
    tr.drain(reborrow(&mut raw), MAX_TRAILER)?;
    a.parents.clear();
    a.finish_dirs()?;
    Ok((a.size, a.entries, tr.position()))
}

struct Applier<'a> {
    res: Resolver<'a>,
    format: WhiteoutFormat,
    /// Resolved paths this layer created (entries and implicit parents).
    created: Created,
    /// Lower files with several names copied up by this layer, by (dev,
    /// inode): the upper path of the copy (overlay form only).
    copied_up: CopiedUp,
    /// Directories whose times are set once every entry is in.
    dir_times: DirTimes,
    buf: Vec<u8>,
    size: u64,
    entries: u64,
    /// The last parent directories resolved, most recent last (entries
    /// come in walk order: most share the last one, and a walk returns to
    /// a directory after each of its subdirectories); all dropped whenever
    /// anything is removed or replaced, one when its directory's own entry
    /// sets its owner or mode.
    parents: Vec<(Vec<u8>, std::rc::Rc<Parent>)>,
    /// Our own uid and gid: new files already have them.
    owner: (u32, u32),
    umask: u32,
}

/// A cached parent directory and what decides default owners and modes.
#[derive(Debug)]
struct Parent {
    dir: ResolvedDir,
    gid: u32,
    setgid: bool,
    default_acl: bool,
}

struct Hook<'h> {
    created: &'h mut Created,
    dir_times: &'h mut DirTimes,
}

impl ResolveHook for Hook<'_> {
    fn created_dir(&mut self, path: &[u8], restore_mtime: Option<Timespec>) {
        match restore_mtime {
            // a copy of a lower directory (overlay) stands for it, as an
            // existing parent does in a full tree: not this layer's own
            Some(t) => self.dir_times.push(path, t, t),
            None => self.created.insert_new_dir(path),
        }
    }
}

fn ts((sec, nsec): (i64, u32)) -> Timespec {
    Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    }
}

fn owner(v: u64, what: &str) -> Result<u32> {
    u32::try_from(v)
        .ok()
        .filter(|&x| x != u32::MAX)
        .ok_or_else(|| Error::invalid(what, format!("{v} is out of range")))
}

fn sys(op: &'static str, path: &[u8], e: impl Into<io::Error>) -> Error {
    Error::io_at(op, path, e)
}

/// Which xattrs a layer may set. See the module's `# Security`.
enum XattrVerdict {
    Apply,
    Drop,
}

fn check_xattr(name: &[u8]) -> Result<XattrVerdict> {
    let shown = || crate::error::Name(name.to_vec()).to_string();
    if whiteout::is_overlay_xattr(name) {
        return Err(Error::invalid(
            format!("xattr {}", shown()),
            "a layer may not set overlayfs attributes",
        ));
    }
    if name == b"security.selinux" {
        tracing::warn!(xattr = %shown(), "dropping SELinux label from layer");
        return Ok(XattrVerdict::Drop);
    }
    if name.starts_with(b"security.") && name != b"security.capability" {
        return Err(Error::invalid(
            format!("xattr {}", shown()),
            "a layer may not set security attributes other than security.capability",
        ));
    }
    if name.starts_with(b"user.")
        || name.starts_with(b"trusted.")
        || name == b"security.capability"
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
    {
        return Ok(XattrVerdict::Apply);
    }
    Err(Error::invalid(
        format!("xattr {}", shown()),
        "not in a namespace a layer may set (user, trusted, security.capability, ACLs)",
    ))
}

impl<'a> Applier<'a> {
    fn hook(&mut self) -> (&Resolver<'a>, Hook<'_>) {
        (
            &self.res,
            Hook {
                created: &mut self.created,
                dir_times: &mut self.dir_times,
            },
        )
    }

    fn entry<R: Read>(&mut self, head: &EntryHead, tr: &mut TarReader<R>) -> Result<()> {
        let path = normalize(&head.path)?;
        // validate xattrs before touching anything
        let mut xattrs = Vec::with_capacity(head.xattrs.len());
        for (k, v) in &head.xattrs {
            if let XattrVerdict::Apply = check_xattr(k)? {
                xattrs.push((k.as_slice(), v.as_slice()));
            }
        }
        if path.is_empty() {
            return self.root_entry(head, &xattrs);
        }
        let (dir, base) = split_parent(&path);
        // AUFS metadata at the top (`.wh..wh.plnk/...`): skipped, like Docker
        let first = path.split(|&b| b == b'/').next().unwrap_or_default();
        if first.starts_with(whiteout::WHITEOUT_META_PREFIX) && first != whiteout::OPAQUE_MARKER {
            tracing::debug!(path = %crate::error::Name(path.clone()), "skipping AUFS metadata");
            return Ok(());
        }
        for c in dir.split(|&b| b == b'/') {
            if c.starts_with(whiteout::WHITEOUT_PREFIX) {
                return Err(Error::invalid(
                    "path",
                    "a whiteout name cannot be a directory on the way to other entries",
                ));
            }
        }
        match whiteout::classify(base) {
            Marker::Opaque => self.opaque(dir),
            Marker::Whiteout(name) => {
                resolve::component(name).map_err(|_| {
                    Error::escape(&path, "whiteout of an invalid name (., .. or empty)")
                })?;
                self.whiteout(dir, name)
            }
            Marker::Meta => Err(Error::invalid(
                "path",
                "reserved whiteout metadata name inside a layer",
            )),
            Marker::None => self.create(head, dir, base, &xattrs, tr),
        }
    }

    fn set_meta_fd(
        &self,
        fd: BorrowedFd<'_>,
        path: &[u8],
        head: &EntryHead,
        xattrs: &[(&[u8], &[u8])],
    ) -> Result<()> {
        let uid = owner(head.uid, "uid")?;
        let gid = owner(head.gid, "gid")?;
        fsx::chown_fd(fd, uid, gid).map_err(|e| sys("chown", path, e))?;
        rfs::fchmod(fd, Mode::from_raw_mode(head.mode & 0o7777))
            .map_err(|e| sys("chmod", path, e))?;
        for (k, v) in xattrs {
            fsx::xattr_set(XattrTarget::Fd(fd), k, v).map_err(|e| sys("setxattr", path, e))?;
        }
        Ok(())
    }

    fn root_entry(&mut self, head: &EntryHead, xattrs: &[(&[u8], &[u8])]) -> Result<()> {
        if head.kind != Kind::Dir {
            return Err(Error::invalid(
                "entry",
                "the root of a layer can only be a directory",
            ));
        }
        let fd = rfs::openat(self.res.root, c".", fsx::DIR_FLAGS, Mode::empty())
            .map_err(|e| sys("open", b"/", e))?;
        self.set_meta_fd(fd.as_fd(), b"/", head, xattrs)?;
        let at = head.atime.unwrap_or(head.mtime);
        self.dir_times.push(b"", ts(at), ts(head.mtime));
        Ok(())
    }

    /// The parent directory `dir` (normalised), from the one-entry cache
    /// when the previous entry had the same parent.
    fn parent_dir(&mut self, dir: &[u8], missing: Missing) -> Result<Option<std::rc::Rc<Parent>>> {
        if let Some((_, r)) = self.parents.iter().rev().find(|(p, _)| p == dir) {
            return Ok(Some(r.clone()));
        }
        let d = {
            let (res, mut hook) = self.hook();
            res.dir(dir, missing, &mut hook)?
        };
        let Some(d) = d else { return Ok(None) };
        let st = rfs::fstat(&d.fd).map_err(|e| sys("stat", &d.path, e))?;
        let default_acl =
            fsx::xattr_get(XattrTarget::Fd(d.fd.as_fd()), b"system.posix_acl_default")
                .map_err(|e| sys("getxattr", &d.path, e))?
                .is_some();
        let p = std::rc::Rc::new(Parent {
            gid: st.st_gid,
            setgid: st.st_mode & 0o2000 != 0,
            default_acl,
            dir: d,
        });
        // Cached only when no symlink was followed: then creating entries
        // below cannot change what `dir` resolves to (through a symlink,
        // the next entry may replace a component on the way).
        if p.dir.path == dir {
            if self.parents.len() >= PARENTS_CACHED {
                self.parents.remove(0);
            }
            self.parents.push((dir.to_vec(), p.clone()));
        }
        Ok(Some(p))
    }

    /// Something was removed or replaced: cached parents may be stale.
    fn invalidate(&mut self) {
        self.parents.clear();
    }

    /// The directory `path`'s own entry came: what was cached of its owner
    /// and mode may be stale.
    fn forget_parent(&mut self, path: &[u8]) {
        self.parents.retain(|(p, _)| p != path);
    }

    /// Remove whatever stands at `name` so that it can be created anew.
    fn clear_slot(&mut self, pfd: BorrowedFd<'_>, name: &CStr, rpath: &[u8]) -> Result<()> {
        self.invalidate();
        fsx::remove_all_at(pfd, name).map_err(|e| sys("remove", rpath, e))
    }

    /// Can the owner / mode a new inode gets by default stand for the
    /// header's? (Then the chown / chmod calls are skipped.)
    fn owner_is_default(&self, parent: &Parent, uid: u32, gid: u32) -> bool {
        uid == self.owner.0 && gid == self.owner.1 && parent.gid == self.owner.1 && !parent.setgid
    }

    fn mode_is_default(&self, parent: &Parent, mode: u32) -> bool {
        !parent.default_acl && mode & 0o7000 == 0 && mode & !self.umask == mode
    }

    /// The bookkeeping could not be written to its temporary files.
    fn spill_error(&self) -> Result<()> {
        match self
            .created
            .take_error()
            .or_else(|| self.dir_times.take_error())
        {
            Some(e) => Err(Error::archive(
                "cannot write the apply's bookkeeping to a temporary file",
                Some(e),
            )),
            None => Ok(()),
        }
    }

    fn finish_dirs(&mut self) -> Result<()> {
        let times = std::mem::take(&mut self.dir_times);
        let (root, openat2) = (self.res.root, self.res.use_openat2);
        times.for_each(|path, at, mt| {
            let fd = match resolve::open_beneath(
                root,
                path,
                OFlags::RDONLY | OFlags::DIRECTORY,
                openat2,
            ) {
                Ok(fd) => fd,
                // removed or replaced later in the layer
                Err(e)
                    if matches!(
                        Errno::from_io_error(&e),
                        Some(Errno::NOENT | Errno::NOTDIR | Errno::LOOP)
                    ) =>
                {
                    return Ok(());
                }
                Err(e) => return Err(sys("open", path, e)),
            };
            fsx::set_times_fd(fd.as_fd(), at, mt).map_err(|e| sys("set times", path, e))
        })
    }
}
