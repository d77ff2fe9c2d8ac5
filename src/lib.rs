//! Strata: container image layer storage.
//!
//! What a runtime links: the core ([`strata_core`]: the driver trait and
//! its types), the three drivers behind a registry that opens them by name
//! ([`open`], [`registry`]), the default root, and the store of layers,
//! images and containers ([`store`]). The `strata` and `driver-test`
//! binaries live in `crates/cli`; nothing of them (clap, the conformance
//! suite, progress bars) is in this crate's dependencies.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

pub use strata_core as core;
pub use strata_core::{Driver, DriverOptions, Error, ErrorKind, LayerId, Registry, Result};
pub use strata_store as store;
pub use strata_store::Store;

/// Every driver this build knows, in `auto`'s order of preference.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(Box::new(strata_btrfs::ENTRY));
    r.register(Box::new(strata_overlay2::ENTRY));
    r.register(Box::new(strata_vfs::ENTRY));
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
