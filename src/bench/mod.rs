//! `driver-test bench`: the same workload over each backend, side by side
//! with the plain tools (GNU tar, cp -a, mount -t overlay) on the same file
//! system in the same run. Every timed operation runs in a child process
//! (`driver-test bench-op`) that reports its own time and peak RSS.

pub mod op;
pub mod workload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use strata_conformance::fixture::{Backing, Scratch, have_program, teardown_dir};
use strata_core::{CreateOpts, Driver, DriverOptions, LayerId};

use op::OpResult;
use workload::Workload;

/// One backend configuration to measure.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: &'static str,
    pub driver: &'static str,
    pub backing: Backing,
    pub opts: Vec<String>,
    /// Options that force the naive diff (for native vs naive).
    pub naive_opts: Option<Vec<String>>,
}

pub fn targets(which: &str) -> Result<Vec<Target>> {
    let loop_fs = |fs: &str| Backing::Loop {
        fstype: fs.into(),
        size_mb: 24576,
    };
    let all = vec![
        Target {
            name: "vfs",
            driver: "vfs",
            backing: loop_fs("ext4"),
            opts: vec![],
            naive_opts: None,
        },
        Target {
            name: "vfs@btrfs",
            driver: "vfs",
            backing: loop_fs("btrfs"),
            opts: vec![],
            naive_opts: None,
        },
        Target {
            name: "vfs@btrfs-copy",
            driver: "vfs",
            backing: loop_fs("btrfs"),
            opts: vec!["vfs.no_reflink=true".into()],
            naive_opts: None,
        },
        Target {
            name: "overlay2",
            driver: "overlay2",
            backing: loop_fs("ext4"),
            opts: vec![],
            naive_opts: Some(vec!["overlay2.naive_diff=true".into()]),
        },
        Target {
            name: "btrfs",
            driver: "btrfs",
            backing: loop_fs("btrfs"),
            opts: vec![],
            naive_opts: Some(vec!["btrfs.naive_diff=true".into()]),
        },
    ];
    if which == "all" {
        return Ok(all);
    }
    let v: Vec<Target> = all
        .into_iter()
        .filter(|t| which.split(',').any(|w| w == t.name || w == t.driver))
        .collect();
    if v.is_empty() {
        bail!(
            "unknown bench target {which:?} (vfs, vfs@btrfs, vfs@btrfs-copy, overlay2, btrfs, all)"
        );
    }
    Ok(v)
}

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

fn stats(v: &[f64]) -> (f64, f64, f64) {
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
struct Samples {
    seconds: Vec<f64>,
    bytes: u64,
    entries: u64,
    rss: u64,
    note: String,
}

impl Samples {
    fn new() -> Self {
        Samples {
            seconds: Vec::new(),
            bytes: 0,
            entries: 0,
            rss: 0,
            note: String::new(),
        }
    }
    fn add(&mut self, r: &OpResult) {
        self.seconds.push(r.seconds);
        self.bytes = r.bytes;
        self.entries = r.entries;
        self.rss = self.rss.max(r.peak_rss_kb);
        if !r.method.is_empty() {
            self.note = r.method.clone();
        }
    }
}

fn lid(s: &str) -> Result<LayerId> {
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

    fn record(&mut self, t: &Target, group: &str, op: &str, s: Samples) {
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
    fn op(&self, t: &Target, root: &Path, opts: &[String], args: &[&str]) -> Result<OpResult> {
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

    fn open(&self, t: &Target, root: &Path, opts: &[String]) -> Result<Box<dyn Driver>> {
        Ok(crate::registry()
            .factory(t.driver)?
            .open(root, DriverOptions::parse(opts)?)?)
    }

    /// Measure every target.
    pub fn run(&mut self, targets: &[Target]) -> Result<()> {
        for t in targets {
            if t.driver != "vfs" && !strata_core::fsx::is_root() {
                eprintln!("bench: skipping {}: needs root", t.name);
                continue;
            }
            if let Backing::Loop { fstype, .. } = &t.backing
                && self.root.is_none()
                && !have_program(&format!("mkfs.{fstype}"))
            {
                eprintln!("bench: skipping {}: mkfs.{fstype} missing", t.name);
                continue;
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
            if let Err(e) = crate::registry().factory(t.driver)?.supported(&root) {
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
        let w = self.workload.clone();
        let opts = t.opts.clone();
        let runs = self.runs;
        let cache = scratch.join("bench-cache");
        std::fs::create_dir_all(&cache)?;

        // ---- apply: each layer of the main image, plain / gzip / zstd
        let mut variants: Vec<(&str, Vec<PathBuf>)> =
            vec![("plain", w.main.iter().map(|l| l.path.clone()).collect())];
        for (kind, ext) in [("gzip", "gz"), ("zstd", "zst")] {
            let mut v = Vec::new();
            for l in &w.main {
                let p = cache.join(format!("{}.tar.{ext}", l.name));
                if !p.exists() {
                    compress(&l.path, &p, kind)?;
                }
                v.push(p);
            }
            variants.push((kind, v));
        }
        for (kind, files) in &variants {
            let mut per_layer: Vec<Samples> = w.main.iter().map(|_| Samples::new()).collect();
            let mut whole = Samples::new();
            for run in 0..runs {
                let mut parent = "-".to_string();
                let mut total = 0.0;
                let (mut bytes, mut entries, mut rss) = (0u64, 0u64, 0u64);
                for (i, (l, f)) in w.main.iter().zip(files).enumerate() {
                    let id = if *kind == "plain" && run == 0 {
                        format!("img-{}", l.name)
                    } else {
                        format!("a-{kind}-{run}-{}", l.name)
                    };
                    let f = f.display().to_string();
                    let r = self.op(t, root, &opts, &["apply", &id, &parent, &f])?;
                    total += r.seconds;
                    bytes += r.bytes;
                    entries += r.entries;
                    rss = rss.max(r.peak_rss_kb);
                    per_layer[i].add(&r);
                    parent = id;
                }
                whole.seconds.push(total);
                whole.bytes = bytes;
                whole.entries = entries;
                whole.rss = rss;
                // remove this run's copy (the removal of the big layer is
                // itself a measured figure)
                if !(*kind == "plain" && run == 0) {
                    self.op(t, root, &opts, &["remove", &format!("a-{kind}-{run}-mod")])?;
                    let r = self.op(
                        t,
                        root,
                        &opts,
                        &["remove", &format!("a-{kind}-{run}-sitepkgs")],
                    )?;
                    if *kind == "plain" {
                        let mut s = Samples::new();
                        s.add(&r);
                        self.records_push_merge(t, "remove", "remove the many-files layer", s);
                    }
                    self.op(t, root, &opts, &["remove", &format!("a-{kind}-{run}-base")])?;
                }
            }
            for (i, s) in per_layer.into_iter().enumerate() {
                self.record(t, "apply", &format!("apply {} ({kind})", w.main[i].name), s);
            }
            self.record(t, "apply", &format!("apply whole image ({kind})"), whole);
        }
        // reference: GNU tar -x of the same tars onto the same file system
        if have_program("tar") {
            let mut s = Samples::new();
            let mut per: Vec<Samples> = w.main.iter().map(|_| Samples::new()).collect();
            for run in 0..runs {
                let dst = scratch.join(format!("tar-x-{run}"));
                std::fs::create_dir_all(&dst)?;
                let mut total = 0.0;
                for (i, l) in w.main.iter().enumerate() {
                    let t0 = Instant::now();
                    let st = Command::new("tar")
                        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
                        .arg(&l.path)
                        .arg("-C")
                        .arg(&dst)
                        .status()?;
                    let secs = t0.elapsed().as_secs_f64();
                    if !st.success() {
                        bail!("tar -x of {} failed", l.path.display());
                    }
                    per[i].seconds.push(secs);
                    per[i].bytes = l.bytes;
                    total += secs;
                }
                s.seconds.push(total);
                s.bytes = w.main.iter().map(|l| l.bytes).sum();
                teardown_dir(&dst)?;
            }
            for (i, p) in per.into_iter().enumerate() {
                self.record(
                    t,
                    "apply",
                    &format!("reference: tar -x {}", w.main[i].name),
                    p,
                );
            }
            self.record(t, "apply", "reference: tar -x whole image", s);
        }

        // ---- create and mount on the image
        let top = "img-mod";
        let mut c_ro = Samples::new();
        let mut c_rw = Samples::new();
        let mut m3 = Samples::new();
        let mut c_rw_m = Samples::new();
        for run in 0..runs {
            let ro = format!("c-ro-{run}");
            let rw = format!("c-rw-{run}");
            c_ro.add(&self.op(t, root, &opts, &["create", &ro, top])?);
            c_rw.add(&self.op(t, root, &opts, &["create-rw", &rw, top])?);
            m3.add(&self.op(t, root, &opts, &["mount", &rw])?);
            self.op(t, root, &opts, &["unmount", &rw])?;
            let both = format!("c-rwm-{run}");
            c_rw_m.add(&self.op(t, root, &opts, &["create-rw-mount", &both, top])?);
            self.op(t, root, &opts, &["unmount", &both])?;
            for i in [&ro, &rw, &both] {
                self.op(t, root, &opts, &["remove", i])?;
            }
        }
        self.record(t, "create", "create child of the image", c_ro);
        self.record(t, "create", "create rw layer on the image", c_rw);
        self.record(t, "create", "mount rw layer (3-layer image)", m3);
        self.record(t, "create", "create rw + mount", c_rw_m);
        // reference: cp -a of the image's tree, and a bare mount -t overlay
        {
            let d = self.open(t, root, &opts)?;
            let view = d.mount(&lid(top)?)?;
            let mut s = Samples::new();
            for run in 0..runs {
                let dst = scratch.join(format!("cp-a-{run}"));
                let t0 = Instant::now();
                let st = Command::new("cp").arg("-a").arg(&view).arg(&dst).status()?;
                s.seconds.push(t0.elapsed().as_secs_f64());
                if !st.success() {
                    bail!("cp -a failed");
                }
                teardown_dir(&dst)?;
            }
            d.unmount(&lid(top)?)?;
            self.record(t, "create", "reference: cp -a of the image tree", s);
            if t.driver == "overlay2" {
                let meta = d.metadata(&lid("img-mod")?)?;
                let get = |k: &str| {
                    meta.iter()
                        .find(|(a, _)| a == k)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                let lowers = format!("{}:{}", get("UpperDir"), get("LowerDir"));
                let mut s = Samples::new();
                for run in 0..runs {
                    let dir = scratch.join(format!("bare-{run}"));
                    for sub in ["u", "w", "m"] {
                        std::fs::create_dir_all(dir.join(sub))?;
                    }
                    let o = format!(
                        "lowerdir={lowers},upperdir={},workdir={}",
                        dir.join("u").display(),
                        dir.join("w").display()
                    );
                    let t0 = Instant::now();
                    let st = Command::new("mount")
                        .args(["-t", "overlay", "overlay", "-o", &o])
                        .arg(dir.join("m"))
                        .status()?;
                    s.seconds.push(t0.elapsed().as_secs_f64());
                    if !st.success() {
                        bail!("mount -t overlay failed");
                    }
                    teardown_dir(&dir)?;
                }
                self.record(t, "create", "reference: mount -t overlay (same stack)", s);
            }
        }

        // ---- deep stacks: the 65-layer image, 128 and 400 tiny layers
        {
            let d = self.open(t, root, &opts)?;
            let mut parent = lid("img-base")?;
            for l in &w.deep {
                let id = lid(&format!("deep-{}", l.name))?;
                let mut f = std::io::BufReader::new(std::fs::File::open(&l.path)?);
                d.apply_diff(&id, Some(&parent), &mut f)?;
                parent = id;
            }
            let deep_top = parent.to_string();
            let mut s = Samples::new();
            for _ in 0..runs {
                s.add(&self.op(t, root, &opts, &["mount", &deep_top])?);
                self.op(t, root, &opts, &["unmount", &deep_top])?;
            }
            self.record(
                t,
                "mount",
                &format!("mount {}-layer image", w.deep.len() + 1),
                s,
            );
            let max = d.capabilities().max_depth;
            let mut built = 0usize;
            let mut parent: Option<LayerId> = None;
            for n in [128usize, 400] {
                if max.is_some_and(|m| m < n) {
                    let mut s = Samples::new();
                    s.note = format!("refused: driver maximum is {} layers", max.unwrap_or(0));
                    self.record(t, "mount", &format!("mount {n}-layer stack"), s);
                    continue;
                }
                while built < n {
                    let id = lid(&format!("stack-{built:03}"))?;
                    let data = strata_conformance::layer::tar(&[
                        strata_conformance::layer::dir("s"),
                        strata_conformance::layer::file(format!("s/{built}"), format!("{built}")),
                    ]);
                    d.apply_diff(&id, parent.as_ref(), &mut &data[..])?;
                    parent = Some(id);
                    built += 1;
                }
                let top = parent.as_ref().map(|p| p.to_string()).unwrap_or_default();
                let mut s = Samples::new();
                for _ in 0..runs {
                    s.add(&self.op(t, root, &opts, &["mount", &top])?);
                    self.op(t, root, &opts, &["unmount", &top])?;
                }
                self.record(t, "mount", &format!("mount {n}-layer stack"), s);
            }
        }

        // ---- small change in a rw layer over the image: native vs naive
        {
            let d = self.open(t, root, &opts)?;
            let sc = lid("small-change")?;
            d.create_rw(&sc, Some(&lid(top)?), &CreateOpts::default())?;
            let view = d.mount(&sc)?;
            small_change(&view)?;
            d.unmount(&sc)?;
            drop(d);
            let mut variants = vec![("native", opts.clone())];
            if let Some(n) = &t.naive_opts {
                variants.push(("naive", [opts.clone(), n.clone()].concat()));
            }
            let mut medians = BTreeMap::new();
            for (kind, o) in &variants {
                for what in ["diff", "changes"] {
                    let mut s = Samples::new();
                    for _ in 0..runs {
                        s.add(&self.op(t, root, o, &[what, "small-change"])?);
                    }
                    let label = if t.naive_opts.is_none() {
                        "naive (only path)"
                    } else {
                        kind
                    };
                    medians.insert((what, *kind), stats(&s.seconds).0);
                    self.record(
                        t,
                        "small-change",
                        &format!("{what} of 1 mod/1 add/1 del ({label})"),
                        s,
                    );
                }
            }
            for what in ["diff", "changes"] {
                if let (Some(n), Some(v)) = (
                    medians.get(&(what, "native")),
                    medians.get(&(what, "naive")),
                ) {
                    let mut s = Samples::new();
                    s.note = format!("naive/native = {:.0}x", v / n.max(1e-9));
                    self.record(t, "small-change", &format!("{what}: naive / native"), s);
                }
            }
        }

        // ---- whole-layer diff (tar out) and its round trip
        {
            let out = cache.join(format!("{}-sitepkgs.diff.tar", t.name.replace('@', "-")));
            let mut s = Samples::new();
            for _ in 0..runs {
                s.add(&self.op(
                    t,
                    root,
                    &opts,
                    &["diff-to", "img-sitepkgs", &out.display().to_string()],
                )?);
            }
            self.record(t, "diff", "diff of the many-files layer (tar out)", s);
            let mut s = Samples::new();
            for run in 0..runs {
                let id = format!("rt-{run}");
                s.add(&self.op(
                    t,
                    root,
                    &opts,
                    &["apply", &id, "img-base", &out.display().to_string()],
                )?);
                self.op(t, root, &opts, &["remove", &id])?;
            }
            self.record(t, "diff", "apply of that diff (round trip)", s);
            let _ = std::fs::remove_file(&out);
        }

        // ---- scale: a 50,000-file layer
        self.scale(t, root, &cache)?;
        Ok(())
    }

    /// Merge samples into an existing record of the same name, or add one.
    fn records_push_merge(&mut self, t: &Target, group: &str, op: &str, s: Samples) {
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

    /// Create of a child of a 50,000-file layer vs a 50-file layer, and a
    /// diff of one changed file in it, native vs naive.
    fn scale(&mut self, t: &Target, root: &Path, cache: &Path) -> Result<()> {
        let opts = t.opts.clone();
        let runs = self.runs;
        let big = cache.join("50k.tar");
        let small = cache.join("50.tar");
        if !big.exists() {
            std::fs::write(&big, many_files(50_000))?;
            std::fs::write(&small, many_files(50))?;
        }
        self.op(
            t,
            root,
            &opts,
            &["apply", "k50", "-", &big.display().to_string()],
        )?;
        self.op(
            t,
            root,
            &opts,
            &["apply", "n50", "-", &small.display().to_string()],
        )?;
        let mut sb = Samples::new();
        let mut ss = Samples::new();
        for run in 0..runs {
            sb.add(&self.op(t, root, &opts, &["create", &format!("k50c-{run}"), "k50"])?);
            ss.add(&self.op(t, root, &opts, &["create", &format!("n50c-{run}"), "n50"])?);
        }
        let (mb, ms) = (stats(&sb.seconds).0, stats(&ss.seconds).0);
        self.record(t, "scale", "create child of a 50,000-file layer", sb);
        self.record(t, "scale", "create child of a 50-file layer", ss);
        let mut r = Samples::new();
        r.note = format!("50,000 / 50 files = {:.1}x", mb / ms.max(1e-9));
        self.record(t, "scale", "create: 50,000-file / 50-file", r);
        // one changed file in a rw layer on the 50,000-file layer
        let d = self.open(t, root, &opts)?;
        let c = lid("k50rw")?;
        d.create_rw(&c, Some(&lid("k50")?), &CreateOpts::default())?;
        let v = d.mount(&c)?;
        std::fs::write(v.join("d017/f17042"), "changed\n")?;
        d.unmount(&c)?;
        drop(d);
        let mut medians = Vec::new();
        let mut variants = vec![("native", opts.clone())];
        if let Some(n) = &t.naive_opts {
            variants.push(("naive", [opts.clone(), n.clone()].concat()));
        }
        for (kind, o) in &variants {
            let mut s = Samples::new();
            for _ in 0..runs {
                s.add(&self.op(t, root, o, &["diff", "k50rw"])?);
            }
            medians.push(stats(&s.seconds).0);
            let label = if t.naive_opts.is_none() {
                "naive (only path)"
            } else {
                kind
            };
            self.record(
                t,
                "scale",
                &format!("diff of 1 changed file in a 50,000-file layer ({label})"),
                s,
            );
        }
        if medians.len() == 2 {
            let mut s = Samples::new();
            s.note = format!("naive/native = {:.0}x", medians[1] / medians[0].max(1e-9));
            self.record(t, "scale", "diff 1 changed in 50,000: naive / native", s);
        }
        Ok(())
    }
}

/// A layer of `n` small files in directories of 1,000.
pub fn many_files(n: usize) -> Vec<u8> {
    use strata_conformance::layer::{dir, file};
    let mut v = Vec::with_capacity(n + n / 1000 + 1);
    for i in 0..n {
        if i % 1000 == 0 {
            v.push(dir(format!("d{:03}", i / 1000)));
        }
        v.push(file(
            format!("d{:03}/f{i}", i / 1000),
            format!("file {i}\n"),
        ));
    }
    strata_conformance::layer::tar(&v)
}

/// 1 modified, 1 added, 1 deleted file inside a mounted view.
fn small_change(view: &Path) -> Result<()> {
    // modify and delete the first two regular files found under the biggest
    // directories, add one next to them
    let mut files = Vec::new();
    let mut stack = vec![view.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut ents: Vec<_> = std::fs::read_dir(&d)?.filter_map(|e| e.ok()).collect();
        ents.sort_by_key(|e| e.file_name());
        for e in ents {
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && files.len() < 2 {
                files.push(e.path());
            }
        }
        if files.len() >= 2 {
            break;
        }
    }
    if files.len() < 2 {
        bail!("the image has fewer than two files");
    }
    let mut content = std::fs::read(&files[0])?;
    content.extend_from_slice(b"\n# changed by the bench\n");
    std::fs::write(&files[0], content)?;
    std::fs::remove_file(&files[1])?;
    let parent = files[0].parent().unwrap_or(view);
    std::fs::write(parent.join("added-by-bench"), "new\n")?;
    Ok(())
}

fn compress(src: &Path, dst: &Path, kind: &str) -> Result<()> {
    let mut input = std::io::BufReader::new(std::fs::File::open(src)?);
    let out = std::fs::File::create(dst)?;
    match kind {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(
                std::io::BufWriter::new(out),
                flate2::Compression::default(),
            );
            std::io::copy(&mut input, &mut e)?;
            e.finish()?;
        }
        _ => {
            let mut e = zstd::stream::write::Encoder::new(std::io::BufWriter::new(out), 3)?;
            std::io::copy(&mut input, &mut e)?;
            e.finish()?;
        }
    }
    Ok(())
}

/// The figures as a table for people.
pub fn table(records: &[Record]) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{:<15} {:<13} {:<58} {:>9} {:>9} {:>9} {:>10} {:>11} {:>8}  {}\n",
        "TARGET",
        "GROUP",
        "OPERATION",
        "MEDIAN s",
        "MIN s",
        "MAX s",
        "MB/s",
        "entries/s",
        "RSS MB",
        "NOTE"
    ));
    for r in records {
        let mbps = if r.bytes > 0 && r.median > 0.0 {
            format!("{:.1}", r.bytes as f64 / 1e6 / r.median)
        } else {
            "-".into()
        };
        let eps = if r.entries > 0 && r.median > 0.0 {
            format!("{:.0}", r.entries as f64 / r.median)
        } else {
            "-".into()
        };
        let rss = if r.peak_rss_kb > 0 {
            format!("{:.1}", r.peak_rss_kb as f64 / 1024.0)
        } else {
            "-".into()
        };
        let fmt = |v: f64| {
            if r.seconds.is_empty() {
                "-".to_string()
            } else {
                format!("{v:.4}")
            }
        };
        s.push_str(&format!(
            "{:<15} {:<13} {:<58} {:>9} {:>9} {:>9} {:>10} {:>11} {:>8}  {}\n",
            r.target,
            r.group,
            r.op,
            fmt(r.median),
            fmt(r.min),
            fmt(r.max),
            mbps,
            eps,
            rss,
            r.note
        ));
    }
    s
}

/// Ratios against the reference tools, per target.
pub fn ratios(records: &[Record]) -> Vec<(String, String, f64)> {
    let find = |t: &str, op: &str| {
        records
            .iter()
            .find(|r| r.target == t && r.op == op)
            .map(|r| r.median)
    };
    let mut out = Vec::new();
    let targets: Vec<String> = {
        let mut v: Vec<String> = records.iter().map(|r| r.target.clone()).collect();
        v.dedup();
        v
    };
    for t in targets {
        if let (Some(a), Some(b)) = (
            find(&t, "apply whole image (plain)"),
            find(&t, "reference: tar -x whole image"),
        ) {
            out.push((t.clone(), "apply whole image / tar -x".into(), a / b));
        }
        if let (Some(a), Some(b)) = (
            find(&t, "create child of the image"),
            find(&t, "reference: cp -a of the image tree"),
        ) {
            out.push((t.clone(), "create child / cp -a".into(), a / b));
        }
        if let (Some(a), Some(b)) = (
            find(&t, "create rw + mount"),
            find(&t, "reference: mount -t overlay (same stack)"),
        ) {
            out.push((
                t.clone(),
                "create rw + mount / mount -t overlay".into(),
                a / b,
            ));
        }
    }
    out
}
