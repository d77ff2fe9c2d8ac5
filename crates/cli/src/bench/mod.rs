//! `driver-test bench`: the same workload over each backend, side by side
//! with the plain tools (GNU tar, cp -a, mount -t overlay) on the same file
//! system in the same run. Every timed operation runs in a child process
//! (`driver-test bench-op`) that reports its own time and peak RSS.
//!
//! Rooms: `targets` (what is measured), `groups` (one function per group
//! of figures), `work` (inputs made on the way), [`op`] (the child side),
//! [`workload`] (the shared workload, or a synthetic one), `report` (table
//! and ratios).

mod groups;
pub mod op;
mod report;
mod targets;
mod work;
pub mod workload;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use strata_conformance::fixture::{Backing, Scratch, have_program, teardown_dir};
use strata_core::{Driver, DriverOptions, LayerId};

pub use report::{ratios, table};
pub use targets::{Target, targets};
pub use work::many_files;

use groups::Place;
use op::OpResult;
use workload::Workload;

/// One measured figure (several runs).
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub target: String,
    pub group: String,
    pub op: String,
    pub seconds: Vec<f64>,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub bytes: u64,
    pub entries: u64,
    pub peak_rss_kb: u64,
    pub note: String,
}

pub(super) fn stats(v: &[f64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let med = if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    (med, s[0], s[s.len() - 1])
}

/// A bench run.
#[derive(Debug)]
pub struct Bench {
    pub runs: usize,
    pub workload: Workload,
    pub records: Vec<Record>,
    pub root: Option<PathBuf>,
    exe: PathBuf,
    verbose: bool,
}

#[derive(Debug)]
pub(super) struct Samples {
    pub(super) seconds: Vec<f64>,
    pub(super) bytes: u64,
    pub(super) entries: u64,
    pub(super) rss: u64,
    pub(super) note: String,
}

impl Samples {
    pub(super) fn new() -> Self {
        Samples {
            seconds: Vec::new(),
            bytes: 0,
            entries: 0,
            rss: 0,
            note: String::new(),
        }
    }
    pub(super) fn add(&mut self, r: &OpResult) {
        self.seconds.push(r.seconds);
        self.bytes = r.bytes;
        self.entries = r.entries;
        self.rss = self.rss.max(r.peak_rss_kb);
        if !r.method.is_empty() {
            self.note = r.method.clone();
        }
    }
}

pub(super) fn lid(s: &str) -> Result<LayerId> {
    Ok(LayerId::new(s)?)
}

impl Bench {
    pub fn new(
        workload: Workload,
        runs: usize,
        root: Option<PathBuf>,
        verbose: bool,
    ) -> Result<Self> {
        Ok(Bench {
            runs: runs.max(1),
            workload,
            records: Vec::new(),
            root,
            exe: std::env::current_exe()?,
            verbose,
        })
    }

    pub(super) fn record(&mut self, t: &Target, group: &str, op: &str, s: Samples) {
        let (median, min, max) = stats(&s.seconds);
        if self.verbose {
            eprintln!("  {:<10} {:<12} {:<44} {:>9.4}s", t.name, group, op, median);
        }
        self.records.push(Record {
            target: t.name.to_string(),
            group: group.to_string(),
            op: op.to_string(),
            seconds: s.seconds,
            median,
            min,
            max,
            bytes: s.bytes,
            entries: s.entries,
            peak_rss_kb: s.rss,
            note: s.note,
        });
    }

    /// Run one operation in a child process.
    pub(super) fn op(
        &self,
        t: &Target,
        root: &Path,
        opts: &[String],
        args: &[&str],
    ) -> Result<OpResult> {
        let mut c = Command::new(&self.exe);
        c.arg("bench-op")
            .arg("--driver")
            .arg(t.driver)
            .arg("--root")
            .arg(root);
        for o in opts {
            c.arg("--opt").arg(o);
        }
        c.arg("--").args(args);
        let out = c.output().context("running bench-op")?;
        if !out.status.success() {
            bail!(
                "bench-op {args:?} on {}: {}",
                t.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let line = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(line.trim()).with_context(|| format!("bench-op output {line:?}"))
    }

    pub(super) fn open(&self, t: &Target, root: &Path, opts: &[String]) -> Result<Box<dyn Driver>> {
        Ok(strata::registry()
            .factory(t.driver)?
            .open(root, DriverOptions::parse(opts)?)?)
    }

    /// Measure every target.
    pub fn run(&mut self, targets: &[Target]) -> Result<()> {
        for t in targets {
            if let Backing::Loop { fstype, .. } = &t.backing
                && self.root.is_none()
            {
                if !strata_core::fsx::is_root() {
                    eprintln!(
                        "bench: skipping {}: a loop-mounted scratch file system needs root",
                        t.name
                    );
                    continue;
                }
                if !have_program(&format!("mkfs.{fstype}")) {
                    eprintln!("bench: skipping {}: mkfs.{fstype} missing", t.name);
                    continue;
                }
            }
            let scratch = match &self.root {
                Some(_) => None,
                None => Some(Scratch::new(
                    t.backing.clone(),
                    Some(Path::new("/var/tmp")),
                )?),
            };
            let base = match (&self.root, &scratch) {
                (Some(r), _) => r.clone(),
                (None, Some(s)) => s.path(),
                _ => bail!("no place to run"),
            };
            let root = base.join(format!("bench-{}", t.name.replace('@', "-")));
            std::fs::create_dir_all(&root)?;
            if let Err(e) = strata::registry().factory(t.driver)?.supported(&root) {
                eprintln!("bench: skipping {}: {e}", t.name);
                continue;
            }
            eprintln!("bench: {} on {}", t.name, t.backing.describe());
            let r = self.target(t, &root, &base);
            // leave nothing mounted, whatever happened
            if let Ok(d) = self.open(t, &root, &t.opts) {
                let _ = d.cleanup();
            }
            let _ = teardown_dir(&root);
            drop(scratch);
            r.with_context(|| format!("bench of {}", t.name))?;
        }
        Ok(())
    }

    fn target(&mut self, t: &Target, root: &Path, scratch: &Path) -> Result<()> {
        let cache = scratch.join("bench-cache");
        std::fs::create_dir_all(&cache)?;
        let p = Place {
            root,
            scratch,
            cache,
        };
        self.apply_group(t, &p)?;
        self.tar_reference(t, &p)?;
        self.create_group(t, &p)?;
        self.create_references(t, &p)?;
        self.deep_group(t, &p)?;
        self.small_change_group(t, &p)?;
        self.diff_group(t, &p)?;
        self.scale(t, &p)
    }

    /// Merge samples into an existing record of the same name, or add one.
    pub(super) fn records_push_merge(&mut self, t: &Target, group: &str, op: &str, s: Samples) {
        if let Some(r) = self
            .records
            .iter_mut()
            .find(|r| r.target == t.name && r.op == op)
        {
            r.seconds.extend(s.seconds);
            let (m, lo, hi) = stats(&r.seconds);
            r.median = m;
            r.min = lo;
            r.max = hi;
            r.peak_rss_kb = r.peak_rss_kb.max(s.rss);
            return;
        }
        self.record(t, group, op, s);
    }
}
