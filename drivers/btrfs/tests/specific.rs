//! btrfs behaviour beyond the shared suite: nested subvolumes made inside a
//! container layer are removed with it; snapshots are O(1). Needs root and
//! mkfs.btrfs (skips with a reason otherwise; under CI=true that fails).

// Tests inspect views and scratch directories by path, as a user would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

use strata_conformance::fixture::{Backing, Scratch, privileged_test_can_run};
use strata_conformance::layer::{file, tar};
use strata_core::{Driver, DriverOptions, LayerId};

fn ready() -> bool {
    privileged_test_can_run("the btrfs tests", &["mkfs.btrfs", "btrfs"])
}

fn id(s: &str) -> LayerId {
    LayerId::new(s).unwrap()
}

#[test]
fn nested_subvolumes_are_removed_with_their_layer() {
    if !ready() {
        return;
    }
    let s = Scratch::new(
        Backing::Loop {
            fstype: "btrfs".into(),
            size_mb: 512,
        },
        None,
    )
    .unwrap();
    let root = s.fresh_dir("root").unwrap();
    let d = strata_btrfs::open(&root, DriverOptions::default()).unwrap();
    d.apply_diff(&id("base"), None, &mut &tar(&[file("f", "1")])[..])
        .unwrap();
    d.create_rw(&id("c"), Some(&id("base")), &Default::default())
        .unwrap();
    let v = d.mount(&id("c")).unwrap();
    // a container makes subvolumes (nested two deep) inside its layer
    let st = std::process::Command::new("btrfs")
        .args(["-q", "subvolume", "create"])
        .arg(v.join("sub"))
        .status()
        .unwrap();
    assert!(st.success());
    let st = std::process::Command::new("btrfs")
        .args(["-q", "subvolume", "create"])
        .arg(v.join("sub/deeper"))
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(v.join("sub/deeper/data"), "x").unwrap();
    d.unmount(&id("c")).unwrap();
    d.remove(&id("c")).unwrap();
    assert!(!d.exists(&id("c")));
    assert!(!root.join("btrfs/subvolumes/c").exists());
    // the read-only base goes too
    d.remove(&id("base")).unwrap();
    let left = std::process::Command::new("btrfs")
        .args(["subvolume", "list", "-o"])
        .arg(&root)
        .output()
        .unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(!left.contains("subvolumes/"), "subvolumes left: {left}");
}
