//! The Strata layer store: content-addressed layers, images and containers
//! over any driver (Docker's model).
//!
//! A layer is known by its chain ID (`sha256(parent_chain + " " +
//! diff_id)`, the diffID alone for a base layer), stored once however many
//! images use it; the driver holds it under a random cache id. Images
//! (config + manifest) point to chains; containers are read-write layers on
//! an image's top layer. References are computed from the records (images
//! and containers), never kept as counters that could drift.
//!
//! Layout under `ROOT/store`:
//!
//! ```text
//! store.db              the records: one SQLite database (see `db`)
//! tarsplit/HEX.tsz      tar skeletons, by chain ID (see `tarsplit`)
//! blobs/sha256/HEX      configs, manifests, compressed layer blobs
//! tmp/                  files being written
//! gc.lock               shared by operations that create layers, exclusive
//!                       for garbage collection and crash recovery
//! ```
//!
//! Rooms: `db` (the database, its schema), `records` (rows and queries),
//! `migrate` (roots of earlier versions), `layers` (register, remove,
//! prune), `images` (find, tag, remove), `containers` (create, remove,
//! commit), `usage` (`df`), `recovery` (crash recovery, `check`), `blobs`,
//! [`import`] and [`export`] (archives), [`tarsplit`], [`reference`](mod@reference)
//! (names, tags, times), [`error`].

// The store keeps its own records, blobs and lock files by path; it never
// opens layer contents by path (those go through the driver).
#![allow(clippy::disallowed_methods)]
#![deny(missing_docs)]

mod blobs;
mod check;
pub mod config;
mod containers;
mod db;
pub mod distribution;
pub mod error;
pub mod export;
mod images;
pub mod import;
mod layers;
mod migrate;
mod records;
mod recovery;
pub mod reference;
mod refgrammar;
mod reserve;
pub mod snapshots;
mod staged;
pub mod tarsplit;
mod usage;

use std::fs::File;
use std::path::{Path, PathBuf};

use strata_core::fsx::{self, LockMode};
use strata_core::{Driver, LayerId};

pub use check::CheckOpts;
pub use config::{ImageMeta, image_meta};
pub use containers::CommitOpts;
pub use db::SCHEMA_VERSION;
pub use error::{Error, ErrorKind, Result};
pub use layers::{Keep, LayerIn};
pub use records::{BlobRef, ContainerRecord, ImageRecord, LayerRecord};
pub use recovery::CheckReport;
pub use strata_core::Digest;
pub use usage::{ContainerUsage, DiskUsage, ImageUsage};

use error::IoCtx;

/// A held lock file; released on drop.
#[derive(Debug)]
pub struct LockGuard {
    _f: File,
}

/// The store of one root.
pub struct Store {
    root: PathBuf,
    dir: PathBuf,
    driver: Box<dyn Driver>,
    db: db::Db,
    /// Mounts of snapshots, for containerd's `Mounts`.
    snap_mounts: snapshots::MountsCache,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.root)
            .field("driver", &self.driver.name())
            .finish()
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    strata_core::state::now()
}

/// A random 64-hex id (container ids, cache ids).
pub fn random_id() -> String {
    fsx::random_hex(32)
}

impl Store {
    /// Open the store at `root` with an opened driver; migrates a root of
    /// an earlier version, and cleans what a crash left when no other
    /// process is at work.
    pub fn open(root: &Path, driver: Box<dyn Driver>) -> Result<Store> {
        let dir = root.join("store");
        fsx::mkdir_p(&dir, 0o700).ctx("create", &dir)?;
        strata_core::Error::check_private(root)?;
        strata_core::Error::check_private(&dir)?;
        for d in ["tarsplit", "blobs/sha256", "tmp"] {
            let p = dir.join(d);
            fsx::mkdir_p(&p, 0o700).ctx("create", &p)?;
        }
        let db = db::Db::open(&dir.join("store.db"))?;
        let s = Store {
            root: root.to_path_buf(),
            dir,
            driver,
            db,
            snap_mounts: snapshots::MountsCache::default(),
        };
        migrate::from_json(&s)?;
        if let Some(_gc) = s.try_gc_lock()? {
            let r = s.recover()?;
            if !r.repaired.is_empty() {
                tracing::info!(repaired = ?r.repaired, "store: recovered from an interrupted operation");
            }
        }
        Ok(s)
    }

    /// The root the store is on.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The driver the store keeps its layers with.
    pub fn driver(&self) -> &dyn Driver {
        self.driver.as_ref()
    }

    fn lock_file(&self, mode: LockMode) -> Result<Option<LockGuard>> {
        let p = self.dir.join("gc.lock");
        Ok(fsx::lock_file(&p, mode)
            .ctx("lock", &p)?
            .map(|f| LockGuard { _f: f }))
    }

    fn held(&self, mode: LockMode) -> Result<LockGuard> {
        self.lock_file(mode)?
            .ok_or_else(|| Error::Internal("a waiting lock was not taken".into()))
    }

    /// Shared lock held by operations that create driver layers before
    /// their records exist (import, commit, container create): recovery
    /// and garbage collection wait for them.
    pub fn work_lock(&self) -> Result<LockGuard> {
        self.held(LockMode::Shared)
    }

    /// Exclusive lock for garbage collection (waits for work to finish).
    pub fn gc_lock(&self) -> Result<LockGuard> {
        self.held(LockMode::Exclusive)
    }

    fn try_gc_lock(&self) -> Result<Option<LockGuard>> {
        self.lock_file(LockMode::TryExclusive)
    }

    fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    fn tarsplit_path(&self, chain: &Digest) -> PathBuf {
        self.dir
            .join("tarsplit")
            .join(format!("{}.tsz", chain.hex()))
    }

    /// The driver id of a record's layer.
    fn cache_id(s: &str) -> Result<LayerId> {
        Ok(LayerId::new(s.to_string())?)
    }

    /// Mount a driver layer's view for reading, run `f`, unmount.
    pub fn with_layer_view<T>(
        &self,
        cache_id: &str,
        f: impl FnOnce(&Path) -> Result<T>,
    ) -> Result<T> {
        let id = Self::cache_id(cache_id)?;
        let p = self.driver.mount(&id)?;
        let r = f(&p);
        let u = self.driver.unmount(&id);
        let v = r?;
        u?;
        Ok(v)
    }
}
