//! `check` verifies the whole graph, and `--repair` never removes what
//! something live uses, converges in one pass and prints each action
//! (hardening issue, item 14). Damage is made behind the store's back: in
//! the driver's metadata files, the store's blobs and its database.

// Tests damage the root by path, as a crash or a careless admin would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{Env, loaded};

/// The driver's metadata files, by layer id.
fn metas(e: &Env) -> Vec<(PathBuf, serde_json::Value)> {
    let dir = e.root.join(e.driver).join(".meta");
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|f| f.file_name().to_string_lossy().ends_with(".json"))
        .map(|f| {
            let j = serde_json::from_slice(&std::fs::read(f.path()).unwrap()).unwrap();
            (f.path(), j)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn set_parent(path: &Path, mut meta: serde_json::Value, parent: &str) {
    meta["parent"] = parent.into();
    std::fs::write(path, serde_json::to_vec(&meta).unwrap()).unwrap();
}

/// (success, stdout)
fn check(e: &Env, args: &[&str]) -> (bool, String) {
    let mut a = vec!["check"];
    a.extend_from_slice(args);
    let o = e.run_in(&e.root, &a);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

fn db(e: &Env) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(e.root.join("store/store.db")).unwrap();
    c.pragma_update(None, "foreign_keys", "OFF").unwrap();
    c
}

#[test]
fn driver_parent_cycles_are_reported() {
    let e = loaded();
    let m = metas(&e);
    let (child_path, child) = m
        .iter()
        .find(|(_, j)| j["parent"].is_string())
        .unwrap()
        .clone();
    let parent_id = child["parent"].as_str().unwrap().to_string();
    let (ppath, pmeta) = m
        .iter()
        .find(|(_, j)| j["id"] == parent_id.as_str())
        .unwrap()
        .clone();
    // the parent now sits on its child: a cycle of two
    set_parent(&ppath, pmeta.clone(), child["id"].as_str().unwrap());
    let (ok, out) = check(&e, &[]);
    assert!(!ok, "a cycle passed as consistent:\n{out}");
    assert!(out.contains("parent cycle"), "{out}");
    // a layer that is its own parent
    set_parent(&ppath, pmeta, &parent_id);
    let (ok, out) = check(&e, &[]);
    assert!(!ok && out.contains("is its own parent"), "{out}");
    let _ = child_path;
}

#[test]
fn a_container_off_its_image_is_reported() {
    let e = loaded();
    let id = e
        .ok(&["container", "create", "c1", "strata/hello"])
        .trim()
        .to_string();
    let layer: String = db(&e)
        .query_row("SELECT layer FROM containers WHERE id = ?1", [&id], |r| {
            r.get(0)
        })
        .unwrap();
    let (path, meta) = metas(&e)
        .into_iter()
        .find(|(_, j)| j["id"] == layer.as_str())
        .unwrap();
    // its parent is gone from the driver
    set_parent(&path, meta, "gone");
    let (ok, out) = check(&e, &[]);
    assert!(!ok, "a container on a missing parent passed:\n{out}");
    assert!(
        out.contains("parent gone the driver does not have"),
        "{out}"
    );
    assert!(
        out.contains("container c1: its layer does not sit on its image's top layer"),
        "{out}"
    );
}

#[test]
fn repair_keeps_what_containers_use_and_says_what_it_does() {
    let e = loaded();
    e.ok(&["container", "create", "c1", "strata/hello"]);
    let img = e.ok(&["images", "-q", "--no-trunc"]).trim().to_string();
    let hex = img.strip_prefix("sha256:").unwrap();
    std::fs::remove_file(e.root.join("store/blobs/sha256").join(hex)).unwrap();
    let (ok, out) = check(&e, &[]);
    assert!(!ok && out.contains("has no config blob"), "{out}");
    let (_, dry) = check(&e, &["--repair", "--dry-run"]);
    assert!(
        !dry.contains("remove broken image"),
        "a used image would go:\n{dry}"
    );
    check(&e, &["--repair"]);
    assert_eq!(
        e.ok(&["images", "-q", "--no-trunc"]).trim(),
        img,
        "the image was removed"
    );
    assert!(e.ok(&["ps", "-a", "--format", "{{.Names}}"]).contains("c1"));
    // prune strips nothing under the container either
    e.ok(&["image", "prune", "-a", "-f"]);
    assert!(e.ok(&["container", "mount", "c1"]).trim().len() > 1);
    e.ok(&["container", "unmount", "c1"]);
}

#[test]
fn repair_converges_in_one_pass() {
    let e = loaded();
    // a store-level parent cycle among the image's layers
    let c = db(&e);
    let chains: Vec<String> = {
        let mut st = c
            .prepare("SELECT chain_id FROM image_layers ORDER BY pos")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert!(chains.len() >= 2, "the example has two layers");
    c.execute(
        "UPDATE layers SET parent = ?1 WHERE chain_id = ?2",
        [&chains[chains.len() - 1], &chains[0]],
    )
    .unwrap();
    drop(c);
    let (ok, out) = check(&e, &[]);
    assert!(!ok && out.contains("parent cycle"), "{out}");
    let (_, repaired) = check(&e, &["--repair"]);
    assert!(
        repaired.contains("repaired: "),
        "no action printed:\n{repaired}"
    );
    let (ok, out) = check(&e, &[]);
    assert!(ok, "a second pass was needed:\n{repaired}\n---\n{out}");
    // and no driver layer of the cycle is left behind
    assert!(
        out.contains("consistent (0 layers, 0 images, 0 containers)"),
        "{out}"
    );
    let left: Vec<_> = metas(&e).into_iter().map(|(p, _)| p).collect();
    assert!(left.is_empty(), "driver layers leaked: {left:?}");
}

/// A driver layer whose metadata is garbled is reported, and `--repair`
/// sets it aside with its content (never deletes it); the rest of the
/// root keeps working and checks clean after one pass.
#[test]
fn garbled_metadata_is_set_aside_not_deleted() {
    let e = loaded();
    let t = strata_conformance::layer::tar(&[strata_conformance::layer::file("kept", "data")]);
    let tarfile = e.scratch.path().join("l.tar");
    std::fs::write(&tarfile, &t).unwrap();
    e.ok(&["layer", "apply", "victim", tarfile.to_str().unwrap()]);
    let meta = e.root.join(e.driver).join(".meta/victim.json");
    std::fs::write(&meta, b"{ truncated").unwrap();
    let (ok, out) = check(&e, &[]);
    assert!(
        !ok && out.contains("driver layer victim: its metadata cannot be read"),
        "{out}"
    );
    let (_, dry) = check(&e, &["--repair", "--dry-run"]);
    assert!(dry.contains("would set driver layer victim aside"), "{dry}");
    assert!(meta.exists(), "a dry run moved the metadata");
    let (_, rep) = check(&e, &["--repair"]);
    assert!(
        rep.contains("repaired: set driver layer victim aside"),
        "{rep}"
    );
    let (ok, out) = check(&e, &[]);
    assert!(ok, "{out}");
    // the content is kept, under .quarantine
    let q = e.root.join(e.driver).join(".quarantine");
    let kept: Vec<_> = std::fs::read_dir(&q)
        .unwrap()
        .flatten()
        .map(|d| d.path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read(kept[0].join("layer/kept")).unwrap(), b"data");
    assert!(kept[0].join("meta.json").exists());
    // and the image still works
    e.ok(&["container", "create", "c1", "strata/hello"]);
}
