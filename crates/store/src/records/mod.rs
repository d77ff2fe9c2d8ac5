//! The store's records (layers, images, containers, intents) and the
//! queries over them. Every function takes an open transaction; the
//! callers decide what one operation's transaction holds.
//!
//! Rows are parsed strictly (digests must be digests); a row that does not
//! parse is skipped by listings with a warning and reported by `check`, so
//! that one bad record never stops the rest of the store from working.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};
use strata_core::Digest;

use crate::error::{Error, Result};

/// A compressed blob kept as imported (for byte-exact OCI export).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// Its digest.
    pub digest: Digest,
    /// Its media type as the manifest gave it (empty: from a docker archive).
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A layer of the store, known by its chain ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// `sha256(parent + " " + diff_id)`, or the diffID of a base layer.
    pub chain_id: Digest,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// The parent's chain ID.
    pub parent: Option<Digest>,
    /// The driver's id of the layer.
    pub cache_id: String,
    /// Bytes of file content (what Docker calls the layer's size).
    pub size: u64,
    /// Bytes of the uncompressed tar.
    pub tar_size: u64,
    /// When it was stored (seconds since the epoch).
    pub created: i64,
    /// The compressed blob it came from, when that was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<BlobRef>,
    /// Being removed (recovery finishes what a crash interrupted).
    #[serde(default)]
    pub removing: bool,
}

/// An image: its config, layers and names, with what listings show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The config's digest (the image ID).
    pub id: Digest,
    /// Its tags (`docker.io/library/x:latest`), sorted.
    pub repo_tags: Vec<String>,
    /// Its digest references (`repo@sha256:...`), sorted.
    pub repo_digests: Vec<String>,
    /// The manifest it was stored with (kept in the blobs).
    pub manifest: Option<Digest>,
    /// Chain IDs of its layers, bottom first.
    pub layers: Vec<Digest>,
    /// When it was stored here (seconds since the epoch).
    pub loaded: i64,
    /// When the config says it was created (`None`: missing or not a time).
    pub created: Option<i64>,
    /// The config's `created` text as it was (shown when it does not parse).
    pub created_text: Option<String>,
    /// Bytes of its layers' content.
    pub size: u64,
    /// The config's platform.
    pub os: Option<String>,
    /// The config's architecture.
    pub architecture: Option<String>,
}

/// A container: a read-write layer on an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// 64 hex digits.
    pub id: String,
    /// Its unique name.
    pub name: String,
    /// The image it was made from.
    pub image: Digest,
    /// The reference it was made with (what `ps` shows).
    pub image_ref: String,
    /// The driver's id of its read-write layer.
    pub layer: String,
    /// When it was made (seconds since the epoch).
    pub created: i64,
    /// Being removed.
    #[serde(default)]
    pub removing: bool,
}

fn digest(s: String) -> rusqlite::Result<Digest> {
    Digest::parse(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn opt_digest(s: Option<String>) -> rusqlite::Result<Option<Digest>> {
    s.map(digest).transpose()
}

const LAYER_COLS: &str = "chain_id, diff_id, parent, cache_id, size, tar_size, created, \
                          blob_digest, blob_media_type, blob_size, removing";

fn layer_row(r: &Row<'_>) -> rusqlite::Result<LayerRecord> {
    let blob = match opt_digest(r.get(7)?)? {
        Some(d) => Some(BlobRef {
            digest: d,
            media_type: r.get::<_, Option<String>>(8)?.unwrap_or_default(),
            size: r.get::<_, Option<i64>>(9)?.unwrap_or(0) as u64,
        }),
        None => None,
    };
    Ok(LayerRecord {
        chain_id: digest(r.get(0)?)?,
        diff_id: digest(r.get(1)?)?,
        parent: opt_digest(r.get(2)?)?,
        cache_id: r.get(3)?,
        size: r.get::<_, i64>(4)? as u64,
        tar_size: r.get::<_, i64>(5)? as u64,
        created: r.get(6)?,
        blob,
        removing: r.get::<_, i64>(10)? != 0,
    })
}

/// Rows of a query, parsed; rows that do not parse are skipped with a
/// warning (`check` reports them).
fn tolerant<T>(what: &str, rows: impl Iterator<Item = rusqlite::Result<T>>) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for r in rows {
        match r {
            Ok(v) => out.push(v),
            Err(e @ rusqlite::Error::FromSqlConversionFailure(..)) => {
                tracing::warn!("skipping a malformed {what} record: {e}");
            }
            Err(e) => return Err(Error::Db { op: "read", err: e }),
        }
    }
    Ok(out)
}

// ------------------------------------------------------------------ layers

/// The layer with chain ID `chain` (also one being removed).
pub fn layer(c: &Connection, chain: &Digest) -> Result<Option<LayerRecord>> {
    c.query_row(
        &format!("SELECT {LAYER_COLS} FROM layers WHERE chain_id = ?1"),
        [chain.as_str()],
        layer_row,
    )
    .optional()
    .map_err(Error::db("read layer"))
}

/// The layer whose driver id is `cache`.
pub fn layer_by_cache(c: &Connection, cache: &str) -> Result<Option<LayerRecord>> {
    c.query_row(
        &format!("SELECT {LAYER_COLS} FROM layers WHERE cache_id = ?1"),
        [cache],
        layer_row,
    )
    .optional()
    .map_err(Error::db("read layer"))
}

/// Every layer, by chain ID.
pub fn layers(c: &Connection) -> Result<Vec<LayerRecord>> {
    let mut st = c
        .prepare(&format!(
            "SELECT {LAYER_COLS} FROM layers ORDER BY chain_id"
        ))
        .map_err(Error::db("list layers"))?;
    let rows = st
        .query_map([], layer_row)
        .map_err(Error::db("list layers"))?;
    tolerant("layer", rows)
}

/// The layers marked as being removed (what recovery finishes).
pub fn removing_layers(c: &Connection) -> Result<Vec<LayerRecord>> {
    let mut st = c
        .prepare(&format!(
            "SELECT {LAYER_COLS} FROM layers WHERE removing != 0"
        ))
        .map_err(Error::db("list layers"))?;
    let rows = st
        .query_map([], layer_row)
        .map_err(Error::db("list layers"))?;
    tolerant("layer", rows)
}

/// Record a layer.
pub fn insert_layer(c: &Connection, l: &LayerRecord) -> Result<()> {
    let b = l.blob.as_ref();
    c.execute(
        &format!("INSERT INTO layers ({LAYER_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
        params![
            l.chain_id.as_str(),
            l.diff_id.as_str(),
            l.parent.as_ref().map(|p| p.as_str()),
            l.cache_id,
            l.size as i64,
            l.tar_size as i64,
            l.created,
            b.map(|b| b.digest.as_str()),
            b.map(|b| b.media_type.as_str()),
            b.map(|b| b.size as i64),
            l.removing as i64,
        ],
    )
    .map(|_| ())
    .map_err(Error::db("record layer"))
}

/// Mark a layer as being removed (or not any more).
pub fn set_layer_removing(c: &Connection, chain: &Digest, removing: bool) -> Result<()> {
    c.execute(
        "UPDATE layers SET removing = ?2 WHERE chain_id = ?1",
        params![chain.as_str(), removing as i64],
    )
    .map(|_| ())
    .map_err(Error::db("mark layer"))
}

/// Drop a layer's record.
pub fn delete_layer(c: &Connection, chain: &Digest) -> Result<()> {
    c.execute("DELETE FROM layers WHERE chain_id = ?1", [chain.as_str()])
        .map(|_| ())
        .map_err(Error::db("drop layer record"))
}

/// Does any layer have `chain` as its parent?
pub fn has_children(c: &Connection, chain: &Digest) -> Result<bool> {
    c.query_row(
        "SELECT EXISTS (SELECT 1 FROM layers WHERE parent = ?1)",
        [chain.as_str()],
        |r| r.get(0),
    )
    .map_err(Error::db("look up children"))
}

/// Does any image list `chain` among its layers?
pub fn used_by_image(c: &Connection, chain: &Digest) -> Result<bool> {
    c.query_row(
        "SELECT EXISTS (SELECT 1 FROM image_layers WHERE chain_id = ?1)",
        [chain.as_str()],
        |r| r.get(0),
    )
    .map_err(Error::db("look up image layers"))
}

/// Does any layer other than `except` keep blob `d`?
pub fn blob_kept_by_other(c: &Connection, d: &Digest, except: &Digest) -> Result<bool> {
    c.query_row(
        "SELECT EXISTS (SELECT 1 FROM layers WHERE blob_digest = ?1 AND chain_id != ?2)",
        params![d.as_str(), except.as_str()],
        |r| r.get(0),
    )
    .map_err(Error::db("look up blobs"))
}

// ------------------------------------------------------------------ images

const IMAGE_COLS: &str = "id, manifest, loaded, created, created_text, size, os, architecture";

fn image_row(r: &Row<'_>) -> rusqlite::Result<ImageRecord> {
    Ok(ImageRecord {
        id: digest(r.get(0)?)?,
        manifest: opt_digest(r.get(1)?)?,
        loaded: r.get(2)?,
        created: r.get(3)?,
        created_text: r.get(4)?,
        size: r.get::<_, i64>(5)? as u64,
        os: r.get(6)?,
        architecture: r.get(7)?,
        repo_tags: Vec::new(),
        repo_digests: Vec::new(),
        layers: Vec::new(),
    })
}

fn strings(c: &Connection, sql: &str, key: &str) -> Result<Vec<String>> {
    let mut st = c.prepare_cached(sql).map_err(Error::db("read image"))?;
    let rows = st
        .query_map([key], |r| r.get::<_, String>(0))
        .map_err(Error::db("read image"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(Error::db("read image"))
}

/// Fill in an image's tags, digests and layers.
fn complete(c: &Connection, mut i: ImageRecord) -> Result<ImageRecord> {
    let id = i.id.as_str();
    i.repo_tags = strings(
        c,
        "SELECT name FROM tags WHERE image = ?1 ORDER BY name",
        id,
    )?;
    i.repo_digests = strings(
        c,
        "SELECT name FROM repo_digests WHERE image = ?1 ORDER BY name",
        id,
    )?;
    let layers = strings(
        c,
        "SELECT chain_id FROM image_layers WHERE image = ?1 ORDER BY pos",
        id,
    )?;
    i.layers = chain_ids(id, layers)?;
    Ok(i)
}

/// The image with ID `id`.
pub fn image(c: &Connection, id: &Digest) -> Result<Option<ImageRecord>> {
    let i = c
        .query_row(
            &format!("SELECT {IMAGE_COLS} FROM images WHERE id = ?1"),
            [id.as_str()],
            image_row,
        )
        .optional()
        .map_err(Error::db("read image"))?;
    i.map(|i| complete(c, i)).transpose()
}

/// Every image, newest first (by creation, then by load).
pub fn images(c: &Connection) -> Result<Vec<ImageRecord>> {
    let mut st = c
        .prepare(&format!(
            "SELECT {IMAGE_COLS} FROM images ORDER BY coalesce(created, 0) DESC, loaded DESC, id"
        ))
        .map_err(Error::db("list images"))?;
    let rows = st
        .query_map([], image_row)
        .map_err(Error::db("list images"))?;
    let images = tolerant("image", rows)?;
    // three queries for the whole listing, not three per image
    let mut tags = grouped(c, "SELECT image, name FROM tags ORDER BY image, name")?;
    let mut digests = grouped(
        c,
        "SELECT image, name FROM repo_digests ORDER BY image, name",
    )?;
    let mut layers = grouped(
        c,
        "SELECT image, chain_id FROM image_layers ORDER BY image, pos",
    )?;
    let mut out = Vec::with_capacity(images.len());
    for mut i in images {
        let id = i.id.as_str();
        i.repo_tags = tags.remove(id).unwrap_or_default();
        i.repo_digests = digests.remove(id).unwrap_or_default();
        match chain_ids(id, layers.remove(id).unwrap_or_default()) {
            Ok(l) => {
                i.layers = l;
                out.push(i);
            }
            Err(e) => tracing::warn!("skipping an image: {e}"),
        }
    }
    Ok(out)
}

/// `(key, value)` rows grouped by key, in the query's order.
fn grouped(c: &Connection, sql: &str) -> Result<HashMap<String, Vec<String>>> {
    let mut st = c.prepare(sql).map_err(Error::db("list images"))?;
    let rows = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(Error::db("list images"))?;
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for r in rows {
        let (k, v) = r.map_err(Error::db("list images"))?;
        m.entry(k).or_default().push(v);
    }
    Ok(m)
}

/// An image's layer list, parsed.
fn chain_ids(id: &str, layers: Vec<String>) -> Result<Vec<Digest>> {
    layers
        .into_iter()
        .map(|s| {
            Digest::parse(&s).map_err(|e| Error::Corrupt {
                what: format!("image {id}"),
                reason: e.to_string(),
            })
        })
        .collect()
}

/// IDs of images whose ID starts with `sha256:` + `hex`.
pub fn image_ids_with_prefix(c: &Connection, hex: &str) -> Result<Vec<String>> {
    let mut st = c
        .prepare_cached("SELECT id FROM images WHERE id GLOB ?1 LIMIT 2")
        .map_err(Error::db("find image"))?;
    let rows = st
        .query_map([format!("sha256:{hex}*")], |r| r.get::<_, String>(0))
        .map_err(Error::db("find image"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(Error::db("find image"))
}

/// The image tagged `tag`.
pub fn image_by_tag(c: &Connection, tag: &str) -> Result<Option<Digest>> {
    let s: Option<String> = c
        .prepare_cached("SELECT image FROM tags WHERE name = ?1")
        .and_then(|mut st| st.query_row([tag], |r| r.get(0)).optional())
        .map_err(Error::db("find tag"))?;
    s.map(|s| Ok(Digest::parse(&s)?)).transpose()
}

/// The image with digest reference `r` (`repo@sha256:...`).
pub fn image_by_repo_digest(c: &Connection, r: &str) -> Result<Option<Digest>> {
    let s: Option<String> = c
        .query_row(
            "SELECT image FROM repo_digests WHERE name = ?1 LIMIT 1",
            [r],
            |r| r.get(0),
        )
        .optional()
        .map_err(Error::db("find digest"))?;
    s.map(|s| Ok(Digest::parse(&s)?)).transpose()
}

/// Record an image (its layers; tags and digests are set apart).
pub fn insert_image(c: &Connection, i: &ImageRecord) -> Result<()> {
    c.execute(
        &format!("INSERT INTO images ({IMAGE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
        params![
            i.id.as_str(),
            i.manifest.as_ref().map(|m| m.as_str()),
            i.loaded,
            i.created,
            i.created_text,
            i.size as i64,
            i.os,
            i.architecture,
        ],
    )
    .map_err(Error::db("record image"))?;
    let mut st = c
        .prepare_cached("INSERT INTO image_layers (image, pos, chain_id) VALUES (?1, ?2, ?3)")
        .map_err(Error::db("record image"))?;
    for (pos, l) in i.layers.iter().enumerate() {
        st.execute(params![i.id.as_str(), pos as i64, l.as_str()])
            .map_err(Error::db("record image"))?;
    }
    for d in &i.repo_digests {
        add_repo_digest(c, d, &i.id)?;
    }
    Ok(())
}

/// Give an image a digest reference.
pub fn add_repo_digest(c: &Connection, name: &str, image: &Digest) -> Result<()> {
    c.execute(
        "INSERT OR IGNORE INTO repo_digests (name, image) VALUES (?1, ?2)",
        params![name, image.as_str()],
    )
    .map(|_| ())
    .map_err(Error::db("record digest"))
}

/// Point `tag` at `image` (taking it from any other image).
pub fn set_tag(c: &Connection, tag: &str, image: &Digest) -> Result<()> {
    c.execute(
        "INSERT INTO tags (name, image) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET image = ?2",
        params![tag, image.as_str()],
    )
    .map(|_| ())
    .map_err(Error::db("tag image"))
}

/// Remove a tag.
pub fn remove_tag(c: &Connection, tag: &str) -> Result<()> {
    c.execute("DELETE FROM tags WHERE name = ?1", [tag])
        .map(|_| ())
        .map_err(Error::db("untag image"))
}

/// Drop an image's record (tags, digests and layer list go with it).
pub fn delete_image(c: &Connection, id: &Digest) -> Result<()> {
    c.execute("DELETE FROM images WHERE id = ?1", [id.as_str()])
        .map(|_| ())
        .map_err(Error::db("drop image record"))
}

/// Is blob `d` an image's config or manifest?
pub fn blob_used_by_image(c: &Connection, d: &Digest) -> Result<bool> {
    c.query_row(
        "SELECT EXISTS (SELECT 1 FROM images WHERE id = ?1 OR manifest = ?1)",
        [d.as_str()],
        |r| r.get(0),
    )
    .map_err(Error::db("look up blobs"))
}

mod containers;
mod intents;

pub use containers::*;
pub use intents::*;
