//! Disk usage, like `docker system df`: images with their shared and
//! unique sizes, containers with their own sizes, layers nothing uses.
//!
//! Read-only layers' sizes are in their records (fixed once applied), so
//! images cost one query; containers cost one driver `diff_size` each,
//! O(changes) on overlay2 and btrfs.

use std::collections::HashMap;

use serde::Serialize;
use strata_core::Digest;

use crate::Store;
use crate::error::{Error, Result};
use crate::records;

/// Disk usage, like `docker system df`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct DiskUsage {
    /// Every image.
    pub images: Vec<ImageUsage>,
    /// Every container.
    pub containers: Vec<ContainerUsage>,
    /// Layers recorded.
    pub layers_total: usize,
    /// Bytes of their content.
    pub layers_size: u64,
    /// Layers no image uses.
    pub layers_unreferenced: usize,
    /// Bytes of those.
    pub layers_unreferenced_size: u64,
}

/// One image's usage.
#[derive(Debug, Clone, Serialize)]
pub struct ImageUsage {
    /// The image ID.
    pub id: Digest,
    /// Its tags.
    pub repo_tags: Vec<String>,
    /// From its config (seconds), when it says.
    pub created: Option<i64>,
    /// Bytes of all its layers.
    pub size: u64,
    /// Bytes of its layers other images use too.
    pub shared_size: u64,
    /// `size - shared_size`.
    pub unique_size: u64,
    /// Containers made from it.
    pub containers: usize,
}

/// One container's usage.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerUsage {
    /// The container ID.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The image it was made from.
    pub image: Digest,
    /// Bytes of its own changes (0 when not asked for).
    pub size_rw: u64,
    /// Its changes plus its image.
    pub size_root_fs: u64,
}

/// Per image: (size, shared size), from one pass over the layer lists.
fn image_sizes(tx: &rusqlite::Connection) -> Result<HashMap<String, (u64, u64)>> {
    let mut st = tx
        .prepare(
            "SELECT il.image, SUM(l.size), SUM(CASE WHEN u.n > 1 THEN l.size ELSE 0 END)
             FROM image_layers il
             JOIN layers l ON l.chain_id = il.chain_id
             JOIN (SELECT chain_id, COUNT(DISTINCT image) AS n FROM image_layers GROUP BY chain_id) u
               ON u.chain_id = il.chain_id
             GROUP BY il.image",
        )
        .map_err(Error::db("sizes"))?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                (r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64),
            ))
        })
        .map_err(Error::db("sizes"))?;
    rows.collect::<rusqlite::Result<HashMap<_, _>>>()
        .map_err(Error::db("sizes"))
}

/// Containers per image.
fn container_counts(tx: &rusqlite::Connection) -> Result<HashMap<String, usize>> {
    let mut st = tx
        .prepare("SELECT image, COUNT(*) FROM containers GROUP BY image")
        .map_err(Error::db("count containers"))?;
    let rows = st
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as usize))
        })
        .map_err(Error::db("count containers"))?;
    rows.collect::<rusqlite::Result<HashMap<_, _>>>()
        .map_err(Error::db("count containers"))
}

/// (layers, their bytes, unreferenced layers, their bytes).
fn layer_totals(tx: &rusqlite::Connection) -> Result<(usize, u64, usize, u64)> {
    tx.query_row(
        "SELECT COUNT(*), COALESCE(SUM(size), 0),
                COALESCE(SUM(CASE WHEN NOT EXISTS (SELECT 1 FROM image_layers il WHERE il.chain_id = l.chain_id) THEN 1 ELSE 0 END), 0),
                COALESCE(SUM(CASE WHEN NOT EXISTS (SELECT 1 FROM image_layers il WHERE il.chain_id = l.chain_id) THEN size ELSE 0 END), 0)
         FROM layers l",
        [],
        |r| {
            Ok((
                r.get::<_, i64>(0)? as usize,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as usize,
                r.get::<_, i64>(3)? as u64,
            ))
        },
    )
    .map_err(Error::db("layer totals"))
}

impl Store {
    /// How many containers each image has (by image ID), in one query.
    pub fn containers_per_image(&self) -> Result<HashMap<String, usize>> {
        self.db.read("count containers", |tx| container_counts(tx))
    }

    /// Disk usage; with `with_containers_size`, each container's own
    /// changes are measured (one driver `diff_size` each).
    pub fn disk_usage(&self, with_containers_size: bool) -> Result<DiskUsage> {
        let (images, containers, sizes, counts, totals) = self.db.read("disk usage", |tx| {
            Ok((
                records::images(tx)?,
                records::containers(tx)?,
                image_sizes(tx)?,
                container_counts(tx)?,
                layer_totals(tx)?,
            ))
        })?;
        let mut du = DiskUsage {
            layers_total: totals.0,
            layers_size: totals.1,
            layers_unreferenced: totals.2,
            layers_unreferenced_size: totals.3,
            ..DiskUsage::default()
        };
        let image_size: HashMap<&Digest, u64> = images.iter().map(|i| (&i.id, i.size)).collect();
        for i in &images {
            let (size, shared) = sizes.get(i.id.as_str()).copied().unwrap_or((0, 0));
            du.images.push(ImageUsage {
                id: i.id.clone(),
                repo_tags: i.repo_tags.clone(),
                created: i.created,
                size,
                shared_size: shared,
                unique_size: size.saturating_sub(shared),
                containers: counts.get(i.id.as_str()).copied().unwrap_or(0),
            });
        }
        for c in &containers {
            let rw = if with_containers_size {
                self.container_size(c).unwrap_or(0)
            } else {
                0
            };
            du.containers.push(ContainerUsage {
                id: c.id.clone(),
                name: c.name.clone(),
                image: c.image.clone(),
                size_rw: rw,
                size_root_fs: rw + image_size.get(&c.image).copied().unwrap_or(0),
            });
        }
        Ok(du)
    }
}
