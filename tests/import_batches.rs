//! Imports of many layers, which are applied one by one and recorded in
//! batches (one pass of driver fsyncs and one transaction per batch):
//! the content is the same as layer by layer, a failure in a later batch
//! leaves nothing, and processes importing the same image at once all
//! succeed and share its layers. overlay2 and btrfs as root (under
//! CI=true they must run).

// Tests inspect views and scratch directories by path, as a user would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;
use strata_conformance::layer::{dir, file, sha256, tar, whiteout};

/// Layers: more than two batches.
const LAYERS: usize = 70;

/// An OCI layout of `LAYERS` small layers: layer k adds `d/f{k}`; layer 50
/// removes `d/f3`; layer 60 replaces `d/f10`. With `bad_diff_at`, the
/// config names a wrong diffID for that layer.
fn many_layer_layout(out: &Path, bad_diff_at: Option<usize>) {
    let mut tars = Vec::new();
    let mut diff_ids = Vec::new();
    for k in 0..LAYERS {
        let mut entries = vec![dir("d"), file(format!("d/f{k}"), format!("layer {k}"))];
        if k == 50 {
            entries.push(whiteout("d/f3"));
        }
        if k == 60 {
            entries.push(file("d/f10", "replaced by 60"));
        }
        let t = tar(&entries);
        diff_ids.push(if bad_diff_at == Some(k) {
            sha256(b"not this layer").to_string()
        } else {
            sha256(&t).to_string()
        });
        tars.push(t);
    }
    write_oci_layout(out, &tars, &diff_ids, "test/many:1");
}

/// The hex of layer `k`'s chain ID, from the layout's config.
fn chain_hex(layout: &Path, k: usize) -> String {
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blob = |d: &serde_json::Value| -> serde_json::Value {
        let hex = d["digest"].as_str().unwrap().trim_start_matches("sha256:");
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap())
            .unwrap()
    };
    let config = blob(&blob(&idx["manifests"][0])["config"]);
    let diffs = config["rootfs"]["diff_ids"].as_array().unwrap();
    let mut chain = diffs[0].as_str().unwrap().to_string();
    for d in &diffs[1..=k] {
        chain = sha256(format!("{chain} {}", d.as_str().unwrap()).as_bytes()).to_string();
    }
    chain.trim_start_matches("sha256:").to_string()
}

/// The layer directories in the driver's home (not its own dot and
/// bookkeeping entries), straight from the disk.
fn driver_layers(e: &Env, driver: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(e.root.join(driver))
        .map(|r| {
            r.flatten()
                .map(|d| d.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.') && n.len() == 64)
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn layer_count(e: &Env, root: &Path) -> usize {
    let ls = e.ok_in(root, &["layer", "ls", "--format", "json"]);
    serde_json::from_str::<Vec<serde_json::Value>>(&ls)
        .unwrap()
        .len()
}

/// The merged view of the image: every layer's file, the whiteout and
/// the replacement applied.
fn check_view(e: &Env, root: &Path, name: &str) {
    e.ok_in(root, &["container", "create", name, "test/many:1"]);
    let view = e
        .ok_in(root, &["container", "mount", name])
        .trim()
        .to_string();
    let d = Path::new(&view).join("d");
    for k in 0..LAYERS {
        let got = std::fs::read_to_string(d.join(format!("f{k}")));
        match k {
            3 => assert!(got.is_err(), "d/f3 was whited out by layer 50: {got:?}"),
            10 => assert_eq!(got.unwrap(), "replaced by 60"),
            _ => assert_eq!(got.unwrap(), format!("layer {k}")),
        }
    }
    e.ok_in(root, &["container", "umount", name]);
    e.ok_in(root, &["container", "rm", name]);
}

fn many_layers(driver: &'static str) {
    if unavailable(driver).is_some() {
        return;
    }
    let e = Env::new(driver);
    let good = e.another_root().join("many");
    many_layer_layout(&good, None);
    let bad = e.another_root().join("bad");
    many_layer_layout(&bad, Some(LAYERS - 5));

    // a wrong diffID in the third batch: nothing of the image stays
    let err = e.fails(&["image", "load", "-i", bad.to_str().unwrap()]);
    assert!(err.contains("diffID"), "{err}");
    assert_eq!(layer_count(&e, &e.root), 0);
    assert!(e.ok(&["check"]).contains("consistent"));
    assert_no_leftovers(&e, driver);

    // recording the second batch fails (a directory stands where layer
    // 40's tar-split goes): the batch's layers are undone child first,
    // and nothing of the image stays, before any later command recovers
    let block = e
        .root
        .join("store/tarsplit")
        .join(format!("{}.tsz", chain_hex(&good, 40)));
    std::fs::create_dir_all(block.join("x")).unwrap();
    let err = e.fails(&["image", "load", "-i", good.to_str().unwrap()]);
    assert!(
        err.contains(block.to_str().unwrap()),
        "the error names the path: {err}"
    );
    assert!(
        !err.contains("half-made"),
        "a layer was left half-made: {err}"
    );
    assert_eq!(driver_layers(&e, driver), Vec::<String>::new());
    std::fs::remove_dir_all(&block).unwrap();
    assert_eq!(layer_count(&e, &e.root), 0);
    assert!(e.ok(&["check"]).contains("consistent"));
    assert_no_leftovers(&e, driver);

    // the whole image, then the same again (every layer already there)
    let out = e.ok(&["image", "load", "-i", good.to_str().unwrap()]);
    assert!(out.contains("Loaded image"), "{out}");
    assert_eq!(layer_count(&e, &e.root), LAYERS);
    check_view(&e, &e.root, "c1");
    e.ok(&["image", "load", "-i", good.to_str().unwrap()]);
    assert_eq!(layer_count(&e, &e.root), LAYERS);
    assert!(e.ok(&["check"]).contains("consistent"));
    assert_no_leftovers(&e, driver);

    // four processes at once into a new root: one set of layers, all of
    // them loaded, and a consistent store
    let root = e.another_root();
    let kids: Vec<_> = (0..4)
        .map(|_| {
            e.cmd_in(
                &root,
                &["image", "load", "-q", "-i", good.to_str().unwrap()],
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for k in kids {
        let o = k.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "a concurrent load failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert_eq!(layer_count(&e, &root), LAYERS);
    assert!(e.ok_in(&root, &["check"]).contains("consistent"));
    check_view(&e, &root, "c2");
}

#[test]
fn many_layers_vfs() {
    many_layers("vfs");
}

#[test]
fn many_layers_overlay2() {
    many_layers("overlay2");
}

#[test]
fn many_layers_btrfs() {
    many_layers("btrfs");
}
