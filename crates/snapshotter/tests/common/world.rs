//! The real components an end-to-end test starts, each with a private
//! root, socket and loopback port, stopped by PID when the test ends
//! (also when it fails): Debian's docker-registry, strata-snapshotter, and
//! containerd 1.6 with a `proxy_plugins` entry for Strata. Also what
//! containerd 1.6 writes under /run/containerd whatever its config says
//! (shim sockets, runc state) is removed again.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{Daemon, wait_for};

/// strata-snapshotter on a root, serving on `sock`.
pub fn start_snapshotter(root: &Path, driver: &str, sock: &Path, log: &Path) -> Daemon {
    let mut d = Daemon::start(
        "strata-snapshotter",
        Command::new(super::snapshotter_bin())
            .arg("--root")
            .arg(root)
            .args(["--driver", driver, "-vv"])
            .arg("--address")
            .arg(sock),
        log,
    );
    wait_for(sock, "strata-snapshotter", &mut d);
    d
}

/// What containerd 1.6 keeps under /run/containerd whatever its config
/// says: its shims' sockets and runc's state.
const RUN_CONTAINERD: &str = "/run/containerd";

/// The containerds of this test process (tests run in threads) and whether
/// /run/containerd existed before the first: the last one out restores it.
static RUN_USERS: std::sync::Mutex<(usize, bool)> = std::sync::Mutex::new((0, false));

/// containerd 1.6, private: root, state, sockets and /opt dir in `dir`;
/// the CRI plugin is off (the tests drive containerd as a CRI client
/// would); Strata is the proxy snapshotter `strata`.
#[derive(Debug)]
pub struct Containerd {
    pub dir: PathBuf,
    pub sock: PathBuf,
    namespaces: Vec<String>,
    run_before: Vec<PathBuf>,
    pub daemon: Option<Daemon>,
}

fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

impl Containerd {
    /// Start it; `namespaces` are those the test uses (their runc state
    /// is removed at the end).
    pub fn start(dir: &Path, strata_sock: &Path, namespaces: &[&str]) -> Containerd {
        // shims outlive the containerd that started them: as a subreaper,
        // this process inherits and reaps them instead of leaving zombies
        let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
        let run_before = {
            let mut u = RUN_USERS.lock().unwrap_or_else(|e| e.into_inner());
            if u.0 == 0 {
                u.1 = Path::new(RUN_CONTAINERD).exists();
            }
            u.0 += 1;
            listing(Path::new(RUN_CONTAINERD))
        };
        std::fs::create_dir_all(dir.join("opt")).unwrap();
        let sock = dir.join("containerd.sock");
        let conf = dir.join("config.toml");
        std::fs::write(
            &conf,
            format!(
                r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.btrfs"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[proxy_plugins.strata]
  type = "snapshot"
  address = "{strata}"
"#,
                d = dir.display(),
                sock = sock.display(),
                strata = strata_sock.display()
            ),
        )
        .unwrap();
        let mut daemon = Daemon::start(
            "containerd",
            Command::new("containerd").arg("--config").arg(&conf),
            &dir.join("containerd.log"),
        );
        wait_for(&sock, "containerd", &mut daemon);
        Containerd {
            dir: dir.to_path_buf(),
            sock,
            namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
            run_before,
            daemon: Some(daemon),
        }
    }

    /// `ctr` against this containerd in namespace `ns`; (success, output).
    pub fn ctr(&self, ns: &str, args: &[&str]) -> (bool, String) {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.sock)
            .args(["--namespace", ns])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    /// `ctr`, which must succeed.
    pub fn ctr_ok(&self, ns: &str, args: &[&str]) -> String {
        let (ok, out) = self.ctr(ns, args);
        assert!(ok, "ctr {args:?} failed:\n{out}");
        out
    }

    fn kill_shims(&self) {
        // shims started by this containerd name its socket on their
        // command line
        let me = self.sock.display().to_string();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("containerd-shim")
                && cmd.contains(&me)
                && let Some(p) = rustix::process::Pid::from_raw(pid)
            {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // shims first, while containerd (their subreaper) can reap them
        self.kill_shims();
        std::thread::sleep(Duration::from_millis(200));
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
        reap_shims();
        let _ = strata_core::mounts::unmount_all_under(&self.dir);
        let mut u = RUN_USERS.lock().unwrap_or_else(|e| e.into_inner());
        u.0 = u.0.saturating_sub(1);
        if u.0 == 0 && !u.1 {
            // none of this existed before: all of it is ours
            let _ = strata_core::mounts::unmount_all_under(Path::new(RUN_CONTAINERD));
            let _ = std::fs::remove_dir_all(RUN_CONTAINERD);
            return;
        }
        // else only what this containerd made (its namespaces' runc state
        // and shim sockets), deepest first
        let mut new: Vec<PathBuf> = listing(Path::new(RUN_CONTAINERD))
            .into_iter()
            .filter(|p| !self.run_before.contains(p))
            .filter(|p| {
                self.namespaces
                    .iter()
                    .any(|n| p.starts_with(Path::new(RUN_CONTAINERD).join("runc").join(n)))
            })
            .collect();
        new.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in new {
            let _ = std::fs::remove_file(&p).or_else(|_| std::fs::remove_dir(&p));
        }
    }
}

/// Reap the containerd shims this process inherited (as a subreaper).
fn reap_shims() {
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let mut waiting = false;
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid ...
            let Some((comm, rest)) = stat.split_once(") ") else {
                continue;
            };
            let mut f = rest.split_whitespace();
            let (state, ppid) = (f.next(), f.next().and_then(|p| p.parse::<i32>().ok()));
            if ppid != Some(me) || !comm.contains("containerd-shim") {
                continue;
            }
            waiting = true;
            if state == Some("Z")
                && let Some(p) = rustix::process::Pid::from_raw(pid)
            {
                let _ = rustix::process::waitpid(Some(p), rustix::process::WaitOptions::NOHANG);
            } else if let Some(p) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
        if !waiting || Instant::now() > end {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
