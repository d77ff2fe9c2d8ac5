//! The conformance suite over the btrfs driver, on a loop-mounted btrfs
//! image made for the run (`cargo test -p strata-btrfs`; needs root and
//! mkfs.btrfs, and under CI=true a skip is a failure).

// Tests inspect views and scratch directories by path, as a user would.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;

use strata_conformance::{ScratchHarness, fixture::Backing, fixture::have_program, libtest_main};
use strata_core::{Driver, DriverOptions};

fn main() {
    let backing = Backing::Loop {
        fstype: "btrfs".into(),
        size_mb: 16384,
    };
    let h = Arc::new(ScratchHarness::new("btrfs", backing, None, |root| {
        Ok(Box::new(strata_btrfs::open(root, DriverOptions::default())?) as Box<dyn Driver>)
    }));
    let skip = if !strata_core::fsx::is_root() {
        Some("btrfs needs root (loop mounts, snapshots); run the tests as root".to_string())
    } else if !have_program("mkfs.btrfs") {
        Some(
            "mkfs.btrfs is not installed (apt-get install btrfs-progs; ./ci/setup.sh does it)"
                .to_string(),
        )
    } else {
        None
    };
    let code = libtest_main(h.clone(), skip);
    drop(h);
    std::process::exit(code);
}
