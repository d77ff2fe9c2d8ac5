//! What a registry client needs from the store: temporary files for
//! downloads (in `store/tmp`, which recovery empties after a crash), the
//! record of a pulled image, where a blob came from (for cross-repository
//! mounts on push), and an image as push sends it: the same config, blobs
//! and manifest that `image save --format oci` writes.

use std::io::Read;

use rusqlite::params;
use strata_core::Digest;

use crate::error::{Error, IoCtx, Result};
use crate::export::Blob;
use crate::{ImageRecord, LayerRecord, Store, records};

/// One blob push sends for a layer.
#[derive(Debug, Clone)]
pub struct PushBlob {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type.
    pub media_type: String,
    layer: LayerRecord,
}

/// An image as push sends it.
#[derive(Debug, Clone)]
pub struct Pushable {
    /// The image.
    pub image: ImageRecord,
    /// The config blob.
    pub config: Vec<u8>,
    /// The layers' blobs, bottom first (one per layer, repeats included).
    pub layers: Vec<PushBlob>,
    /// The manifest.
    pub manifest: Vec<u8>,
    /// The manifest's media type.
    pub manifest_media_type: String,
}

impl Store {
    /// A new temporary file in the store's tmp directory (removed on drop;
    /// after a crash, by recovery). Hold the work lock while it lives.
    pub fn temp_file(&self, prefix: &str) -> Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempfile_in(self.tmp_dir())
            .ctx("create temp", self.tmp_dir())
    }

    /// Record an image pulled from a registry: its config and manifest
    /// blobs, its layers (chain IDs, bottom first), the tag it was pulled
    /// by (if any) and `repo@digest`.
    pub fn record_pulled(
        &self,
        config: &[u8],
        manifest: &[u8],
        chains: &[Digest],
        tag: Option<&str>,
        repo_digest: &str,
    ) -> Result<ImageRecord> {
        let tags: Vec<String> = tag.map(str::to_string).into_iter().collect();
        let img = self.record_image(config, Some(manifest), chains, &tags)?;
        self.db.write("record repo digest", |tx| {
            records::add_repo_digest(tx, repo_digest, &img.id)
        })?;
        self.image_record(&img.id)?
            .ok_or_else(|| Error::Internal(format!("image {} vanished", img.id)))
    }

    /// Remember that `digest` is in `repository` of `registry`.
    pub fn add_blob_source(&self, digest: &Digest, registry: &str, repository: &str) -> Result<()> {
        self.db.write("record blob source", |tx| {
            tx.execute(
                "INSERT OR IGNORE INTO blob_sources (digest, registry, repository) VALUES (?1, ?2, ?3)",
                params![digest.as_str(), registry, repository],
            )
            .map(|_| ())
            .map_err(Error::db("record blob source"))
        })
    }

    /// Repositories of `registry` known to hold `digest`.
    pub fn blob_sources(&self, digest: &Digest, registry: &str) -> Result<Vec<String>> {
        self.db.read("read blob sources", |tx| {
            let mut st = tx
                .prepare(
                    "SELECT repository FROM blob_sources WHERE digest = ?1 AND registry = ?2 ORDER BY repository",
                )
                .map_err(Error::db("read blob sources"))?;
            st.query_map(params![digest.as_str(), registry], |r| r.get(0))
                .map_err(Error::db("read blob sources"))?
                .collect::<rusqlite::Result<Vec<String>>>()
                .map_err(Error::db("read blob sources"))
        })
    }

    /// Image `r` as push sends it (the blobs and manifest export writes).
    pub fn pushable(&self, r: &str) -> Result<Pushable> {
        let e = self.prepare_export(r)?;
        let blobs: Vec<Blob> = e.layers.iter().map(|l| self.layer_blob(l)).collect();
        let (manifest, manifest_media_type) = self.manifest_for(&e, &blobs)?;
        let layers = blobs
            .into_iter()
            .zip(e.layers)
            .map(|(b, l)| PushBlob {
                digest: b.digest,
                size: b.size,
                media_type: b.media,
                layer: l,
            })
            .collect();
        Ok(Pushable {
            image: e.img,
            config: e.config,
            layers,
            manifest,
            manifest_media_type,
        })
    }

    /// Stream one layer blob to `f` (the kept blob, or the tar re-created
    /// from its tar-split), verifying its digest as it goes out.
    pub fn read_push_blob<T>(
        &self,
        b: &PushBlob,
        f: impl FnOnce(&mut (dyn Read + Send)) -> Result<T>,
    ) -> Result<T> {
        if b.digest != b.layer.diff_id {
            let p = self.blob_path(&b.digest);
            let file = std::fs::File::open(&p).ctx("open blob", &p)?;
            let mut r = strata_core::Hashing::new(file.take(b.size));
            let v = f(&mut r)?;
            let (_, got, n) = r.finish();
            return check(b, got, n).map(|()| v);
        }
        let (rd, mut wr) = std::io::pipe().ctx("pipe", "push")?;
        std::thread::scope(|s| {
            let h = s.spawn(move || {
                let mut w = strata_core::Hashing::new(&mut wr);
                let n = self.write_layer_tar(&b.layer, &mut w);
                let (_, got, _) = w.finish();
                n.map(|n| (got, n))
            });
            let mut r = rd;
            let v = f(&mut r);
            drop(r);
            let written = h
                .join()
                .map_err(|_| Error::Internal("the tar thread of a push panicked".into()))?;
            let v = v?;
            let (got, n) = written?;
            check(b, got, n).map(|()| v)
        })
    }
}

fn check(b: &PushBlob, got: Digest, n: u64) -> Result<()> {
    if got != b.digest || n != b.size {
        return Err(Error::DigestMismatch {
            what: format!("layer blob {} as read from the store ({n} bytes)", b.digest),
            expected: b.digest.to_string(),
            actual: got.to_string(),
        });
    }
    Ok(())
}
