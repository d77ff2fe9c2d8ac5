//! overlay2 behaviour beyond the shared suite: falling back to the naive
//! diff for layers with foreign overlay features, refusing overlay on
//! overlay, and the legacy mount rung. Needs root (skips with a reason
//! otherwise; under CI=true that is a failure).

// Tests inspect views and scratch directories by path, as a user would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

use strata_conformance::fixture::{Backing, Scratch, privileged_test_can_run};
use strata_conformance::layer::{dir, file, tar};
use strata_core::{DiffBase, Driver, DriverOptions, ErrorKind, LayerId};

fn root_or_skip() -> bool {
    privileged_test_can_run("the overlay2 tests", &[])
}

fn id(s: &str) -> LayerId {
    LayerId::new(s).unwrap()
}

#[test]
fn foreign_redirect_xattr_falls_back_to_naive_diff() {
    if !root_or_skip() {
        return;
    }
    let s = Scratch::new(Backing::Tmpfs, None).unwrap();
    let root = s.fresh_dir("root").unwrap();
    let d = strata_overlay2::open(&root, DriverOptions::default()).unwrap();
    d.apply_diff(
        &id("base"),
        None,
        &mut &tar(&[dir("a"), file("a/f", "1")])[..],
    )
    .unwrap();
    d.apply_diff(
        &id("top"),
        Some(&id("base")),
        &mut &tar(&[dir("b"), file("b/g", "2")])[..],
    )
    .unwrap();
    let mut out = Vec::new();
    assert_eq!(
        d.diff(&id("base"), DiffBase::Empty, &mut out)
            .unwrap()
            .method,
        strata_core::DiffMethod::Native
    );
    // a foreign tool with redirect_dir=on left a redirect in the upper
    let upper = root.join("overlay2/top/diff/b");
    let fd = strata_core::fsx::open_dir_path(&upper).unwrap();
    strata_core::fsx::xattr_set(
        strata_core::fsx::XattrTarget::Fd(std::os::fd::AsFd::as_fd(&fd)),
        b"trusted.overlay.redirect",
        b"/a",
    )
    .unwrap();
    let mut out2 = Vec::new();
    let st = d.diff(&id("top"), DiffBase::Parent, &mut out2).unwrap();
    assert_eq!(st.method, strata_core::DiffMethod::Naive);
    let status = d.status();
    let native = status
        .iter()
        .find(|(k, _)| k == "Native Overlay Diff")
        .unwrap();
    assert!(native.1.contains("fell back"), "{native:?}");
    let ch: Vec<String> = d
        .changes(&id("top"), DiffBase::Parent)
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert!(ch.contains(&"A /b/g".to_string()), "{ch:?}");
    d.cleanup().unwrap();
}

#[test]
fn overlay_on_overlay_is_refused_with_a_clear_error() {
    if !root_or_skip() {
        return;
    }
    let s = Scratch::new(Backing::Tmpfs, None).unwrap();
    let root = s.fresh_dir("root").unwrap();
    let d = strata_overlay2::open(&root, DriverOptions::default()).unwrap();
    d.apply_diff(&id("base"), None, &mut &tar(&[file("f", "1")])[..])
        .unwrap();
    d.create_rw(&id("rw"), Some(&id("base")), &Default::default())
        .unwrap();
    let view = d.mount(&id("rw")).unwrap();
    let inner = view.join("nested-root");
    std::fs::create_dir(&inner).unwrap();
    let e = strata_overlay2::supported(&inner).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("overlay"), "{e}");
    d.unmount(&id("rw")).unwrap();
    d.cleanup().unwrap();
}

#[test]
fn legacy_rung_mounts_deep_stacks_with_short_links() {
    if !root_or_skip() {
        return;
    }
    let s = Scratch::new(Backing::Tmpfs, None).unwrap();
    let root = s.fresh_dir("root").unwrap();
    let mut o = DriverOptions::default();
    o.0.insert("overlay2.mount_api".into(), "legacy".into());
    let d = strata_overlay2::open(&root, o).unwrap();
    let caps = d.capabilities();
    let max = caps.max_depth.unwrap();
    assert!(max >= 100, "legacy rung reaches only {max} layers");
    let mut parent: Option<LayerId> = None;
    for i in 0..100 {
        let l = id(&format!("l{i}"));
        d.apply_diff(
            &l,
            parent.as_ref(),
            &mut &tar(&[file(format!("f{i}"), "x")])[..],
        )
        .unwrap();
        parent = Some(l);
    }
    let top = parent.unwrap();
    let v = d.mount(&top).unwrap();
    assert!(v.join("f0").exists() && v.join("f99").exists());
    let st = d.status();
    assert!(
        st.iter()
            .any(|(k, v)| k == "Mount API" && v.contains("mount(2)")),
        "{st:?}"
    );
    d.unmount(&top).unwrap();
    d.cleanup().unwrap();
}
