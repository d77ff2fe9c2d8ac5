//! containerd's own snapshotter test suite (`snapshots/testsuite` of
//! containerd 1.6, through its gRPC proxy client) against
//! strata-snapshotter, on each backend and on a file system it works on:
//! vfs on a temp dir, overlay2 on a tmpfs, btrfs on a loop-mounted btrfs.
//! Every test upstream does not skip must pass.

// Scratch file systems and logs are handled by path, as a user would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use strata_conformance::fixture::{Backing, Scratch};

/// The suite's tests in containerd 1.6 (`SnapshotterSuite`), and the one
/// upstream skips everywhere (`Rename`).
const TESTS: usize = 21;
const UPSTREAM_SKIPS: &[&str] = &["Rename"];

fn suite(driver: &str, backing: Backing) {
    let what = format!("containerd's snapshotter suite on {driver}");
    if !common::can_run(&what, &["go", "mkfs.btrfs"]) {
        return;
    }
    let bin = common::go_build("suite", true);
    let scratch = Scratch::new(backing, None).unwrap();
    let tmp = scratch.fresh_dir("suite").unwrap();
    let out = Command::new(&bin)
        .args(["-test.v", "-test.timeout", "15m", "-test.parallel", "8"])
        .env("STRATA_SNAPSHOTTER", common::snapshotter_bin())
        .env("STRATA_DRIVER", driver)
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let count = |verdict: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| {
                l.trim()
                    .strip_prefix(&format!("--- {verdict}: TestSnapshotterSuite/"))
            })
            .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
            .collect()
    };
    let (pass, fail, skip) = (count("PASS"), count("FAIL"), count("SKIP"));
    println!(
        "{what}: {} passed, {} failed, {} skipped by upstream ({})",
        pass.len(),
        fail.len(),
        skip.len(),
        skip.join(", ")
    );
    assert!(
        out.status.success() && fail.is_empty(),
        "{what} failed: {fail:?}\n{text}"
    );
    assert_eq!(
        skip, UPSTREAM_SKIPS,
        "only upstream's own skips are allowed\n{text}"
    );
    assert_eq!(pass.len() + skip.len(), TESTS, "not every test ran\n{text}");
    let left = strata_core::mounts::mounts_under(&scratch.path()).unwrap();
    let left: Vec<_> = left
        .iter()
        .filter(|m| m.mount_point != scratch.path())
        .collect();
    assert!(left.is_empty(), "mounts left behind: {left:?}");
}

#[test]
fn suite_on_vfs() {
    suite("vfs", Backing::TempDir);
}

#[test]
fn suite_on_overlay2() {
    suite("overlay2", Backing::Tmpfs);
}

#[test]
fn suite_on_btrfs() {
    suite(
        "btrfs",
        Backing::Loop {
            fstype: "btrfs".into(),
            size_mb: 8192,
        },
    );
}
