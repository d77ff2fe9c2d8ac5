//! Real containers on Strata: Debian's docker-registry, skopeo, containerd
//! 1.6 with Strata as its proxy snapshotter, and runc, each started by the
//! test with private roots, sockets and loopback ports. In order:
//!
//! 1. `ctr images pull --snapshotter strata` pulls a two-layer busybox
//!    image whose second layer whites out a file of the first;
//! 2. `ctr run --rm` runs it under runc: the second layer's file is there,
//!    the whited-out one is not;
//! 3. `ctr images rm --sync` leaves no snapshot and no layer behind;
//! 4. strata-snapshotter is killed (SIGKILL) in the middle of a pull and
//!    restarted over its stale socket: the snapshots committed before the
//!    kill survive, a second pull succeeds, the container runs, and the
//!    root checks clean; removing the image reclaims everything, the
//!    interrupted pull's leftovers included;
//! 5. a pull made the way Kubernetes' CRI plugin makes it (namespace
//!    k8s.io, `containerd.io/snapshot/cri.*` labels) works and runs;
//! 6. nothing is left: mounts, processes, /run/containerd.

// Scratch areas, logs and sockets are handled by path, as a user would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Daemon;
use common::world::{Containerd, start_snapshotter};
use strata_conformance::fixture::{Backing, Scratch};
use strata_conformance::images::{Layer, busybox_layer, layer_of, noise, write_layout};
use strata_conformance::layer::{dir, file, whiteout};
use strata_conformance::world::{Registry, skopeo_push};

const PROGRAMS: &[&str] = &[
    "go",
    "containerd",
    "ctr",
    "containerd-shim-runc-v2",
    "runc",
    "docker-registry",
    "skopeo",
    "mkfs.ext4",
];

/// Everything one scenario runs; dropped in this order (containerd first).
struct World {
    containerd: Option<Containerd>,
    snapshotter: Option<Daemon>,
    registry: Registry,
    driver: String,
    /// containerd namespace of this scenario (tests run at once).
    ns: String,
    /// Whether the CRI-style pull (namespace k8s.io) ran.
    cri: bool,
    root: PathBuf,
    sock: PathBuf,
    work: PathBuf,
    scratch: Scratch,
}

impl World {
    fn new(driver: &str, backing: Backing) -> World {
        let scratch = Scratch::new(backing, None).unwrap();
        let work = scratch.fresh_dir("e2e").unwrap();
        let registry = Registry::start(&work.join("registry"));
        let root = work.join("strata");
        let sock = work.join("strata.sock");
        let snapshotter = start_snapshotter(&root, driver, &sock, &work.join("snapshotter.log"));
        let ns = format!("strata-e2e-{driver}");
        let containerd = Containerd::start(&work.join("containerd"), &sock, &[&ns, "k8s.io"]);
        World {
            containerd: Some(containerd),
            snapshotter: Some(snapshotter),
            registry,
            driver: driver.to_string(),
            ns,
            cri: false,
            root,
            sock,
            work,
            scratch,
        }
    }

    fn ctrd(&self) -> &Containerd {
        self.containerd.as_ref().unwrap()
    }

    /// Push an image of `layers` as `name:1`; returns its reference.
    fn push(&self, name: &str, layers: &[Layer]) -> String {
        let layout = self.work.join(format!("layout-{name}"));
        write_layout(&layout, "1", layers);
        let r = self.registry.reference(&format!("strata/{name}:1"));
        skopeo_push(&self.work, &layout, "1", &r);
        r
    }

    /// The store on the root, opened beside the running snapshotter (as
    /// `strata` would be).
    fn store(&self) -> strata_store::Store {
        let d = strata::open(&self.driver, &self.root, Default::default()).unwrap();
        strata_store::Store::open(&self.root, d).unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.work.join("snapshotter.log")).unwrap_or_default()
    }

    fn assert_empty(&self, when: &str) {
        let s = self.store();
        let snaps = s.snapshots().unwrap();
        assert!(snaps.is_empty(), "{when}: snapshots left: {snaps:?}");
        let layers = s.driver().layers().unwrap();
        assert!(layers.is_empty(), "{when}: driver layers left: {layers:?}");
        let r = s.check(Default::default()).unwrap();
        assert!(r.problems.is_empty(), "{when}: check: {r:?}");
    }

    /// Stop everything and check that nothing is left behind.
    fn shutdown(mut self) {
        let run_existed_before = self.ctrd().dir.exists();
        drop(self.containerd.take());
        let mut snap = self.snapshotter.take().unwrap();
        let st = snap.stop();
        assert!(
            st.is_some_and(|s| s.success()),
            "strata-snapshotter on SIGTERM: {st:?}"
        );
        assert!(!self.sock.exists(), "the snapshotter left its socket");
        let me = self.work.display().to_string();
        let procs: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(&me) && !c.contains("docker-registry"))
            .collect();
        assert!(procs.is_empty(), "processes left: {procs:?}");
        let mounts = strata_core::mounts::mounts_under(&self.scratch.path()).unwrap();
        let mounts: Vec<_> = mounts
            .iter()
            .filter(|m| m.mount_point != self.scratch.path())
            .collect();
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
        let _ = run_existed_before;
        let run: Vec<_> = std::fs::read_dir("/run/containerd/runc")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| *n == *self.ns || (self.cri && n == "k8s.io"))
            .collect();
        assert!(
            run.is_empty(),
            "runc state left under /run/containerd/runc: {run:?}"
        );
    }
}

fn two_layer_image() -> Vec<Layer> {
    vec![
        busybox_layer(),
        layer_of(
            &[
                dir("etc"),
                file("etc/second", "from the second layer\n"),
                whiteout("etc/gone"),
            ],
            true,
        ),
    ]
}

const CHECK: &str =
    "cat /etc/second; if test -e /etc/gone; then echo gone-visible; else echo gone-hidden; fi";

/// Steps 1 to 3.
fn pull_run_remove(w: &World, ns: &str, r: &str) {
    let c = w.ctrd();
    c.ctr_ok(
        ns,
        &[
            "images",
            "pull",
            "--plain-http",
            "--snapshotter",
            "strata",
            r,
        ],
    );
    let out = c.ctr_ok(
        ns,
        &[
            "run",
            "--rm",
            "--snapshotter",
            "strata",
            r,
            "t1",
            "/bin/sh",
            "-c",
            CHECK,
        ],
    );
    eprintln!("container output:\n{out}");
    assert!(
        out.contains("from the second layer"),
        "the second layer's file is missing:\n{out}"
    );
    assert!(
        out.contains("gone-hidden"),
        "the whited-out file is visible:\n{out}"
    );
    c.ctr_ok(ns, &["images", "rm", "--sync", r]);
    let ls = c.ctr_ok(ns, &["snapshots", "--snapshotter", "strata", "ls"]);
    assert_eq!(
        ls.lines().count(),
        1,
        "containerd still lists snapshots:\n{ls}"
    );
    w.assert_empty("after images rm --sync");
}

/// Step 4: SIGKILL in the middle of a pull.
// Long on purpose: one scenario, step after step, each step's state
// feeding the next.
fn kill_during_pull(w: &mut World) {
    let big = vec![
        busybox_layer(),
        layer_of(&[dir("etc"), file("etc/second", "2\n")], true),
        layer_of(&[file("big", noise(256 << 20, 7))], false),
        layer_of(&[file("top", "4\n")], true),
    ];
    let r = w.push("big", &big);
    let c = w.ctrd();
    let seen = w.log().len();
    let mut pull = Command::new("ctr")
        .arg("--address")
        .arg(&c.sock)
        .args([
            "--namespace",
            &w.ns,
            "images",
            "pull",
            "--plain-http",
            "--snapshotter",
            "strata",
            &r,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // the third layer (the big one) is being unpacked: two commits done
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let log = w.log().split_off(seen);
        // the calls as they come in (not the timing lines of finished ones)
        let calls = || log.lines().filter(|l| !l.contains(" done "));
        let commits = calls()
            .filter(|l| l.contains(" commit ") || l.ends_with(" commit"))
            .count();
        let prepares = calls().filter(|l| l.contains("prepare")).count();
        if commits >= 2 && prepares >= 3 {
            break;
        }
        assert!(
            Instant::now() < end,
            "the pull never reached its third layer:\n{log}"
        );
        assert!(
            pull.try_wait().unwrap().is_none(),
            "the pull ended before the kill:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    w.snapshotter.take().unwrap().kill9();
    let st = pull.wait().unwrap();
    assert!(
        !st.success(),
        "the pull succeeded although its snapshotter was killed"
    );
    let committed = |s: &strata_store::Store| -> Vec<String> {
        s.snapshots()
            .unwrap()
            .into_iter()
            .filter(|i| i.kind == strata_store::snapshots::Kind::Committed)
            .map(|i| i.key)
            .collect()
    };
    assert!(
        w.sock.exists(),
        "a SIGKILL cannot remove the socket; the restart must replace it"
    );
    let before = committed(&w.store());
    assert!(before.len() >= 2, "commits before the kill: {before:?}");
    w.snapshotter = Some(start_snapshotter(
        &w.root,
        &w.driver,
        &w.sock,
        &w.work.join("snapshotter.log"),
    ));
    let after = committed(&w.store());
    for k in &before {
        assert!(
            after.contains(k),
            "committed snapshot {k} did not survive the kill"
        );
    }
    let c = w.ctrd();
    // containerd's client backs off (up to 3 s) before it dials again
    let end = Instant::now() + Duration::from_secs(30);
    let probe = [
        "snapshots",
        "--snapshotter",
        "strata",
        "prepare",
        "reconnect-probe",
    ];
    while !c.ctr(&w.ns, &probe).0 {
        assert!(
            Instant::now() < end,
            "containerd never reconnected to the restarted snapshotter"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    c.ctr_ok(
        &w.ns,
        &[
            "snapshots",
            "--snapshotter",
            "strata",
            "rm",
            "reconnect-probe",
        ],
    );
    c.ctr_ok(
        &w.ns,
        &[
            "images",
            "pull",
            "--plain-http",
            "--snapshotter",
            "strata",
            &r,
        ],
    );
    let out = c.ctr_ok(
        &w.ns,
        &[
            "run",
            "--rm",
            "--snapshotter",
            "strata",
            &r,
            "t2",
            "/bin/sh",
            "-c",
            "cat /etc/second /top; ls -l /big",
        ],
    );
    assert!(
        out.contains("2\n4\n") && out.contains(&(256u64 << 20).to_string()),
        "{out}"
    );
    let r2 = w.store().check(Default::default()).unwrap();
    assert!(
        r2.problems.is_empty(),
        "check after the kill and the second pull: {r2:?}"
    );
    c.ctr_ok(&w.ns, &["images", "rm", "--sync", &r]);
    w.assert_empty("after removing the image pulled across a kill");
}

/// Step 5: the CRI plugin's way, and Strata's fast path: the snapshotter
/// fetches each layer itself and containerd downloads none.
fn cri_pull(w: &World, r: &str) {
    let layers: Vec<String> = two_layer_image()
        .iter()
        .map(|l| strata_core::Digest::of(&strata_conformance::layer::gzip(&l.tar)).to_string())
        .collect();
    let bin = common::go_build("cripull", false);
    let c = w.ctrd();
    let mark = w.registry.log_mark();
    let out = Command::new(&bin)
        .arg(&c.sock)
        .arg("strata")
        .arg(r)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "CRI-style pull: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snaps = w.store().snapshots().unwrap();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    for s in &snaps {
        assert_eq!(
            s.labels
                .get("containerd.io/snapshot/cri.image-ref")
                .map(String::as_str),
            Some(r),
            "{s:?}"
        );
        assert!(
            s.labels
                .get("containerd.io/snapshot/cri.layer-digest")
                .is_some_and(|d| d.starts_with("sha256:")),
            "{s:?}"
        );
    }
    for d in &layers {
        assert_eq!(
            w.registry.blob_gets_by(mark, d, "containerd"),
            0,
            "containerd downloaded layer {d} itself"
        );
        assert!(
            w.registry.blob_gets_by(mark, d, "strata/") >= 1,
            "strata did not fetch layer {d}"
        );
    }
    let out = c.ctr_ok(
        "k8s.io",
        &[
            "run",
            "--rm",
            "--snapshotter",
            "strata",
            r,
            "t3",
            "/bin/sh",
            "-c",
            CHECK,
        ],
    );
    assert!(out.contains("gone-hidden"), "{out}");
    c.ctr_ok("k8s.io", &["images", "rm", "--sync", r]);
    w.assert_empty("after the CRI-style image is removed");
}

fn scenario(driver: &str, backing: Backing, with_kill: bool) {
    let what = format!("containerd on strata-snapshotter ({driver})");
    if !common::can_run(&what, PROGRAMS) {
        return;
    }
    let mut w = World::new(driver, backing);
    let r = w.push("busybox", &two_layer_image());
    eprintln!("{what}: pushed {r}");
    pull_run_remove(&w, &w.ns, &r);
    if with_kill {
        kill_during_pull(&mut w);
        w.cri = true;
        cri_pull(&w, &r);
    }
    w.shutdown();
}

#[test]
fn containerd_on_overlay2() {
    scenario(
        "overlay2",
        Backing::Loop {
            fstype: "ext4".into(),
            size_mb: 4096,
        },
        true,
    );
}

#[test]
fn containerd_on_btrfs() {
    scenario(
        "btrfs",
        Backing::Loop {
            fstype: "btrfs".into(),
            size_mb: 4096,
        },
        false,
    );
}

#[test]
fn containerd_on_vfs() {
    scenario("vfs", Backing::TempDir, false);
}
