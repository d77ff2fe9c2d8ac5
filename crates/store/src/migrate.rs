//! Roots of earlier versions kept one JSON file per record
//! (`store/layers/HEX.json`, `images/`, `containers/`, `pending/`). On open
//! they are read into the database in one transaction and the old
//! directories are moved aside to `store/json-before-db/`.

use std::collections::HashMap;
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
    let layers: Vec<LayerRecord> = read_all::<OldLayer>(&old)?
        .into_iter()
        .map(OldLayer::record)
        .collect();
    let images: Vec<OldImage> = read_all(&s.dir.join("images"))?;
    let containers: Vec<ContainerRecord> = read_all::<OldContainer>(&s.dir.join("containers"))?
        .into_iter()
        .map(OldContainer::record)
        .collect();
    let pending: Vec<String> = std::fs::read_dir(s.dir.join("pending"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let sizes: HashMap<Digest, u64> = layers
        .iter()
        .map(|l| (l.chain_id.clone(), l.size))
        .collect();
    let images: Vec<ImageRecord> = images
        .into_iter()
        .map(|i| image_record(s, &sizes, i))
        .collect();
    s.db.write("migrate records", |tx| {
        for l in &layers {
            if records::layer(tx, &l.chain_id)?.is_none() {
                records::insert_layer(tx, l)?;
            }
        }
        for i in &images {
            if records::image(tx, &i.id)?.is_none() {
                records::insert_image(tx, i)?;
                for t in &i.repo_tags {
                    records::set_tag(tx, t, &i.id)?;
                }
            }
        }
        for c in &containers {
            if records::container(tx, &c.id)?.is_none() {
                records::insert_container(tx, c)?;
            }
        }
        for p in pending.iter().filter(|p| !p.starts_with('.')) {
            let _ = records::add_intent(tx, p, "create (from an earlier version)");
        }
        Ok(())
    })?;
    move_aside(s)?;
    tracing::info!(
        layers = layers.len(),
        images = images.len(),
        containers = containers.len(),
        "store: migrated the records of an earlier version into store.db"
    );
    Ok(())
}

impl OldLayer {
    fn record(self) -> LayerRecord {
        LayerRecord {
            chain_id: self.chain_id,
            diff_id: self.diff_id,
            parent: self.parent,
            cache_id: self.cache_id,
            size: self.size,
            tar_size: self.tar_size,
            created: self.created,
            blob: self.blob,
            removing: false,
        }
    }
}

impl OldContainer {
    fn record(self) -> ContainerRecord {
        ContainerRecord {
            image_ref: self.image.short().to_string(),
            id: self.id,
            name: self.name,
            image: self.image,
            layer: self.layer,
            created: self.created,
            removing: false,
        }
    }
}

/// An old image record, with what the database keeps beside it: its size
/// (from its layers) and the config's summary.
fn image_record(s: &Store, sizes: &HashMap<Digest, u64>, i: OldImage) -> ImageRecord {
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
}

/// Keep the old record directories, out of the way, for a downgrade.
fn move_aside(s: &Store) -> Result<()> {
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
    Ok(())
}
