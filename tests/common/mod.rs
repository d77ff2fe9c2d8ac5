//! Helpers of the end-to-end tests: run the `strata` binary on a root on
//! the file system each driver needs, and clean up afterwards.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use strata_conformance::fixture::{Backing, Scratch, have_program};

pub mod net;

pub const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/hello-image");
pub const EXAMPLE_DIGEST: &str =
    "sha256:85dea1523ed8549dcb930b994a913587ea5f01bfe2737d34118101d42334c6de";

/// A vfs root with the bundled example image loaded.
pub fn loaded() -> Env {
    let e = Env::new("vfs");
    e.ok(&["load", "-q", "-i", EXAMPLE]);
    e
}

/// A finished command's exit status (-1 when a signal ended it).
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// A root for one driver, on a scratch file system it can use.
pub struct Env {
    pub driver: &'static str,
    pub scratch: Scratch,
    pub root: PathBuf,
}

/// Why a driver cannot be tested here (None: it can). Under CI=true a
/// privileged driver must run, so the reason becomes a panic.
pub fn unavailable(driver: &str) -> Option<String> {
    let why = match driver {
        "vfs" => None,
        _ if !strata::core::fsx::is_root() => Some(format!("{driver} needs root")),
        "btrfs" if !have_program("mkfs.btrfs") => Some("mkfs.btrfs is missing".to_string()),
        _ => None,
    };
    if let Some(w) = &why {
        if strata_conformance::under_ci() {
            panic!("CI=true: the {driver} tests must run here, but {w}");
        }
        eprintln!("skipping the {driver} end-to-end test: {w}");
    }
    why
}

impl Env {
    pub fn new(driver: &'static str) -> Env {
        let backing = match driver {
            "overlay2" => Backing::Tmpfs,
            "btrfs" => Backing::Loop {
                fstype: "btrfs".into(),
                size_mb: 2048,
            },
            _ => Backing::TempDir,
        };
        let scratch = Scratch::new(backing, None).unwrap();
        let root = scratch.fresh_dir("root").unwrap();
        Env {
            driver,
            scratch,
            root,
        }
    }

    /// Another root on the same scratch file system.
    pub fn another_root(&self) -> PathBuf {
        self.scratch.fresh_dir("root").unwrap()
    }

    pub fn cmd_in(&self, root: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
        c.arg("--root")
            .arg(root)
            .arg("--driver")
            .arg(self.driver)
            .args(args);
        c.env_remove("STRATA_ROOT")
            .env_remove("STRATA_DRIVER")
            .env_remove("RUST_LOG");
        c
    }

    pub fn run_in(&self, root: &Path, args: &[&str]) -> Output {
        self.cmd_in(root, args).output().unwrap()
    }

    /// Run and require success; returns stdout.
    pub fn ok_in(&self, root: &Path, args: &[&str]) -> String {
        let o = self.run_in(root, args);
        assert!(
            o.status.success(),
            "strata {args:?} failed ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_in(&self.root, args)
    }

    /// Run and require failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.run_in(&self.root, args);
        assert!(
            !o.status.success(),
            "strata {args:?} succeeded: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for r in std::fs::read_dir(self.scratch.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = Command::new(env!("CARGO_BIN_EXE_strata"))
                .arg("--root")
                .arg(r.path())
                .arg("--driver")
                .arg(self.driver)
                .args(["driver", "cleanup"])
                .output();
            // layers of btrfs are subvolumes: remove them through the driver
            let _ = Command::new(env!("CARGO_BIN_EXE_strata"))
                .arg("--root")
                .arg(r.path())
                .arg("--driver")
                .arg(self.driver)
                .args(["prune"])
                .output();
        }
    }
}

/// Copy a directory tree (test data only).
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let t = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

/// Members of a tar file and their bytes.
pub fn tar_members(path: &Path) -> Vec<(String, Vec<u8>)> {
    let f = std::fs::File::open(path).unwrap();
    let mut r = strata_core::archive::tar::TarReader::new(std::io::BufReader::new(f));
    let mut out = Vec::new();
    while let Some(h) = r.next_entry().unwrap() {
        let mut data = vec![0u8; r.data_remaining() as usize];
        let mut n = 0;
        while n < data.len() {
            n += r.read_data(&mut data[n..]).unwrap();
        }
        out.push((String::from_utf8_lossy(&h.path).into_owned(), data));
    }
    out
}

/// An OCI layout with two layers of 3,000 small files each.
pub fn make_big_layout(dir: &std::path::Path) {
    use strata_conformance::layer::{dir as d, file, tar};
    let tars: Vec<Vec<u8>> = (0..2)
        .map(|l| {
            let mut entries = vec![d(format!("l{l}"))];
            for i in 0..3000 {
                entries.push(file(format!("l{l}/f{i}"), format!("{l}:{i}").repeat(40)));
            }
            tar(&entries)
        })
        .collect();
    let diff_ids: Vec<String> = tars
        .iter()
        .map(|t| strata_conformance::layer::sha256(t).to_string())
        .collect();
    write_oci_layout(dir, &tars, &diff_ids, "test/big:1");
}

/// An OCI layout of one image `name` with the uncompressed layer `tars`,
/// whose config lists `diff_ids` (the tars' digests, or not).
pub fn write_oci_layout(dir: &std::path::Path, tars: &[Vec<u8>], diff_ids: &[String], name: &str) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let put = |b: &[u8]| -> String {
        let dg = strata_conformance::layer::sha256(b);
        std::fs::write(dir.join("blobs/sha256").join(dg.hex()), b).unwrap();
        dg.to_string()
    };
    let layers: Vec<_> = tars
        .iter()
        .map(|t| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": put(t), "size": t.len()}))
        .collect();
    let cfg = serde_json::to_vec(&serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}})).unwrap();
    let cd = put(&cfg);
    let m = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cfg.len()}, "layers": layers})).unwrap();
    let md = put(&m);
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": m.len(), "annotations": {"org.opencontainers.image.ref.name": name}}]})).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// No staging, trash or temporary entries and no mounts are left.
pub fn assert_no_leftovers(e: &Env, driver: &str) {
    let home = e.root.join(driver);
    for sub in [".staging", ".trash"] {
        let left: Vec<_> = std::fs::read_dir(home.join(sub))
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{driver}: leftovers in {sub}: {left:?}");
    }
    let tmp: Vec<_> = std::fs::read_dir(e.root.join("store/tmp"))
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "leftover temporary files: {tmp:?}");
    let m = strata::core::mounts::mounts_under(&e.root).unwrap();
    assert!(m.is_empty(), "{driver}: mounts left: {m:?}");
}
