//! One timed operation, run in a process of its own (`driver-test
//! bench-op`) so that its peak memory is its own: the driver is opened,
//! then the operation is timed, then peak RSS (VmHWM) is read.

use std::io::Write;

use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use strata_core::{CreateOpts, DiffBase, DriverOptions, LayerId};

/// What a bench-op child reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OpResult {
    pub seconds: f64,
    pub peak_rss_kb: u64,
    /// Bytes moved (tar bytes applied or written).
    pub bytes: u64,
    /// Entries applied or written, or changes listed.
    pub entries: u64,
    /// `native` / `naive` for diffs.
    pub method: String,
}

/// Peak resident set size of this process, in KiB.
pub fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

struct Count(u64);

impl Write for Count {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn id(s: &str) -> Result<LayerId> {
    Ok(LayerId::new(s)?)
}

fn parent(s: &str) -> Result<Option<LayerId>> {
    if s == "-" { Ok(None) } else { Ok(Some(id(s)?)) }
}

/// Run `args` (`OP ...`) on `driver` at `root`; print the result as JSON.
pub fn run(driver: &str, root: &std::path::Path, opts: &[String], args: &[String]) -> Result<()> {
    let d = strata::registry()
        .factory(driver)?
        .open(root, DriverOptions::parse(opts)?)
        .with_context(|| format!("opening {driver} at {}", root.display()))?;
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let mut r = OpResult::default();
    let start = Instant::now();
    match a.as_slice() {
        ["apply", i, p, file] => {
            let mut f = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(file)?);
            let s = d.apply_diff(&id(i)?, parent(p)?.as_ref(), &mut f)?;
            r.bytes = s.tar_bytes;
            r.entries = s.entries;
        }
        ["create", i, p] => d.create(&id(i)?, parent(p)?.as_ref(), &CreateOpts::default())?,
        ["create-rw", i, p] => d.create_rw(&id(i)?, parent(p)?.as_ref(), &CreateOpts::default())?,
        ["create-rw-mount", i, p] => {
            d.create_rw(&id(i)?, parent(p)?.as_ref(), &CreateOpts::default())?;
            d.mount(&id(i)?)?;
        }
        ["mount", i] => {
            d.mount(&id(i)?)?;
        }
        ["unmount", i] => d.unmount(&id(i)?)?,
        ["diff", i] => {
            let mut c = Count(0);
            let s = d.diff(&id(i)?, DiffBase::Parent, &mut c)?;
            r.bytes = c.0;
            r.entries = s.entries;
            r.method = s.method.to_string();
        }
        ["diff-to", i, out] => {
            let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
            let s = d.diff(&id(i)?, DiffBase::Parent, &mut f)?;
            f.flush()?;
            r.bytes = s.tar_bytes;
            r.entries = s.entries;
            r.method = s.method.to_string();
        }
        ["changes", i] => {
            r.entries = d.changes(&id(i)?, DiffBase::Parent)?.len() as u64;
        }
        ["remove", i] => d.remove(&id(i)?)?,
        _ => bail!("unknown bench op {args:?}"),
    }
    r.seconds = start.elapsed().as_secs_f64();
    r.peak_rss_kb = peak_rss_kb();
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}
