//! `strata df`, `strata prune`, `strata check`.

use anyhow::Result;
use serde_json::json;
use strata_store::reference::{ago, split_tag};

use super::Cli;
use super::image::open_store;
use super::layer::human_size;
use super::table::Table;

fn pct(part: u64, total: u64) -> String {
    match (part * 100).checked_div(total) {
        None => "0B".into(),
        Some(p) => format!("{} ({p}%)", human_size(part)),
    }
}

pub fn df(cli: &Cli, verbose: bool, format: &str) -> Result<()> {
    let store = open_store(cli)?;
    let du = store.disk_usage(true)?;
    let now = strata_store::now();
    // image layers are counted once however many images share them
    let layers = store.layers()?;
    let active_images: Vec<_> = du.images.iter().filter(|i| i.containers > 0).collect();
    let mut active_layers = std::collections::BTreeSet::new();
    for i in store.images()? {
        if active_images.iter().any(|a| a.id == i.id) {
            for c in &i.layers {
                active_layers.insert(c.clone());
            }
        }
    }
    let mut in_images = std::collections::BTreeSet::new();
    for i in store.images()? {
        for c in &i.layers {
            in_images.insert(c.clone());
        }
    }
    let images_size: u64 = layers
        .iter()
        .filter(|l| in_images.contains(&l.chain_id))
        .map(|l| l.size)
        .sum();
    let images_reclaim: u64 = layers
        .iter()
        .filter(|l| in_images.contains(&l.chain_id) && !active_layers.contains(&l.chain_id))
        .map(|l| l.size)
        .sum();
    let cont_size: u64 = du.containers.iter().map(|c| c.size_rw).sum();
    let mounted: Vec<bool> = store
        .containers()?
        .iter()
        .map(|c| {
            strata_core::LayerId::new(c.layer.clone())
                .ok()
                .and_then(|id| store.driver.metadata(&id).ok())
                .and_then(|m| {
                    m.into_iter()
                        .find(|(k, _)| k == "MountCount")
                        .map(|(_, v)| v != "0")
                })
                .unwrap_or(false)
        })
        .collect();
    let cont_active = mounted.iter().filter(|m| **m).count();
    let cont_reclaim: u64 = du
        .containers
        .iter()
        .zip(&mounted)
        .filter(|(_, m)| !**m)
        .map(|(c, _)| c.size_rw)
        .sum();
    if format == "json" {
        let v = json!({
            "Images": {"Total": du.images.len(), "Active": active_images.len(), "Size": images_size, "Reclaimable": images_reclaim},
            "Containers": {"Total": du.containers.len(), "Active": cont_active, "Size": cont_size, "Reclaimable": cont_reclaim},
            "Layers": {"Total": du.layers_total, "Active": du.layers_total - du.layers_unreferenced, "Size": du.layers_size, "Reclaimable": du.layers_unreferenced_size},
            "ImagesDetail": du.images,
            "ContainersDetail": du.containers,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut t = Table::new(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]);
    t.row(vec![
        "Images".into(),
        du.images.len().to_string(),
        active_images.len().to_string(),
        human_size(images_size),
        pct(images_reclaim, images_size),
    ]);
    t.row(vec![
        "Containers".into(),
        du.containers.len().to_string(),
        cont_active.to_string(),
        human_size(cont_size),
        pct(cont_reclaim, cont_size),
    ]);
    t.row(vec![
        "Layers".into(),
        du.layers_total.to_string(),
        (du.layers_total - du.layers_unreferenced).to_string(),
        human_size(du.layers_size),
        pct(du.layers_unreferenced_size, du.layers_size),
    ]);
    print!("{}", t.render());
    if verbose {
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
            let names: Vec<(String, String)> = if i.repo_tags.is_empty() {
                vec![("<none>".into(), "<none>".into())]
            } else {
                i.repo_tags
                    .iter()
                    .map(|t| {
                        let (r, g) = split_tag(t);
                        (r.to_string(), g.to_string())
                    })
                    .collect()
            };
            for (r, g) in names {
                t.row(vec![
                    r,
                    g,
                    i.id.short().to_string(),
                    ago(i.created, now),
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
            t.row(vec![
                c.id[..12].to_string(),
                c.image.short().to_string(),
                format!(
                    "{} (virtual {})",
                    human_size(c.size_rw),
                    human_size(c.size_root_fs)
                ),
                c.name.clone(),
            ]);
        }
        print!("{}", t.render());
    }
    Ok(())
}

pub fn prune(cli: &Cli, format: &str) -> Result<()> {
    let store = open_store(cli)?;
    let removed = store.prune_layers()?;
    let total: u64 = removed.iter().map(|l| l.size).sum();
    if format == "json" {
        let v = json!({"LayersDeleted": removed.iter().map(|l| l.chain_id.to_string()).collect::<Vec<_>>(), "SpaceReclaimed": total});
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if !removed.is_empty() {
            println!("Deleted layers:");
            for l in &removed {
                println!("deleted: {}", l.chain_id);
            }
            println!();
        }
        println!("Total reclaimed space: {}", human_size(total));
    }
    Ok(())
}

pub fn check(cli: &Cli, repair: bool, format: &str) -> Result<bool> {
    let store = open_store(cli)?;
    let r = store.check(repair)?;
    if format == "json" {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for l in &r.repaired {
            println!("repaired: {l}");
        }
        for p in &r.problems {
            println!("problem: {p}");
        }
        if r.problems.is_empty() {
            println!(
                "store is consistent ({} layers, {} images, {} containers)",
                store.layers()?.len(),
                store.images()?.len(),
                store.containers()?.len()
            );
        }
    }
    Ok(r.problems.is_empty())
}
