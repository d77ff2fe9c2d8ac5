//! Loading, saving, importing, naming and removing images, and their
//! read-only views.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use strata_core::{DiffBase, LayerId};
use strata_store::Store;
use strata_store::export::Format as ArchiveFormat;
use strata_store::import::{ImportOpts, Input, Platform, RootfsOpts};

use super::PruneArgs;
use crate::cli::filter::Filters;
use crate::cli::output::Output;
use crate::cli::progress::Progress;
use crate::cli::table::human_size;
use crate::cli::{Cli, safe, usage};

/// `image load`
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from this archive or OCI layout directory (default: standard input)
    #[arg(short, long, value_name = "PATH")]
    pub input: Option<PathBuf>,
    /// Also tag the (last) image NAME[:TAG]
    #[arg(long)]
    pub tag: Option<String>,
    /// Pick this platform from multi-platform indexes: os/arch[/variant]
    #[arg(long, value_parser = platform)]
    pub platform: Option<Platform>,
    /// Only print the image IDs
    #[arg(short, long)]
    pub quiet: bool,
}

/// `image save`
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// The images: NAME[:TAG], ID or ID prefix (one archive holds them all)
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
    /// Write to FILE (default, or -: standard output)
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Archive layout
    #[arg(long, value_enum, default_value_t = SaveFormat::Oci)]
    pub format: SaveFormat,
}

/// Archive layouts of `image save`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SaveFormat {
    /// An OCI image layout in a tar
    Oci,
    /// `docker save`'s layout
    Docker,
}

/// `image import`
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A root file system tarball (plain, gzip, zstd or xz), or - for standard input
    pub file: PathBuf,
    /// Name the image NAME[:TAG]
    pub reference: Option<String>,
    /// A comment for the image's history
    #[arg(short, long)]
    pub message: Option<String>,
    /// The image's platform: os/arch[/variant] (default: this machine's)
    #[arg(long, value_parser = platform)]
    pub platform: Option<Platform>,
}

/// `image rm`
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Images: NAME[:TAG], ID or ID prefix
    #[arg(required = true)]
    pub refs: Vec<String>,
    /// Remove even if the image has several names, or untag one in use
    #[arg(short, long)]
    pub force: bool,
}

fn platform(s: &str) -> std::result::Result<Platform, String> {
    Platform::parse(s).map_err(|e| e.to_string())
}

/// `strata image load`.
pub fn load(cli: &Cli, a: &LoadArgs) -> Result<()> {
    if a.input.is_none() && std::io::stdin().is_terminal() {
        return Err(usage(
            "no input: give -i FILE|DIR, or pipe an archive to standard input",
        ));
    }
    let store = cli.open_store()?;
    let mut p = Progress::new(a.quiet);
    let opts = ImportOpts {
        tag: a.tag.clone(),
        platform: a.platform.clone(),
    };
    let mut stdin = std::io::stdin();
    let (input, what) = match &a.input {
        Some(p) if p.as_os_str() != "-" => (Input::Path(p), p.display().to_string()),
        _ => (Input::Stream(&mut stdin), "standard input".to_string()),
    };
    tracing::info!(from = %what, "loading images");
    let t0 = std::time::Instant::now();
    store
        .import(input, &opts, &mut |e| p.event(e))
        .with_context(|| format!("loading {what}"))?;
    tracing::info!(seconds = t0.elapsed().as_secs_f64(), "loaded");
    Ok(())
}

/// `strata image save`.
pub fn save(cli: &Cli, a: &SaveArgs) -> Result<()> {
    let fmt = match a.format {
        SaveFormat::Oci => ArchiveFormat::Oci,
        SaveFormat::Docker => ArchiveFormat::Docker,
    };
    let mut out = Output::open(a.output.as_deref())?;
    let store = cli.open_store()?;
    store.export_images(&a.images, fmt, &mut out)?;
    out.finish()
}

/// `strata image import`.
pub fn import_rootfs(cli: &Cli, a: &ImportArgs) -> Result<()> {
    let stdin = a.file.as_os_str() == "-";
    if stdin && std::io::stdin().is_terminal() {
        return Err(usage(
            "no input: pipe a tarball to standard input, or give a file",
        ));
    }
    let store = cli.open_store()?;
    let opts = RootfsOpts {
        tag: a.reference.clone(),
        message: a.message.clone(),
        platform: a.platform.clone(),
        source: if stdin {
            "-".into()
        } else {
            a.file.display().to_string()
        },
    };
    let img = if stdin {
        store
            .import_rootfs(&mut std::io::stdin(), &opts)
            .context("importing standard input")?
    } else {
        let mut f = std::fs::File::open(&a.file)
            .with_context(|| format!("opening {}", a.file.display()))?;
        store
            .import_rootfs(&mut f, &opts)
            .with_context(|| format!("importing {}", a.file.display()))?
    };
    println!("{}", img.id);
    Ok(())
}

/// `strata image tag`.
pub fn tag(cli: &Cli, source: &str, target: &str) -> Result<()> {
    strata_store::reference::normalize_tag(target).map_err(|e| usage(e.to_string()))?;
    let store = cli.open_store()?;
    let img = store.find_image(source)?;
    Ok(store.tag_image(&img.id, target)?)
}

/// `strata image rm`: each image in turn (see [`crate::cli::remove_each`]).
pub fn rm(cli: &Cli, a: &RmArgs) -> Result<()> {
    let store = cli.open_store()?;
    crate::cli::remove_each(&a.refs, a.force, |r| store.remove_image(r, a.force))
}

/// Ask before a prune; `true` to go on.
pub fn confirm(what: &str) -> Result<bool> {
    eprint!("WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

/// Remove the images `want` says, unused by containers; returns the lines
/// and the bytes of layers removed.
pub fn prune_images(store: &Store, all: bool, f: &Filters) -> Result<(Vec<String>, u64)> {
    let used: std::collections::HashSet<_> =
        store.containers()?.into_iter().map(|c| c.image).collect();
    let mut lines = Vec::new();
    let total = |s: &Store| -> Result<u64> { Ok(s.layers()?.iter().map(|l| l.size).sum()) };
    let before = total(store)?;
    for img in super::list::filtered(store, f)? {
        if used.contains(&img.id) || (!all && !img.repo_tags.is_empty()) {
            continue;
        }
        match store.remove_image(img.id.as_str(), true) {
            Ok(l) => lines.extend(l),
            Err(e) => tracing::warn!(image = %img.id.short(), "not pruned: {e}"),
        }
    }
    Ok((lines, before.saturating_sub(total(store)?)))
}

/// `strata image prune`.
pub fn prune(cli: &Cli, a: &PruneArgs) -> Result<()> {
    let f = Filters::parse(&a.filter, &["label"])?;
    let what = if a.all {
        "all images without at least one container associated to them"
    } else {
        "all dangling images"
    };
    if !a.force && !confirm(what)? {
        return Ok(());
    }
    let store = cli.open_store()?;
    let (lines, freed) = prune_images(&store, a.all, &f)?;
    if !lines.is_empty() {
        println!("Deleted Images:");
        lines.iter().for_each(|l| println!("{}", safe(l)));
        println!();
    }
    println!("Total reclaimed space: {}", human_size(freed));
    Ok(())
}

/// The driver id of an image's top layer.
fn top(store: &Store, image: &str) -> Result<LayerId> {
    let img = store.find_image(image)?;
    let l = store
        .top_layer(&img)?
        .with_context(|| format!("image {image} has no layers to mount"))?;
    Ok(LayerId::new(l.cache_id)?)
}

/// `strata image mount`.
pub fn mount(cli: &Cli, image: &str) -> Result<()> {
    let store = cli.open_store()?;
    let id = top(&store, image)?;
    println!("{}", store.driver().mount(&id)?.display());
    Ok(())
}

/// `strata image unmount`.
pub fn unmount(cli: &Cli, image: &str) -> Result<()> {
    let store = cli.open_store()?;
    let id = top(&store, image)?;
    Ok(store.driver().unmount(&id)?)
}

/// `strata image diff A B`.
pub fn diff(cli: &Cli, a: &str, b: &str) -> Result<()> {
    let store = cli.open_store()?;
    let (ta, tb) = (top(&store, a)?, top(&store, b)?);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for c in store.driver().changes(&tb, DiffBase::Layer(&ta))? {
        writeln!(out, "{c}")?;
    }
    Ok(out.flush()?)
}
