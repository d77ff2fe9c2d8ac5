//! Regression tests of the hardening issue, at the command line: each
//! hostile input or damaged state named there, and what must hold.

// Tests write hostile files and layouts by path, as an attacker would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Env;
use strata_conformance::layer::{self, dir, file, symlink};

fn driver() -> &'static str {
    if strata::core::fsx::is_root() {
        "overlay2"
    } else {
        "vfs"
    }
}

/// Run strata under /usr/bin/time with `input` on stdin; (success,
/// stderr, peak RSS in KiB).
fn measured(
    e: &Env,
    args: &[&str],
    input: impl FnOnce(&mut dyn Write) + Send,
) -> (bool, String, u64) {
    let rss = e.scratch.path().join(format!("rss-{}", std::process::id()));
    let mut c = Command::new("/usr/bin/time");
    c.arg("-o")
        .arg(&rss)
        .args(["-f", "%M"])
        .arg(env!("CARGO_BIN_EXE_strata"));
    c.arg("--root")
        .arg(&e.root)
        .args(["--driver", e.driver])
        .args(args);
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::scope(|s| {
        s.spawn(move || input(&mut stdin));
        let o = child.wait_with_output().unwrap();
        // "Command exited with non-zero status N" may come first
        let kib = std::fs::read_to_string(&rss)
            .unwrap_or_default()
            .split_whitespace()
            .last()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
            kib,
        )
    })
}

/// A tar of `n` empty files in directories of 1000 (their entries too
/// when `dirs`), written as it goes.
fn many_entries(w: &mut dyn Write, n: usize, dirs: bool, tag: &str) {
    many_of(w, n, dirs, tag, tar::EntryType::Regular)
}

/// `many_entries` whose entries are of type `leaf` (files or directories).
fn many_of(w: &mut dyn Write, n: usize, dirs: bool, tag: &str, leaf: tar::EntryType) {
    let mut b = tar::Builder::new(w);
    for i in 0..n {
        let mut h = tar::Header::new_ustar();
        if dirs && i % 1000 == 0 {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            let _ = b.append_data(&mut h, format!("d{:05}/", i / 1000), std::io::empty());
            h = tar::Header::new_ustar();
        }
        h.set_entry_type(leaf);
        h.set_mode(if leaf.is_dir() { 0o755 } else { 0o644 });
        h.set_size(0);
        if b.append_data(
            &mut h,
            format!("d{:05}/{tag}-with-a-longish-name-{i:07}", i / 1000),
            std::io::empty(),
        )
        .is_err()
        {
            return;
        }
    }
    let _ = b.finish();
}

#[test]
fn apply_memory_stays_flat() {
    if !std::path::Path::new("/usr/bin/time").exists() {
        assert!(
            !strata_conformance::under_ci(),
            "CI=true: /usr/bin/time is needed"
        );
        return;
    }
    let e = Env::new(driver());
    // 40 symlinks, each through many copies of the one before, and a file
    // written through the last: the resolved path would grow without bound
    let mut entries = vec![symlink("s1", "d")];
    for k in 2..=40 {
        let target = vec![format!("s{}", k - 1); 100].join("/");
        entries.push(symlink(format!("s{k}"), target));
    }
    entries.push(file("s40/f", "x"));
    let bomb = layer::tar(&entries);
    let (ok, err, kib) = measured(&e, &["layer", "apply", "bomb", "-"], |w| {
        let _ = w.write_all(&bomb);
    });
    println!(
        "symlink-expansion layer ({} bytes): peak RSS {} KiB",
        bomb.len(),
        kib
    );
    assert!(
        !ok && err.contains("s40/f"),
        "refused, naming the entry: {err}"
    );
    assert!(kib < 64 << 10, "peak RSS {kib} KiB");
    let n: usize = std::env::var("STRATA_MANY_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let (ok, err, kib) = measured(&e, &["layer", "apply", "many", "-"], |w| {
        many_entries(w, n, true, "file")
    });
    println!("{n}-entry layer (new directories): peak RSS {kib} KiB");
    assert!(ok, "{err}");
    assert!(kib < 64 << 10, "peak RSS {kib} KiB for {n} entries");
    // the worst case: every entry into a directory of the layer below
    let args = ["layer", "apply", "more", "--parent", "many", "-"];
    let (ok, err, kib) = measured(&e, &args, |w| many_entries(w, n, false, "more"));
    println!("{n}-entry layer (into existing directories): peak RSS {kib} KiB");
    assert!(ok, "{err}");
    assert!(
        kib < 64 << 10,
        "peak RSS {kib} KiB for {n} entries into existing directories"
    );
    // directories into directories of the layer below: each is a new
    // directory to remember and a directory whose times are set at the end
    let args = ["layer", "apply", "dirs", "--parent", "more", "-"];
    let (ok, err, kib) = measured(&e, &args, |w| {
        many_of(w, n, false, "dir", tar::EntryType::Directory)
    });
    println!("{n}-directory layer (into existing directories): peak RSS {kib} KiB");
    assert!(ok, "{err}");
    assert!(
        kib < 64 << 10,
        "peak RSS {kib} KiB for {n} directories into existing directories"
    );
}

#[test]
fn endless_input_ends() {
    let e = Env::new("vfs");
    let start = Instant::now();
    let mut child = e
        .cmd_in(&e.root, &["layer", "apply", "z", "/dev/zero"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(!st.success());
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "apply of /dev/zero still runs"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("follow the end-of-archive marker"), "{err}");
    assert!(
        e.ok(&["layer", "ls", "--format", "json"]).trim() == "[]",
        "no layer is left"
    );
}

#[test]
fn zstd_with_skippable_frames_applies() {
    let e = Env::new("vfs");
    let tar = layer::tar(&[dir("etc"), file("etc/a", "zstd\n")]);
    let mut data = Vec::new();
    // a skippable frame (magic 0x184D2A5A), then the real frame
    data.extend_from_slice(&0x184D_2A5Au32.to_le_bytes());
    data.extend_from_slice(&5u32.to_le_bytes());
    data.extend_from_slice(b"meta!");
    data.extend_from_slice(&layer::zstd(&tar));
    let p = e.scratch.path().join("skippable.tar.zst");
    std::fs::write(&p, &data).unwrap();
    let out = e.ok(&["layer", "apply", "z", p.to_str().unwrap()]);
    assert!(
        out.contains(&strata_core::Digest::of(&tar).to_string()),
        "{out}"
    );
}

/// An OCI layout of one image with `config` and `layers` (gzipped tars).
fn layout(dir: &Path, config: serde_json::Value, layers: &[Vec<u8>]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |d: &[u8]| {
        let h = strata_core::Digest::of(d);
        std::fs::write(blobs.join(h.hex()), d).unwrap();
        h
    };
    let mut descs = Vec::new();
    for t in layers {
        let gz = layer::gzip(t);
        let d = put(&gz);
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d.to_string(), "size": gz.len()}));
    }
    let c = serde_json::to_vec(&config).unwrap();
    let cd = put(&c);
    let m = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": c.len()}, "layers": descs})).unwrap();
    let md = put(&m);
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md.to_string(), "size": m.len(),
        "annotations": {"org.opencontainers.image.ref.name": "t"}}]})).unwrap()).unwrap();
}

fn config(created: &str, created_by: &str, diff: &[u8]) -> serde_json::Value {
    serde_json::json!({"architecture": "amd64", "os": "linux", "created": created,
        "rootfs": {"type": "layers", "diff_ids": [strata_core::Digest::of(diff).to_string()]},
        "history": [{"created": created, "created_by": created_by}]})
}

#[test]
fn hostile_configs_are_shown_safely() {
    let e = Env::new("vfs");
    let t = layer::tar(&[file("a", "a")]);
    let l = e.scratch.path().join("hostile");
    layout(
        &l,
        config(
            "2024-01-01T00:00:00+0é00",
            "/bin/sh -c \x1b]0;pwned\x07echo \x1b[2J",
            &t,
        ),
        &[t],
    );
    e.ok(&[
        "image",
        "load",
        "-i",
        l.to_str().unwrap(),
        "--tag",
        "hostile:1",
    ]);
    for args in [
        &["images"][..],
        &["df"],
        &["image", "history", "hostile:1"],
        &["image", "inspect", "hostile:1"],
    ] {
        let out = e.ok(args);
        assert!(
            !out.contains('\x1b') && !out.contains('\x07'),
            "{args:?} printed raw control bytes: {out:?}"
        );
    }
}

#[test]
fn a_tag_that_looks_like_an_id_names_its_image() {
    let e = Env::new("vfs");
    let (ta, tb) = (layer::tar(&[file("a", "a")]), layer::tar(&[file("b", "b")]));
    let (la, lb) = (e.scratch.path().join("a"), e.scratch.path().join("b"));
    layout(&la, config("2024-01-01T00:00:00Z", "a", &ta), &[ta]);
    layout(&lb, config("2024-01-02T00:00:00Z", "b", &tb), &[tb]);
    e.ok(&["image", "load", "-i", la.to_str().unwrap(), "--tag", "a:1"]);
    e.ok(&["image", "load", "-i", lb.to_str().unwrap(), "--tag", "b:1"]);
    let b_id = e
        .ok(&["image", "inspect", "--format", "{{.Id}}", "b:1"])
        .trim()
        .to_string();
    let prefix = &b_id["sha256:".len().."sha256:".len() + 6];
    e.ok(&["image", "tag", "a:1", prefix]);
    let out = e.ok(&["image", "rm", prefix]);
    assert!(out.contains(&format!("Untagged: {prefix}:latest")), "{out}");
    assert!(
        e.ok(&["images", "-q", "--no-trunc"]).contains(&b_id),
        "image B is still there"
    );
}

#[test]
fn import_does_not_follow_links_or_read_special_files() {
    let e = Env::new("vfs");
    let t = layer::tar(&[file("a", "a")]);
    let l = e.scratch.path().join("evil");
    layout(&l, config("2024-01-01T00:00:00Z", "x", &t), &[t]);
    // the config blob becomes a link to a secret outside the layout
    let secret = e.scratch.path().join("secret");
    std::fs::write(&secret, "TOP-SECRET-CONTENT").unwrap();
    let blobs = l.join("blobs/sha256");
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(l.join("index.json")).unwrap()).unwrap();
    let md = idx["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blobs.join(&md)).unwrap()).unwrap();
    let cfg = m["config"]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    std::fs::remove_file(blobs.join(&cfg)).unwrap();
    std::os::unix::fs::symlink(&secret, blobs.join(&cfg)).unwrap();
    let err = e.fails(&["image", "load", "-i", l.to_str().unwrap()]);
    assert!(
        !err.contains("TOP-SECRET"),
        "an error carried file content: {err}"
    );
    assert!(err.contains(&cfg), "names the member: {err}");
    // a FIFO config is refused at once, not waited on
    std::fs::remove_file(blobs.join(&cfg)).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        blobs.join(&cfg),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let start = Instant::now();
    let err = e.fails(&["image", "load", "-i", l.to_str().unwrap()]);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "a FIFO member blocked the import"
    );
    assert!(err.contains(&cfg), "{err}");
    assert!(e.ok(&["images", "-q"]).trim().is_empty());
}

#[test]
fn a_root_another_user_made_is_refused() {
    if !strata::core::fsx::is_root() {
        eprintln!("skipping: needs root to make a root owned by another user");
        assert!(
            !strata_conformance::under_ci(),
            "CI=true: this test must run as root"
        );
        return;
    }
    let e = Env::new("vfs");
    let r = e.scratch.path().join("theirs");
    std::fs::create_dir(&r).unwrap();
    rustix::fs::chown(
        &r,
        Some(rustix::process::Uid::from_raw(65534)),
        Some(rustix::process::Gid::from_raw(65534)),
    )
    .unwrap();
    let o = e.run_in(&r, &["images"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("owned by uid 65534"),
        "{err}"
    );
    // a group-writable root
    let w = e.scratch.path().join("open");
    std::fs::create_dir(&w).unwrap();
    std::fs::set_permissions(&w, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let o = e.run_in(&w, &["images"]);
    assert!(
        !o.status.success()
            && String::from_utf8_lossy(&o.stderr).contains("writable by group or others")
    );
}

#[test]
fn a_huge_mount_count_is_clamped() {
    let e = Env::new(driver());
    let t = layer::tar(&[file("a", "a")]);
    let l = e.scratch.path().join("img");
    layout(&l, config("2024-01-01T00:00:00Z", "x", &t), &[t]);
    e.ok(&["image", "load", "-i", l.to_str().unwrap(), "--tag", "m:1"]);
    e.ok(&["container", "create", "big", "m:1"]);
    let id = e.ok(&["ps", "-q", "--no-trunc"]);
    let layer = format!("{}-rw", id.trim());
    let counts = e.root.join(e.driver).join(".mounts");
    std::fs::create_dir_all(&counts).unwrap();
    std::fs::write(counts.join(&layer), "4000000000").unwrap();
    let start = Instant::now();
    e.ok(&["container", "rm", "-f", "big"]);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "rm -f looped over the count"
    );
    assert!(e.ok(&["ps", "-q"]).trim().is_empty());
}

#[test]
fn one_garbled_record_does_not_brick_the_root() {
    let e = Env::new("vfs");
    let t = layer::tar(&[file("a", "a")]);
    let l = e.scratch.path().join("img");
    layout(&l, config("2024-01-01T00:00:00Z", "x", &t), &[t]);
    e.ok(&["image", "load", "-i", l.to_str().unwrap(), "--tag", "g:1"]);
    let metas = e.root.join("vfs/.meta");
    let victim = std::fs::read_dir(&metas)
        .unwrap()
        .flatten()
        .find(|f| f.file_name().to_string_lossy().ends_with(".json"))
        .unwrap()
        .path();
    std::fs::write(&victim, b"{ truncated").unwrap();
    // listing and the store's commands keep working
    e.ok(&["layer", "ls"]);
    e.ok(&["images"]);
    e.ok(&["ps"]);
}

/// Rewrite a layout's index.json: its one manifest entry as `entries`
/// copies, each with `platform` when given.
fn reindex(dir: &Path, entries: usize, platform: Option<serde_json::Value>) -> serde_json::Value {
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let mut m = idx["manifests"][0].clone();
    if let Some(p) = platform {
        m["platform"] = p;
    }
    let all: Vec<_> = (0..entries).map(|_| m.clone()).collect();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": all})).unwrap(),
    )
    .unwrap();
    m
}

/// An index whose entries are all of foreign platforms is refused as
/// Docker and containerd refuse it, unless `--platform` picks one; in an
/// index of several platforms under one name the host's is taken.
#[test]
fn foreign_platforms_are_refused_unless_asked_for() {
    let e = Env::new(driver());
    let t = layer::tar(&[file("arm", "64")]);
    let mut cfg = config("2024-01-01T00:00:00Z", "x", &t);
    cfg["architecture"] = "arm64".into();
    let arm = e.scratch.path().join("arm");
    layout(&arm, cfg, std::slice::from_ref(&t));
    let arm_entry = reindex(
        &arm,
        1,
        Some(serde_json::json!({"os": "linux", "architecture": "arm64"})),
    );
    let host = strata_store::import::Platform::host().to_string();
    let err = e.fails(&["image", "load", "-i", arm.to_str().unwrap()]);
    assert!(
        err.contains(&format!("no matching manifest for {host}")),
        "{err}"
    );
    assert!(
        e.ok(&["images", "-q"]).trim().is_empty(),
        "nothing is loaded"
    );
    e.ok(&[
        "image",
        "load",
        "-i",
        arm.to_str().unwrap(),
        "--platform",
        "linux/arm64",
    ]);
    assert_eq!(e.ok(&["images", "-q"]).lines().count(), 1);

    // amd64 and arm64 under one name: the tag lands on the host's
    let both = e.scratch.path().join("both");
    let t2 = layer::tar(&[file("amd", "64")]);
    layout(
        &both,
        config("2024-01-01T00:00:00Z", "y", &t2),
        std::slice::from_ref(&t2),
    );
    let mut amd_entry = reindex(
        &both,
        1,
        Some(serde_json::json!({"os": "linux", "architecture": "amd64"})),
    );
    for b in std::fs::read_dir(arm.join("blobs/sha256")).unwrap() {
        let b = b.unwrap();
        std::fs::copy(b.path(), both.join("blobs/sha256").join(b.file_name())).unwrap();
    }
    let mut arm_named = arm_entry.clone();
    arm_named["annotations"] =
        serde_json::json!({"org.opencontainers.image.ref.name": "example.com/multi:1"});
    amd_entry["annotations"] = arm_named["annotations"].clone();
    std::fs::write(
        both.join("index.json"),
        serde_json::to_vec(
            &serde_json::json!({"schemaVersion": 2, "manifests": [arm_named, amd_entry]}),
        )
        .unwrap(),
    )
    .unwrap();
    let e2 = Env::new(driver());
    e2.ok(&["image", "load", "-i", both.to_str().unwrap()]);
    assert_eq!(
        e2.ok(&["images", "-q"]).lines().count(),
        1,
        "only the host's image"
    );
    let arch = e2.ok(&[
        "image",
        "inspect",
        "--format",
        "{{.Architecture}}",
        "example.com/multi:1",
    ]);
    assert_eq!(arch.trim(), "amd64");
}

/// An index listing one manifest many times costs one config in memory,
/// not one per entry (a 16 MiB config, listed 40 times).
#[test]
fn repeated_index_entries_cost_one_config() {
    let e = Env::new(driver());
    let t = layer::tar(&[file("f", "x")]);
    let mut cfg = config("2024-01-01T00:00:00Z", "x", &t);
    cfg["config"] = serde_json::json!({"Labels": {"pad": "p".repeat(16 << 20)}});
    let l = e.scratch.path().join("l");
    layout(&l, cfg, std::slice::from_ref(&t));
    reindex(&l, 1, None);
    let (ok1, err1, once) = measured(&e, &["image", "load", "-i", l.to_str().unwrap()], |_| {});
    assert!(ok1, "{err1}");
    let id = e.ok(&["images", "-q"]).trim().to_string();
    e.ok(&["image", "rm", &id]);
    reindex(&l, 40, None);
    let (ok40, err40, forty) = measured(&e, &["image", "load", "-i", l.to_str().unwrap()], |_| {});
    assert!(ok40, "{err40}");
    eprintln!(
        "peak RSS: 1 entry {} MiB, 40 entries {} MiB",
        once / 1024,
        forty / 1024
    );
    assert!(
        forty < once * 3 / 2,
        "40 entries: {forty} KiB, 1 entry: {once} KiB"
    );
    assert_eq!(e.ok(&["images", "-q"]).lines().count(), 1);
}
