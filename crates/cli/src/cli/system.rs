//! `strata system df|prune|check` (and the top-level `df`, `prune`,
//! `check`).

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use strata_store::reference::split_tag;
use strata_store::{CheckOpts, DiskUsage, Store};

use super::container::prune_containers;
use super::filter::Filters;
use super::image::{manage_confirm as confirm, prune_images};
use super::table::{Table, human_size, short};
use super::{Cli, TableOrJson, safe};

/// `strata system ...`
#[derive(Debug, Subcommand)]
pub enum SystemCmd {
    /// Show disk usage, like docker system df
    Df(DfArgs),
    /// Remove unmounted containers, dangling images (all unused with -a) and unused layers
    Prune(SystemPruneArgs),
    /// Verify the store against the driver and the mounts
    Check(CheckArgs),
    /// Show the store's counts and its driver's status
    Info(super::info::InfoArgs),
}

/// `df`
#[derive(Debug, Args)]
pub struct DfArgs {
    /// Per image and container details
    #[arg(long)]
    pub details: bool,
    /// Output: table or json
    #[arg(long, value_enum, default_value_t = TableOrJson::Table)]
    pub format: TableOrJson,
}

/// `prune` (layers)
#[derive(Debug, Args)]
pub struct LayerPruneArgs {
    /// Output: table or json
    #[arg(long, value_enum, default_value_t = TableOrJson::Table)]
    pub format: TableOrJson,
}

/// `system prune`
#[derive(Debug, Args)]
pub struct SystemPruneArgs {
    /// Every image no container uses, not only dangling ones
    #[arg(short, long)]
    pub all: bool,
    /// Do not ask
    #[arg(short, long)]
    pub force: bool,
}

/// `check`
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Fix what can be fixed safely (each action is printed)
    #[arg(long)]
    pub repair: bool,
    /// With --repair: print what would be done, change nothing
    #[arg(long, requires = "repair")]
    pub dry_run: bool,
    /// Output: table or json
    #[arg(long, value_enum, default_value_t = TableOrJson::Table)]
    pub format: TableOrJson,
}

/// Run `strata system ...`.
pub fn run(cli: &Cli, c: &SystemCmd) -> Result<()> {
    match c {
        SystemCmd::Df(a) => df(cli, a),
        SystemCmd::Prune(a) => system_prune(cli, a),
        SystemCmd::Check(a) => check(cli, a),
        SystemCmd::Info(a) => super::info::info(cli, a),
    }
}

fn pct(part: u64, total: u64) -> String {
    match (part * 100).checked_div(total) {
        None => "0B".into(),
        Some(p) => format!("{} ({p}%)", human_size(part)),
    }
}

/// One line of `df`'s summary: type, total, active, size, reclaimable.
type SummaryLine = (&'static str, usize, usize, u64, u64);

/// The summary of `df`.
fn summary(s: &Store, du: &DiskUsage) -> Result<Vec<SummaryLine>> {
    let active_imgs: Vec<_> = du.images.iter().filter(|i| i.containers > 0).collect();
    // image layers count once however many images share them; what active
    // images use cannot be reclaimed
    let sizes: std::collections::HashMap<_, _> = s
        .layers()?
        .into_iter()
        .map(|l| (l.chain_id, l.size))
        .collect();
    let mut in_images = std::collections::HashSet::new();
    let mut active = std::collections::HashSet::new();
    for i in s.images()? {
        let is_active = active_imgs.iter().any(|a| a.id == i.id);
        for c in i.layers {
            if is_active {
                active.insert(c.clone());
            }
            in_images.insert(c);
        }
    }
    let size_of = |c: &strata_core::Digest| sizes.get(c).copied().unwrap_or(0);
    let images_size: u64 = in_images.iter().map(size_of).sum();
    let images_reclaim: u64 = in_images
        .iter()
        .filter(|c| !active.contains(*c))
        .map(size_of)
        .sum();
    let mounted: Vec<bool> = s
        .containers()?
        .iter()
        .map(|c| {
            strata_store::Store::container_layer(c)
                .ok()
                .and_then(|id| s.driver().layer(&id).ok())
                .is_some_and(|l| l.mount_count > 0)
        })
        .collect();
    let cont_size: u64 = du.containers.iter().map(|c| c.size_rw).sum();
    let cont_reclaim = du
        .containers
        .iter()
        .zip(&mounted)
        .filter(|(_, m)| !**m)
        .map(|(c, _)| c.size_rw)
        .sum();
    Ok(vec![
        (
            "Images",
            du.images.len(),
            active_imgs.len(),
            images_size,
            images_reclaim,
        ),
        (
            "Containers",
            du.containers.len(),
            mounted.iter().filter(|m| **m).count(),
            cont_size,
            cont_reclaim,
        ),
        (
            "Layers",
            du.layers_total,
            du.layers_total - du.layers_unreferenced,
            du.layers_size,
            du.layers_unreferenced_size,
        ),
    ])
}

/// `strata df`.
pub fn df(cli: &Cli, a: &DfArgs) -> Result<()> {
    let s = cli.open_store()?;
    let du = s.disk_usage(true)?;
    let sum = summary(&s, &du)?;
    if a.format == TableOrJson::Json {
        let obj =
            |r: &SummaryLine| json!({"Total": r.1, "Active": r.2, "Size": r.3, "Reclaimable": r.4});
        let v = json!({
            "Images": obj(&sum[0]), "Containers": obj(&sum[1]), "Layers": obj(&sum[2]),
            "ImagesDetail": du.images, "ContainersDetail": du.containers,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut t = Table::new(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]);
    for r in &sum {
        t.row(vec![
            r.0.into(),
            r.1.to_string(),
            r.2.to_string(),
            human_size(r.3),
            pct(r.4, r.3),
        ]);
    }
    print!("{}", t.render());
    if a.details {
        details(&du);
    }
    Ok(())
}

fn details(du: &DiskUsage) {
    let now = strata_store::now();
    println!("\nImages space usage:\n");
    let mut t = Table::new(&[
        "REPOSITORY",
        "TAG",
        "IMAGE ID",
        "CREATED",
        "SIZE",
        "SHARED SIZE",
        "UNIQUE SIZE",
        "CONTAINERS",
    ]);
    for i in &du.images {
        let names: Vec<(&str, &str)> = if i.repo_tags.is_empty() {
            vec![("<none>", "<none>")]
        } else {
            i.repo_tags.iter().map(|t| split_tag(t)).collect()
        };
        for (r, g) in names {
            t.row(vec![
                safe(r),
                safe(g),
                i.id.short().to_string(),
                i.created
                    .map_or_else(|| "N/A".into(), |c| strata_store::reference::ago(c, now)),
                human_size(i.size),
                human_size(i.shared_size),
                human_size(i.unique_size),
                i.containers.to_string(),
            ]);
        }
    }
    print!("{}", t.render());
    println!("\nContainers space usage:\n");
    let mut t = Table::new(&["CONTAINER ID", "IMAGE", "SIZE", "NAMES"]);
    for c in &du.containers {
        let size = format!(
            "{} (virtual {})",
            human_size(c.size_rw),
            human_size(c.size_root_fs)
        );
        t.row(vec![
            short(&c.id).to_string(),
            c.image.short().to_string(),
            size,
            c.name.clone(),
        ]);
    }
    print!("{}", t.render());
}

/// `strata prune`: layers no image or container uses.
pub fn prune_layers(cli: &Cli, a: &LayerPruneArgs) -> Result<()> {
    let s = cli.open_store()?;
    let removed = s.prune_layers()?;
    let total: u64 = removed.iter().map(|l| l.size).sum();
    if a.format == TableOrJson::Json {
        let ids: Vec<String> = removed.iter().map(|l| l.chain_id.to_string()).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"LayersDeleted": ids, "SpaceReclaimed": total}))?
        );
        return Ok(());
    }
    if !removed.is_empty() {
        println!("Deleted layers:");
        removed
            .iter()
            .for_each(|l| println!("deleted: {}", l.chain_id));
        println!();
    }
    println!("Total reclaimed space: {}", human_size(total));
    Ok(())
}

fn system_prune(cli: &Cli, a: &SystemPruneArgs) -> Result<()> {
    let what = if a.all {
        "all containers that are not mounted, all images without a container, and all unused layers"
    } else {
        "all containers that are not mounted, all dangling images, and all unused layers"
    };
    if !a.force && !confirm(what)? {
        return Ok(());
    }
    let s = cli.open_store()?;
    let (cs, cfreed) = prune_containers(&s)?;
    let (is, ifreed) = prune_images(&s, a.all, &Filters::default())?;
    let ls = s.prune_layers()?;
    let lfreed: u64 = ls.iter().map(|l| l.size).sum();
    for (head, lines) in [("Deleted Containers:", &cs), ("Deleted Images:", &is)] {
        if !lines.is_empty() {
            println!("{head}");
            lines.iter().for_each(|l| println!("{}", safe(l)));
            println!();
        }
    }
    if !ls.is_empty() {
        println!("Deleted layers:");
        ls.iter().for_each(|l| println!("deleted: {}", l.chain_id));
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        human_size(cfreed + ifreed + lfreed)
    );
    Ok(())
}

/// `strata check`: status 1 when problems remain.
pub fn check(cli: &Cli, a: &CheckArgs) -> Result<()> {
    let s = cli.open_store()?;
    let r = s.check(CheckOpts {
        repair: a.repair,
        dry_run: a.dry_run,
    })?;
    if a.format == TableOrJson::Json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        r.repaired
            .iter()
            .for_each(|l| println!("{}: {l}", if a.dry_run { "dry run" } else { "repaired" }));
        r.problems.iter().for_each(|p| println!("problem: {p}"));
        r.notes.iter().for_each(|n| println!("note: {n}"));
        if r.problems.is_empty() {
            println!(
                "store is consistent ({} layers, {} images, {} containers)",
                s.layers()?.len(),
                s.images()?.len(),
                s.containers()?.len()
            );
        }
    }
    if r.problems.is_empty() {
        Ok(())
    } else {
        bail!("{} problem(s) found", r.problems.len())
    }
}
