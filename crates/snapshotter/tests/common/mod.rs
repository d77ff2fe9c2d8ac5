//! What the snapshotter's end-to-end tests share: building the Go programs
//! offline from Debian's containerd sources, and child processes that are
//! stopped by PID whatever happens to the test.

#![allow(dead_code)]

pub mod world;

pub use strata_conformance::world::{Daemon, wait_for};

use std::path::{Path, PathBuf};
use std::process::Command;

/// The strata-snapshotter binary cargo built for these tests.
pub fn snapshotter_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_strata-snapshotter"))
}

/// Where Debian's `golang-github-containerd-containerd-dev` puts its Go
/// sources (a GOPATH).
pub const GOPATH: &str = "/usr/share/gocode";

/// Build the Go package `tests/go/NAME` (test package when `test`) into
/// the target dir, offline, in GOPATH mode; once per test process.
pub fn go_build(name: &str, test: bool) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = built.iter().find(|(n, _)| n == name) {
        return p.clone();
    }
    let p = go_build_now(name, test);
    built.push((name.to_string(), p.clone()));
    p
}

fn go_build_now(name: &str, test: bool) -> PathBuf {
    let pkg = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/go")
        .join(name);
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let out = tmp.join(format!("go-{name}"));
    let mut cmd = Command::new("go");
    if test {
        cmd.args(["test", "-c", "-o"]);
    } else {
        cmd.args(["build", "-o"]);
    }
    let st = cmd
        .arg(&out)
        .arg(".")
        .current_dir(&pkg)
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOFLAGS", "")
        .env("GOCACHE", tmp.join("go-cache"))
        .status()
        .unwrap_or_else(|e| panic!("running go to build {}: {e}", pkg.display()));
    assert!(st.success(), "go could not build {}", pkg.display());
    out
}

/// May this end-to-end test run here (root, the programs, the Go
/// sources)? Prints why not; under CI=true that is a failure.
pub fn can_run(what: &str, programs: &[&str]) -> bool {
    if !strata_conformance::fixture::privileged_test_can_run(what, programs) {
        return false;
    }
    if !Path::new(GOPATH)
        .join("src/github.com/containerd/containerd")
        .is_dir()
    {
        assert!(
            !strata_conformance::under_ci(),
            "CI=true: {what} needs {GOPATH} (golang-github-containerd-containerd-dev; ./ci/setup.sh)"
        );
        eprintln!(
            "skipping {what}: it needs golang-github-containerd-containerd-dev (./ci/setup.sh)"
        );
        return false;
    }
    true
}
