//! Real components for end-to-end tests, started with private roots and
//! loopback ports and stopped by PID whatever happens to the test: child
//! processes ([`Daemon`]), Debian's docker-registry ([`Registry`]), and
//! skopeo pushes of OCI layouts.

// Tests start programs and handle their logs and scratch files by path.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// A free port on 127.0.0.1 (bound and released; the registry takes it).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Wait until something accepts on 127.0.0.1:`port`.
pub fn wait_port(port: u16, d: &mut Daemon) {
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(st)) = d.child.try_wait() {
            panic!("{} exited ({st}) before listening on {port}", d.name);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} did not listen on 127.0.0.1:{port} within 60s", d.name);
}

/// Debian's docker-registry (distribution 2.8) on 127.0.0.1.
#[derive(Debug)]
pub struct Registry {
    pub port: u16,
    pub log: PathBuf,
    pub daemon: Daemon,
}

impl Registry {
    /// Start a registry keeping its blobs in `dir`.
    pub fn start(dir: &Path) -> Registry {
        Registry::start_with(dir, "")
    }

    /// Start one with extra configuration (an `auth:` section).
    pub fn start_with(dir: &Path, extra: &str) -> Registry {
        let port = free_port();
        let conf = dir.join("registry.yml");
        std::fs::create_dir_all(dir.join("storage")).unwrap();
        std::fs::write(
            &conf,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}",
                dir.join("storage").display()
            ),
        )
        .unwrap();
        let log = dir.join("registry.log");
        let mut daemon = Daemon::start(
            "docker-registry",
            Command::new("docker-registry").arg("serve").arg(&conf),
            &log,
        );
        wait_port(port, &mut daemon);
        Registry { port, log, daemon }
    }

    /// `127.0.0.1:PORT/NAME`.
    pub fn reference(&self, name: &str) -> String {
        format!("127.0.0.1:{}/{name}", self.port)
    }

    /// Where the log ends now (for [`Registry::blob_gets_by`]).
    pub fn log_mark(&self) -> usize {
        std::fs::read_to_string(&self.log).map_or(0, |l| l.len())
    }

    /// GETs of blob `digest` in the access log after `mark` by a client
    /// whose user agent starts with `agent`.
    pub fn blob_gets_by(&self, mark: usize, digest: &str, agent: &str) -> usize {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.get(mark..)
            .unwrap_or("")
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains(&format!("/blobs/{digest} ")))
            .filter(|l| {
                l.rsplit(" \"")
                    .next()
                    .is_some_and(|ua| ua.starts_with(agent))
            })
            .count()
    }

    /// Requests in the log for blobs (GET of `/v2/.../blobs/`).
    pub fn blob_gets(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
            .count()
    }
}

/// Push an OCI layout (`dir:tag`) to `reference` with skopeo, with a
/// private policy and auth file.
pub fn skopeo_push(work: &Path, layout: &Path, tag: &str, reference: &str) {
    let policy = work.join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let out = Command::new("skopeo")
        .arg("--policy")
        .arg(&policy)
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{reference}"))
        .env("REGISTRY_AUTH_FILE", work.join("auth.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy to {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
