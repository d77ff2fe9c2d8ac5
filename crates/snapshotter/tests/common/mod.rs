//! What the snapshotter's end-to-end tests share: building the Go programs
//! offline from Debian's containerd sources, and child processes that are
//! stopped by PID whatever happens to the test.

#![allow(dead_code)]

pub mod image;
pub mod world;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// A child process stopped on drop: SIGTERM, then SIGKILL after `grace`.
#[derive(Debug)]
pub struct Daemon {
    pub name: String,
    pub child: Child,
    grace: Duration,
}

impl Daemon {
    /// Start `cmd` (its output goes to `log`).
    pub fn start(name: &str, cmd: &mut Command, log: &Path) -> Daemon {
        let f = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let f2 = f
            .try_clone()
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(f2)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Daemon {
            name: name.to_string(),
            child,
            grace: Duration::from_secs(20),
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(0)
    }

    fn signal(&self, sig: rustix::process::Signal) {
        if let Some(p) = rustix::process::Pid::from_raw(self.pid()) {
            let _ = rustix::process::kill_process(p, sig);
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(mut self) {
        self.signal(rustix::process::Signal::KILL);
        let _ = self.child.wait();
        self.grace = Duration::ZERO;
    }

    /// SIGTERM and wait: its exit status, or `None` when it had to be
    /// killed after the grace time.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(st)) = self.child.try_wait() {
            return Some(st);
        }
        self.signal(rustix::process::Signal::TERM);
        let end = Instant::now() + self.grace;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal(rustix::process::Signal::KILL);
        let _ = self.child.wait();
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if self.stop().is_none() {
            eprintln!(
                "{} did not stop within {:?} of SIGTERM; killed",
                self.name, self.grace
            );
        }
    }
}

/// Wait until `path` exists (a socket coming up), or panic naming `what`.
pub fn wait_for(path: &Path, what: &str, d: &mut Daemon) {
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        if path.exists() {
            return;
        }
        if let Ok(Some(st)) = d.child.try_wait() {
            panic!("{what} exited ({st}) before {} appeared", path.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{what}: {} did not appear within 60s", path.display());
}
