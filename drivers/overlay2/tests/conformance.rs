//! The conformance suite over the overlay2 driver, on a fresh tmpfs
//! (`cargo test -p strata-overlay2`; needs root, and under CI=true a skip
//! is a failure).

// Tests inspect views and scratch directories by path, as a user would.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;

use strata_conformance::{ScratchHarness, fixture::Backing, libtest_main};
use strata_core::{Driver, DriverOptions};

fn main() {
    let backing = match std::env::var("STRATA_TEST_BACKING") {
        Ok(b) => Backing::parse(&b).unwrap_or(Backing::Tmpfs),
        Err(_) => Backing::Tmpfs,
    };
    let h = Arc::new(ScratchHarness::new("overlay2", backing, None, |root| {
        Ok(Box::new(strata_overlay2::open(root, DriverOptions::default())?) as Box<dyn Driver>)
    }));
    let skip = if strata_core::fsx::is_root() {
        None
    } else {
        Some("overlay2 needs root (it mounts overlays); run the tests as root".to_string())
    };
    let code = libtest_main(h.clone(), skip);
    drop(h);
    std::process::exit(code);
}
