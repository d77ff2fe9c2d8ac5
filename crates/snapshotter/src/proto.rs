//! containerd's Snapshots service and Mount type, generated from the
//! vendored protos (`crates/snapshotter/proto/`) by `ci/regen-protos.sh`
//! and checked in, so that builds need no protoc.

#![allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]

/// `containerd.*` packages.
pub mod containerd {
    /// `containerd.types`.
    pub mod types {
        include!("proto/containerd.types.rs");
    }
    /// `containerd.services.*`.
    pub mod services {
        /// `containerd.services.snapshots`.
        pub mod snapshots {
            /// `containerd.services.snapshots.v1`.
            pub mod v1 {
                include!("proto/containerd.services.snapshots.v1.rs");
            }
        }
    }
}

pub use containerd::services::snapshots::v1 as snapshots;
pub use containerd::types;
