//! The layer-diff engine: read (apply) and write (diff) OCI layer tars.
//!
//! Rooms: [`tar`] (the tar format, read and written by hand), [`compress`]
//! (gzip / zstd by magic), [`apply`](mod@apply) (a tar into a directory, safely, with
//! `# Security` notes), [`write`](mod@write) (a change walk into a tar).

pub mod apply;
pub mod compress;
pub mod tar;
pub mod write;

pub use apply::{ApplyOptions, ApplyStats, apply};
pub use compress::Compression;
pub use write::write_diff;
