//! Roots of earlier versions kept one JSON file per record
//! (`store/layers/HEX.json`, `images/`, `containers/`, `pending/`). On open
//! they are read into the database in one transaction and the old
//! directories are moved aside to `store/json-before-db/`.

use std::path::Path;

use serde::Deserialize;
use strata_core::Digest;

use crate::error::{Error, IoCtx, Result};
use crate::records::{self, BlobRef, ContainerRecord, ImageRecord, LayerRecord};
use crate::{Store, image_meta};

#[derive(Deserialize)]
struct OldLayer {
    chain_id: Digest,
    diff_id: Digest,
    parent: Option<Digest>,
    cache_id: String,
    size: u64,
    tar_size: u64,
    created: i64,
    #[serde(default)]
    blob: Option<BlobRef>,
}

#[derive(Deserialize)]
struct OldImage {
    id: Digest,
    #[serde(default)]
    repo_tags: Vec<String>,
    #[serde(default)]
    repo_digests: Vec<String>,
    #[serde(default)]
    manifest: Option<Digest>,
    layers: Vec<Digest>,
    loaded: i64,
}

#[derive(Deserialize)]
struct OldContainer {
    id: String,
    name: String,
    image: Digest,
    layer: String,
    created: i64,
}

/// The JSON records of a directory (unreadable ones are reported and
/// kept in the moved-aside copy).
fn read_all<T: for<'de> Deserialize<'de>>(dir: &Path) -> Result<Vec<T>> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let data = std::fs::read(&p).ctx("read", &p)?;
        match serde_json::from_slice(&data) {
            Ok(v) => out.push(v),
            Err(e) => {
                tracing::warn!(path = %p.display(), "migration: skipping an unreadable record: {e}")
            }
        }
    }
    Ok(out)
}

/// Move the records of an earlier version into the database.
pub(crate) fn from_json(s: &Store) -> Result<()> {
    let old = s.dir.join("layers");
    if !old.is_dir() {
        return Ok(());
    }
    let layers: Vec<OldLayer> = read_all(&old)?;
    let images: Vec<OldImage> = read_all(&s.dir.join("images"))?;
    let containers: Vec<OldContainer> = read_all(&s.dir.join("containers"))?;
    let pending: Vec<String> = std::fs::read_dir(s.dir.join("pending"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let sizes: std::collections::HashMap<Digest, u64> = layers
        .iter()
        .map(|l| (l.chain_id.clone(), l.size))
        .collect();
    let image_recs: Vec<ImageRecord> = images
        .into_iter()
        .map(|i| {
            let meta = s.blob(&i.id).map(|c| image_meta(&c)).unwrap_or_default();
            ImageRecord {
                size: i
                    .layers
                    .iter()
                    .map(|c| sizes.get(c).copied().unwrap_or(0))
                    .sum(),
                id: i.id,
                repo_tags: i.repo_tags,
                repo_digests: i.repo_digests,
                manifest: i.manifest,
                layers: i.layers,
                loaded: i.loaded,
                created: meta.created,
                created_text: meta.created_text,
                os: meta.os,
                architecture: meta.architecture,
            }
        })
        .collect();
    s.db.write("migrate records", |tx| {
        for l in &layers {
            if records::layer(tx, &l.chain_id)?.is_none() {
                records::insert_layer(
                    tx,
                    &LayerRecord {
                        chain_id: l.chain_id.clone(),
                        diff_id: l.diff_id.clone(),
                        parent: l.parent.clone(),
                        cache_id: l.cache_id.clone(),
                        size: l.size,
                        tar_size: l.tar_size,
                        created: l.created,
                        blob: l.blob.clone(),
                        removing: false,
                    },
                )?;
            }
        }
        for i in &image_recs {
            if records::image(tx, &i.id)?.is_none() {
                records::insert_image(tx, i)?;
                for t in &i.repo_tags {
                    records::set_tag(tx, t, &i.id)?;
                }
            }
        }
        for c in &containers {
            if records::container(tx, &c.id)?.is_none() {
                records::insert_container(
                    tx,
                    &ContainerRecord {
                        id: c.id.clone(),
                        name: c.name.clone(),
                        image: c.image.clone(),
                        image_ref: c.image.short().to_string(),
                        layer: c.layer.clone(),
                        created: c.created,
                        removing: false,
                    },
                )?;
            }
        }
        for p in pending.iter().filter(|p| !p.starts_with('.')) {
            let _ = records::add_intent(tx, p, "create (from an earlier version)");
        }
        Ok(())
    })?;
    let aside = s.dir.join("json-before-db");
    strata_core::fsx::mkdir_p(&aside, 0o700).ctx("create", &aside)?;
    for d in ["layers", "images", "containers", "pending"] {
        let from = s.dir.join(d);
        if from.exists() {
            std::fs::rename(&from, aside.join(d)).map_err(|e| Error::Io {
                op: "move aside",
                path: from.clone(),
                err: e,
            })?;
        }
    }
    tracing::info!(
        layers = layers.len(),
        images = image_recs.len(),
        containers = containers.len(),
        "store: migrated the records of an earlier version into store.db"
    );
    Ok(())
}
