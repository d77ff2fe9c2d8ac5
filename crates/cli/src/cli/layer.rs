//! `strata layer ...`: the low-level contract scripts and external suites
//! rely on. Output formats here are fixed; see the README.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use strata_core::{CreateOpts, DiffBase, LayerId};

use super::Cli;

#[derive(Debug, Subcommand)]
pub enum LayerCmd {
    /// Create an empty layer (read-only unless --rw)
    Create {
        id: String,
        #[arg(long)]
        parent: Option<String>,
        /// A read-write (container) layer
        #[arg(long)]
        rw: bool,
        /// Storage option key=value (repeatable)
        #[arg(long = "opt", value_name = "KEY=VALUE")]
        opts: Vec<String>,
    },
    /// Create layer ID on PARENT from a layer diff (tar, tar.gz, tar.zst; - for stdin)
    Apply {
        id: String,
        #[arg(long)]
        parent: Option<String>,
        file: PathBuf,
    },
    /// Write the layer's diff against its parent as a tar
    Diff {
        id: String,
        /// Write to FILE instead of standard output
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Compare with this layer instead of the parent
        #[arg(long)]
        base: Option<String>,
    },
    /// List changed paths against the parent (A / C / D, like docker diff)
    Changes {
        id: String,
        #[arg(long)]
        base: Option<String>,
    },
    /// Bytes the layer adds or changes against its parent
    Size { id: String },
    /// Mount the layer and print the path of its view
    Mount { id: String },
    /// Drop one mount reference
    Unmount { id: String },
    /// Remove a layer
    Rm { id: String },
    /// List layers (ID, PARENT, SIZE)
    Ls {
        /// Output format: table or json
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Show a layer's metadata
    Inspect { id: String },
}

fn lid(s: &str) -> Result<LayerId> {
    Ok(LayerId::new(s)?)
}

/// Docker's human size: decimal units, 3 significant digits ("9.29MB").
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let mut s = format!("{v:.digits$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}{}", UNITS[i])
}

pub fn run(cli: &Cli, cmd: &LayerCmd) -> Result<()> {
    let d = cli.open_driver()?;
    match cmd {
        LayerCmd::Create {
            id,
            parent,
            rw,
            opts,
        } => {
            let id = lid(id)?;
            let parent = parent.as_deref().map(lid).transpose()?;
            let mut o = CreateOpts::default();
            for kv in opts {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("option {kv:?}: expected key=value"))?;
                o.storage_opts.insert(k.to_string(), v.to_string());
            }
            if *rw {
                d.create_rw(&id, parent.as_ref(), &o)?;
            } else {
                d.create(&id, parent.as_ref(), &o)?;
            }
        }
        LayerCmd::Apply { id, parent, file } => {
            let id = lid(id)?;
            let parent = parent.as_deref().map(lid).transpose()?;
            let stats = if file.as_os_str() == "-" {
                let mut stdin = std::io::stdin();
                d.apply_diff(&id, parent.as_ref(), &mut stdin)?
            } else {
                let mut f = std::fs::File::open(file)
                    .with_context(|| format!("opening {}", file.display()))?;
                d.apply_diff(&id, parent.as_ref(), &mut f)?
            };
            let out = serde_json::json!({
                "id": id.as_str(),
                "parent": parent.as_ref().map(|p| p.as_str()),
                "diff_id": stats.diff_id,
                "size": stats.size,
            });
            println!("{out}");
        }
        LayerCmd::Diff { id, output, base } => {
            let id = lid(id)?;
            let base_id = base.as_deref().map(lid).transpose()?;
            let base = DiffBase::from_option(base_id.as_ref());
            match output {
                Some(path) => {
                    let dir = path
                        .parent()
                        .filter(|p| !p.as_os_str().is_empty())
                        .unwrap_or(std::path::Path::new("."));
                    let mut tmp = tempfile::Builder::new()
                        .prefix(".strata-diff.")
                        .tempfile_in(dir)
                        .with_context(|| format!("creating a file in {}", dir.display()))?;
                    {
                        let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
                        d.diff(&id, base, &mut w)?;
                        w.flush()?;
                    }
                    tmp.as_file().sync_all()?;
                    tmp.persist(path)
                        .with_context(|| format!("writing {}", path.display()))?;
                }
                None => {
                    let stdout = std::io::stdout();
                    if stdout.is_terminal() {
                        bail!(
                            "refusing to write a tar to a terminal; use -o FILE or redirect the output"
                        );
                    }
                    let mut w = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
                    d.diff(&id, base, &mut w)?;
                    w.flush()?;
                }
            }
        }
        LayerCmd::Changes { id, base } => {
            let id = lid(id)?;
            let base_id = base.as_deref().map(lid).transpose()?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for c in d.changes(&id, DiffBase::from_option(base_id.as_ref()))? {
                writeln!(out, "{c}")?;
            }
            out.flush()?;
        }
        LayerCmd::Size { id } => {
            println!("{}", d.diff_size(&lid(id)?, DiffBase::Parent)?);
        }
        LayerCmd::Mount { id } => {
            println!("{}", d.mount(&lid(id)?)?.display());
        }
        LayerCmd::Unmount { id } => d.unmount(&lid(id)?)?,
        LayerCmd::Rm { id } => d.remove(&lid(id)?)?,
        LayerCmd::Ls { format } => {
            let mut rows = Vec::new();
            for l in d.layers()? {
                let size = d.diff_size(&l.id, DiffBase::Parent)?;
                rows.push((l, size));
            }
            if format == "json" {
                let v: Vec<_> = rows
                    .iter()
                    .map(|(l, size)| {
                        serde_json::json!({
                            "id": l.id.as_str(),
                            "parent": l.parent.as_ref().map(|p| p.as_str()),
                            "rw": l.rw,
                            "created": l.created,
                            "size": size,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let w = rows
                    .iter()
                    .map(|(l, _)| l.id.as_str().len())
                    .max()
                    .unwrap_or(2)
                    .max(2);
                let pw = rows
                    .iter()
                    .map(|(l, _)| l.parent.as_ref().map(|p| p.as_str().len()).unwrap_or(0))
                    .max()
                    .unwrap_or(6)
                    .max(6);
                println!("{:<w$}   {:<pw$}   SIZE", "ID", "PARENT");
                for (l, size) in rows {
                    println!(
                        "{:<w$}   {:<pw$}   {}",
                        l.id.as_str(),
                        l.parent.as_ref().map(|p| p.as_str()).unwrap_or(""),
                        human_size(size)
                    );
                }
            }
        }
        LayerCmd::Inspect { id } => {
            let m: serde_json::Map<String, serde_json::Value> = d
                .metadata(&lid(id)?)?
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            println!("{}", serde_json::to_string_pretty(&m)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn human_sizes_like_docker() {
        assert_eq!(human_size(11), "11B");
        assert_eq!(human_size(9_290_000), "9.29MB");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(12_345), "12.3kB");
        assert_eq!(human_size(123_456), "123kB");
        assert_eq!(human_size(0), "0B");
    }
}
