//! `strata layer ...`: the low-level contract scripts and external suites
//! rely on. Output formats here are fixed; see the README.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;
use strata_core::{CreateOpts, DiffBase, Driver, LayerId};

use super::output::Output;
use super::table::human_size;
use super::{Cli, TableOrJson};

#[derive(Debug, Subcommand)]
pub enum LayerCmd {
    /// Create an empty layer (read-only unless --rw)
    Create {
        /// The new layer's id
        id: String,
        /// The layer it sits on
        #[arg(long)]
        parent: Option<String>,
        /// A read-write (container) layer
        #[arg(long)]
        rw: bool,
        /// Storage option key=value (repeatable)
        #[arg(long = "opt", value_name = "KEY=VALUE")]
        opts: Vec<String>,
    },
    /// Create layer ID on PARENT from a layer diff (tar, tar.gz, tar.zst, tar.xz; - for stdin)
    Apply {
        /// The new layer's id (or one made by create, to fill)
        id: String,
        /// The layer it sits on
        #[arg(long)]
        parent: Option<String>,
        /// The layer diff, or - for standard input
        file: PathBuf,
    },
    /// Write the layer's diff against its parent as a tar
    Diff {
        /// The layer
        id: String,
        /// Write to FILE (default, or -: standard output)
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Compare with this layer instead of the parent
        #[arg(long)]
        base: Option<String>,
    },
    /// List changed paths against the parent (A / C / D, like docker diff)
    Changes {
        /// The layer
        id: String,
        /// Compare with this layer instead of the parent
        #[arg(long)]
        base: Option<String>,
    },
    /// Bytes the layer adds or changes against its parent
    Size {
        /// The layer
        id: String,
    },
    /// Mount the layer and print the path of its view
    Mount {
        /// The layer
        id: String,
    },
    /// Drop one mount reference
    Unmount {
        /// The layer
        id: String,
    },
    /// Remove a layer (refused while an image or container of the store uses it)
    Rm {
        /// The layer
        id: String,
        /// Remove it even if the store uses it (the image or container breaks)
        #[arg(short, long)]
        force: bool,
    },
    /// List layers (ID, PARENT, SIZE)
    Ls {
        /// Output: table or json
        #[arg(long, value_enum, default_value_t = TableOrJson::Table)]
        format: TableOrJson,
    },
    /// Show a layer's metadata
    Inspect {
        /// The layer
        id: String,
    },
}

fn lid(s: &str) -> Result<LayerId> {
    Ok(LayerId::new(s)?)
}

pub fn run(cli: &Cli, cmd: &LayerCmd) -> Result<()> {
    let d = cli.open_driver()?;
    let d = d.as_ref();
    match cmd {
        LayerCmd::Create {
            id,
            parent,
            rw,
            opts,
        } => create(d, id, parent.as_deref(), *rw, opts)?,
        LayerCmd::Apply { id, parent, file } => apply(d, id, parent.as_deref(), file)?,
        LayerCmd::Diff { id, output, base } => {
            let id = lid(id)?;
            let base_id = base.as_deref().map(lid).transpose()?;
            let base = DiffBase::from_option(base_id.as_ref());
            let mut out = Output::open(output.as_deref())?;
            d.diff(&id, base, &mut out)?;
            out.finish()?;
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
        LayerCmd::Rm { id, force } => rm(cli, d, id, *force)?,
        LayerCmd::Ls { format } => ls(d, *format)?,
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

/// `layer create`.
fn create(d: &dyn Driver, id: &str, parent: Option<&str>, rw: bool, opts: &[String]) -> Result<()> {
    let id = lid(id)?;
    let parent = parent.map(lid).transpose()?;
    let mut o = CreateOpts::default();
    for kv in opts {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("option {kv:?}: expected key=value"))?;
        o.storage_opts.insert(k.to_string(), v.to_string());
    }
    if rw {
        d.create_rw(&id, parent.as_ref(), &o)?;
    } else {
        d.create(&id, parent.as_ref(), &o)?;
    }
    Ok(())
}

/// `layer apply`: one JSON line with the layer's digest and size.
fn apply(d: &dyn Driver, id: &str, parent: Option<&str>, file: &Path) -> Result<()> {
    let id = lid(id)?;
    let parent = parent.map(lid).transpose()?;
    let stats = if file.as_os_str() == "-" {
        let mut stdin = std::io::stdin();
        d.apply_diff(&id, parent.as_ref(), &mut stdin)?
    } else {
        let mut f =
            std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        d.apply_diff(&id, parent.as_ref(), &mut f)?
    };
    let out = serde_json::json!({
        "id": id.as_str(),
        "parent": parent.as_ref().map(|p| p.as_str()),
        "diff_id": stats.diff_id,
        "size": stats.size,
    });
    println!("{out}");
    Ok(())
}

fn parent_name(l: &strata_core::LayerInfo) -> &str {
    l.parent.as_ref().map(|p| p.as_str()).unwrap_or("")
}

/// `layer ls`: ID, PARENT, SIZE.
fn ls(d: &dyn Driver, format: TableOrJson) -> Result<()> {
    let mut rows = Vec::new();
    for l in d.layers()? {
        let size = d.diff_size(&l.id, DiffBase::Parent)?;
        rows.push((l, size));
    }
    if format == TableOrJson::Json {
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
        return Ok(());
    }
    let w = rows
        .iter()
        .map(|(l, _)| l.id.as_str().len())
        .max()
        .unwrap_or(2)
        .max(2);
    let pw = rows
        .iter()
        .map(|(l, _)| parent_name(l).len())
        .max()
        .unwrap_or(6)
        .max(6);
    println!("{:<w$}   {:<pw$}   SIZE", "ID", "PARENT");
    for (l, size) in &rows {
        println!(
            "{:<w$}   {:<pw$}   {}",
            l.id.as_str(),
            parent_name(l),
            human_size(*size)
        );
    }
    Ok(())
}

/// `layer rm`: the store's layers are refused unless forced.
fn rm(cli: &Cli, d: &dyn Driver, id: &str, force: bool) -> Result<()> {
    let id = lid(id)?;
    d.layer(&id)?;
    let store = strata_store::Store::open(&cli.root(), cli.open_driver()?)?;
    if let Some(by) = store.layer_user(id.as_str())? {
        if !force {
            return Err(strata_store::Error::LayerInUse {
                layer: id.to_string(),
                by,
            }
            .into());
        }
        eprintln!(
            "WARNING: removing layer {id}, used by {by}; that image or container is broken now (strata check --repair)"
        );
    }
    Ok(d.remove(&id)?)
}
