//! The driver registry: open a driver by name, or let `auto` pick one.
//!
//! The core knows no backend; binaries and runtimes register the drivers
//! they link (the `strata` facade registers all three). The driver used
//! first on a root is recorded in `ROOT/driver`; opening that root later
//! with another driver is refused ([`ErrorKind::DriverMismatch`]), never
//! silently mixed.
//!
//! [`ErrorKind::DriverMismatch`]: crate::ErrorKind::DriverMismatch

use std::path::{Path, PathBuf};

use crate::driver::{Driver, DriverOptions};
use crate::error::{Error, IoContext, Result};
use crate::fsx;

/// Knows how to check for and open one driver.
pub trait DriverFactory: Send + Sync {
    /// The driver's name (`vfs`, `overlay2`, `btrfs`).
    fn name(&self) -> &'static str;

    /// `Ok` when the driver works on `root` on this machine; otherwise an
    /// `Unsupported` error saying why.
    fn supported(&self, root: &Path) -> Result<()>;

    /// Open the driver on a root.
    fn open(&self, root: &Path, opts: DriverOptions) -> Result<Box<dyn Driver>>;

    /// Whether the driver needs root on every machine (it mounts or calls
    /// privileged ioctls); the suite skips it for other users, and fails
    /// under CI.
    fn needs_root(&self) -> bool {
        false
    }

    /// The file system a scratch root for this driver is best made on
    /// (`None`: any directory will do).
    fn scratch_fs(&self) -> Option<&'static str> {
        None
    }
}

/// A registry entry made of plain functions (what every driver crate
/// exports as `ENTRY`).
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// The driver's name.
    pub name: &'static str,
    /// `Ok` when the driver works on a root on this machine.
    pub supported: fn(&Path) -> Result<()>,
    /// Open the driver on a root.
    pub open: fn(&Path, DriverOptions) -> Result<Box<dyn Driver>>,
    /// See [`DriverFactory::needs_root`].
    pub needs_root: bool,
    /// See [`DriverFactory::scratch_fs`].
    pub scratch_fs: Option<&'static str>,
}

impl DriverFactory for Entry {
    fn name(&self) -> &'static str {
        self.name
    }

    fn supported(&self, root: &Path) -> Result<()> {
        (self.supported)(root)
    }

    fn open(&self, root: &Path, opts: DriverOptions) -> Result<Box<dyn Driver>> {
        (self.open)(root, opts)
    }

    fn needs_root(&self) -> bool {
        self.needs_root
    }

    fn scratch_fs(&self) -> Option<&'static str> {
        self.scratch_fs
    }
}

/// Registered drivers, in `auto`'s order of preference.
#[derive(Default)]
pub struct Registry {
    factories: Vec<Box<dyn DriverFactory>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

const RECORD: &str = "driver";

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Add a driver; earlier registrations are preferred by `auto`.
    pub fn register(&mut self, f: Box<dyn DriverFactory>) {
        self.factories.push(f);
    }

    /// The registered drivers' names, in `auto`'s order.
    pub fn names(&self) -> Vec<&'static str> {
        self.factories.iter().map(|f| f.name()).collect()
    }

    /// The driver called `name`; `NotFound` names the ones there are.
    pub fn factory(&self, name: &str) -> Result<&dyn DriverFactory> {
        self.factories
            .iter()
            .find(|f| f.name() == name)
            .map(|f| f.as_ref())
            .ok_or_else(|| {
                Error::invalid(
                    format!("driver {name:?}"),
                    format!("unknown driver (known: {}, auto)", self.names().join(", ")),
                )
            })
    }

    /// The driver recorded in `root`, if any.
    pub fn recorded(root: &Path) -> Result<Option<String>> {
        let p = root.join(RECORD);
        match std::fs::read_to_string(&p) {
            Ok(s) => Ok(Some(s.trim().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read driver record", &p, e)),
        }
    }

    /// Open `root` with driver `name` (`auto` picks one).
    pub fn open(&self, name: &str, root: &Path, opts: DriverOptions) -> Result<Box<dyn Driver>> {
        if name == "auto" {
            return self.auto(root, opts);
        }
        let f = self.factory(name)?;
        fsx::mkdir_p(root, 0o711).ctx("create root", root)?;
        let root = private_root(root)?;
        if let Some(rec) = Self::recorded(&root)? {
            if rec != name {
                return Err(Error::DriverMismatch {
                    root,
                    recorded: rec,
                    requested: name.to_string(),
                });
            }
            return f.open(&root, opts);
        }
        f.supported(&root)?;
        // record under a lock so that two first openers agree
        let lf = crate::state::lock(&root.join(".driver.lock"))?;
        match Self::recorded(&root)? {
            Some(rec) if rec != name => {
                return Err(Error::DriverMismatch {
                    root,
                    recorded: rec,
                    requested: name.to_string(),
                });
            }
            Some(_) => {}
            None => {
                let p = root.join(RECORD);
                fsx::write_atomic(&p, format!("{name}\n").as_bytes()).ctx("record driver", &p)?;
            }
        }
        drop(lf);
        f.open(&root, opts)
    }

    /// The recorded driver, or the first registered one that works here.
    pub fn auto(&self, root: &Path, opts: DriverOptions) -> Result<Box<dyn Driver>> {
        fsx::mkdir_p(root, 0o711).ctx("create root", root)?;
        let root = &private_root(root)?;
        if let Some(rec) = Self::recorded(root)? {
            return self.open(&rec, root, opts);
        }
        let mut why = Vec::new();
        for f in &self.factories {
            match f.supported(root) {
                Ok(()) => {
                    tracing::info!(driver = f.name(), root = %root.display(), "auto-selected driver");
                    return self.open(f.name(), root, opts);
                }
                Err(e) => why.push(format!("{}: {e}", f.name())),
            }
        }
        Err(Error::unsupported(
            format!("any driver on {}", root.display()),
            why.join("; "),
        ))
    }
}

/// The root, resolved; refused when another user could have prepared it
/// (a symlink of theirs, a directory of theirs, one they can write).
fn private_root(root: &Path) -> Result<PathBuf> {
    let st = rustix::fs::lstat(root).ctx("stat", root)?;
    let me = rustix::process::geteuid().as_raw();
    if fsx::file_type(&st) == rustix::fs::FileType::Symlink && st.st_uid != me {
        return Err(Error::NotPrivate {
            path: root.to_path_buf(),
            reason: format!("is a symlink owned by uid {}", st.st_uid),
        });
    }
    let root = canonical(root)?;
    Error::check_private(&root)?;
    Ok(root)
}

#[allow(clippy::disallowed_methods)] // the root itself, not layer content
fn canonical(p: &Path) -> Result<PathBuf> {
    p.canonicalize().ctx("resolve root", p)
}
