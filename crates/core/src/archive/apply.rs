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
//!   read (see [`tarfmt`](super::tarfmt)); file data streams through one
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

use std::collections::HashSet;
use std::ffi::CStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::mpsc;

use rustix::fs::{self as rfs, FileType, Mode, OFlags, Timespec};
use rustix::io::Errno;

use super::compress;
use super::tarfmt::{EntryHead, Kind, RawSink, TarReader, reborrow_sink as reborrow};
use crate::driver::ApplyStats;
use crate::error::{Error, Result};
use crate::fsx::{self, XattrTarget};
use crate::resolve::{
    self, Missing, ResolveHook, ResolvedDir, Resolver, join, normalize, split_parent,
};
use crate::whiteout::{self, Marker, OverlayXattr, WhiteoutFormat};

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
    /// Receives every raw byte that is not file content (tar-split).
    pub raw: Option<&'a mut dyn RawSink>,
}

impl std::fmt::Debug for ApplyOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplyOptions")
            .field("whiteouts", &self.whiteouts)
            .field("lower", &self.lower)
            .field("use_openat2", &self.use_openat2)
            .finish()
    }
}

const BUF: usize = 256 * 1024;

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
            diff_id: format!("sha256:{digest}"),
            tar_bytes,
            size,
            entries,
        })
    })
}

/// Chunks in flight between the reading thread and the applying one.
const PIPE_DEPTH: usize = 8;
const CHUNK: usize = 1 << 20;

/// The reading thread: decompress, hash, count, hand over chunks (reusing
/// the buffers the applier gives back, so memory stays flat).
fn produce(
    mut r: Box<dyn Read + Send + '_>,
    tx: mpsc::SyncSender<io::Result<Vec<u8>>>,
    back: mpsc::Receiver<Vec<u8>>,
) -> io::Result<(String, u64)> {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    let mut count = 0u64;
    loop {
        let mut buf = back.try_recv().unwrap_or_default();
        buf.resize(CHUNK, 0);
        let mut n = 0;
        while n < CHUNK {
            match r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let kind = e.kind();
                    let msg = e.to_string();
                    let _ = tx.send(Err(e));
                    return Err(io::Error::new(kind, msg));
                }
            }
        }
        buf.truncate(n);
        h.update(&buf);
        count += n as u64;
        let end = n == 0;
        if tx.send(Ok(buf)).is_err() {
            // the applier stopped (an error): nothing more to do
            return Ok((hex::encode(h.finalize()), count));
        }
        if end {
            return Ok((hex::encode(h.finalize()), count));
        }
    }
}

/// The applying side of the pipe: a `Read` over the chunks.
struct ChunkReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    back: mpsc::Sender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.cur.len() {
            let next = match self.rx.recv() {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            };
            let done = std::mem::replace(&mut self.cur, next);
            let _ = self.back.send(done);
            self.pos = 0;
            if self.cur.is_empty() {
                return Ok(0);
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
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
    let mut a = Applier {
        res,
        format,
        created: Created::default(),
        dir_times: Vec::new(),
        buf: vec![0u8; BUF],
        size: 0,
        entries: 0,
        parent: None,
        owner: (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        ),
        umask: fsx::current_umask(),
    };
    let mut raw = opts.raw;
    while let Some(head) = tr.next_entry_raw(reborrow(&mut raw))? {
        a.entry(&head, &mut tr)
            .map_err(|e| Error::entry(&head.path, e))?;
        a.entries += 1;
    }
    tr.drain(reborrow(&mut raw))?;
    a.parent = None;
    a.finish_dirs()?;
    Ok((a.size, a.entries, tr.position()))
}

/// The resolved paths a layer created, and the directories on the way to
/// them: its whiteouts and opaque markers must spare both (a whiteout of a
/// lower directory that holds entries of this layer empties it of the
/// lower's content only).
#[derive(Default)]
struct Created {
    paths: HashSet<Vec<u8>>,
    holders: HashSet<Vec<u8>>,
}

impl Created {
    fn insert(&mut self, path: Vec<u8>) {
        let mut p = path.as_slice();
        while let Some(i) = p.iter().rposition(|&b| b == b'/') {
            p = &p[..i];
            if !self.holders.insert(p.to_vec()) {
                break; // its ancestors are in already
            }
        }
        self.paths.insert(path);
    }

    /// Did this layer create `path`?
    fn contains(&self, path: &[u8]) -> bool {
        self.paths.contains(path)
    }

    /// Did this layer create something below `path`?
    fn holds(&self, path: &[u8]) -> bool {
        self.holders.contains(path)
    }
}

struct Applier<'a> {
    res: Resolver<'a>,
    format: WhiteoutFormat,
    /// Resolved paths this layer created (entries and implicit parents).
    created: Created,
    /// Directories whose times are set once every entry is in.
    dir_times: Vec<(Vec<u8>, Timespec, Timespec)>,
    buf: Vec<u8>,
    size: u64,
    entries: u64,
    /// The last parent directory resolved (entries come sorted, so most
    /// share it); dropped whenever anything is removed or replaced.
    parent: Option<(Vec<u8>, std::rc::Rc<Parent>)>,
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
    dir_times: &'h mut Vec<(Vec<u8>, Timespec, Timespec)>,
}

impl ResolveHook for Hook<'_> {
    fn created_dir(&mut self, path: &[u8], restore_mtime: Option<Timespec>) {
        match restore_mtime {
            // a copy of a lower directory (overlay) stands for it, as an
            // existing parent does in a full tree: not this layer's own
            Some(t) => self.dir_times.push((path.to_vec(), t, t)),
            None => self.created.insert(path.to_vec()),
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
    Error::io(op, String::from_utf8_lossy(path).as_ref(), e)
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
            tracing::debug!(path = %String::from_utf8_lossy(&path), "skipping AUFS metadata");
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
        self.dir_times.push((Vec::new(), ts(at), ts(head.mtime)));
        Ok(())
    }

    /// The parent directory `dir` (normalised), from the one-entry cache
    /// when the previous entry had the same parent.
    fn parent_dir(&mut self, dir: &[u8], missing: Missing) -> Result<Option<std::rc::Rc<Parent>>> {
        if let Some((p, r)) = &self.parent
            && p == dir
        {
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
            self.parent = Some((dir.to_vec(), p.clone()));
        }
        Ok(Some(p))
    }

    /// Something was removed or replaced: cached parents may be stale.
    fn invalidate(&mut self) {
        self.parent = None;
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

    fn create<R: Read>(
        &mut self,
        head: &EntryHead,
        dir: &[u8],
        base: &[u8],
        xattrs: &[(&[u8], &[u8])],
        tr: &mut TarReader<R>,
    ) -> Result<()> {
        let cbase = resolve::component(base)?;
        let parent = self
            .parent_dir(dir, Missing::Create)?
            .ok_or_else(|| Error::not_found("parent directory"))?;
        let pfd = parent.dir.fd.as_fd();
        let rpath = join(&parent.dir.path, base);
        let overlay = matches!(self.format, WhiteoutFormat::Overlay(_));
        if head.kind == Kind::Hardlink {
            let existing = fsx::try_stat_at(pfd, &cbase).map_err(|e| sys("stat", &rpath, e))?;
            if existing.is_some() {
                self.invalidate();
            }
            return self.hardlink(head, pfd, &cbase, &rpath, existing.as_ref());
        }
        let uid = owner(head.uid, "uid")?;
        let gid = owner(head.gid, "gid")?;
        let mode = head.mode & 0o7777;
        let at = ts(head.atime.unwrap_or(head.mtime));
        let mt = ts(head.mtime);
        let default_owner = self.owner_is_default(&parent, uid, gid);
        let default_mode = self.mode_is_default(&parent, mode);
        if head.kind == Kind::Dir {
            let mut opaque = false;
            match rfs::mkdirat(pfd, cbase.as_c_str(), Mode::from_raw_mode(mode & 0o777)) {
                Ok(()) => {}
                Err(Errno::EXIST) => {
                    let st = fsx::stat_at(pfd, &cbase).map_err(|e| sys("stat", &rpath, e))?;
                    if fsx::file_type(&st) == FileType::Directory {
                        // an existing directory gets the header's attributes
                        let fd =
                            fsx::open_dir_at(pfd, &cbase).map_err(|e| sys("open", &rpath, e))?;
                        self.set_meta_fd(fd.as_fd(), &rpath, head, xattrs)?;
                        let at = head.atime.unwrap_or(head.mtime);
                        self.dir_times.push((rpath.clone(), ts(at), ts(head.mtime)));
                        self.created.insert(rpath);
                        return Ok(());
                    }
                    // a non-directory of this layer (or a whiteout) hid the
                    // lower directory: the new one must go on hiding it
                    opaque = overlay
                        && (fsx::is_whiteout(&st)
                            || matches!(
                                self.res.lower_stat(&rpath)?,
                                Some((_, FileType::Directory))
                            ));
                    self.clear_slot(pfd, &cbase, &rpath)?;
                    rfs::mkdirat(pfd, cbase.as_c_str(), Mode::from_raw_mode(mode & 0o777))
                        .map_err(|e| sys("mkdir", &rpath, e))?;
                }
                Err(e) => return Err(sys("mkdir", &rpath, e)),
            }
            if !default_owner {
                fsx::chown_at(pfd, &cbase, uid, gid).map_err(|e| sys("chown", &rpath, e))?;
            }
            if !default_mode || !default_owner {
                // the directory was made by us just now: chmodat cannot be
                // led through a symlink here
                rfs::chmodat(
                    pfd,
                    cbase.as_c_str(),
                    Mode::from_raw_mode(mode),
                    rfs::AtFlags::empty(),
                )
                .map_err(|e| sys("chmod", &rpath, e))?;
            }
            if !xattrs.is_empty() || opaque {
                let fd = fsx::open_dir_at(pfd, &cbase).map_err(|e| sys("open", &rpath, e))?;
                for (k, v) in xattrs {
                    fsx::xattr_set(XattrTarget::Fd(fd.as_fd()), k, v)
                        .map_err(|e| sys("setxattr", &rpath, e))?;
                }
                if opaque && let WhiteoutFormat::Overlay(x) = self.format {
                    x.set_opaque(XattrTarget::Fd(fd.as_fd()))
                        .map_err(|e| sys("set opaque", &rpath, e))?;
                }
            }
            self.dir_times.push((rpath.clone(), at, mt));
            self.created.insert(rpath);
            return Ok(());
        }
        match head.kind {
            Kind::File => {
                let flags = OFlags::CREATE
                    | OFlags::EXCL
                    | OFlags::WRONLY
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC;
                let cmode = Mode::from_raw_mode(mode & 0o777);
                let fd = match rfs::openat(pfd, cbase.as_c_str(), flags, cmode) {
                    Ok(fd) => fd,
                    Err(Errno::EXIST) => {
                        self.clear_slot(pfd, &cbase, &rpath)?;
                        rfs::openat(pfd, cbase.as_c_str(), flags, cmode)
                            .map_err(|e| sys("create", &rpath, e))?
                    }
                    Err(e) => return Err(sys("create", &rpath, e)),
                };
                let file = std::fs::File::from(fd);
                self.write_content(&file, head, tr, &rpath)?;
                let fd = file.as_fd();
                if !default_owner {
                    fsx::chown_fd(fd, uid, gid).map_err(|e| sys("chown", &rpath, e))?;
                }
                // chown clears setuid/setgid: the mode goes after it
                if !default_mode || !default_owner {
                    rfs::fchmod(fd, Mode::from_raw_mode(mode))
                        .map_err(|e| sys("chmod", &rpath, e))?;
                }
                for (k, v) in xattrs {
                    fsx::xattr_set(XattrTarget::Fd(fd), k, v)
                        .map_err(|e| sys("setxattr", &rpath, e))?;
                }
                fsx::set_times_fd(fd, at, mt).map_err(|e| sys("set times", &rpath, e))?;
                self.size += head.size;
            }
            Kind::Symlink => {
                if head.link.is_empty() {
                    return Err(Error::invalid("symlink", "empty link target"));
                }
                let target = fsx::cstr(&head.link).map_err(|e| sys("symlink", &rpath, e))?;
                match rfs::symlinkat(target.as_c_str(), pfd, cbase.as_c_str()) {
                    Ok(()) => {}
                    Err(Errno::EXIST) => {
                        self.clear_slot(pfd, &cbase, &rpath)?;
                        rfs::symlinkat(target.as_c_str(), pfd, cbase.as_c_str())
                            .map_err(|e| sys("symlink", &rpath, e))?;
                    }
                    Err(e) => return Err(sys("symlink", &rpath, e)),
                }
                if !default_owner {
                    fsx::chown_at(pfd, &cbase, uid, gid).map_err(|e| sys("chown", &rpath, e))?;
                }
                for (k, v) in xattrs {
                    fsx::xattr_set(XattrTarget::At(pfd, base), k, v)
                        .map_err(|e| sys("setxattr", &rpath, e))?;
                }
                fsx::set_times_at(pfd, &cbase, at, mt).map_err(|e| sys("set times", &rpath, e))?;
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                let ft = match head.kind {
                    Kind::Char => FileType::CharacterDevice,
                    Kind::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                if head.kind == Kind::Char && head.dev_major == 0 && head.dev_minor == 0 {
                    return Err(Error::invalid(
                        "device",
                        "a character device 0/0 is an overlay whiteout; layers use .wh. entries",
                    ));
                }
                let dev = rfs::makedev(head.dev_major, head.dev_minor);
                match rfs::mknodat(pfd, cbase.as_c_str(), ft, Mode::from_raw_mode(0o600), dev) {
                    Ok(()) => {}
                    Err(Errno::EXIST) => {
                        self.clear_slot(pfd, &cbase, &rpath)?;
                        rfs::mknodat(pfd, cbase.as_c_str(), ft, Mode::from_raw_mode(0o600), dev)
                            .map_err(|e| sys("mknod", &rpath, e))?;
                    }
                    Err(e) => return Err(sys("mknod", &rpath, e)),
                }
                fsx::chown_at(pfd, &cbase, uid, gid).map_err(|e| sys("chown", &rpath, e))?;
                // the node was made by us just now: chmodat cannot be led
                // through a symlink here
                rfs::chmodat(
                    pfd,
                    cbase.as_c_str(),
                    Mode::from_raw_mode(mode),
                    rfs::AtFlags::empty(),
                )
                .map_err(|e| sys("chmod", &rpath, e))?;
                for (k, v) in xattrs {
                    fsx::xattr_set(XattrTarget::At(pfd, base), k, v)
                        .map_err(|e| sys("setxattr", &rpath, e))?;
                }
                fsx::set_times_at(pfd, &cbase, at, mt).map_err(|e| sys("set times", &rpath, e))?;
            }
            Kind::Dir | Kind::Hardlink => unreachable_kind()?,
        }
        self.created.insert(rpath);
        Ok(())
    }

    fn write_content<R: Read>(
        &mut self,
        file: &std::fs::File,
        head: &EntryHead,
        tr: &mut TarReader<R>,
        rpath: &[u8],
    ) -> Result<()> {
        match &head.sparse {
            None => {
                let mut f = file;
                loop {
                    let n = tr.read_data(&mut self.buf)?;
                    if n == 0 {
                        break;
                    }
                    f.write_all(&self.buf[..n])
                        .map_err(|e| sys("write", rpath, e))?;
                }
            }
            Some(segs) => {
                for s in segs {
                    let mut off = s.offset;
                    let mut left = s.len;
                    while left > 0 {
                        let want = (left.min(self.buf.len() as u64)) as usize;
                        let n = tr.read_data(&mut self.buf[..want])?;
                        let mut done = 0;
                        while done < n {
                            let w = rustix::io::pwrite(file, &self.buf[done..n], off + done as u64)
                                .map_err(|e| sys("write", rpath, e))?;
                            done += w;
                        }
                        off += n as u64;
                        left -= n as u64;
                    }
                }
                rfs::ftruncate(file, head.size).map_err(|e| sys("truncate", rpath, e))?;
            }
        }
        Ok(())
    }

    fn hardlink(
        &mut self,
        head: &EntryHead,
        pfd: BorrowedFd<'_>,
        cbase: &CStr,
        rpath: &[u8],
        existing: Option<&rfs::Stat>,
    ) -> Result<()> {
        let target = normalize(&head.link)?;
        if target.is_empty() {
            return Err(Error::invalid("hardlink", "target is the layer root"));
        }
        let (tdir, tbase) = split_parent(&target);
        let ctbase = resolve::component(tbase)?;
        let overlay = matches!(self.format, WhiteoutFormat::Overlay(_));
        let (tparent, lower_visible) = {
            let missing = if overlay {
                Missing::CreateIfLower
            } else {
                Missing::Stop
            };
            let (res, mut hook) = self.hook();
            res.dir_seeing_lower(tdir, missing, &mut hook)?
        }
        .ok_or_else(|| {
            Error::not_found(format!(
                "hardlink target {}",
                crate::error::Name(head.link.clone())
            ))
        })?;
        let trpath = join(&tparent.path, tbase);
        let mut tst =
            fsx::try_stat_at(tparent.fd.as_fd(), &ctbase).map_err(|e| sys("stat", &trpath, e))?;
        let mut existing = existing.copied();
        if overlay && tst.is_none() && lower_visible {
            // the target lives in a lower layer: copy it up first
            if let Some((lst, ft)) = self.res.lower_stat(&trpath)?
                && ft != FileType::Directory
                && let Some((lfd, lbase)) = self.res.lower_parent(&trpath)?
            {
                let clbase = resolve::component(&lbase)?;
                crate::copy::copy_node(
                    lfd.as_fd(),
                    &clbase,
                    &lst,
                    tparent.fd.as_fd(),
                    &ctbase,
                    None,
                )
                .map_err(|e| sys("copy up", &trpath, e))?;
                tst = fsx::try_stat_at(tparent.fd.as_fd(), &ctbase)
                    .map_err(|e| sys("stat", &trpath, e))?;
                // the copy may have landed on the entry's own name (a link
                // to itself)
                existing = fsx::try_stat_at(pfd, cbase).map_err(|e| sys("stat", rpath, e))?;
            }
        }
        let tst = match tst {
            Some(st) if !(overlay && fsx::is_whiteout(&st)) => st,
            _ => {
                return Err(Error::not_found(format!(
                    "hardlink target {}",
                    crate::error::Name(head.link.clone())
                )));
            }
        };
        if fsx::file_type(&tst) == FileType::Directory {
            return Err(Error::invalid("hardlink", "target is a directory"));
        }
        if let Some(st) = existing {
            if st.st_dev == tst.st_dev && st.st_ino == tst.st_ino {
                // already the same file; still this layer's entry, which a
                // later opaque marker or whiteout of the dir must spare
                self.created.insert(rpath.to_vec());
                return Ok(());
            }
            fsx::remove_all_at(pfd, cbase).map_err(|e| sys("remove", rpath, e))?;
        }
        rfs::linkat(
            tparent.fd.as_fd(),
            ctbase.as_c_str(),
            pfd,
            cbase,
            rfs::AtFlags::empty(),
        )
        .map_err(|e| sys("link", rpath, e))?;
        self.created.insert(rpath.to_vec());
        Ok(())
    }

    fn whiteout(&mut self, dir: &[u8], name: &[u8]) -> Result<()> {
        self.invalidate();
        let cname = resolve::component(name)?;
        match self.format {
            WhiteoutFormat::Delete => {
                let parent = {
                    let (res, mut hook) = self.hook();
                    res.dir(dir, Missing::Stop, &mut hook)?
                };
                let Some(parent) = parent else {
                    return Ok(()); // nothing below to delete
                };
                let rpath = join(&parent.path, name);
                if self.created.contains(&rpath) || self.created.holds(&rpath) {
                    // entries of this layer are never hidden by its whiteouts;
                    // a directory of (or holding entries of) this layer loses
                    // what lower layers had
                    if let Some(st) = fsx::try_stat_at(parent.fd.as_fd(), &cname)
                        .map_err(|e| sys("stat", &rpath, e))?
                        && fsx::file_type(&st) == FileType::Directory
                    {
                        let fd = fsx::open_dir_at(parent.fd.as_fd(), &cname)
                            .map_err(|e| sys("open", &rpath, e))?;
                        self.prune_not_created(fd, &rpath)?;
                    }
                    return Ok(());
                }
                fsx::remove_all_at(parent.fd.as_fd(), &cname).map_err(|e| sys("remove", &rpath, e))
            }
            WhiteoutFormat::Overlay(x) => {
                // A whiteout is made only where the lower view has something
                // to hide: overlayfs reads a directory with no lower (or an
                // opaque one) straight from the upper, so a whiteout there
                // would be listed yet fail to stat. Elsewhere it is a no-op,
                // as with the delete format.
                let found = {
                    let (res, mut hook) = self.hook();
                    res.dir_seeing_lower(dir, Missing::CreateIfLower, &mut hook)?
                };
                let Some((parent, lower_visible)) = found else {
                    return Ok(());
                };
                let pfd = parent.fd.as_fd();
                let rpath = join(&parent.path, name);
                let existing = fsx::try_stat_at(pfd, &cname).map_err(|e| sys("stat", &rpath, e))?;
                if let Some(st) = &existing {
                    if self.created.contains(&rpath) || self.created.holds(&rpath) {
                        // this layer's own: only what the lower has there goes
                        if fsx::file_type(st) == FileType::Directory
                            && lower_visible
                            && matches!(
                                self.res.lower_stat(&rpath)?,
                                Some((_, FileType::Directory))
                            )
                        {
                            let fd = fsx::open_dir_at(pfd, &cname)
                                .map_err(|e| sys("open", &rpath, e))?;
                            self.make_opaque(fd, &rpath, x)?;
                        }
                        return Ok(());
                    }
                    if fsx::is_whiteout(st) {
                        return Ok(());
                    }
                    fsx::remove_all_at(pfd, &cname).map_err(|e| sys("remove", &rpath, e))?;
                }
                if !lower_visible || self.res.lower_stat(&rpath)?.is_none() {
                    return Ok(());
                }
                rfs::mknodat(
                    pfd,
                    cname.as_c_str(),
                    FileType::CharacterDevice,
                    Mode::empty(),
                    0,
                )
                .map_err(|e| sys("mknod whiteout", &rpath, e))?;
                Ok(())
            }
        }
    }

    fn opaque(&mut self, dir: &[u8]) -> Result<()> {
        self.invalidate();
        let (d, lower_visible) = {
            let (res, mut hook) = self.hook();
            res.dir_seeing_lower(dir, Missing::Create, &mut hook)?
        }
        .ok_or_else(|| Error::not_found("opaque directory"))?;
        match self.format {
            WhiteoutFormat::Delete => {
                let path = d.path.clone();
                self.prune_not_created(d.fd, &path)
            }
            WhiteoutFormat::Overlay(x) => {
                // marked only where the lower view has a directory to hide:
                // a mark over nothing would show through a layer mounted
                // alone (a bind mount) and hides nothing anyway
                let hides = lower_visible
                    && (d.path.is_empty()
                        || matches!(
                            self.res.lower_stat(&d.path)?,
                            Some((_, FileType::Directory))
                        ));
                if !hides {
                    return Ok(());
                }
                let path = d.path.clone();
                self.make_opaque(d.fd, &path, x)
            }
        }
    }

    /// Mark an upper directory opaque. What its subtree held only to stand
    /// for or hide lower content (copied-up directories holding nothing of
    /// this layer, whiteouts, opaque marks) goes: nothing lower shows there
    /// any more, and overlayfs reads such a directory straight from the
    /// upper, where a whiteout would be listed yet fail to stat.
    fn make_opaque(&mut self, fd: OwnedFd, path: &[u8], x: OverlayXattr) -> Result<()> {
        self.invalidate();
        let dup = rustix::io::dup(&fd).map_err(|e| sys("dup", path, e))?;
        self.prune_not_created(dup, path)?;
        whiteout::strip_overlay_forms(fd.as_fd(), x)
            .map_err(|e| sys("remove overlay forms", path, e))?;
        x.set_opaque(XattrTarget::Fd(fd.as_fd()))
            .map_err(|e| sys("set opaque", path, e))
    }

    /// Remove, below `dir`, everything this layer did not create.
    fn prune_not_created(&self, dir: OwnedFd, path: &[u8]) -> Result<()> {
        let mut stack = vec![(dir, path.to_vec())];
        while let Some((fd, p)) = stack.pop() {
            for e in fsx::read_dir_sorted(fd.as_fd()).map_err(|e| sys("read dir", &p, e))? {
                let cp = join(&p, e.name.to_bytes());
                if !self.created.contains(&cp) && !self.created.holds(&cp) {
                    fsx::remove_all_at(fd.as_fd(), &e.name).map_err(|e| sys("remove", &cp, e))?;
                } else if e.file_type == FileType::Directory
                    || (e.file_type == FileType::Unknown
                        && fsx::stat_at(fd.as_fd(), &e.name)
                            .is_ok_and(|st| fsx::file_type(&st) == FileType::Directory))
                {
                    let sub =
                        fsx::open_dir_at(fd.as_fd(), &e.name).map_err(|e| sys("open", &cp, e))?;
                    stack.push((sub, cp));
                }
            }
        }
        Ok(())
    }

    fn finish_dirs(&mut self) -> Result<()> {
        let times = std::mem::take(&mut self.dir_times);
        for (path, at, mt) in times {
            let fd = match resolve::open_beneath(
                self.res.root,
                &path,
                OFlags::RDONLY | OFlags::DIRECTORY,
                self.res.use_openat2,
            ) {
                Ok(fd) => fd,
                // removed or replaced later in the layer
                Err(e)
                    if matches!(
                        Errno::from_io_error(&e),
                        Some(Errno::NOENT | Errno::NOTDIR | Errno::LOOP)
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(sys("open", &path, e)),
            };
            fsx::set_times_fd(fd.as_fd(), at, mt).map_err(|e| sys("set times", &path, e))?;
        }
        Ok(())
    }
}

fn unreachable_kind() -> Result<()> {
    Err(Error::invalid("entry", "internal: unexpected entry kind"))
}
