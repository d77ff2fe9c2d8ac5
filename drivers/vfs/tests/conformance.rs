//! The conformance suite over the vfs driver (`cargo test -p strata-vfs`).

// Tests inspect views and scratch directories by path, as a user would.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;

use strata_conformance::{ScratchHarness, fixture::Backing, libtest_main};
use strata_core::{Driver, DriverOptions};

fn main() {
    let h = Arc::new(ScratchHarness::new("vfs", Backing::TempDir, None, |root| {
        Ok(Box::new(strata_vfs::open(root, DriverOptions::default())?) as Box<dyn Driver>)
    }));
    let code = libtest_main(h.clone(), None);
    drop(h);
    std::process::exit(code);
}
