//! The measured groups, one function each: apply (plain, gzip, zstd) beside
//! `tar -x`; create and mount beside `cp -a` and a bare overlay mount;
//! deep stacks; a small change, native vs naive; a whole-layer diff and its
//! round trip; scale. They branch on capabilities and on what the driver
//! reports, never on its name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Result, bail};
use strata_conformance::fixture::{have_program, teardown_dir};
use strata_core::{CreateOpts, LayerId};

use super::work::{compress, many_files, small_change};
use super::{Bench, Samples, Target, lid, stats};

/// Where a target runs: its root, the scratch file system, a cache there.
#[derive(Debug)]
pub(super) struct Place<'a> {
    pub root: &'a Path,
    pub scratch: &'a Path,
    pub cache: PathBuf,
}

/// The image's top layer (the bench applies the main image as `img-*`).
const TOP: &str = "img-mod";

impl Bench {
    /// Apply each layer of the main image, plain, gzip and zstd.
    pub(super) fn apply_group(&mut self, t: &Target, p: &Place<'_>) -> Result<()> {
        let w = self.workload.clone();
        let mut variants: Vec<(&str, Vec<PathBuf>)> =
            vec![("plain", w.main.iter().map(|l| l.path.clone()).collect())];
        for (kind, ext) in [("gzip", "gz"), ("zstd", "zst")] {
            let mut v = Vec::new();
            for l in &w.main {
                let f = p.cache.join(format!("{}.tar.{ext}", l.name));
                if !f.exists() {
                    compress(&l.path, &f, kind)?;
                }
                v.push(f);
            }
            variants.push((kind, v));
        }
        for (kind, files) in &variants {
            self.apply_variant(t, p, kind, files)?;
        }
        Ok(())
    }

    /// One compression variant: each run applies the image, then removes
    /// its copy (the first plain run's copy stays as the image `img-*`).
    fn apply_variant(
        &mut self,
        t: &Target,
        p: &Place<'_>,
        kind: &str,
        files: &[PathBuf],
    ) -> Result<()> {
        let w = self.workload.clone();
        let mut per_layer: Vec<Samples> = w.main.iter().map(|_| Samples::new()).collect();
        let mut whole = Samples::new();
        for run in 0..self.runs {
            let keep = kind == "plain" && run == 0;
            let name = |l: &str| {
                if keep {
                    format!("img-{l}")
                } else {
                    format!("a-{kind}-{run}-{l}")
                }
            };
            let mut parent = "-".to_string();
            let (mut total, mut bytes, mut entries, mut rss) = (0.0, 0, 0, 0);
            for (i, (l, f)) in w.main.iter().zip(files).enumerate() {
                let id = name(&l.name);
                let r = self.op(
                    t,
                    p.root,
                    &t.opts,
                    &["apply", &id, &parent, &f.display().to_string()],
                )?;
                total += r.seconds;
                bytes += r.bytes;
                entries += r.entries;
                rss = rss.max(r.peak_rss_kb);
                per_layer[i].add(&r);
                parent = id;
            }
            whole.seconds.push(total);
            (whole.bytes, whole.entries, whole.rss) = (bytes, entries, rss);
            if keep {
                continue;
            }
            // the removal of the big layer is itself a measured figure
            self.op(t, p.root, &t.opts, &["remove", &name("mod")])?;
            let r = self.op(t, p.root, &t.opts, &["remove", &name("sitepkgs")])?;
            if kind == "plain" {
                let mut s = Samples::new();
                s.add(&r);
                self.records_push_merge(t, "remove", "remove the many-files layer", s);
            }
            self.op(t, p.root, &t.opts, &["remove", &name("base")])?;
        }
        for (i, s) in per_layer.into_iter().enumerate() {
            self.record(t, "apply", &format!("apply {} ({kind})", w.main[i].name), s);
        }
        self.record(t, "apply", &format!("apply whole image ({kind})"), whole);
        Ok(())
    }

    /// Reference: GNU `tar -x` of the same tars onto the same file system.
    pub(super) fn tar_reference(&mut self, t: &Target, p: &Place<'_>) -> Result<()> {
        if !have_program("tar") {
            return Ok(());
        }
        let w = self.workload.clone();
        let mut s = Samples::new();
        let mut per: Vec<Samples> = w.main.iter().map(|_| Samples::new()).collect();
        for run in 0..self.runs {
            let dst = p.scratch.join(format!("tar-x-{run}"));
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
        for (i, x) in per.into_iter().enumerate() {
            self.record(
                t,
                "apply",
                &format!("reference: tar -x {}", w.main[i].name),
                x,
            );
        }
        self.record(t, "apply", "reference: tar -x whole image", s);
        Ok(())
    }

    /// Create read-only and read-write children of the image, and mount.
    pub(super) fn create_group(&mut self, t: &Target, p: &Place<'_>) -> Result<()> {
        let o = &t.opts;
        let (mut c_ro, mut c_rw, mut m3, mut c_rw_m) = (
            Samples::new(),
            Samples::new(),
            Samples::new(),
            Samples::new(),
        );
        for run in 0..self.runs {
            let (ro, rw, both) = (
                format!("c-ro-{run}"),
                format!("c-rw-{run}"),
                format!("c-rwm-{run}"),
            );
            c_ro.add(&self.op(t, p.root, o, &["create", &ro, TOP])?);
            c_rw.add(&self.op(t, p.root, o, &["create-rw", &rw, TOP])?);
            m3.add(&self.op(t, p.root, o, &["mount", &rw])?);
            self.op(t, p.root, o, &["unmount", &rw])?;
            c_rw_m.add(&self.op(t, p.root, o, &["create-rw-mount", &both, TOP])?);
            self.op(t, p.root, o, &["unmount", &both])?;
            for i in [&ro, &rw, &both] {
                self.op(t, p.root, o, &["remove", i])?;
            }
        }
        self.record(t, "create", "create child of the image", c_ro);
        self.record(t, "create", "create rw layer on the image", c_rw);
        self.record(t, "create", "mount rw layer (3-layer image)", m3);
        self.record(t, "create", "create rw + mount", c_rw_m);
        Ok(())
    }

    /// References: `cp -a` of the image's tree, and, where the driver
    /// reports the image as an overlay stack (upper and lower dirs), a bare
    /// `mount -t overlay` of that stack.
    pub(super) fn create_references(&mut self, t: &Target, p: &Place<'_>) -> Result<()> {
        let d = self.open(t, p.root, &t.opts)?;
        let view = d.mount(&lid(TOP)?)?;
        let mut s = Samples::new();
        for run in 0..self.runs {
            let dst = p.scratch.join(format!("cp-a-{run}"));
            let t0 = Instant::now();
            let st = Command::new("cp").arg("-a").arg(&view).arg(&dst).status()?;
            s.seconds.push(t0.elapsed().as_secs_f64());
            if !st.success() {
                bail!("cp -a failed");
            }
            teardown_dir(&dst)?;
        }
        d.unmount(&lid(TOP)?)?;
        self.record(t, "create", "reference: cp -a of the image tree", s);
        let meta = d.metadata(&lid(TOP)?)?;
        let get = |k: &str| meta.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
        if let (Some(upper), Some(lower)) = (get("UpperDir"), get("LowerDir"))
            && !lower.is_empty()
        {
            self.bare_overlay(t, p, &format!("{upper}:{lower}"))?;
        }
        Ok(())
    }

    fn bare_overlay(&mut self, t: &Target, p: &Place<'_>, lowers: &str) -> Result<()> {
        let mut s = Samples::new();
        for run in 0..self.runs {
            let dir = p.scratch.join(format!("bare-{run}"));
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
        Ok(())
    }

    /// Mount the deep image, and stacks of 128 and 400 tiny layers (where
    /// the driver's maximum depth allows).
    pub(super) fn deep_group(&mut self, t: &Target, p: &Place<'_>) -> Result<()> {
        let d = self.open(t, p.root, &t.opts)?;
        let mut parent = lid("img-base")?;
        for l in &self.workload.deep {
            let id = lid(&format!("deep-{}", l.name))?;
            let mut f = std::io::BufReader::new(std::fs::File::open(&l.path)?);
            d.apply_diff(&id, Some(&parent), &mut f)?;
            parent = id;
        }
        let n = self.workload.deep.len() + 1;
        self.mount_samples(t, p, parent.as_ref(), &format!("mount {n}-layer image"))?;
        let max = d.capabilities().max_depth;
        let mut built = 0usize;
        let mut parent: Option<LayerId> = None;
        for n in [128usize, 400] {
            if let Some(m) = max.filter(|m| *m < n) {
                let mut s = Samples::new();
                s.note = format!("refused: driver maximum is {m} layers");
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
            self.mount_samples(t, p, &top, &format!("mount {n}-layer stack"))?;
        }
        Ok(())
    }

    fn mount_samples(&mut self, t: &Target, p: &Place<'_>, id: &str, what: &str) -> Result<()> {
        let mut s = Samples::new();
        for _ in 0..self.runs {
            s.add(&self.op(t, p.root, &t.opts, &["mount", id])?);
            self.op(t, p.root, &t.opts, &["unmount", id])?;
        }
        self.record(t, "mount", what, s);
        Ok(())
    }

    /// The driver's option sets: its own, and (where it has one) the one
    /// that forces the naive diff.
    fn diff_variants(t: &Target) -> Vec<(&'static str, Vec<String>)> {
        let mut v = vec![("native", t.opts.clone())];
        if let Some(n) = &t.naive_opts {
            v.push(("naive", [t.opts.clone(), n.clone()].concat()));
        }
        v
    }

    fn label(t: &Target, kind: &'static str) -> &'static str {
        if t.naive_opts.is_none() {
            "naive (only path)"
        } else {
            kind
        }
    }

    /// 1 modified, 1 added, 1 deleted file in a rw layer over the image:
    /// diff and changes, native vs naive.
    pub(super) fn small_change_group(&mut self, t: &Target, p: &Place<'_>) -> Result<()> {
        {
            let d = self.open(t, p.root, &t.opts)?;
            let sc = lid("small-change")?;
            d.create_rw(&sc, Some(&lid(TOP)?), &CreateOpts::default())?;
            let view = d.mount(&sc)?;
            small_change(&view)?;
            d.unmount(&sc)?;
        }
        let mut medians = BTreeMap::new();
        for (kind, o) in &Self::diff_variants(t) {
            for what in ["diff", "changes"] {
                let mut s = Samples::new();
                for _ in 0..self.runs {
                    s.add(&self.op(t, p.root, o, &[what, "small-change"])?);
                }
                medians.insert((what, *kind), stats(&s.seconds).0);
                let op = format!("{what} of 1 mod/1 add/1 del ({})", Self::label(t, kind));
                self.record(t, "small-change", &op, s);
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
        Ok(())
    }

    /// The many-files layer's diff written out, and applied back.
    pub(super) fn diff_group(&mut self, t: &Target, p: &Place<'_>) -> Result<()> {
        let out = p
            .cache
            .join(format!("{}-sitepkgs.diff.tar", t.name.replace('@', "-")));
        let out_s = out.display().to_string();
        let mut s = Samples::new();
        for _ in 0..self.runs {
            s.add(&self.op(t, p.root, &t.opts, &["diff-to", "img-sitepkgs", &out_s])?);
        }
        self.record(t, "diff", "diff of the many-files layer (tar out)", s);
        let mut s = Samples::new();
        for run in 0..self.runs {
            let id = format!("rt-{run}");
            s.add(&self.op(t, p.root, &t.opts, &["apply", &id, "img-base", &out_s])?);
            self.op(t, p.root, &t.opts, &["remove", &id])?;
        }
        self.record(t, "diff", "apply of that diff (round trip)", s);
        let _ = std::fs::remove_file(&out);
        Ok(())
    }

    /// Create of a child of a 50,000-file layer vs a 50-file layer, and a
    /// diff of one changed file in it, native vs naive.
    pub(super) fn scale(&mut self, t: &Target, p: &Place<'_>) -> Result<()> {
        let o = &t.opts;
        let (big, small) = (p.cache.join("50k.tar"), p.cache.join("50.tar"));
        if !big.exists() {
            std::fs::write(&big, many_files(50_000))?;
            std::fs::write(&small, many_files(50))?;
        }
        self.op(
            t,
            p.root,
            o,
            &["apply", "k50", "-", &big.display().to_string()],
        )?;
        self.op(
            t,
            p.root,
            o,
            &["apply", "n50", "-", &small.display().to_string()],
        )?;
        let (mut sb, mut ss) = (Samples::new(), Samples::new());
        for run in 0..self.runs {
            sb.add(&self.op(t, p.root, o, &["create", &format!("k50c-{run}"), "k50"])?);
            ss.add(&self.op(t, p.root, o, &["create", &format!("n50c-{run}"), "n50"])?);
        }
        let (mb, ms) = (stats(&sb.seconds).0, stats(&ss.seconds).0);
        self.record(t, "scale", "create child of a 50,000-file layer", sb);
        self.record(t, "scale", "create child of a 50-file layer", ss);
        let mut r = Samples::new();
        r.note = format!("50,000 / 50 files = {:.1}x", mb / ms.max(1e-9));
        self.record(t, "scale", "create: 50,000-file / 50-file", r);
        self.scale_diff(t, p)
    }

    /// One changed file in a rw layer on the 50,000-file layer.
    fn scale_diff(&mut self, t: &Target, p: &Place<'_>) -> Result<()> {
        {
            let d = self.open(t, p.root, &t.opts)?;
            let c = lid("k50rw")?;
            d.create_rw(&c, Some(&lid("k50")?), &CreateOpts::default())?;
            let v = d.mount(&c)?;
            std::fs::write(v.join("d017/f17042"), "changed\n")?;
            d.unmount(&c)?;
        }
        let mut medians = Vec::new();
        for (kind, o) in &Self::diff_variants(t) {
            let mut s = Samples::new();
            for _ in 0..self.runs {
                s.add(&self.op(t, p.root, o, &["diff", "k50rw"])?);
            }
            medians.push(stats(&s.seconds).0);
            let op = format!(
                "diff of 1 changed file in a 50,000-file layer ({})",
                Self::label(t, kind)
            );
            self.record(t, "scale", &op, s);
        }
        if let [native, naive] = medians[..] {
            let mut s = Samples::new();
            s.note = format!("naive/native = {:.0}x", naive / native.max(1e-9));
            self.record(t, "scale", "diff 1 changed in 50,000: naive / native", s);
        }
        Ok(())
    }
}
