//! The Strata conformance suite: named cases that every driver passes, run
//! the same way by each driver crate's `cargo test` and by
//! `driver-test --driver NAME`.
//!
//! Each case gets a fresh driver over a fresh root from a [`Harness`] and
//! checks behaviour through the [`Driver`] trait only; it branches on
//! [`Capabilities`], never on driver names. A case that cannot run with
//! the driver's capabilities is skipped with a reason.

// The suite inspects mounted views and scratch directories the way a user
// of a driver would, by path; what it tests is the driver's in-root code.
#![allow(clippy::disallowed_methods)]

pub mod cases;
pub mod fixture;
pub mod images;
pub mod layer;
pub mod listing;
pub mod specs;
pub mod world;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use strata_core::{Capabilities, Change, DiffBase, Driver, LayerId};

pub use cases::{Case, cases};

/// Makes drivers for the suite.
pub trait Harness: Send + Sync {
    fn driver_name(&self) -> &str;
    /// A fresh, empty directory on a file system suitable for the driver.
    fn new_root(&self) -> Result<PathBuf>;
    /// Open the driver on `root` (again, for reopen cases).
    fn open(&self, root: &Path) -> Result<Box<dyn Driver>>;
    /// A second process running `child_main` of this harness: the test
    /// binary and the arguments that make it one. `None`: cases that need
    /// another process are skipped.
    fn child_command(&self) -> Option<std::process::Command> {
        None
    }
}

/// Signals that a case does not apply to this driver.
#[derive(Debug)]
pub struct Skip(pub String);

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "skipped: {}", self.0)
    }
}

impl std::error::Error for Skip {}

/// Skip the current case unless `cond` holds.
pub fn require(cond: bool, why: &str) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(Skip(why.to_string()).into())
    }
}

/// The context a case runs in.
pub struct Ctx<'h> {
    pub h: &'h dyn Harness,
    pub root: PathBuf,
    pub d: Box<dyn Driver>,
    pub caps: Capabilities,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("root", &self.root)
            .field("driver", &self.d.name())
            .finish()
    }
}

pub fn id(s: &str) -> LayerId {
    match LayerId::new(s) {
        Ok(i) => i,
        Err(e) => panic!("test id {s:?}: {e}"),
    }
}

impl Ctx<'_> {
    /// Apply `entries` as a new layer `name` on `parent`.
    pub fn apply(
        &self,
        name: &str,
        parent: Option<&str>,
        entries: &[layer::E],
    ) -> Result<strata_core::ApplyStats> {
        let data = layer::tar(entries);
        self.apply_bytes(name, parent, &data)
    }

    pub fn apply_bytes(
        &self,
        name: &str,
        parent: Option<&str>,
        data: &[u8],
    ) -> Result<strata_core::ApplyStats> {
        let p = parent.map(id);
        let mut r = data;
        self.d
            .apply_diff(&id(name), p.as_ref(), &mut r)
            .with_context(|| format!("apply layer {name}"))
    }

    /// Mount, run `f` on the view, unmount (also when `f` fails).
    pub fn with_mount<T>(&self, name: &str, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
        let i = id(name);
        let p = self.d.mount(&i).with_context(|| format!("mount {name}"))?;
        let r = f(&p);
        self.d
            .unmount(&i)
            .with_context(|| format!("unmount {name}"))?;
        r
    }

    /// Listing of a layer's mounted view (directory mtimes left out).
    pub fn view(&self, name: &str) -> Result<Vec<String>> {
        self.with_mount(name, |p| {
            listing::listing(
                p,
                listing::ListOpts {
                    no_dir_mtime: true,
                    ..Default::default()
                },
            )
        })
    }

    /// `A /path` lines of `changes` against the parent.
    pub fn changes(&self, name: &str) -> Result<Vec<String>> {
        Ok(self
            .d
            .changes(&id(name), DiffBase::Parent)
            .with_context(|| format!("changes of {name}"))?
            .iter()
            .map(Change::to_string)
            .collect())
    }

    /// The diff of `name` against its parent, as bytes.
    pub fn diff(&self, name: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.d
            .diff(&id(name), DiffBase::Parent, &mut out)
            .with_context(|| format!("diff of {name}"))?;
        Ok(out)
    }

    /// Reopen the driver on the same root (what a restart does).
    pub fn reopen(&mut self) -> Result<()> {
        self.d = self.h.open(&self.root)?;
        Ok(())
    }

    /// The expected merged view of layers applied one on another, built
    /// with the core engine into a plain directory (the reference).
    pub fn reference(&self, layers: &[&[layer::E]]) -> Result<Vec<String>> {
        let dir = tempfile::Builder::new()
            .prefix("strata-ref.")
            .tempdir_in(&self.root)?;
        let fd = strata_core::fsx::open_dir_path(dir.path())?;
        for l in layers {
            let data = layer::tar(l);
            strata_core::archive::apply(
                std::os::fd::AsFd::as_fd(&fd),
                dir.path(),
                &mut &data[..],
                Default::default(),
            )?;
        }
        let v = listing::listing(
            dir.path(),
            listing::ListOpts {
                no_dir_mtime: true,
                no_root: true,
                ..Default::default()
            },
        )?;
        Ok(v)
    }
}

/// Compare listings, failing with the differing lines.
pub fn same_listing(what: &str, got: &[String], want: &[String]) -> Result<()> {
    let strip = |v: &[String]| -> Vec<String> {
        v.iter().filter(|l| !l.starts_with("/ ")).cloned().collect()
    };
    let (g, w) = (strip(got), strip(want));
    if g != w {
        bail!(
            "{what}: listings differ (- expected, + got):{}",
            listing::diff_listings(&w, &g)
        );
    }
    Ok(())
}

/// Remove every layer of a driver, children before parents.
pub fn purge(d: &dyn Driver) -> Result<()> {
    loop {
        let layers = d.layers()?;
        if layers.is_empty() {
            return Ok(());
        }
        let parents: std::collections::HashSet<_> =
            layers.iter().filter_map(|l| l.parent.clone()).collect();
        let leaves: Vec<_> = layers.iter().filter(|l| !parents.contains(&l.id)).collect();
        if leaves.is_empty() {
            bail!("layers form a cycle: {layers:?}");
        }
        for l in leaves {
            d.remove(&l.id)
                .with_context(|| format!("removing layer {} after the case", l.id))?;
        }
    }
}

/// Outcome of one case.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Failed(String),
    Skipped(String),
}

/// How long one case may run before it counts as hung.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(600);

/// Run one case on a fresh root; never panics, never leaves mounts.
pub fn run_case(h: Arc<dyn Harness>, case: &Case) -> (Outcome, Duration) {
    let start = Instant::now();
    let root = match h.new_root() {
        Ok(r) => r,
        Err(e) => {
            return (
                Outcome::Failed(format!("making a root: {e:#}")),
                start.elapsed(),
            );
        }
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let run = case.run.clone();
    let h2 = h.clone();
    let root2 = root.clone();
    let handle = std::thread::Builder::new()
        .name(case.name.to_string())
        .stack_size(16 << 20)
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<()> {
                let d = h2.open(&root2).context("opening the driver")?;
                let caps = d.capabilities();
                let mut ctx = Ctx {
                    h: h2.as_ref(),
                    root: root2.clone(),
                    d,
                    caps,
                };
                let r = run(&mut ctx);
                let c = ctx.d.cleanup().context("driver cleanup");
                // remove every layer through the driver (children first):
                // backends whose layers are not plain directories (btrfs
                // subvolumes) need it, and it checks that removal works
                let p = purge(ctx.d.as_ref());
                r?;
                c?;
                p
            }));
            let _ = tx.send(r);
        });
    let outcome = match handle {
        Err(e) => Outcome::Failed(format!("spawning the case thread: {e}")),
        Ok(_) => match rx.recv_timeout(CASE_TIMEOUT) {
            Ok(Ok(Ok(()))) => Outcome::Ok,
            Ok(Ok(Err(e))) => match e.downcast_ref::<Skip>() {
                Some(s) => Outcome::Skipped(s.0.clone()),
                None => Outcome::Failed(format!("{e:#}")),
            },
            Ok(Err(panic)) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                Outcome::Failed(format!("panicked: {msg}"))
            }
            Err(_) => Outcome::Failed(format!("hung for more than {CASE_TIMEOUT:?}")),
        },
    };
    if let Err(e) = fixture::teardown_dir(&root) {
        let cleanup = format!("cleaning up the root: {e:#}");
        return (
            match outcome {
                Outcome::Ok => Outcome::Failed(cleanup),
                o => o,
            },
            start.elapsed(),
        );
    }
    (outcome, start.elapsed())
}

/// Entry point of the child process some cases spawn (see
/// [`Harness::child_command`]): `CHILD_ENV` holds `op root id`.
pub const CHILD_ENV: &str = "STRATA_CONFORMANCE_CHILD";

/// If this process was started as a conformance child, do the operation
/// and exit; otherwise return.
pub fn child_main_if_requested(h: &dyn Harness) {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let code = match child_op(h, &spec) {
        Ok(out) => {
            println!("{out}");
            0
        }
        Err(e) => {
            eprintln!("child {spec}: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn child_op(h: &dyn Harness, spec: &str) -> Result<String> {
    let mut it = spec.splitn(3, ' ');
    let (op, root, name) = (
        it.next().unwrap_or_default(),
        it.next().ok_or_else(|| anyhow!("no root"))?,
        it.next().ok_or_else(|| anyhow!("no id"))?,
    );
    let d = h.open(Path::new(root))?;
    let i = id(name);
    match op {
        "mount" => Ok(d.mount(&i)?.display().to_string()),
        "unmount" => {
            d.unmount(&i)?;
            Ok(String::new())
        }
        "apply-stdin" => {
            // applies whatever stdin gives; the parent kills us midway
            let mut stdin = std::io::stdin();
            let s = d.apply_diff(&i, None, &mut stdin)?;
            Ok(s.diff_id.to_string())
        }
        _ => bail!("unknown child op {op}"),
    }
}

/// Is this run under CI (where skipping a privileged backend is a failure)?
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// A harness over a [`fixture::Scratch`] made on first use (so a child
/// process, which only opens roots, never makes one).
pub struct ScratchHarness {
    name: String,
    backing: fixture::Backing,
    base: Option<PathBuf>,
    scratch: std::sync::OnceLock<Result<fixture::Scratch, String>>,
    #[allow(clippy::type_complexity)]
    open_fn: Box<dyn Fn(&Path) -> strata_core::Result<Box<dyn Driver>> + Send + Sync>,
}

impl std::fmt::Debug for ScratchHarness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScratchHarness")
            .field("name", &self.name)
            .field("backing", &self.backing)
            .finish()
    }
}

impl ScratchHarness {
    pub fn new(
        name: &str,
        backing: fixture::Backing,
        base: Option<PathBuf>,
        open_fn: impl Fn(&Path) -> strata_core::Result<Box<dyn Driver>> + Send + Sync + 'static,
    ) -> Self {
        ScratchHarness {
            name: name.to_string(),
            backing,
            base,
            scratch: std::sync::OnceLock::new(),
            open_fn: Box::new(open_fn),
        }
    }

    /// Make the scratch area now (to report a setup error early).
    pub fn prepare(&self) -> Result<PathBuf> {
        match self.scratch.get_or_init(|| {
            fixture::Scratch::new(self.backing.clone(), self.base.as_deref())
                .map_err(|e| format!("{e:#}"))
        }) {
            Ok(s) => Ok(s.path()),
            Err(e) => Err(anyhow!("setting up {}: {e}", self.backing.describe())),
        }
    }
}

impl Harness for ScratchHarness {
    fn driver_name(&self) -> &str {
        &self.name
    }
    fn new_root(&self) -> Result<PathBuf> {
        self.prepare()?;
        match self.scratch.get() {
            Some(Ok(s)) => s.fresh_dir("root"),
            _ => Err(anyhow!("no scratch area")),
        }
    }
    fn open(&self, root: &Path) -> Result<Box<dyn Driver>> {
        Ok((self.open_fn)(root)?)
    }
    fn child_command(&self) -> Option<std::process::Command> {
        // the same program with the same arguments: it opens the same
        // driver, sees CHILD_ENV and does only the child's operation
        let exe = std::env::current_exe().ok()?;
        let mut c = std::process::Command::new(exe);
        c.args(std::env::args_os().skip(1));
        Some(c)
    }
}

/// Run the whole suite through libtest-mimic (for `cargo test` of a driver
/// crate). `privileged`: the backend needs root; without it every case is
/// reported ignored with the reason, and under `CI=true` that fails.
/// Returns the process exit code.
pub fn libtest_main(h: Arc<dyn Harness>, privileged_reason: Option<String>) -> i32 {
    child_main_if_requested(h.as_ref());
    let args = libtest_mimic::Arguments::from_args();
    if let Some(why) = &privileged_reason {
        eprintln!("conformance suite of {}: skipped: {why}", h.driver_name());
        if under_ci() {
            eprintln!("CI=true: a privileged backend must run here; failing");
            return 1;
        }
    }
    // capabilities decide which cases are ignored (with the reason printed)
    let caps = if privileged_reason.is_none() {
        match h.new_root().and_then(|r| {
            let c = h.open(&r).map(|d| d.capabilities());
            let _ = fixture::teardown_dir(&r);
            c
        }) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!(
                    "conformance suite of {}: cannot open the driver: {e:#}",
                    h.driver_name()
                );
                return 1;
            }
        }
    } else {
        None
    };
    let have_child = h.child_command().is_some();
    let trials = cases()
        .into_iter()
        .map(|c| {
            let h = h.clone();
            let unmet = caps.as_ref().and_then(|caps| c.unmet(caps, have_child));
            if let Some(why) = &unmet {
                eprintln!("{}: ignored: {why}", c.name);
            }
            let ignored = privileged_reason.is_some() || unmet.is_some();
            let name = c.name;
            libtest_mimic::Trial::test(name, move || match run_case(h, &c) {
                (Outcome::Ok, _) => Ok(()),
                (Outcome::Skipped(r), _) => {
                    eprintln!("{name}: skipped: {r}");
                    Ok(())
                }
                (Outcome::Failed(r), _) => Err(r.into()),
            })
            .with_ignored_flag(ignored)
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    if conclusion.has_failed() { 101 } else { 0 }
}
