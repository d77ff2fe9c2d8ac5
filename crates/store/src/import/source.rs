//! Where an image's files come from: a directory (an OCI layout, or an
//! unpacked docker archive) or a tar (a docker archive, an OCI archive).
//!
//! Members of a directory are opened in-root without following any
//! symlink (openat2 `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, or an
//! `O_NOFOLLOW` walk) and must be regular files: a symlink to
//! `/etc/shadow`, a FIFO, a device is refused by name, and nothing of what
//! it points at is read or shown. Members of a tar are its regular-file
//! entries.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::OFlags;
use strata_core::archive::tar::{Kind, TarReader};
use strata_core::{fsx, resolve};

use crate::error::{Error, IoCtx, Result};

/// Where blobs of an image come from.
pub(super) trait Source {
    fn describe(&self) -> &Path;
    fn exists(&self, member: &str) -> bool;
    fn size(&self, member: &str) -> Option<u64>;
    fn open(&mut self, member: &str) -> Result<Box<dyn Read + Send + '_>>;

    /// A small member (a manifest, a config), at most `limit` bytes.
    fn read_all(&mut self, member: &str, limit: u64) -> Result<Vec<u8>> {
        let what = self.describe().to_path_buf();
        if self.size(member).is_some_and(|s| s > limit) {
            return Err(Error::bad_archive(
                &what,
                format!("{member} is larger than {limit} bytes"),
            ));
        }
        let mut r = self.open(member)?;
        let mut v = Vec::new();
        (&mut r)
            .take(limit + 1)
            .read_to_end(&mut v)
            .ctx("read", &what)?;
        if v.len() as u64 > limit {
            return Err(Error::bad_archive(
                &what,
                format!("{member} is larger than {limit} bytes"),
            ));
        }
        Ok(v)
    }
}

/// A member name as stored in manifests (`./x`, `/x` -> `x`).
pub(super) fn clean(member: &str) -> String {
    member
        .trim_start_matches("./")
        .trim_start_matches('/')
        .to_string()
}

/// A directory source.
pub(super) struct DirSource {
    root: PathBuf,
    fd: OwnedFd,
}

impl DirSource {
    pub(super) fn open(root: &Path) -> Result<DirSource> {
        let fd = fsx::open_dir_path(root).ctx("open", root)?;
        Ok(DirSource {
            root: root.to_path_buf(),
            fd,
        })
    }

    /// Open a member in-root, a regular file only.
    fn member(&self, member: &str) -> Result<File> {
        let bad = |why: &str| Error::bad_archive(&self.root, format!("member {member:?} {why}"));
        let m = clean(member);
        if m.is_empty() || m.split('/').any(|c| c == ".." || c == "." || c.is_empty()) {
            return Err(bad("leaves the directory or is not a plain path"));
        }
        // O_NONBLOCK: opening a FIFO must not wait for a writer
        let flags = OFlags::RDONLY | OFlags::NONBLOCK;
        let fd = resolve::open_beneath(
            self.fd.as_fd(),
            m.as_bytes(),
            flags,
            resolve::openat2_available(),
        )
        .map_err(|e| match rustix::io::Errno::from_io_error(&e) {
            Some(rustix::io::Errno::LOOP | rustix::io::Errno::XDEV) => {
                bad("is reached through a symlink or another mount; refused")
            }
            Some(rustix::io::Errno::NOENT) => bad("is missing"),
            _ => bad(&format!("cannot be opened: {e}")),
        })?;
        let st = rustix::fs::fstat(&fd).ctx("stat", &self.root)?;
        if fsx::file_type(&st) != rustix::fs::FileType::RegularFile {
            return Err(bad(
                "is not a regular file (a FIFO, a device or a directory); refused",
            ));
        }
        // back to blocking reads (no-op for regular files, but explicit)
        let fl = rustix::fs::fcntl_getfl(&fd).ctx("fcntl", &self.root)?;
        rustix::fs::fcntl_setfl(&fd, fl - OFlags::NONBLOCK).ctx("fcntl", &self.root)?;
        Ok(File::from(fd))
    }
}

impl Source for DirSource {
    fn describe(&self) -> &Path {
        &self.root
    }
    fn exists(&self, member: &str) -> bool {
        self.member(member).is_ok()
    }
    fn size(&self, member: &str) -> Option<u64> {
        self.member(member)
            .ok()
            .and_then(|f| f.metadata().ok())
            .map(|m| m.len())
    }
    fn open(&mut self, member: &str) -> Result<Box<dyn Read + Send + '_>> {
        let f = self.member(member)?;
        Ok(Box::new(BufReader::with_capacity(1 << 20, f)))
    }
}

/// A tar archive, indexed once (member -> offset, size), read by seeking.
pub(super) struct TarSource {
    path: PathBuf,
    file: File,
    index: HashMap<String, (u64, u64)>,
}

impl TarSource {
    /// Index `file` (the archive at `path`): its regular files.
    pub(super) fn open(path: &Path, file: File) -> Result<TarSource> {
        let reader = file.try_clone().ctx("open", path)?;
        let mut r = TarReader::new(BufReader::with_capacity(1 << 20, reader));
        let mut index = HashMap::new();
        loop {
            let h = r
                .next_entry()
                .map_err(|e| Error::bad_archive(path, e.to_string()))?;
            let Some(h) = h else { break };
            if h.kind == Kind::File {
                let name = clean(&String::from_utf8_lossy(&h.path));
                index.insert(name, (r.position(), r.data_remaining()));
            }
        }
        Ok(TarSource {
            path: path.to_path_buf(),
            file,
            index,
        })
    }
}

impl Source for TarSource {
    fn describe(&self) -> &Path {
        &self.path
    }
    fn exists(&self, member: &str) -> bool {
        self.index.contains_key(&clean(member))
    }
    fn size(&self, member: &str) -> Option<u64> {
        self.index.get(&clean(member)).map(|(_, s)| *s)
    }
    fn open(&mut self, member: &str) -> Result<Box<dyn Read + Send + '_>> {
        let (off, size) = *self.index.get(&clean(member)).ok_or_else(|| {
            Error::bad_archive(&self.path, format!("member {member:?} is missing"))
        })?;
        self.file
            .seek(SeekFrom::Start(off))
            .ctx("seek", &self.path)?;
        Ok(Box::new(BufReader::with_capacity(
            1 << 20,
            (&self.file).take(size),
        )))
    }
}
