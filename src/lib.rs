//! Strata: container image layer storage.
//!
//! This facade wires the pieces together: the core ([`strata_core`]), the
//! drivers, and the registry that opens them by name. Runtimes link this
//! crate and call [`open`]; the `strata` and `driver-test` binaries are thin
//! layers over it.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

pub use strata_core as core;
pub use strata_core::{Driver, DriverOptions, Error, ErrorKind, LayerId, Registry, Result};

pub mod bench;
pub mod cli;

/// Every driver this build knows, in `auto`'s order of preference.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(Box::new(strata_btrfs::Factory));
    r.register(Box::new(strata_overlay2::Factory));
    r.register(Box::new(strata_vfs::Factory));
    r
}

/// Open `root` with the driver `name` (`auto` picks one).
pub fn open(name: &str, root: &Path, opts: DriverOptions) -> Result<Box<dyn Driver>> {
    registry().open(name, root, opts)
}

/// The default root: `/var/lib/strata` for root, `$XDG_DATA_HOME/strata`
/// (or `~/.local/share/strata`) otherwise.
pub fn default_root() -> PathBuf {
    if strata_core::fsx::is_root() {
        return PathBuf::from("/var/lib/strata");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("strata");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/strata")
}
