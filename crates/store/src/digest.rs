//! Content digests and chain IDs: the core's [`Digest`].

pub use strata_core::Digest;
