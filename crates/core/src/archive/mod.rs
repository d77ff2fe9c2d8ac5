//! The layer-diff engine: read (apply) and write (diff) OCI layer tars.

pub mod apply;
pub mod compress;
pub mod tarfmt;
pub mod write;

pub use apply::{ApplyOptions, apply};
pub use compress::{Compression, HashingReader, HashingWriter, sha256_digest};
pub use write::{DiffItem, DiffSource, write_diff};
