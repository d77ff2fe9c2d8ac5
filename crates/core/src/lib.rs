//! Strata core: the [`Driver`] trait every storage backend implements, the
//! one generic driver skeleton over a [`Backend`] ([`layered`]), the
//! layer-diff engine the backends share (apply and write OCI layer tars
//! safely), change detection between trees, in-root path resolution,
//! content digests, and the bookkeeping (metadata, locks, staging, mount
//! counts) of a driver's root.
//!
//! Rooms: [`driver`] (the trait and its types), [`layered`] (the skeleton),
//! [`state`] (bookkeeping and crash recovery), [`archive`] (tar read /
//! write, apply, diff), [`walk`] and [`changes`] (change walks), [`resolve`]
//! (in-root paths), [`copy`] (tree copies), [`fsx`] (fd-relative file
//! system calls), [`mounts`] (the mount table), [`whiteout`] (whiteout
//! forms), [`digest`], [`id`], [`error`], [`registry`].

#![deny(missing_docs)]

pub mod archive;
pub mod changes;
pub mod copy;
pub mod digest;
pub mod driver;
pub mod error;
pub mod fsx;
pub mod id;
pub mod layered;
pub mod mounts;
pub mod registry;
pub mod resolve;
pub mod state;
pub mod walk;
pub mod whiteout;

pub use digest::{Digest, Hashing};
pub use driver::{
    ApplyStats, Capabilities, Change, ChangeKind, CreateOpts, DiffBase, DiffMethod, DiffStats,
    Driver, DriverOptions, LayerInfo, MountSpec, Pairs, Usage, WalkPurpose,
};
pub use error::{Error, ErrorKind, Result};
pub use id::LayerId;
pub use layered::{Backend, Layered};
pub use registry::{DriverFactory, Registry};
