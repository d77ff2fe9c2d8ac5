//! Pull and push against real registries, started by the tests on
//! loopback with private config and storage: Debian's docker-registry 2.8,
//! plain and behind token authentication (a token server of the test's
//! that answers GET and the OAuth2 POST flow), and an HTTP proxy of the
//! test's that corrupts or cuts a blob. skopeo and podman check interop.

// Tests handle scratch files and programs by path, as a user would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

mod common;
mod registry_world;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::net::{Mode, Proxy};
use strata_conformance::fixture::have_program;
use strata_conformance::images::{busybox_layer, layer_of, noise, write_index_layout};
use strata_conformance::layer::file;
use strata_conformance::world::Registry;

use registry_world::*;

#[test]
fn pull_push_round_trip_and_interop() {
    if !can_run("the registry round trip") {
        return;
    }
    let w = World::new();
    let reg = Registry::start(&w.dir("registry"));
    let (a, a_digest) = push_layout(&w, &reg, "strata/a", &[busybox_layer(), small("a")]);
    let (b, _) = push_layout(&w, &reg, "strata/b", &[busybox_layer(), small("b")]);
    let root = w.dir("root1");
    let out = w.ok(&root, &["pull", &a]);
    assert_eq!(count(&out, "Pull complete"), 2, "{out}");
    assert!(out.contains(&format!("Digest: {a_digest}")), "{out}");
    assert!(
        out.contains(&format!("Status: Downloaded newer image for {a}")),
        "{out}"
    );
    w.ok(&root, &["container", "create", "c1", &a]);
    assert_eq!(w.ok(&root, &["container", "diff", "c1"]), "");
    let out = w.ok(&root, &["pull", &b]);
    assert_eq!(count(&out, "Already exists"), 1, "the shared base: {out}");
    assert_eq!(count(&out, "Pull complete"), 1, "{out}");
    let out = w.ok(&root, &["pull", &a]);
    assert!(
        out.contains(&format!("Status: Image is up to date for {a}")),
        "{out}"
    );
    // push under another name: blobs are mounted, digests unchanged
    let copy = reg.reference("copy/a:2");
    w.ok(&root, &["image", "tag", &a, &copy]);
    let out = w.ok(&root, &["push", &copy]);
    assert_eq!(count(&out, "Mounted from strata/a"), 2, "{out}");
    assert!(out.contains(&format!("2: digest: {a_digest}")), "{out}");
    let id = w.inspect(&root, &a, "Id");
    let root2 = w.dir("root2");
    w.ok(&root2, &["pull", &copy]);
    assert_eq!(
        w.inspect(&root2, &copy, "Id"),
        id,
        "the same image ID after push and pull"
    );
    let digests = w.inspect(&root2, &copy, "RepoDigests");
    assert!(digests.contains(&a_digest), "{digests}");
    let sk = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
        .arg(format!("docker://{copy}"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&sk.stdout).trim(), a_digest);
    // an image made here (a commit: a new layer, a new manifest) goes out
    // and comes back through skopeo and podman with its digest
    w.ok(&root, &["container", "mount", "c1"]);
    let mnt = w.ok(&root, &["container", "mount", "c1"]);
    std::fs::write(Path::new(mnt.trim()).join("app/new"), "made here\n").unwrap();
    w.ok(&root, &["container", "unmount", "c1"]);
    w.ok(&root, &["container", "unmount", "c1"]);
    let mine = reg.reference("strata/mine:1");
    w.ok(&root, &["container", "commit", "c1", &mine]);
    let out = w.ok(&root, &["push", &mine]);
    assert!(
        out.contains("Layer already exists") || out.contains("Mounted from"),
        "{out}"
    );
    assert!(out.contains(": Pushed"), "the new layer is uploaded: {out}");
    let pushed = out
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    let sk = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
        .arg(format!("docker://{mine}"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&sk.stdout).trim(),
        pushed,
        "skopeo sees the pushed digest"
    );
    let layout = w.dir("skopeo-out");
    let policy = layout.join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let st = Command::new("skopeo")
        .arg("--policy")
        .arg(&policy)
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{mine}"))
        .arg(format!("oci:{}:x", layout.join("out").display()))
        .status()
        .unwrap();
    assert!(st.success(), "skopeo copies the image strata pushed");
    if have_program("podman") && strata::core::fsx::is_root() {
        let p = w.dir("podman");
        let podman = |args: &[&str]| {
            Command::new("podman")
                .arg("--root")
                .arg(p.join("root"))
                .arg("--runroot")
                .arg(p.join("run"))
                .args(["--storage-driver", "vfs"])
                .args(args)
                .output()
                .unwrap()
        };
        let o = podman(&["pull", "--tls-verify=false", &mine]);
        assert!(
            o.status.success(),
            "podman pull: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = podman(&["image", "inspect", "--format", "{{.Digest}}", &mine]);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            pushed,
            "podman sees the pushed digest"
        );
        let _ = podman(&["rmi", "-a", "-f"]);
    }
    w.check_clean(&root);
    w.check_clean(&root2);
}

#[test]
fn pull_by_digest_and_by_platform() {
    if !can_run("pulls of a multi-platform image") {
        return;
    }
    let w = World::new();
    let reg = Registry::start(&w.dir("registry"));
    let layout = w.dir("layout-multi");
    let (idx, mds) = write_index_layout(
        &layout,
        "1",
        &[
            ("linux", "amd64", vec![small("amd64")]),
            ("linux", "arm64", vec![small("arm64")]),
        ],
    );
    let r = reg.reference("strata/multi:1");
    let policy = layout.join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let st = Command::new("skopeo")
        .arg("--policy")
        .arg(&policy)
        .args(["copy", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("docker://{r}"))
        .status()
        .unwrap();
    assert!(st.success());
    let root = w.dir("root1");
    let out = w.ok(&root, &["pull", &r]);
    assert!(
        out.contains(&format!("Digest: {idx}")),
        "the index digest is shown: {out}"
    );
    assert_eq!(w.inspect(&root, &r, "Architecture"), "amd64");
    let root2 = w.dir("root2");
    w.ok(&root2, &["pull", "--platform", "linux/arm64", &r]);
    assert_eq!(w.inspect(&root2, &r, "Architecture"), "arm64");
    let by_digest = reg.reference(&format!("strata/multi@{}", mds[1]));
    let root3 = w.dir("root3");
    let out = w.ok(&root3, &["pull", &by_digest]);
    assert!(out.contains(&format!("Digest: {}", mds[1])), "{out}");
    let ls = w.ok(&root3, &["images", "--digests"]);
    assert!(
        ls.contains(&mds[1].to_string()) && ls.contains("<none>"),
        "{ls}"
    );
    let e = w.fails(&root3, &["pull", "--platform", "linux/s390x", &r]);
    assert!(
        e.contains("linux/s390x") && e.contains("linux/arm64"),
        "{e}"
    );
}

#[test]
fn a_corrupted_blob_is_refused() {
    if !can_run("corrupted blobs") {
        return;
    }
    let w = World::new();
    let reg = Registry::start(&w.dir("registry"));
    let l2 = small("corrupt-me");
    let blob = strata_core::Digest::of(&strata_conformance::layer::gzip(&l2.tar));
    let (_, _) = push_layout(&w, &reg, "strata/c", &[busybox_layer(), l2]);
    let proxy = Proxy::start(reg.port, blob.as_str(), Mode::Corrupt);
    let r = format!("127.0.0.1:{}/strata/c:1", proxy.port);
    let root = w.dir("root1");
    let e = w.fails(&root, &["pull", &r]);
    assert!(
        e.contains("digest mismatch") && e.contains(blob.as_str()),
        "{e}"
    );
    assert!(
        w.ok(&root, &["images", "-q"]).trim().is_empty(),
        "no image is recorded"
    );
    let layers = w.ok(&root, &["layer", "ls", "--format", "json"]);
    let n: Vec<serde_json::Value> = serde_json::from_str(&layers).unwrap();
    assert_eq!(n.len(), 1, "only the good base layer is kept: {layers}");
    w.check_clean(&root);
}

#[test]
fn a_cut_connection_resumes_with_a_range() {
    if !can_run("resumed downloads") {
        return;
    }
    let w = World::new();
    let reg = Registry::start(&w.dir("registry"));
    // gzipped: skopeo would compress a plain tar, changing its digest
    let big = layer_of(&[file("big", noise(12 << 20, 3))], true);
    let gz = strata_conformance::layer::gzip(&big.tar);
    let blob = strata_core::Digest::of(&gz);
    let size = gz.len() as u64;
    push_layout(&w, &reg, "strata/big", &[busybox_layer(), big]);
    let proxy = Proxy::start(reg.port, blob.as_str(), Mode::CutOnce(3 << 20));
    let r = format!("127.0.0.1:{}/strata/big:1", proxy.port);
    let root = w.dir("root1");
    let out = w.ok(&root, &["pull", &r]);
    assert!(out.contains("Retrying in 1 second"), "{out}");
    let sent = proxy.sent.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        proxy.ranged.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "one resumed request"
    );
    assert!(
        sent >= size && sent < size + (size / 10),
        "bytes sent in all: {sent} for a blob of {size}"
    );
    println!(
        "cut at 3 MiB: {sent} bytes sent for a {size}-byte blob ({:.3}x)",
        sent as f64 / size as f64
    );
    w.check_clean(&root);
}

#[test]
fn a_killed_pull_leaves_a_clean_root() {
    if !can_run("killed pulls") {
        return;
    }
    let w = World::new();
    let reg = Registry::start(&w.dir("registry"));
    let big = layer_of(&[file("big", noise(24 << 20, 5))], true);
    let blob = strata_core::Digest::of(&strata_conformance::layer::gzip(&big.tar));
    push_layout(&w, &reg, "strata/slow", &[busybox_layer(), big]);
    let proxy = Proxy::start(reg.port, blob.as_str(), Mode::Slow(64 << 10));
    let r = format!("127.0.0.1:{}/strata/slow:1", proxy.port);
    let root = w.dir("root1");
    let mut child = w
        .cmd(&root, &["pull", &r])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    while proxy.sent.load(std::sync::atomic::Ordering::Relaxed) < 4 << 20 {
        assert!(
            Instant::now() < end && child.try_wait().unwrap().is_none(),
            "the pull did not get going"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    w.check_clean(&root);
    let r2 = reg.reference("strata/slow:1");
    let out = w.ok(&root, &["pull", &r2]);
    assert!(
        out.contains("Already exists") && out.contains("Pull complete"),
        "{out}"
    );
    w.check_clean(&root);
}
