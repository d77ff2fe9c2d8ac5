//! Where a command's binary output goes (`-o FILE`, or standard output).
//!
//! As Docker fixed it (docker/cli#1514), the output path decides:
//! - a new file, or an existing regular file: written to a temporary file
//!   beside it, flushed to disk and renamed over it (readers never see a
//!   half-written archive; the old file's mode is kept);
//! - a character or block device, a FIFO, a socket, or a symlink: written
//!   through, in place (`-o /dev/null` stays a device, a symlink stays a
//!   symlink, and what it points at gets the bytes);
//! - a directory: an error.
//!
//! `-o -`, or no `-o`, means standard output, which must not be a
//! terminal (a tar on a terminal is noise).

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// An open output.
#[derive(Debug)]
pub enum Output {
    Stdout(BufWriter<std::io::Stdout>),
    /// Written to `tmp`, renamed to `path` when done.
    Atomic {
        w: BufWriter<File>,
        tmp: tempfile::TempPath,
        path: PathBuf,
    },
    /// Written in place.
    Through {
        w: BufWriter<File>,
        path: PathBuf,
    },
}

impl Output {
    /// Open the output for `path` (`None` or `-`: standard output).
    pub fn open(path: Option<&Path>) -> Result<Output> {
        let Some(p) = path.filter(|p| p.as_os_str() != "-") else {
            if std::io::stdout().is_terminal() {
                bail!(
                    "refusing to write an archive to a terminal; use -o FILE or redirect the output"
                );
            }
            return Ok(Output::Stdout(BufWriter::with_capacity(
                1 << 20,
                std::io::stdout(),
            )));
        };
        match std::fs::symlink_metadata(p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::atomic(p, None),
            Err(e) => Err(e).with_context(|| format!("output {}", p.display())),
            Ok(m) if m.is_dir() => bail!("output {} is a directory; give a file name", p.display()),
            Ok(m) if m.file_type().is_file() => Self::atomic(p, Some(m.permissions().mode())),
            Ok(m) => {
                let t = m.file_type();
                let kind = if t.is_symlink() {
                    "a symlink"
                } else if t.is_fifo() {
                    "a FIFO"
                } else if t.is_char_device() || t.is_block_device() {
                    "a device"
                } else {
                    "not a regular file"
                };
                tracing::debug!(path = %p.display(), "output is {kind}: writing through it");
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(t.is_symlink())
                    .open(p)
                    .with_context(|| format!("opening output {} ({kind})", p.display()))?;
                Ok(Output::Through {
                    w: BufWriter::with_capacity(1 << 20, f),
                    path: p.to_path_buf(),
                })
            }
        }
    }

    fn atomic(p: &Path, mode: Option<u32>) -> Result<Output> {
        let dir = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = tempfile::Builder::new()
            .prefix(".strata-out.")
            .tempfile_in(dir)
            .with_context(|| format!("creating a file in {}", dir.display()))?;
        let (f, tmp) = tmp.into_parts();
        let mode = mode.unwrap_or(0o666 & !strata_core::fsx::current_umask());
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("creating {}", p.display()))?;
        Ok(Output::Atomic {
            w: BufWriter::with_capacity(1 << 20, f),
            tmp,
            path: p.to_path_buf(),
        })
    }

    /// Flush, and for a new or regular file: fsync and rename into place.
    pub fn finish(self) -> Result<()> {
        match self {
            Output::Stdout(mut w) => w.flush().context("writing standard output"),
            Output::Through { mut w, path } => w
                .flush()
                .with_context(|| format!("writing {}", path.display())),
            Output::Atomic { w, tmp, path } => {
                let f = w
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .with_context(|| format!("writing {}", path.display()))?;
                f.sync_all()
                    .with_context(|| format!("writing {}", path.display()))?;
                tmp.persist(&path)
                    .with_context(|| format!("writing {}", path.display()))?;
                let dir = path
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                strata_core::fsx::fsync_dir(dir)
                    .with_context(|| format!("writing {}", path.display()))
            }
        }
    }
}

impl Write for Output {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Output::Stdout(w) => w.write(b),
            Output::Atomic { w, .. } | Output::Through { w, .. } => w.write(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Output::Stdout(w) => w.flush(),
            Output::Atomic { w, .. } | Output::Through { w, .. } => w.flush(),
        }
    }
}
