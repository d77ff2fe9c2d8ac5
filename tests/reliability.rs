//! Reliability under faults: processes killed at random points (crash
//! consistency), a disk that fills up, and many processes at once on one
//! root. Every backend; overlay2 and btrfs as root (under CI=true they
//! must run).

// Tests inspect views and scratch directories by path, as a user would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use strata_conformance::fixture::{Backing, Scratch};
use strata_conformance::layer::{dir, file, tar};

/// A small deterministic random generator (xorshift), seeded per test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn many_files_tar(n: usize, tag: &str) -> Vec<u8> {
    let mut v = vec![dir(format!("d-{tag}"))];
    for i in 0..n {
        v.push(file(
            format!("d-{tag}/f{i}"),
            format!("{tag} {i}\n").repeat(20),
        ));
    }
    tar(&v)
}

fn kill9(child: &mut std::process::Child) {
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::KILL,
    );
    let _ = child.wait();
}

// Long on purpose: one scenario, step after step, each step's state
// feeding the next; cut into functions it would no longer read as the
// session it checks.
fn crash_points(driver: &'static str) {
    if unavailable(driver).is_some() {
        return;
    }
    let e = Env::new(driver);
    let work = e.another_root();
    let big = work.join("big.tar");
    std::fs::write(&big, many_files_tar(4000, "big")).unwrap();
    let layout = work.join("layout");
    make_big_layout(&layout);
    e.ok(&["image", "load", "-i", EXAMPLE]);
    e.ok(&["container", "create", "cc", "strata/hello"]);
    let v = e.ok(&["container", "mount", "cc"]).trim().to_string();
    for i in 0..3000 {
        std::fs::write(format!("{v}/f{i}"), format!("{i}").repeat(30)).unwrap();
    }
    e.ok(&["container", "unmount", "cc"]);

    let seed = 0x5eed_0000 + driver.len() as u64;
    let mut rng = Rng(seed);
    let ops = [
        "layer apply",
        "image import",
        "container commit",
        "image rm",
    ];
    let mut survived = [0u32; 4];
    let runs = 32;
    for i in 0..runs {
        let k = i % 4;
        let args: Vec<String> = match k {
            0 => vec![
                "layer".into(),
                "apply".into(),
                format!("l{i}"),
                big.display().to_string(),
            ],
            1 => vec![
                "image".into(),
                "load".into(),
                "-i".into(),
                layout.display().to_string(),
                "--tag".into(),
                format!("big:{i}"),
            ],
            2 => vec![
                "container".into(),
                "commit".into(),
                "cc".into(),
                format!("committed:{i}"),
            ],
            _ => {
                // something to remove: an image made earlier (imported again if needed)
                e.ok(&[
                    "image",
                    "load",
                    "-i",
                    layout.to_str().unwrap(),
                    "--tag",
                    &format!("victim:{i}"),
                ]);
                vec![
                    "image".into(),
                    "rm".into(),
                    "-f".into(),
                    format!("victim:{i}"),
                ]
            }
        };
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let mut child = e
            .cmd_in(&e.root, &a)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(5 + rng.below(250)));
        kill9(&mut child);
        // reopening recovers; the store must check clean
        let out = e.run_in(&e.root, &["check"]);
        assert!(
            out.status.success(),
            "{driver} seed {seed:#x}: check after killing `{}` (run {i}) failed:\n{}{}",
            ops[k],
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_no_leftovers(&e, driver);
        survived[k] += 1;
    }
    // and it is still a working store
    e.ok(&[
        "image",
        "load",
        "-i",
        layout.to_str().unwrap(),
        "--tag",
        "final:1",
    ]);
    e.ok(&["container", "commit", "cc", "final:2"]);
    assert!(e.ok(&["check"]).contains("consistent"));
    eprintln!(
        "{driver}: survived {} kill -9 points (layer apply {}, import {}, commit {}, rm {}), seed {seed:#x}",
        survived.iter().sum::<u32>(),
        survived[0],
        survived[1],
        survived[2],
        survived[3]
    );
}

#[test]
fn crash_points_vfs() {
    crash_points("vfs");
}

#[test]
fn crash_points_overlay2() {
    crash_points("overlay2");
}

#[test]
fn crash_points_btrfs() {
    crash_points("btrfs");
}

/// A gzip (or zstd) stream of a tar with one file of `size` zero bytes,
/// made without holding it in memory: a compression bomb.
fn bomb(size: u64, zstd: bool) -> Vec<u8> {
    use strata::core::archive::tar::{Kind, TarWriter, WriteHead};

    // collect the compressed bytes through a shared buffer
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let inner = Shared(out.clone());
    let enc: Box<dyn Write> = if zstd {
        Box::new(
            zstd::stream::write::Encoder::new(inner, 3)
                .unwrap()
                .auto_finish(),
        )
    } else {
        Box::new(flate2::write::GzEncoder::new(
            inner,
            flate2::Compression::default(),
        ))
    };
    let mut w = TarWriter::new(enc);
    let n = w
        .write_head(&WriteHead {
            path: b"bomb",
            kind: Kind::File,
            link: b"",
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: (1_704_067_200, 0),
            size,
            dev_major: 0,
            dev_minor: 0,
            xattrs: &[],
            sparse: None,
        })
        .unwrap();
    let zeros = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let k = left.min(zeros.len() as u64) as usize;
        w.write_data(&zeros[..k]).unwrap();
        left -= k as u64;
    }
    w.finish_data(n).unwrap();
    let (enc, _) = w.finish().unwrap();
    drop(enc);
    std::sync::Arc::try_unwrap(out)
        .unwrap()
        .into_inner()
        .unwrap()
}

fn full_disk(driver: &'static str) {
    if unavailable(driver).is_some() {
        return;
    }
    let (fs, mb) = if driver == "btrfs" {
        ("btrfs", 256)
    } else {
        ("ext4", 96)
    };
    let small = Scratch::new(
        Backing::Loop {
            fstype: fs.into(),
            size_mb: mb,
        },
        None,
    )
    .unwrap();
    let root = small.fresh_dir("root").unwrap();
    let outside = tempfile::tempdir().unwrap();
    let e = Env::new(driver); // only for running the binary
    let gz = outside.path().join("bomb.tar.gz");
    let zst = outside.path().join("bomb.tar.zst");
    static BOMBS: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    let (bg, bz) = BOMBS.get_or_init(|| (bomb(1 << 30, false), bomb(1 << 30, true)));
    std::fs::write(&gz, bg).unwrap();
    std::fs::write(&zst, bz).unwrap();
    assert!(std::fs::metadata(&gz).unwrap().len() < 2 << 20);
    for (name, f) in [("gz", &gz), ("zst", &zst)] {
        let o = e.run_in(
            &root,
            &[
                "layer",
                "apply",
                &format!("bomb-{name}"),
                f.to_str().unwrap(),
            ],
        );
        assert!(
            !o.status.success(),
            "{driver}: a 1 GiB bomb applied on a {mb} MiB file system"
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("No space left") && err.contains("bomb"),
            "{driver}: {err}"
        );
        let ls = e.ok_in(&root, &["layer", "ls", "--format", "json"]);
        assert_eq!(ls.trim(), "[]", "{driver}: a half layer is left: {ls}");
    }
    // an image too big for the disk: refused, nothing registered
    let layout = outside.path().join("layout");
    make_big_layout(&layout);
    let huge = outside.path().join("huge");
    copy_dir(&layout, &huge);
    add_huge_layer(&huge, 200 << 20);
    let o = e.run_in(
        &root,
        &[
            "image",
            "load",
            "-i",
            huge.to_str().unwrap(),
            "--tag",
            "huge:1",
        ],
    );
    assert!(!o.status.success(), "{driver}: the huge image imported");
    assert_eq!(e.ok_in(&root, &["image", "ls", "-q"]).trim(), "");
    assert!(e.ok_in(&root, &["check"]).contains("consistent"));
    // and the store is usable afterwards
    e.ok_in(&root, &["image", "load", "-i", EXAMPLE]);
    let t = outside.path().join("small.tar");
    std::fs::write(&t, many_files_tar(10, "s")).unwrap();
    e.ok_in(&root, &["layer", "apply", "after", t.to_str().unwrap()]);
    assert!(e.ok_in(&root, &["check"]).contains("consistent"));
    let _ = e.run_in(&root, &["driver", "cleanup"]);
    let _ = e.run_in(&root, &["image", "rm", "strata/hello"]);
    let _ = e.run_in(&root, &["layer", "rm", "after"]);
}

/// Add a layer of `size` pseudo-random bytes (incompressible) to an OCI
/// layout made by `make_big_layout`.
fn add_huge_layer(layout: &Path, size: usize) {
    let mut data = Vec::with_capacity(size);
    let mut r = Rng(42);
    while data.len() < size {
        data.extend_from_slice(&r.next().to_le_bytes());
    }
    let t = tar(&[file("huge.bin", data)]);
    let d = strata_conformance::layer::sha256(&t);
    std::fs::write(layout.join("blobs/sha256").join(d.hex()), &t).unwrap();
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let md = idx["manifests"][0]["digest"].as_str().unwrap().to_string();
    let mpath = layout.join("blobs/sha256").join(&md[7..]);
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    let cd = m["config"]["digest"].as_str().unwrap().to_string();
    let cpath = layout.join("blobs/sha256").join(&cd[7..]);
    let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(&cpath).unwrap()).unwrap();
    c["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(d));
    let cb = serde_json::to_vec(&c).unwrap();
    let cd2 = strata_conformance::layer::sha256(&cb);
    std::fs::write(layout.join("blobs/sha256").join(cd2.hex()), &cb).unwrap();
    m["config"]["digest"] = serde_json::json!(cd2);
    m["config"]["size"] = serde_json::json!(cb.len());
    m["layers"].as_array_mut().unwrap().push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": t.len()}));
    let mb = serde_json::to_vec(&m).unwrap();
    let md2 = strata_conformance::layer::sha256(&mb);
    std::fs::write(layout.join("blobs/sha256").join(md2.hex()), &mb).unwrap();
    let idx2 = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md2, "size": mb.len()}]});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&idx2).unwrap(),
    )
    .unwrap();
}

#[test]
fn full_disk_vfs() {
    full_disk("vfs");
}

#[test]
fn full_disk_overlay2() {
    full_disk("overlay2");
}

#[test]
fn full_disk_btrfs() {
    full_disk("btrfs");
}

/// Errors that are documented refusals of a racing operation.
fn refusal(err: &str) -> bool {
    let l = err.to_lowercase();
    (l.contains("error: layer ") && l.contains(" not found"))
        || [
            "has children",
            "is busy",
            "already",
            "conflict",
            "no such image",
            "no such container",
            "is mounted",
            "in use",
        ]
        .iter()
        .any(|p| l.contains(p))
}

// Long on purpose: one scenario, step after step, each step's state
// feeding the next; cut into functions it would no longer read as the
// session it checks.
fn concurrency(driver: &'static str) {
    if unavailable(driver).is_some() {
        return;
    }
    let e = Env::new(driver);
    e.ok(&["image", "load", "-i", EXAMPLE]);
    let small = e.another_root().join("small.tar");
    std::fs::write(&small, many_files_tar(50, "w")).unwrap();
    e.ok(&["layer", "apply", "sbase", small.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(12);
    let workers = 8;
    let results: Vec<(u64, Vec<String>)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..workers)
            .map(|t| {
                let e = &e;
                let small = &small;
                s.spawn(move || {
                    let mut rng = Rng(0xc0ffee + t as u64);
                    let mut done = 0u64;
                    let mut bad = Vec::new();
                    let mut k = 0;
                    let run = |args: &[&str], done: &mut u64, bad: &mut Vec<String>| -> bool {
                        let o = e.run_in(&e.root, args);
                        *done += 1;
                        if o.status.success() {
                            return true;
                        }
                        let err = String::from_utf8_lossy(&o.stderr).into_owned();
                        if std::env::var_os("STRATA_TEST_VERBOSE").is_some() {
                            eprintln!("refused {args:?}: {}", err.trim());
                        }
                        if !refusal(&err) {
                            bad.push(format!("{args:?}: {err}"));
                        }
                        false
                    };
                    while Instant::now() < deadline {
                        k += 1;
                        let id = format!("w{t}-{k}");
                        match rng.below(4) {
                            0 => {
                                run(
                                    &[
                                        "layer",
                                        "apply",
                                        &id,
                                        "--parent",
                                        "sbase",
                                        small.to_str().unwrap(),
                                    ],
                                    &mut done,
                                    &mut bad,
                                );
                                run(&["layer", "rm", &id], &mut done, &mut bad);
                            }
                            1 => {
                                if run(&["layer", "mount", "sbase"], &mut done, &mut bad) {
                                    // mounted: removing it must be refused
                                    if run(&["layer", "rm", "sbase"], &mut done, &mut bad) {
                                        bad.push("removing a mounted layer succeeded".into());
                                    }
                                    run(&["layer", "unmount", "sbase"], &mut done, &mut bad);
                                }
                            }
                            2 => {
                                if run(
                                    &["container", "create", &id, "strata/hello"],
                                    &mut done,
                                    &mut bad,
                                ) {
                                    if run(&["container", "mount", &id], &mut done, &mut bad) {
                                        run(&["container", "unmount", &id], &mut done, &mut bad);
                                    }
                                    let img = format!("img{t}:{k}");
                                    if run(&["container", "commit", &id, &img], &mut done, &mut bad)
                                    {
                                        run(&["container", "rm", &id], &mut done, &mut bad);
                                        run(&["image", "rm", &img], &mut done, &mut bad);
                                    } else {
                                        run(&["container", "rm", "-f", &id], &mut done, &mut bad);
                                    }
                                }
                            }
                            _ => {
                                run(&["image", "ls"], &mut done, &mut bad);
                                run(&["df"], &mut done, &mut bad);
                                run(&["image", "rm", "strata/hello"], &mut done, &mut bad); // refused while containers use it, else re-imported below
                                run(&["image", "load", "-i", EXAMPLE], &mut done, &mut bad);
                            }
                        }
                    }
                    (done, bad)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total: u64 = results.iter().map(|r| r.0).sum();
    let bad: Vec<&String> = results.iter().flat_map(|r| r.1.iter()).collect();
    assert!(
        bad.is_empty(),
        "{driver}: unexpected errors under concurrency:\n{}",
        bad.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    // reference counts are right: nothing is mounted any more
    let meta: serde_json::Value =
        serde_json::from_str(&e.ok(&["layer", "inspect", "sbase"])).unwrap();
    assert_eq!(meta["MountCount"], "0", "{driver}: {meta}");
    let left = strata::core::mounts::mounts_under(&e.root).unwrap();
    assert!(left.is_empty(), "{driver}: mounts left: {left:?}");
    let check = e.ok(&["check"]);
    assert!(check.contains("consistent"), "{driver}: {check}");
    eprintln!(
        "{driver}: {total} operations by {workers} concurrent workers, no unexpected error, store consistent"
    );
}

#[test]
fn concurrency_vfs() {
    concurrency("vfs");
}

#[test]
fn concurrency_overlay2() {
    concurrency("overlay2");
}

#[test]
fn concurrency_btrfs() {
    concurrency("btrfs");
}
