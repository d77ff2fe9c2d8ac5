//! Differential fuzzing of the whiteout forms: a random base layer and a
//! random layer on it (files, directories, symlinks, hardlinks, whiteouts,
//! opaque markers over a small name space, so that they collide often) are
//! applied twice:
//!
//! - by the overlay2 driver (overlay whiteouts, mounted by real overlayfs);
//! - by the core engine in delete format into one plain directory (the
//!   reference, what vfs and btrfs do).
//!
//! Both must accept or refuse the same layers; when they accept, the
//! mounted view lists exactly the reference tree (every listed name can be
//! stat'ed), the driver's diff of the top layer, applied on the base in
//! delete format, gives that tree again, and overlay2's native `changes`
//! agree with the vfs driver's naive walk on every added and deleted path.
//! Hardlink identity is compared up to what a union file system can keep
//! (OCI image-spec, layer.md, "union filesystem implementations may have
//! limited or no support for hardlinks ... when a hardlink is created to a
//! file in a lower filesystem"; overlayfs without `index=on`, which Docker
//! and containerd do not use, copies up one name of a lower inode): names
//! linked in the view must be linked in the reference, and names the top
//! layer holds must be linked exactly as in the reference, but a name that
//! only a lower layer holds may be split off its copied-up peers.
//! `C` lines may differ: native reports an entry the layer rewrote
//! identically, which a naive walk cannot see; the naive walk reports a
//! file whose link count changed (a hardlinked peer was deleted), which
//! native, reading only the uppers, does not.
//!
//! Needs root (overlayfs on tmpfs); `PROPTEST_CASES=N` for a longer run.

// Tests inspect views and scratch directories by path, as a user would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::os::fd::AsFd;
use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use strata::core::archive::{self, ApplyOptions};
use strata::core::{DiffBase, fsx};
use strata::{Driver, DriverOptions};
use strata_conformance::fixture::{Backing, Scratch};
use strata_conformance::layer::{self, E};
use strata_conformance::listing::{ListOpts, listing};
use strata_conformance::{id, same_listing};

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..4).prop_map(|c| c.join("/"))
}

fn entry() -> impl Strategy<Value = E> {
    let target = prop_oneof![
        path(),
        prop::sample::select(vec!["/a", "../b", "/", ".", "a/../c"]).prop_map(String::from),
    ];
    (
        path(),
        0u8..9,
        target,
        prop::sample::select(vec![0o644u32, 0o755, 0o600]),
    )
        .prop_map(|(p, kind, t, mode)| match kind {
            0 | 1 => layer::file(&p, p.as_bytes()).mode(mode),
            2 | 3 => layer::dir(&p).mode(mode | 0o700),
            4 => layer::symlink(&p, &t),
            5 => layer::hardlink(&p, &t),
            6 | 7 => layer::whiteout(&p),
            _ => {
                let d = p.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                layer::opaque(d)
            }
        })
}

fn view_opts() -> ListOpts {
    ListOpts {
        no_dir_mtime: true,
        no_root: true,
        ..Default::default()
    }
}

fn apply_plain(dir: &Path, data: &[u8]) -> strata::Result<()> {
    apply_spilling(dir, data, None)
}

/// `apply_plain` whose bookkeeping spills to disk after `spill_after`
/// keys (and bytes of directory times).
fn apply_spilling(dir: &Path, data: &[u8], spill_after: Option<usize>) -> strata::Result<()> {
    let fd = fsx::open_dir_path(dir).unwrap();
    let opts = ApplyOptions {
        spill_after,
        ..ApplyOptions::default()
    };
    archive::apply(fd.as_fd(), dir, &mut &data[..], opts).map(|_| ())
}

fn fail(what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

// Long on purpose: one scenario, step after step, each step's state
// feeding the next; cut into functions it would no longer read as the
// session it checks.
fn one_case(
    d: &dyn Driver,
    naive: &dyn Driver,
    scratch: &Scratch,
    base: &[E],
    top: &[E],
) -> Result<(), TestCaseError> {
    let (b, t) = (id("fuzz-base"), id("fuzz-top"));
    let reference = scratch.fresh_dir("ref").unwrap();
    let base_tar = layer::tar(base);
    let top_tar = layer::tar(top);

    let over = d.apply_diff(&b, None, &mut &base_tar[..]);
    let plain = apply_plain(&reference, &base_tar);
    prop_assert_eq!(
        over.is_ok(),
        plain.is_ok(),
        "base: overlay2 {:?} vs delete format {:?}",
        over.as_ref().err().map(ToString::to_string),
        plain.as_ref().err().map(ToString::to_string)
    );
    if over.is_err() {
        return Ok(());
    }
    let over = d.apply_diff(&t, Some(&b), &mut &top_tar[..]);
    let plain = apply_plain(&reference, &top_tar);
    prop_assert_eq!(
        over.is_ok(),
        plain.is_ok(),
        "top: overlay2 {:?} vs delete format {:?}",
        over.as_ref().err().map(ToString::to_string),
        plain.as_ref().err().map(ToString::to_string)
    );
    if over.is_err() {
        prop_assert!(!d.exists(&t), "a refused layer was left");
        return Ok(());
    }
    let want = listing(&reference, view_opts()).map_err(fail)?;

    // the same with the bookkeeping spilled to disk after every key
    let spilled = scratch.fresh_dir("spilled").unwrap();
    apply_spilling(&spilled, &base_tar, Some(1)).map_err(fail)?;
    apply_spilling(&spilled, &top_tar, Some(1)).map_err(fail)?;
    let got = listing(&spilled, view_opts()).map_err(fail)?;
    prop_assert_eq!(&got, &want, "spilled bookkeeping changed the result");

    // the mounted view: every name listed can be stat'ed, and it is the
    // reference tree
    let mnt = d.mount(&t).map_err(fail)?;
    let got = listing(&mnt, view_opts());
    d.unmount(&t).map_err(fail)?;
    let got = got.map_err(|e| fail(format!("listing the overlay view: {e:#}")))?;
    let upper = upper_names(&d.root().join("overlay2").join(t.as_str()).join("diff"))?;
    same_up_to_lower_links("overlay view", &got, &want, &upper)?;

    // the driver's diff, applied on the base in delete format
    let mut diff = Vec::new();
    d.diff(&t, DiffBase::Parent, &mut diff).map_err(fail)?;
    let again = scratch.fresh_dir("again").unwrap();
    apply_plain(&again, &base_tar).map_err(fail)?;
    apply_plain(&again, &diff).map_err(|e| fail(format!("applying the diff: {e:#}")))?;
    let round = listing(&again, view_opts()).map_err(fail)?;
    same_up_to_lower_links("base + diff", &round, &want, &upper)?;

    // changes: native (overlay2) against naive (vfs)
    naive
        .apply_diff(&b, None, &mut &base_tar[..])
        .map_err(fail)?;
    naive
        .apply_diff(&t, Some(&b), &mut &top_tar[..])
        .map_err(fail)?;
    let lines = |d: &dyn Driver| -> Result<Vec<String>, TestCaseError> {
        Ok(d.changes(&t, DiffBase::Parent)
            .map_err(fail)?
            .iter()
            .map(ToString::to_string)
            .collect())
    };
    let (native, walked) = (lines(d)?, lines(naive)?);
    let extra: Vec<&String> = native.iter().filter(|l| !walked.contains(l)).collect();
    let missing: Vec<&String> = walked.iter().filter(|l| !native.contains(l)).collect();
    prop_assert!(
        extra.iter().chain(&missing).all(|l| l.starts_with("C ")),
        "changes differ: native has {:?} more, lacks {:?}",
        extra,
        missing
    );
    Ok(())
}

#[test]
fn overlay_whiteouts_match_delete_format() {
    if !fsx::is_root() {
        assert!(
            !strata_conformance::under_ci(),
            "CI=true: the overlay whiteout fuzz must run (needs root)"
        );
        eprintln!("skipping the overlay whiteout fuzz: needs root for overlayfs");
        return;
    }
    let scratch = Scratch::new(Backing::Tmpfs, None).unwrap();
    let root = scratch.fresh_dir("root").unwrap();
    let d = strata::open("overlay2", &root, DriverOptions::default()).unwrap();
    let vroot = scratch.fresh_dir("vfs").unwrap();
    let naive = strata::open("vfs", &vroot, DriverOptions::default()).unwrap();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        prop::collection::vec(entry(), 0..12),
        prop::collection::vec(entry(), 1..12),
    );
    let r = runner.run(&strategy, |(base, top)| {
        let r = one_case(d.as_ref(), naive.as_ref(), &scratch, &base, &top);
        for drv in [&d, &naive] {
            for l in ["fuzz-top", "fuzz-base"] {
                if drv.exists(&id(l)) {
                    drv.remove(&id(l)).map_err(fail)?;
                }
            }
        }
        for p in ["ref", "again", "spilled"] {
            for e in std::fs::read_dir(scratch.path()).unwrap() {
                let e = e.unwrap();
                if e.file_name().to_string_lossy().starts_with(p) {
                    std::fs::remove_dir_all(e.path()).unwrap();
                }
            }
        }
        r
    });
    d.cleanup().unwrap();
    match r {
        Ok(()) => {}
        Err(proptest::test_runner::TestError::Fail(why, (base, top))) => {
            panic!(
                "{why}\nminimal failing input:\n  base: {}\n  top:  {}",
                show(&base),
                show(&top)
            )
        }
        Err(e) => panic!("{e}"),
    }
}

/// The non-directory names under an overlay upper dir, as `/a/b`.
fn upper_names(upper: &Path) -> Result<HashSet<String>, TestCaseError> {
    fn walk(dir: &Path, rel: &str, out: &mut HashSet<String>) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = format!("{rel}/{}", e.file_name().to_string_lossy());
            if e.file_type()?.is_dir() {
                walk(&e.path(), &name, out)?;
            } else {
                out.insert(name);
            }
        }
        Ok(())
    }
    let mut out = HashSet::new();
    walk(upper, "", &mut out).map_err(|e| fail(format!("walking {}: {e}", upper.display())))?;
    Ok(out)
}

/// Listing lines without their ` link=FIRST` part, and each linked name's
/// group (the first name of its group).
fn split_links(v: &[String]) -> (Vec<String>, HashMap<String, String>) {
    let mut lines = Vec::new();
    let mut group = HashMap::new();
    for l in v {
        let path = l.split(' ').next().unwrap_or_default().to_string();
        match l.rsplit_once(" link=") {
            Some((head, first)) => {
                group.insert(path, first.to_string());
                group.insert(first.to_string(), first.to_string());
                lines.push(head.to_string());
            }
            None => lines.push(l.clone()),
        }
    }
    (lines, group)
}

/// `got` lists the same tree as `want`, with hardlink groups compared as
/// the module doc says (`upper`: the names the top layer holds).
fn same_up_to_lower_links(
    what: &str,
    got: &[String],
    want: &[String],
    upper: &HashSet<String>,
) -> Result<(), TestCaseError> {
    let (g, gl) = split_links(got);
    let (w, wl) = split_links(want);
    same_listing(what, &g, &w).map_err(|e| fail(format!("{e:#}")))?;
    for (p, first) in &gl {
        prop_assert!(
            wl.contains_key(p) && wl.get(p) == wl.get(first),
            "{what}: {p} is linked to {first}, which it is not in the reference"
        );
    }
    let mut held: HashMap<&String, Vec<&String>> = HashMap::new();
    for (p, first) in &wl {
        if upper.contains(p) {
            held.entry(first).or_default().push(p);
        }
    }
    for names in held.values() {
        let groups: HashSet<Option<&String>> = names.iter().map(|p| gl.get(*p)).collect();
        prop_assert!(
            names.len() < 2 || (groups.len() == 1 && !groups.contains(&None)),
            "{what}: {names:?} are held by the top layer and linked in the reference, \
             but not all linked in the view"
        );
    }
    Ok(())
}

/// `path=file(..)`-style one-line description of a layer.
fn show(entries: &[E]) -> String {
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    entries
        .iter()
        .map(|e| {
            let what = match &e.node {
                layer::Node::File(_) => format!("file {:o}", e.mode),
                layer::Node::Dir => format!("dir {:o}", e.mode),
                layer::Node::Symlink(t) => format!("-> {}", s(t)),
                layer::Node::Hardlink(t) => format!("link to {}", s(t)),
                other => format!("{other:?}"),
            };
            format!("[{} {what}]", s(&e.path))
        })
        .collect::<Vec<_>>()
        .join(" ")
}
