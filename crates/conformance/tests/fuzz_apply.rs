//! Property-based fuzzing of the apply path (runs on stable): random tar
//! streams (hostile names, symlinks out, hardlinks, whiteouts, opaque
//! markers, devices, truncation, flipped bytes) are applied, and for every
//! one of them:
//!
//! - nothing panics, nothing hangs;
//! - nothing outside the layer root changes (a canary beside it);
//! - when the apply succeeds, diff -> apply gives the same tree.
//!
//! `PROPTEST_CASES=100000 cargo test -p strata-conformance --test
//! fuzz_apply --release` for a long run (CI runs the default, 256).

// Tests inspect views and scratch directories by path, as a user would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

use std::os::fd::AsFd;
use std::path::Path;

use proptest::prelude::*;
use strata_conformance::layer::{self, E};
use strata_conformance::listing::{ListOpts, listing};
use strata_core::archive::{self, ApplyOptions};
use strata_core::{changes, fsx};

fn component() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "a",
        "b",
        "c",
        "..",
        ".",
        "",
        ".wh.a",
        ".wh.b",
        ".wh..wh..opq",
        ".wh..",
        "x y",
        "\u{e9}",
    ])
}

fn path() -> impl Strategy<Value = String> {
    (prop::bool::ANY, prop::collection::vec(component(), 1..4)).prop_map(|(abs, c)| {
        let p = c.join("/");
        if abs { format!("/{p}") } else { p }
    })
}

fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        path(),
        prop::sample::select(vec![
            "/",
            "..",
            "../../../../..",
            "/etc/passwd",
            "/proc/self/root",
            "a",
            "../canary"
        ])
        .prop_map(String::from),
    ]
}

fn entry() -> impl Strategy<Value = E> {
    (
        path(),
        0u8..8,
        target(),
        prop::collection::vec(any::<u8>(), 0..64),
        0u32..0o10000,
    )
        .prop_map(|(p, kind, t, data, mode)| {
            let e = match kind {
                0 | 1 => layer::file(&p, data),
                2 => layer::dir(&p),
                3 => layer::symlink(&p, &t),
                4 => layer::hardlink(&p, &t),
                5 => layer::fifo(&p),
                6 => layer::chardev(&p, 1, 3),
                _ => layer::sparse(&p, 1 << 16, vec![(4096, data)]),
            };
            if kind == 2 { e } else { e.mode(mode & 0o7777) }
        })
}

/// What to do to the tar bytes after writing them.
#[derive(Debug, Clone)]
enum Damage {
    None,
    Truncate(usize),
    Flip(usize, u8),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        6 => Just(Damage::None),
        1 => any::<usize>().prop_map(Damage::Truncate),
        1 => (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Damage::Flip(i, x)),
    ]
}

fn snapshot(dir: &Path) -> Vec<String> {
    listing(
        dir,
        ListOpts {
            no_mtime: true,
            ..Default::default()
        },
    )
    .unwrap()
}

fn apply_into(root: &Path, data: &[u8]) -> strata_core::Result<strata_core::ApplyStats> {
    let fd = fsx::open_dir_path(root).unwrap();
    archive::apply(fd.as_fd(), root, &mut &data[..], ApplyOptions::default())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn apply_is_contained_and_round_trips(entries in prop::collection::vec(entry(), 1..24), dmg in damage()) {
        let sandbox = tempfile::tempdir().unwrap();
        let root = sandbox.path().join("root");
        let canary = sandbox.path().join("canary");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(&canary).unwrap();
        std::fs::write(canary.join("keep"), "keep").unwrap();
        let before = snapshot(sandbox.path());
        let before_canary = snapshot(&canary);

        let mut data = layer::tar(&entries);
        match dmg {
            Damage::None => {}
            Damage::Truncate(i) => data.truncate(i % (data.len() + 1)),
            Damage::Flip(i, x) => {
                let n = data.len();
                data[i % n] ^= x;
            }
        }
        let r = apply_into(&root, &data);

        // nothing outside the root changed
        prop_assert_eq!(snapshot(&canary), before_canary);
        let outside: Vec<String> = snapshot(sandbox.path())
            .into_iter()
            .filter(|l| !l.starts_with("/root/") && !l.starts_with("/root ") && !l.starts_with("/ "))
            .collect();
        let before_outside: Vec<String> = before
            .into_iter()
            .filter(|l| !l.starts_with("/root/") && !l.starts_with("/root ") && !l.starts_with("/ "))
            .collect();
        prop_assert_eq!(outside, before_outside);

        if r.is_ok() {
            // diff against nothing, apply elsewhere: the same tree
            let mut out = Vec::new();
            let fd = fsx::open_dir_path(&root).unwrap();
            archive::write_diff(&mut out, |emit| changes::walk(fd.as_fd(), None, emit)).unwrap();
            let again = sandbox.path().join("again");
            std::fs::create_dir(&again).unwrap();
            apply_into(&again, &out).unwrap();
            prop_assert_eq!(snapshot(&again), snapshot(&root));
        }
    }
}
