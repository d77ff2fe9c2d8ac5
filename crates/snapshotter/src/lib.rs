//! `strata-snapshotter`: containerd's Snapshots service
//! (`containerd.services.snapshots.v1`) over Strata's drivers, so that
//! containerd (`[proxy_plugins]`, type `snapshot`), `ctr`, nerdctl and
//! Kubernetes' CRI plugin keep their snapshots in overlay2, btrfs or vfs.
//!
//! Snapshots are records of the store (`strata_store::snapshots`) over
//! driver layers; mounts are returned as data (`Driver::mount_specs`) and
//! containerd mounts them itself; Commit is the driver's in-place commit.
//! This crate only serves: tokio and tonic stay here, every store call runs
//! on the blocking pool.
//!
//! Rooms: [`proto`] (generated from the vendored protos), [`service`] (the
//! calls), [`fetch`] (layers fetched for containerd, the remote-snapshotter
//! protocol), [`filter`] (containerd's filter language for List), [`server`]
//! (socket, signals), [`error`] (gRPC codes).

pub mod error;
pub mod fetch;
pub mod filter;
pub mod proto;
pub mod server;
pub mod service;

pub use error::{Error, ErrorKind, Result};
