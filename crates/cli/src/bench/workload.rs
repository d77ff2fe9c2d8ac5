//! The workload a bench run uses: the shared workload built by
//! `make-workload.sh` (`--workload DIR`), or a small synthetic one made on
//! the spot (CI smoke runs).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use strata_conformance::layer::{self, E, dir, file, opaque, symlink, whiteout};

/// One layer tar of the workload.
#[derive(Debug, Clone)]
pub struct LayerTar {
    pub name: String,
    pub path: PathBuf,
    pub bytes: u64,
}

/// A workload: the main image (base, many small files, modifications) and
/// the 64 tiny layers of the deep image (on base).
#[derive(Debug, Clone)]
pub struct Workload {
    pub description: String,
    pub main: Vec<LayerTar>,
    pub deep: Vec<LayerTar>,
}

fn layer_tar(name: &str, path: PathBuf) -> Result<LayerTar> {
    let bytes = std::fs::metadata(&path)
        .with_context(|| format!("workload layer {}", path.display()))?
        .len();
    Ok(LayerTar {
        name: name.to_string(),
        path,
        bytes,
    })
}

impl Workload {
    /// The workload of `make-workload.sh DIR`.
    pub fn load(dir: &Path) -> Result<Workload> {
        let l = dir.join("layers");
        let main = ["base", "sitepkgs", "mod"]
            .iter()
            .map(|n| layer_tar(n, l.join(format!("{n}.tar"))))
            .collect::<Result<Vec<_>>>()?;
        let mut deep: Vec<PathBuf> = std::fs::read_dir(l.join("deep"))
            .with_context(|| format!("reading {}", l.join("deep").display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "tar"))
            .collect();
        deep.sort();
        if deep.is_empty() {
            bail!("{} has no deep layers", l.join("deep").display());
        }
        let deep = deep
            .into_iter()
            .map(|p| {
                let n = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                layer_tar(&n, p)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Workload {
            description: format!("make-workload.sh output in {}", dir.display()),
            main,
            deep,
        })
    }

    /// A small synthetic workload of the same shape, written into `dir`.
    pub fn synthetic(out: &Path, files: usize) -> Result<Workload> {
        std::fs::create_dir_all(out.join("deep"))?;
        let write = |name: &str, entries: &[E]| -> Result<LayerTar> {
            let p = out.join(format!("{name}.tar"));
            std::fs::write(&p, layer::tar(entries))?;
            layer_tar(name, p)
        };
        let main = vec![
            write("base", &synthetic_base(files / 4))?,
            write("sitepkgs", &synthetic_site(files))?,
            write("mod", &synthetic_mod())?,
        ];
        let mut deep = Vec::new();
        for i in 1..=64 {
            let l = vec![
                dir("deep"),
                file("deep/counter.txt", format!("layer {i}\n")),
                dir(format!("deep/l{i:02}")),
                file(format!("deep/l{i:02}/a.txt"), format!("{i}")),
            ];
            let p = out.join("deep").join(format!("deep-{i:02}.tar"));
            std::fs::write(&p, layer::tar(&l))?;
            deep.push(layer_tar(&format!("deep-{i:02}"), p)?);
        }
        Ok(Workload {
            description: format!("synthetic ({files} small files)"),
            main,
            deep,
        })
    }
}

/// The base layer: a small root file system with `libs` shared objects.
fn synthetic_base(libs: usize) -> Vec<E> {
    let mut base = vec![
        dir("etc"),
        dir("usr"),
        dir("usr/bin"),
        dir("usr/lib"),
        dir("usr/share"),
        dir("usr/share/doc"),
        dir("var"),
        dir("var/lib"),
        symlink("bin", "usr/bin"),
    ];
    for i in 0..libs {
        if i % 50 == 0 {
            base.push(dir(format!("usr/lib/pkg{:03}", i / 50)));
        }
        base.push(file(
            format!("usr/lib/pkg{:03}/lib{i}.so", i / 50),
            synthetic_bytes(i, 2048 + (i % 7) * 1024),
        ));
    }
    for i in 0..40 {
        base.push(dir(format!("usr/share/doc/doc{i:02}")));
        base.push(file(
            format!("usr/share/doc/doc{i:02}/README"),
            format!("doc {i}\n"),
        ));
    }
    base.push(file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"));
    base.push(file("etc/hostname", "bench\n"));
    base
}

/// The many-small-files layer (a site-packages stand-in).
fn synthetic_site(files: usize) -> Vec<E> {
    let mut site = vec![
        dir("usr"),
        dir("usr/local"),
        dir("usr/local/lib"),
        dir("usr/local/lib/python3"),
    ];
    for i in 0..files {
        if i % 100 == 0 {
            site.push(dir(format!("usr/local/lib/python3/m{:03}", i / 100)));
        }
        site.push(file(
            format!("usr/local/lib/python3/m{:03}/f{i}.py", i / 100),
            synthetic_bytes(i + 7, 300 + (i % 13) * 97),
        ));
    }
    site
}

/// Modifications: changes, whiteouts, an opaque dir, new files.
fn synthetic_mod() -> Vec<E> {
    let mut m = vec![
        dir("etc"),
        file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/srv:/bin/sh\n",
        ),
        dir("usr"),
        dir("usr/share"),
        dir("usr/share/doc"),
    ];
    for i in (0..40).step_by(2) {
        m.push(whiteout(&format!("usr/share/doc/doc{i:02}")));
    }
    m.push(dir("usr/lib"));
    m.push(dir("usr/lib/pkg000"));
    m.push(opaque("usr/lib/pkg000"));
    m.push(file("usr/lib/pkg000/replaced.so", "new"));
    m.push(dir("srv"));
    for i in 0..200 {
        if i % 20 == 0 {
            m.push(dir(format!("srv/m{:02}", i / 20)));
        }
        m.push(file(
            format!("srv/m{:02}/f{i}.txt", i / 20),
            synthetic_bytes(i + 99, 512),
        ));
    }
    m.push(file("srv/data.bin", synthetic_bytes(1, 4 << 20)));
    m
}

/// Deterministic, somewhat compressible bytes.
pub fn synthetic_bytes(seed: usize, n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n);
    let mut x = (seed as u64)
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let line = format!("{:016x} line {} of {}\n", x, v.len(), seed);
        v.extend_from_slice(line.as_bytes());
    }
    v.truncate(n);
    v
}
