//! Layers: registering one from a diff stream (its driver layer, its
//! tar-split, its compressed blob, its record), removing one (driver
//! first, record last), and pruning what nothing uses.

use std::io::{Read, Write};

use strata_core::{Digest, LayerId};

use crate::error::{Error, IoCtx, Result};
use crate::records::{self, BlobRef, LayerRecord};
use crate::{Store, now, random_id, tarsplit};

/// A driver layer being made for the store: until disarmed, dropping it
/// removes the driver layer and its intent (every early return of an
/// import undoes its half-made layer the same way).
struct Pending<'s> {
    store: &'s Store,
    cache: LayerId,
    armed: bool,
}

impl Pending<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        match self.store.driver.remove(&self.cache) {
            Ok(()) => {}
            Err(e) if e.kind() == strata_core::ErrorKind::NotFound => {}
            Err(e) => {
                // the intent stays: recovery removes the layer later
                tracing::warn!(layer = %self.cache, "removing a half-made layer: {e}");
                return;
            }
        }
        let c = self.cache.as_str();
        if let Err(e) = self
            .store
            .db
            .write("drop intent", |tx| records::remove_intent(tx, c))
        {
            tracing::warn!(layer = %self.cache, "dropping an intent: {e}");
        }
    }
}

/// Reads through, hashing and counting every byte, optionally copying it.
struct Tee<'a, W: Write> {
    inner: strata_core::Hashing<&'a mut (dyn Read + Send)>,
    copy: Option<W>,
    err: Option<std::io::Error>,
    /// The first bytes were looked at.
    looked: bool,
}

impl<W: Write> Read for Tee<'_, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if !self.looked && n > 0 {
            self.looked = true;
            // a plain tar (ustar magic in its first header) is what its
            // tar-split gives back byte for byte: no copy is kept, so an
            // uncompressed layer is not written twice
            if n >= 263 && &buf[257..262] == b"ustar" {
                self.copy = None;
            }
        }
        if let Some(c) = &mut self.copy
            && let Err(e) = c.write_all(&buf[..n])
        {
            self.err = Some(e);
            self.copy = None;
        }
        Ok(n)
    }
}

/// Where a layer comes from, what it must match, and what to keep of it.
pub struct LayerIn<'a> {
    /// The diff stream: a tar, plain or compressed.
    pub input: &'a mut (dyn Read + Send),
    /// The diffID it must have (a layer with that chain ID is not made
    /// again).
    pub diff: Option<&'a Digest>,
    /// The digest the stream itself must have (a registry's blob digest).
    pub blob: Option<&'a Digest>,
    /// What to keep of the stream.
    pub keep: Keep,
}

impl std::fmt::Debug for LayerIn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerIn")
            .field("diff", &self.diff)
            .field("blob", &self.blob)
            .field("keep", &self.keep)
            .finish()
    }
}

impl<'a> LayerIn<'a> {
    /// A stream, nothing expected, nothing kept.
    pub fn stream(input: &'a mut (dyn Read + Send)) -> Self {
        LayerIn {
            input,
            diff: None,
            blob: None,
            keep: Keep::Nothing,
        }
    }
}

/// What to keep of a layer's compressed stream, so that export and push
/// send the very blob the layer came as.
#[derive(Debug)]
pub enum Keep {
    /// Nothing (a plain tar, or a layer made here).
    Nothing,
    /// A copy, made while the stream is read, under this media type.
    Copy {
        /// The blob's media type.
        media_type: String,
    },
    /// A file that already holds the stream's bytes (a download), moved
    /// into the blob store once the layer is registered.
    File {
        /// The blob's media type.
        media_type: String,
        /// The file (in the store's tmp directory).
        path: tempfile::TempPath,
    },
}

/// What applying a diff left to keep: the tar-split and the blob copy.
struct Kept {
    split: tempfile::NamedTempFile,
    blob: Option<tempfile::TempPath>,
    blob_digest: Digest,
    blob_size: u64,
}

impl Store {
    /// The layer with chain ID `chain` (not one being removed).
    pub fn layer(&self, chain: &Digest) -> Result<Option<LayerRecord>> {
        let l = self.db.read("read layer", |tx| records::layer(tx, chain))?;
        Ok(l.filter(|l| !l.removing))
    }

    /// Every layer record (also those being removed).
    pub fn layers(&self) -> Result<Vec<LayerRecord>> {
        self.db.read("list layers", |tx| records::layers(tx))
    }

    /// The layers of a chain, bottom first.
    pub fn chain_records(&self, top: &Digest) -> Result<Vec<LayerRecord>> {
        self.db.read("read chain", |tx| {
            let mut v: Vec<LayerRecord> = Vec::new();
            let mut cur = Some(top.clone());
            while let Some(c) = cur {
                if v.iter().any(|l| l.chain_id == c) {
                    return Err(Error::Corrupt {
                        what: format!("layer {top}"),
                        reason: format!("its parent chain loops back to {c}"),
                    });
                }
                let l = records::layer(tx, &c)?.ok_or_else(|| Error::NoSuchLayer(c.to_string()))?;
                cur = l.parent.clone();
                v.push(l);
            }
            v.reverse();
            Ok(v)
        })
    }

    /// The blob digest a layer was read from (for callers that verify
    /// manifests): the kept blob's, else the diffID.
    pub fn blob_digest_of(l: &LayerRecord) -> Digest {
        l.blob
            .as_ref()
            .map_or_else(|| l.diff_id.clone(), |b| b.digest.clone())
    }

    /// Register a layer from a diff stream on `parent` (a chain ID):
    /// returns the record and whether it existed already (then the driver
    /// was not touched when `input.diff` was given). When `input.blob` is
    /// given, the compressed stream must have that digest: otherwise the
    /// layer is removed again and nothing is registered. The caller holds
    /// the work lock.
    pub fn register_layer(
        &self,
        parent: Option<&Digest>,
        input: LayerIn<'_>,
    ) -> Result<(LayerRecord, bool)> {
        if let Some(d) = input.diff
            && let Some(l) = self.layer(&Digest::chain(parent, d))?
        {
            tracing::info!(chain_id = %l.chain_id, "layer already stored");
            return Ok((l, true));
        }
        let parent_cache = match parent {
            Some(p) => {
                let l = self
                    .layer(p)?
                    .ok_or_else(|| Error::NoSuchLayer(p.to_string()))?;
                Some(Self::cache_id(&l.cache_id)?)
            }
            None => None,
        };
        let cache = Self::cache_id(&random_id())?;
        self.db.write("record intent", |tx| {
            records::add_intent(tx, cache.as_str(), "create")
        })?;
        let pending = Pending {
            store: self,
            cache: cache.clone(),
            armed: true,
        };
        let LayerIn {
            input: stream,
            diff: expected_diff,
            blob: expected_blob,
            keep,
        } = input;
        let (stats, mut kept) = self.apply_keeping(&cache, parent_cache.as_ref(), stream, &keep)?;
        if let Some(want) = expected_blob
            && *want != kept.blob_digest
        {
            return Err(Error::DigestMismatch {
                what: "layer blob".into(),
                expected: want.to_string(),
                actual: kept.blob_digest.to_string(),
            });
        }
        if let Some(want) = expected_diff
            && *want != stats.diff_id
        {
            return Err(Error::DigestMismatch {
                what: format!("layer diffID (blob {})", kept.blob_digest),
                expected: want.to_string(),
                actual: stats.diff_id.to_string(),
            });
        }
        let media = match keep {
            Keep::Nothing => None,
            Keep::Copy { media_type } => Some(media_type),
            Keep::File { media_type, path } => {
                kept.blob = Some(path);
                Some(media_type)
            }
        };
        let rec = LayerRecord {
            chain_id: Digest::chain(parent, &stats.diff_id),
            diff_id: stats.diff_id.clone(),
            parent: parent.cloned(),
            cache_id: cache.to_string(),
            size: stats.size,
            tar_size: stats.tar_bytes,
            created: now(),
            blob: None,
            removing: false,
        };
        tracing::info!(chain_id = %rec.chain_id, cache_id = %rec.cache_id, size = rec.size, "registering a layer");
        self.publish_layer(rec, kept, media.as_deref(), pending)
    }

    /// Apply a diff into a new driver layer, keeping its tar-split (and a
    /// copy of the compressed input when `keep_blob`).
    fn apply_keeping(
        &self,
        cache: &LayerId,
        parent: Option<&LayerId>,
        input: &mut (dyn Read + Send),
        keep: &Keep,
    ) -> Result<(strata_core::ApplyStats, Kept)> {
        let tmp = |prefix: &str| {
            tempfile::Builder::new()
                .prefix(prefix)
                .tempfile_in(self.tmp_dir())
                .ctx("create temp", self.tmp_dir())
        };
        let split_file = tmp("split.")?;
        let out = split_file.reopen().ctx("reopen", split_file.path())?;
        let mut split = tarsplit::SplitWriter::new(std::io::BufWriter::new(out))
            .ctx("tar-split", split_file.path())?;
        let blob_file = match keep {
            Keep::Copy { .. } => Some(tmp("blob.")?),
            _ => None,
        };
        let copy = match &blob_file {
            Some(t) => Some(std::io::BufWriter::new(t.reopen().ctx("reopen", t.path())?)),
            None => None,
        };
        let mut tee = Tee {
            inner: strata_core::Hashing::new(input),
            copy,
            err: None,
            looked: false,
        };
        let stats = self
            .driver
            .apply_diff_split(cache, parent, &mut tee, Some(&mut split))?;
        // the blob's digest covers every byte, also any after the stream end
        std::io::copy(&mut tee, &mut std::io::sink()).ctx("read layer blob", self.tmp_dir())?;
        if let Some(e) = tee.err.take() {
            return Err(Error::Io {
                op: "keep blob",
                path: self.tmp_dir(),
                err: e,
            });
        }
        if let Some(mut c) = tee.copy.take() {
            c.flush().ctx("write blob", self.tmp_dir())?;
        }
        split.finish().ctx("tar-split", split_file.path())?;
        let (_, blob_digest, blob_size) = tee.inner.finish();
        let kept = Kept {
            split: split_file,
            blob: blob_file.map(tempfile::NamedTempFile::into_temp_path),
            blob_digest,
            blob_size,
        };
        Ok((stats, kept))
    }

    /// Keep the files and record the layer in one transaction; if the
    /// chain was registered meanwhile, that record wins and ours goes.
    fn publish_layer(
        &self,
        mut rec: LayerRecord,
        kept: Kept,
        media: Option<&str>,
        pending: Pending<'_>,
    ) -> Result<(LayerRecord, bool)> {
        let chain = rec.chain_id.clone();
        let sp = self.tarsplit_path(&chain);
        let existing = self.db.write("record layer", |tx| {
            if let Some(l) = records::layer(tx, &chain)? {
                return Ok(Some(l));
            }
            kept.split.persist(&sp).map_err(|e| Error::Io {
                op: "keep tar-split",
                path: sp.clone(),
                err: e.error,
            })?;
            if let (Some(mt), Some(t)) = (media, kept.blob)
                && kept.blob_digest != rec.diff_id
            {
                let bp = self.blob_path(&kept.blob_digest);
                t.persist(&bp).map_err(|e| Error::Io {
                    op: "keep blob",
                    path: bp.clone(),
                    err: e.error,
                })?;
                rec.blob = Some(BlobRef {
                    digest: kept.blob_digest.clone(),
                    media_type: mt.to_string(),
                    size: kept.blob_size,
                });
            }
            records::insert_layer(tx, &rec)?;
            records::remove_intent(tx, &rec.cache_id)?;
            Ok(None)
        })?;
        match existing {
            Some(l) if l.removing => Err(Error::Internal(format!(
                "layer {chain} is being removed while it is imported again"
            ))),
            Some(l) => Ok((l, true)),
            None => {
                pending.disarm();
                Ok((rec, false))
            }
        }
    }

    /// Remove a layer: marked first, then the driver's layer, then the
    /// record and its files. A refusal of the driver (mounted, children)
    /// clears the mark; a crash leaves it for recovery to finish. Call with
    /// the gc lock held.
    pub(crate) fn delete_layer(&self, l: &LayerRecord) -> Result<()> {
        let id = Self::cache_id(&l.cache_id)?;
        self.db.write("mark layer", |tx| {
            records::set_layer_removing(tx, &l.chain_id, true)
        })?;
        match self.driver.remove(&id) {
            Ok(()) => {}
            Err(e) if e.kind() == strata_core::ErrorKind::NotFound => {}
            Err(e) => {
                self.db.write("unmark layer", |tx| {
                    records::set_layer_removing(tx, &l.chain_id, false)
                })?;
                return Err(e.into());
            }
        }
        self.finish_layer_removal(l)
    }

    /// The driver layer is gone: drop the record, the tar-split, the blob.
    pub(crate) fn finish_layer_removal(&self, l: &LayerRecord) -> Result<()> {
        self.db
            .write("drop layer", |tx| records::delete_layer(tx, &l.chain_id))?;
        let sp = self.tarsplit_path(&l.chain_id);
        if let Err(e) = std::fs::remove_file(&sp)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(Error::Io {
                op: "remove tar-split",
                path: sp,
                err: e,
            });
        }
        if let Some(b) = &l.blob {
            self.drop_blob_if_unused(&b.digest, Some(&l.chain_id))?;
        }
        Ok(())
    }

    /// Who in the store uses driver layer `cache` (for `strata layer rm`):
    /// a container, or the images of a layer record.
    pub fn layer_user(&self, cache: &str) -> Result<Option<String>> {
        self.db.read("look up layer", |tx| {
            if let Some(c) = records::container_by_layer(tx, cache)? {
                return Ok(Some(format!("container {}", c.name)));
            }
            if let Some(s) = crate::snapshots::rows_by_layer(tx, cache)? {
                return Ok(Some(format!("snapshot {:?}", s.info.key)));
            }
            let Some(l) = records::layer_by_cache(tx, cache)? else {
                return Ok(None);
            };
            let mut st = tx
                .prepare("SELECT image FROM image_layers WHERE chain_id = ?1 LIMIT 3")
                .map_err(Error::db("look up images"))?;
            let imgs: Vec<String> = st
                .query_map([l.chain_id.as_str()], |r| r.get::<_, String>(0))
                .map_err(Error::db("look up images"))?
                .collect::<rusqlite::Result<_>>()
                .map_err(Error::db("look up images"))?;
            let shown: Vec<String> = imgs
                .iter()
                .map(|i| i.get(7..19).unwrap_or(i).to_string())
                .collect();
            Ok(Some(if shown.is_empty() {
                format!("the store's layer {}", l.chain_id)
            } else {
                format!("layer {} of image {}", l.chain_id, shown.join(", "))
            }))
        })
    }

    /// Is `chain` used: by an image, or as another layer's parent?
    fn layer_in_use(&self, chain: &Digest) -> Result<bool> {
        self.db.read("look up layer users", |tx| {
            Ok(records::used_by_image(tx, chain)? || records::has_children(tx, chain)?)
        })
    }

    /// Remove the unused layers among `candidates` and their ancestors,
    /// top down; returns those removed. Call with the gc lock held.
    pub(crate) fn prune_chain(&self, top: Option<&Digest>) -> Result<Vec<LayerRecord>> {
        let mut removed = Vec::new();
        let mut cur = top.cloned();
        while let Some(c) = cur {
            let Some(l) = self.layer(&c)? else { break };
            if self.layer_in_use(&c)? {
                break;
            }
            self.delete_layer(&l)?;
            cur = l.parent.clone();
            removed.push(l);
        }
        Ok(removed)
    }

    /// Remove layers no image or container references; returns them.
    /// Takes the gc lock (waits for imports and commits to finish).
    pub fn prune_layers(&self) -> Result<Vec<LayerRecord>> {
        let _g = self.gc_lock()?;
        let mut removed = Vec::new();
        for l in self.layers()? {
            // leaves first: each unused leaf takes its unused ancestors
            let leaf = !self.db.read("look up children", |tx| {
                records::has_children(tx, &l.chain_id)
            })?;
            if leaf && !l.removing {
                removed.extend(self.prune_chain(Some(&l.chain_id))?);
            }
        }
        Ok(removed)
    }

    /// Write a layer's original (uncompressed) tar: re-created from its
    /// tar-split and verified against its diffID.
    pub fn write_layer_tar(&self, l: &LayerRecord, out: &mut dyn Write) -> Result<u64> {
        use std::os::fd::AsFd;
        let sp = self.tarsplit_path(&l.chain_id);
        let f = std::fs::File::open(&sp).ctx("open tar-split", &sp)?;
        self.with_layer_view(&l.cache_id, |view| {
            let fd = strata_core::fsx::open_dir_path(view).ctx("open", view)?;
            let (n, digest) = tarsplit::assemble(std::io::BufReader::new(f), fd.as_fd(), view, out)
                .ctx("re-create layer tar", &sp)?;
            if digest != l.diff_id.as_str() {
                return Err(Error::DigestMismatch {
                    what: format!("re-created tar of layer {}", l.chain_id),
                    expected: l.diff_id.to_string(),
                    actual: digest,
                });
            }
            Ok(n)
        })
    }
}
