//! Strata core: the [`Driver`] trait every storage backend implements, the
//! layer-diff engine they share (apply and write OCI layer tars safely), change
//! detection between trees, in-root path resolution, and the bookkeeping
//! (metadata, locks, staging, mount counts) of a driver's root.

pub mod archive;
pub mod changes;
pub mod copy;
pub mod driver;
pub mod error;
pub mod fsx;
pub mod id;
pub mod mounts;
pub mod registry;
pub mod resolve;
pub mod state;
pub mod whiteout;

pub use driver::{
    ApplyStats, Capabilities, Change, ChangeKind, CreateOpts, DiffBase, DiffStats, Driver,
    DriverOptions, LayerInfo, Pairs,
};
pub use error::{Error, ErrorKind, Result};
pub use id::LayerId;
pub use registry::{DriverFactory, Registry};
