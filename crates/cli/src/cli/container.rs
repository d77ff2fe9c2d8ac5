//! `strata container ...` and `strata ps`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::json;
use strata_core::DiffBase;
use strata_store::Store;
use strata_store::reference::{ago, format_time};

use super::Cli;
use super::image::open_store;
use super::layer::human_size;
use super::table::Table;

#[derive(Debug, Subcommand)]
pub enum ContainerCmd {
    /// Create a container: a read-write layer on an image
    Create { name: String, image: String },
    /// Mount a container's root file system and print its path
    Mount { name: String },
    /// Drop one mount reference
    Unmount { name: String },
    /// List changed files (A / C / D)
    Diff { name: String },
    /// Make a new image from a container's changes
    Commit {
        name: String,
        /// NAME[:TAG] of the new image
        r#ref: Option<String>,
        /// Commit message
        #[arg(short, long)]
        message: Option<String>,
        /// Author
        #[arg(short, long)]
        author: Option<String>,
    },
    /// Write a container's root file system as a tar
    Export {
        name: String,
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Remove containers
    Rm {
        names: Vec<String>,
        /// Unmount first if mounted
        #[arg(short, long)]
        force: bool,
    },
    /// List containers (like `strata ps`)
    Ls(PsArgs),
}

#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Show sizes (the container's own, and with its image)
    #[arg(short, long)]
    pub size: bool,
    /// Only print container IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Accepted for Docker compatibility (every container is listed)
    #[arg(short, long)]
    pub all: bool,
    /// table or json
    #[arg(long, default_value = "table")]
    pub format: String,
}

fn mount_count(store: &Store, layer: &str) -> u32 {
    strata_core::LayerId::new(layer.to_string())
        .ok()
        .and_then(|id| store.driver.metadata(&id).ok())
        .and_then(|m| {
            m.into_iter()
                .find(|(k, _)| k == "MountCount")
                .map(|(_, v)| v)
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn ps(cli: &Cli, a: &PsArgs) -> Result<()> {
    let store = open_store(cli)?;
    let now = strata_store::now();
    let images = store.images()?;
    let mut rows = Vec::new();
    for c in store.containers()? {
        let img = images.iter().find(|i| i.id == c.image);
        let image = img
            .and_then(|i| i.repo_tags.first().cloned())
            .unwrap_or_else(|| c.image.short().to_string());
        let (rw, virt) = if a.size {
            let rw = store.container_size(&c)?;
            let isz = match img {
                Some(i) => store.image_size(i)?,
                None => 0,
            };
            (rw, rw + isz)
        } else {
            (0, 0)
        };
        rows.push((c.clone(), image, mount_count(&store, &c.layer), rw, virt));
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.0.created));
    if a.quiet {
        for r in rows {
            println!("{}", &r.0.id[..12]);
        }
        return Ok(());
    }
    if a.format == "json" {
        let v: Vec<_> = rows
            .iter()
            .map(|r| {
                let mut o = json!({"ID": r.0.id, "Names": r.0.name, "Image": r.1, "ImageID": r.0.image.to_string(), "CreatedAt": format_time(r.0.created), "Mounts": r.2});
                if a.size {
                    o["SizeRw"] = json!(r.3);
                    o["SizeRootFs"] = json!(r.4);
                }
                o
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut head = vec!["CONTAINER ID", "IMAGE", "CREATED", "STATUS", "NAMES"];
    if a.size {
        head.push("SIZE");
    }
    let mut t = Table::new(&head);
    for r in rows {
        let status = if r.2 > 0 {
            format!("Mounted ({})", r.2)
        } else {
            "Created".into()
        };
        let mut cols = vec![
            r.0.id[..12].to_string(),
            r.1,
            ago(r.0.created, now),
            status,
            r.0.name.clone(),
        ];
        if a.size {
            cols.push(format!("{} (virtual {})", human_size(r.3), human_size(r.4)));
        }
        t.row(cols);
    }
    print!("{}", t.render());
    Ok(())
}

pub fn run(cli: &Cli, cmd: &ContainerCmd) -> Result<()> {
    if let ContainerCmd::Ls(a) = cmd {
        return ps(cli, a);
    }
    let store = open_store(cli)?;
    match cmd {
        ContainerCmd::Create { name, image } => {
            let c = store.create_container(name, image)?;
            println!("{}", c.id);
        }
        ContainerCmd::Mount { name } => {
            let c = store.find_container(name)?;
            println!(
                "{}",
                store.driver.mount(&Store::container_layer(&c)?)?.display()
            );
        }
        ContainerCmd::Unmount { name } => {
            let c = store.find_container(name)?;
            store.driver.unmount(&Store::container_layer(&c)?)?;
        }
        ContainerCmd::Diff { name } => {
            let c = store.find_container(name)?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for ch in store
                .driver
                .changes(&Store::container_layer(&c)?, DiffBase::Parent)?
            {
                writeln!(out, "{ch}")?;
            }
            out.flush()?;
        }
        ContainerCmd::Commit {
            name,
            r#ref,
            message,
            author,
        } => {
            let img = store.commit(
                name,
                r#ref.as_deref(),
                message.as_deref(),
                author.as_deref(),
            )?;
            println!("{}", img.id);
        }
        ContainerCmd::Export { name, output } => match output {
            Some(path) => {
                let dir = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new("."));
                let mut tmp = tempfile::Builder::new()
                    .prefix(".strata-export.")
                    .tempfile_in(dir)?;
                {
                    let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
                    store.export_container(name, &mut w)?;
                    w.flush()?;
                }
                tmp.persist(path)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            None => {
                if std::io::stdout().is_terminal() {
                    bail!(
                        "refusing to write a tar to a terminal; use -o FILE or redirect the output"
                    );
                }
                let mut w = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
                store.export_container(name, &mut w)?;
                w.flush()?;
            }
        },
        ContainerCmd::Rm { names, force } => {
            if names.is_empty() {
                bail!("container rm needs at least one container");
            }
            let mut failed = false;
            for n in names {
                match store.remove_container(n, *force) {
                    Ok(_) => println!("{n}"),
                    Err(e) => {
                        eprintln!("Error response: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                std::process::exit(1);
            }
        }
        ContainerCmd::Ls(_) => {}
    }
    Ok(())
}
