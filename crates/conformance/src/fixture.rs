//! Scratch file systems for tests: a temp dir, a tmpfs, or a loop-mounted
//! image (btrfs, ext4, xfs). Everything is unmounted and removed when the
//! [`Scratch`] is dropped, also when a test fails or panics; loop devices
//! are set up with autoclear, so they detach with the last unmount.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use strata_core::{fsx, mounts};

/// What a scratch area lives on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// A directory under the system temp dir.
    TempDir,
    /// A fresh tmpfs (root only).
    Tmpfs,
    /// A loop-mounted image of this file system type and size (root only).
    Loop { fstype: String, size_mb: u64 },
}

impl Backing {
    pub fn parse(s: &str) -> Result<Backing> {
        Ok(match s {
            "tmp" | "tempdir" => Backing::TempDir,
            "tmpfs" => Backing::Tmpfs,
            "btrfs" | "ext4" | "xfs" => Backing::Loop {
                fstype: s.to_string(),
                size_mb: 4096,
            },
            _ => bail!("unknown backing {s:?} (tempdir, tmpfs, btrfs, ext4, xfs)"),
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Backing::TempDir => "temp dir".into(),
            Backing::Tmpfs => "tmpfs".into(),
            Backing::Loop { fstype, size_mb } => format!("loop-mounted {fstype} ({size_mb} MiB)"),
        }
    }
}

/// A scratch area, removed on drop.
#[derive(Debug)]
pub struct Scratch {
    dir: Option<tempfile::TempDir>,
    mount: Option<PathBuf>,
    backing: Backing,
    counter: AtomicU64,
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Is `prog` on PATH (or in /sbin, /usr/sbin)?
pub fn have_program(prog: &str) -> bool {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push("/sbin".into());
    dirs.push("/usr/sbin".into());
    dirs.iter().any(|d| d.join(prog).exists())
}

/// May a privileged test run here? It needs root and `programs`. When it
/// cannot, the reason is printed and `false` returned; under `CI=true` that
/// is a failure (a panic naming `what`).
pub fn privileged_test_can_run(what: &str, programs: &[&str]) -> bool {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| !have_program(p))
        .collect();
    let why = if !fsx::is_root() {
        "needs root".to_string()
    } else if !missing.is_empty() {
        format!("needs {} (./ci/setup.sh installs them)", missing.join(", "))
    } else {
        return true;
    };
    assert!(
        !crate::under_ci(),
        "CI=true: {what} must run here, but it {why}"
    );
    eprintln!("skipping {what}: it {why}");
    false
}

impl Scratch {
    /// Make a scratch area. `base` is where the temp dir goes (default: the
    /// system temp dir).
    pub fn new(backing: Backing, base: Option<&Path>) -> Result<Scratch> {
        let parent = base.map_or_else(std::env::temp_dir, Path::to_path_buf);
        sweep_dead(&parent);
        let dir = match base {
            Some(b) => tempfile::Builder::new()
                .prefix("strata-test.")
                .tempdir_in(b)?,
            None => tempfile::Builder::new().prefix("strata-test.").tempdir()?,
        };
        let mut s = Scratch {
            dir: Some(dir),
            mount: None,
            backing: backing.clone(),
            counter: AtomicU64::new(0),
        };
        let top = s.top();
        // who owns this area, so a later run can clean up after a process
        // that was killed before its Drop ran (see sweep_dead)
        std::fs::write(top.join(OWNER_FILE), std::process::id().to_string())
            .with_context(|| format!("writing {}", top.join(OWNER_FILE).display()))?;
        match backing {
            Backing::TempDir => {}
            Backing::Tmpfs => {
                let mp = top.join("mnt");
                std::fs::create_dir(&mp)?;
                rustix::mount::mount(
                    c"strata-tmpfs",
                    &mp,
                    c"tmpfs",
                    rustix::mount::MountFlags::empty(),
                    c"mode=0755,size=8g",
                )
                .with_context(|| format!("mounting tmpfs on {}", mp.display()))?;
                s.mount = Some(mp);
            }
            Backing::Loop { fstype, size_mb } => {
                let img = top.join(format!("{fstype}.img"));
                let f = std::fs::File::create(&img)?;
                f.set_len(size_mb << 20)?;
                drop(f);
                let mkfs = format!("mkfs.{fstype}");
                if !have_program(&mkfs) {
                    bail!("{mkfs} is not installed (apt-get install btrfs-progs xfsprogs)");
                }
                let mut c = Command::new(&mkfs);
                match fstype.as_str() {
                    "btrfs" => c.args(["-q", "-f"]),
                    "xfs" => c.args(["-q", "-f"]),
                    // inode tables and journal initialised now, not by a
                    // background thread that would disturb measurements
                    _ => c.args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"]),
                };
                run(c.arg(&img))?;
                let mp = top.join("mnt");
                std::fs::create_dir(&mp)?;
                run(Command::new("mount")
                    .arg("-o")
                    .arg("loop")
                    .arg("-t")
                    .arg(&fstype)
                    .arg(&img)
                    .arg(&mp))?;
                s.mount = Some(mp);
            }
        }
        Ok(s)
    }

    fn top(&self) -> PathBuf {
        self.dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default()
    }

    /// The scratch area's usable directory.
    pub fn path(&self) -> PathBuf {
        match &self.mount {
            Some(m) => m.clone(),
            None => self.top(),
        }
    }

    pub fn backing(&self) -> &Backing {
        &self.backing
    }

    /// A fresh, empty directory inside the scratch area.
    pub fn fresh_dir(&self, prefix: &str) -> Result<PathBuf> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let p = self.path().join(format!("{prefix}-{n}"));
        std::fs::create_dir(&p)?;
        Ok(p)
    }
}

/// The file in a scratch area's top dir naming the pid that made it.
const OWNER_FILE: &str = "owner.pid";

/// Is the process `pid` still alive? Unknown counts as alive.
fn pid_alive(pid: i32) -> bool {
    match rustix::process::Pid::from_raw(pid) {
        Some(p) => !matches!(
            rustix::process::test_kill_process(p),
            Err(rustix::io::Errno::SRCH)
        ),
        None => true,
    }
}

/// Clean up the scratch areas under `parent` left by processes that died
/// without running their Drop (killed by a signal, a timeout, a power cut):
/// unmount what is mounted there (loop devices detach with it) and remove
/// the dir. Areas without an owner file, or whose owner is alive, are left
/// alone. Best effort: a failure is reported and the next run tries again.
pub fn sweep_dead(parent: &Path) {
    let Ok(rd) = std::fs::read_dir(parent) else {
        return;
    };
    for ent in rd.flatten() {
        let name = ent.file_name();
        if !name.as_encoded_bytes().starts_with(b"strata-test.") {
            continue;
        }
        let top = ent.path();
        let Ok(owner) = std::fs::read_to_string(top.join(OWNER_FILE)) else {
            continue;
        };
        let Ok(pid) = owner.trim().parse::<i32>() else {
            continue;
        };
        if pid_alive(pid) {
            continue;
        }
        eprintln!(
            "note: cleaning up {} left by process {pid}, which is gone",
            top.display()
        );
        if let Err(e) = teardown_dir(&top) {
            eprintln!("warning: cleaning up {}: {e:#}", top.display());
        }
    }
}

/// Unmount everything at or below `dir` and remove it.
pub fn teardown_dir(dir: &Path) -> Result<()> {
    mounts::unmount_all_under(dir)
        .with_context(|| format!("unmounting under {}", dir.display()))?;
    fsx::remove_tree(dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(())
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let top = self.top();
        if let Err(e) = mounts::unmount_all_under(&top) {
            eprintln!("warning: unmounting under {}: {e}", top.display());
        }
        if let Some(d) = self.dir.take() {
            let p = d.path().to_path_buf();
            if let Err(e) = fsx::remove_tree(&p) {
                eprintln!("warning: removing {}: {e}", p.display());
            }
            let _ = d.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pid that belonged to a process that has exited and been reaped.
    fn dead_pid() -> i32 {
        let mut c = Command::new("true").spawn().expect("spawning true");
        let pid = c.id() as i32;
        c.wait().expect("waiting for true");
        pid
    }

    #[test]
    fn sweep_removes_areas_of_dead_owners_only() {
        let parent = tempfile::tempdir().expect("tempdir");
        let dead = parent.path().join("strata-test.dead");
        let live = parent.path().join("strata-test.live");
        let unowned = parent.path().join("strata-test.unowned");
        for d in [&dead, &live, &unowned] {
            std::fs::create_dir_all(d.join("mnt/sub")).expect("mkdir");
        }
        std::fs::write(dead.join(OWNER_FILE), dead_pid().to_string()).expect("write");
        std::fs::write(live.join(OWNER_FILE), std::process::id().to_string()).expect("write");
        let root = rustix::process::geteuid().is_root();
        if root {
            rustix::mount::mount(
                c"strata-tmpfs",
                dead.join("mnt"),
                c"tmpfs",
                rustix::mount::MountFlags::empty(),
                c"size=1m",
            )
            .expect("mounting tmpfs");
            std::fs::write(dead.join("mnt/f"), b"x").expect("write");
        } else {
            eprintln!("not root: sweeping a dead area without a mount in it");
        }
        sweep_dead(parent.path());
        assert!(!dead.exists(), "the dead owner's area is removed");
        assert!(live.join("mnt/sub").exists(), "a live owner's area stays");
        assert!(
            unowned.join("mnt/sub").exists(),
            "an area without owner stays"
        );
        let left = mounts::mounts_under(parent.path()).expect("mountinfo");
        assert!(left.is_empty(), "mounts left: {left:?}");
    }
}
