//! `strata container ...` and `strata ps`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;
use strata_core::{DiffBase, Digest};
use strata_store::reference::{ago, format_time};
use strata_store::{CommitOpts, ContainerRecord, Store};

use super::filter::Filters;
use super::format::{self, Columns, Format, Row};
use super::image::manage_confirm as confirm;
use super::output::Output;
use super::table::{human_size, short};
use super::{Cli, safe};

/// `strata container ...`
#[derive(Debug, Subcommand)]
pub enum ContainerCmd {
    /// Create a container: a read-write layer on an image; prints its ID.
    /// `create --name NAME IMAGE` (Docker's form) or `create NAME IMAGE`;
    /// without a name, one is made up.
    Create(CreateArgs),
    /// List containers
    #[command(alias = "list")]
    Ls(PsArgs),
    /// Show containers' details as JSON (or through a template)
    Inspect(InspectArgs),
    /// Mount a container's root file system and print its path
    Mount {
        /// The container: name, ID or ID prefix
        name: String,
    },
    /// Drop one mount reference of a container
    #[command(alias = "umount")]
    Unmount {
        /// The container
        name: String,
    },
    /// List changed files (A / C / D)
    Diff(DiffArgs),
    /// Make a new image from a container's changes
    Commit(CommitArgs),
    /// Write a container's root file system as a tar (-o FILE, else standard output)
    Export(ExportArgs),
    /// Remove containers
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove every container that is not mounted
    Prune {
        /// Do not ask
        #[arg(short, long)]
        force: bool,
    },
}

/// `container create` / `create`
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The container's name
    #[arg(long = "name", value_name = "NAME")]
    pub name: Option<String>,
    /// [NAME] IMAGE: the container's name when --name is not given,
    /// then the image (NAME[:TAG], ID or ID prefix)
    #[arg(num_args = 1..=2, required = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

/// `container diff` / `diff`
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The container
    pub name: String,
}

/// `container export` / `export`
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The container
    pub name: String,
    /// Write to FILE (default, or -: standard output)
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `container rm` / `rm`
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Containers: names, IDs or ID prefixes
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Drop its mounts first if it is mounted
    #[arg(short, long)]
    pub force: bool,
}

/// `container commit`
#[derive(Debug, Args)]
pub struct CommitArgs {
    /// The container
    pub name: String,
    /// NAME[:TAG] of the new image
    pub reference: Option<String>,
    /// Commit message (the history entry's comment)
    #[arg(short, long)]
    pub message: Option<String>,
    /// Author
    #[arg(short, long)]
    pub author: Option<String>,
    /// Turn the container's layer into the image's (no copy, O(1)) and
    /// remove the container
    #[arg(long)]
    pub rm: bool,
}

/// `ps` / `container ls`
#[derive(Debug, Args)]
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
    /// Do not shorten IDs
    #[arg(long)]
    pub no_trunc: bool,
    /// Filter: name=, id=, ancestor=, label=, before=, since= (repeatable)
    #[arg(short = 'f', long = "filter", value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// Show the N last created containers (0 or less: all)
    #[arg(short = 'n', long = "last", value_name = "N", default_value_t = -1, allow_hyphen_values = true)]
    pub last: i64,
    /// Show the last created container
    #[arg(short = 'l', long)]
    pub latest: bool,
    /// table, json, or a Go template (e.g. '{{.Names}}')
    #[arg(long, value_parser = format::parse, default_value = "table")]
    pub format: Format,
}

/// `container inspect`
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Containers: names, IDs or ID prefixes
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Include sizes (SizeRw, SizeRootFs)
    #[arg(short, long)]
    pub size: bool,
    /// json, or a Go template (e.g. '{{.GraphDriver.Data.UpperDir}}')
    #[arg(short, long, value_parser = format::parse, default_value = "json")]
    pub format: Format,
}

const COLS: Columns = &[
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("RunningFor", "CREATED"),
    ("Status", "STATUS"),
    ("Names", "NAMES"),
];
const COLS_SIZE: Columns = &[
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("RunningFor", "CREATED"),
    ("Status", "STATUS"),
    ("Names", "NAMES"),
    ("Size", "SIZE"),
];

/// The mount references of a container's layer.
fn mounts(s: &Store, c: &ContainerRecord) -> u32 {
    Store::container_layer(c)
        .ok()
        .and_then(|id| s.driver().layer(&id).ok())
        .map_or(0, |l| l.mount_count)
}

/// What `ps` shows as the image: the reference it was made with while it
/// still names that image (as Docker does), else the image's short ID.
/// `now_names` is what that reference names today.
fn image_shown(c: &ContainerRecord, now_names: Option<&Digest>) -> String {
    if now_names == Some(&c.image) {
        c.image_ref.clone()
    } else {
        c.image.short().to_string()
    }
}

fn keep(
    s: &Store,
    c: &ContainerRecord,
    f: &Filters,
    bounds: (Option<i64>, Option<i64>),
) -> Result<bool> {
    let img_labels = |c: &ContainerRecord| {
        s.image_record(&c.image)
            .ok()
            .flatten()
            .map(|i| super::image::labels(s, &i))
            .unwrap_or_default()
    };
    let ancestor = |r: &String| s.find_image(r).is_ok_and(|i| i.id == c.image);
    Ok(
        (f.name.is_empty() || f.name.iter().any(|n| c.name.contains(n.as_str())))
            && (f.id.is_empty() || f.id.iter().any(|i| c.id.starts_with(i.as_str())))
            && (f.ancestor.is_empty() || f.ancestor.iter().any(ancestor))
            && bounds.0.is_none_or(|b| c.created < b)
            && bounds.1.is_none_or(|b| c.created > b)
            && (f.label.is_empty() || f.labels_match(&img_labels(c))),
    )
}

/// What a `ps` row needs beside its container: the image its reference
/// names now, and the mounted layers' counts.
struct PsCtx<'a> {
    named: Option<&'a Digest>,
    counts: &'a std::collections::HashMap<strata_core::LayerId, u32>,
}

fn ps_row(s: &Store, c: &ContainerRecord, x: PsCtx<'_>, a: &PsArgs, now: i64) -> Result<Row> {
    let named = x.named;
    let n = Store::container_layer(c)
        .ok()
        .and_then(|id| x.counts.get(&id).copied())
        .unwrap_or(0);
    let status = if n > 0 {
        format!("Mounted ({n})")
    } else {
        "Created".into()
    };
    let (rw, virt) = if a.size {
        let rw = s.container_size(c)?;
        let img = s.image_record(&c.image)?.map_or(0, |i| i.size);
        (rw, rw + img)
    } else {
        (0, 0)
    };
    let id = if a.no_trunc {
        c.id.clone()
    } else {
        short(&c.id).to_string()
    };
    let image = image_shown(c, named);
    let mut ctx = BTreeMap::new();
    for (k, v) in [
        ("ID", id),
        ("Image", safe(&image)),
        ("RunningFor", ago(c.created, now)),
        ("CreatedAt", format_time(c.created)),
        ("Status", status.clone()),
        (
            "State",
            if n > 0 { "mounted" } else { "created" }.to_string(),
        ),
        ("Names", c.name.clone()),
        (
            "Size",
            format!("{} (virtual {})", human_size(rw), human_size(virt)),
        ),
        ("Mounts", n.to_string()),
    ] {
        ctx.insert(k.to_string(), v);
    }
    let mut json = json!({
        "ID": c.id, "Names": c.name, "Image": image, "ImageID": c.image.to_string(),
        "CreatedAt": format_time(c.created), "Status": status, "Mounts": n,
    });
    if a.size {
        json["SizeRw"] = json!(rw);
        json["SizeRootFs"] = json!(virt);
    }
    Ok(Row { json, ctx })
}

/// `strata ps` / `strata container ls`.
pub fn ps(cli: &Cli, a: &PsArgs) -> Result<()> {
    let f = Filters::parse(
        &a.filter,
        &["name", "id", "ancestor", "label", "before", "since"],
    )?;
    let s = cli.open_store()?;
    let now = strata_store::now();
    let bound = |r: &Option<String>| -> Result<Option<i64>> {
        r.as_ref()
            .map(|r| Ok(s.find_container(r)?.created))
            .transpose()
    };
    let bounds = (bound(&f.before)?, bound(&f.since)?);
    let mut kept = Vec::new();
    // newest first, as Docker lists them; -n / -l keep the first ones
    let limit = if a.latest { 1 } else { a.last };
    for c in s.containers()? {
        if usize::try_from(limit).is_ok_and(|n| n > 0 && kept.len() >= n) {
            break;
        }
        if keep(&s, &c, &f, bounds)? {
            kept.push(c);
        }
    }
    let refs: Vec<&str> = kept.iter().map(|c| c.image_ref.as_str()).collect();
    let named = s.resolve_images(&refs)?;
    let counts = s.driver().mount_counts()?;
    let mut rows = Vec::with_capacity(kept.len());
    for (c, n) in kept.iter().zip(&named) {
        let x = PsCtx {
            named: n.as_ref(),
            counts: &counts,
        };
        rows.push(ps_row(&s, c, x, a, now)?);
    }
    let mut out = std::io::stdout().lock();
    if a.quiet {
        for r in &rows {
            writeln!(out, "{}", r.ctx["ID"])?;
        }
        return Ok(());
    }
    format::print_rows(
        &mut out,
        &a.format,
        if a.size { COLS_SIZE } else { COLS },
        &rows,
    )
}

pub(crate) fn inspect_one(s: &Store, c: &ContainerRecord, size: bool) -> Result<serde_json::Value> {
    let n = mounts(s, c);
    let mut v = json!({
        "Id": c.id,
        "Created": format_time(c.created),
        "Name": format!("/{}", c.name),
        "Image": c.image.to_string(),
        "Config": {"Image": c.image_ref},
        "State": {"Status": if n > 0 { "mounted" } else { "created" }, "Mounts": n},
        "Driver": s.driver().name(),
        "GraphDriver": super::image::graph_driver(s, Some(&c.layer)),
    });
    if size {
        let rw = s.container_size(c)?;
        let img = s.image_record(&c.image)?.map_or(0, |i| i.size);
        v["SizeRw"] = json!(rw);
        v["SizeRootFs"] = json!(rw + img);
    }
    Ok(v)
}

/// `create`'s (name, image) from `--name` and the positional arguments;
/// a made-up name (`strata_` and 8 hex digits) when none is given.
fn create_args(flag: Option<&str>, args: &[String]) -> Result<(String, String)> {
    match (flag, args) {
        (Some(n), [image]) => Ok((n.to_string(), image.clone())),
        (None, [name, image]) => Ok((name.clone(), image.clone())),
        (None, [image]) => Ok((
            format!("strata_{}", &strata_store::random_id()[..8]),
            image.clone(),
        )),
        (Some(_), _) => Err(super::usage(
            "container create: give the name either with --name or before the image, not both",
        )),
        _ => Err(super::usage("container create: expected [NAME] IMAGE")),
    }
}

/// Run `strata container ...`.
pub fn run(cli: &Cli, cmd: &ContainerCmd) -> Result<()> {
    match cmd {
        ContainerCmd::Ls(a) => ps(cli, a),
        ContainerCmd::Export(a) => export(cli, a),
        ContainerCmd::Diff(a) => diff(cli, a),
        ContainerCmd::Create(a) => create(cli, a),
        ContainerCmd::Commit(a) => commit(cli, a),
        ContainerCmd::Rm(a) => rm(cli, a),
        ContainerCmd::Inspect(a) => {
            let s = cli.open_store()?;
            format::inspect_each(&a.format, &a.names, |n| {
                format::found(s.find_container(n), |c| inspect_one(&s, &c, a.size))
            })
        }
        ContainerCmd::Mount { name } => {
            let s = cli.open_store()?;
            let c = s.find_container(name)?;
            let path = s.driver().mount(&Store::container_layer(&c)?)?;
            println!("{}", path.display());
            Ok(())
        }
        ContainerCmd::Unmount { name } => {
            let s = cli.open_store()?;
            let c = s.find_container(name)?;
            Ok(s.driver().unmount(&Store::container_layer(&c)?)?)
        }
        ContainerCmd::Prune { force } => prune(&cli.open_store()?, *force),
    }
}

/// `container export` / `export`.
pub fn export(cli: &Cli, a: &ExportArgs) -> Result<()> {
    let mut out = Output::open(a.output.as_deref())?;
    cli.open_store()?.export_container(&a.name, &mut out)?;
    out.finish()
}

/// `container diff` / `diff`: `A` / `C` / `D` and the path, as `docker diff`.
pub fn diff(cli: &Cli, a: &DiffArgs) -> Result<()> {
    let s = cli.open_store()?;
    let c = s.find_container(&a.name)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for ch in s
        .driver()
        .changes(&Store::container_layer(&c)?, DiffBase::Parent)?
    {
        writeln!(out, "{ch}")?;
    }
    Ok(out.flush()?)
}

/// `container create` / `create`.
pub fn create(cli: &Cli, a: &CreateArgs) -> Result<()> {
    // arguments are checked before the root is touched
    let (name, image) = create_args(a.name.as_deref(), &a.args)?;
    let s = cli.open_store()?;
    println!("{}", s.create_container(&name, &image)?.id);
    Ok(())
}

/// `container commit` / `commit`.
pub fn commit(cli: &Cli, a: &CommitArgs) -> Result<()> {
    let opts = CommitOpts {
        tag: a.reference.as_deref(),
        message: a.message.as_deref(),
        author: a.author.as_deref(),
        rm: a.rm,
    };
    println!("{}", cli.open_store()?.commit(&a.name, &opts)?.id);
    Ok(())
}

/// `container rm` / `rm`: each container in turn (see
/// [`super::remove_each`]).
pub fn rm(cli: &Cli, a: &RmArgs) -> Result<()> {
    let s = cli.open_store()?;
    super::remove_each(&a.names, a.force, |n| {
        s.remove_container(n, a.force).map(|_| vec![n.to_string()])
    })
}

/// Remove the containers that are not mounted; the lines and the bytes
/// of their changes.
pub fn prune_containers(s: &Store) -> Result<(Vec<String>, u64)> {
    let mut lines = Vec::new();
    let mut freed = 0;
    for c in s.containers()? {
        if mounts(s, &c) > 0 {
            continue;
        }
        let size = s.container_size(&c).unwrap_or(0);
        match s.remove_container(&c.id, false) {
            Ok(_) => {
                lines.push(c.id.clone());
                freed += size;
            }
            Err(e) => tracing::warn!(container = %c.name, "not pruned: {e}"),
        }
    }
    Ok((lines, freed))
}

fn prune(s: &Store, force: bool) -> Result<()> {
    if !force && !confirm("all stopped containers (every container that is not mounted)")? {
        return Ok(());
    }
    let (lines, freed) = prune_containers(s)?;
    if !lines.is_empty() {
        println!("Deleted Containers:");
        lines.iter().for_each(|l| println!("{l}"));
        println!();
    }
    println!("Total reclaimed space: {}", human_size(freed));
    Ok(())
}
