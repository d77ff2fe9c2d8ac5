//! Layers: registering one from a diff stream (its driver layer, its
//! tar-split, its compressed blob, its record), removing one (driver
//! first, record last), and pruning what nothing uses.

use std::io::{Read, Write};

use strata_core::{Digest, LayerId};

use crate::error::{Error, IoCtx, Result};
use crate::records::{self, LayerRecord};
use crate::{Store, random_id, tarsplit};

/// Reads through, counting every byte, hashing and copying it until the
/// stream turns out to be a plain tar: a plain tar's digest is its diffID,
/// which the apply computes anyway, and its tar-split gives it back byte
/// for byte, so an uncompressed layer is neither hashed twice nor written
/// twice.
struct Tee<'a, W: Write> {
    inner: &'a mut (dyn Read + Send),
    /// The blob's hash, until the stream is known to be a plain tar.
    hash: Option<strata_core::Hashing<std::io::Sink>>,
    copy: Option<W>,
    err: Option<std::io::Error>,
    count: u64,
    /// The first bytes, until there are enough to tell the compression.
    head: Vec<u8>,
    decided: bool,
}

/// Bytes that tell the compression (the longest magic, xz's).
const MAGIC_LEN: usize = 6;

impl<'a, W: Write> Tee<'a, W> {
    fn new(inner: &'a mut (dyn Read + Send), copy: Option<W>) -> Self {
        Tee {
            inner,
            hash: Some(strata_core::Hashing::new(std::io::sink())),
            copy,
            err: None,
            count: 0,
            head: Vec::with_capacity(MAGIC_LEN),
            decided: false,
        }
    }

    /// Look at the first bytes (all of them once `eof`): a plain tar stops
    /// the hash and the copy.
    fn look(&mut self, data: &[u8], eof: bool) {
        let want = MAGIC_LEN - self.head.len();
        self.head.extend_from_slice(&data[..data.len().min(want)]);
        if self.head.len() < MAGIC_LEN && !eof {
            return;
        }
        self.decided = true;
        let plain = matches!(
            strata_core::archive::Compression::detect(&self.head),
            Ok(strata_core::archive::Compression::None)
        );
        if plain {
            self.hash = None;
            self.copy = None;
        }
    }

    /// The blob's digest and size: its own hash, or the diffID for a plain
    /// tar (every byte of which the apply hashed).
    fn finish(self, stats: &strata_core::ApplyStats) -> Result<(Digest, u64)> {
        match self.hash {
            Some(h) => {
                let (_, d, n) = h.finish();
                Ok((d, n))
            }
            None if self.count == stats.tar_bytes => Ok((stats.diff_id.clone(), self.count)),
            None => Err(Error::Internal(format!(
                "a plain layer of {} bytes was applied from {} of them",
                self.count, stats.tar_bytes
            ))),
        }
    }
}

impl<W: Write> Read for Tee<'_, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if let Some(h) = &mut self.hash {
            h.write_all(&buf[..n])?;
        }
        if let Some(c) = &mut self.copy
            && let Err(e) = c.write_all(&buf[..n])
        {
            self.err = Some(e);
            self.copy = None;
        }
        if !self.decided {
            self.look(&buf[..n], n == 0);
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
pub(crate) struct Kept {
    pub(crate) split: Option<tempfile::NamedTempFile>,
    pub(crate) blob: Option<tempfile::TempPath>,
    pub(crate) blob_digest: Digest,
    pub(crate) blob_size: u64,
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
        self.register_layer_in(parent, input, None)
    }

    /// [`Store::register_layer`], naming the driver layer from `reserved`
    /// (whose intent is recorded already) while names are left there.
    pub(crate) fn register_layer_in(
        &self,
        parent: Option<&Digest>,
        input: LayerIn<'_>,
        reserved: Option<&mut crate::reserve::Reserved<'_>>,
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
        let cache = match reserved.and_then(|r| r.take()) {
            Some(c) => c,
            None => {
                let c = Self::cache_id(&random_id())?;
                self.db.write("record intent", |tx| {
                    records::add_intent(tx, c.as_str(), "create")
                })?;
                c
            }
        };
        let staged = self.stage_layer(parent, parent_cache.as_ref(), input, cache, false)?;
        let mut done = self.publish_staged(vec![staged].into())?;
        match done.pop() {
            Some(l) => Ok(l),
            None => Err(Error::Internal(
                "a layer vanished while it was recorded".into(),
            )),
        }
    }

    /// Apply a diff into a new driver layer, keeping its tar-split (and a
    /// copy of the compressed input when `keep_blob`).
    pub(crate) fn apply_keeping(
        &self,
        cache: &LayerId,
        parent: Option<&LayerId>,
        input: &mut (dyn Read + Send),
        keep: &Keep,
        lazy: bool,
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
        let mut tee = Tee::new(input, copy);
        let stats = if lazy {
            self.driver
                .apply_diff_lazy(cache, parent, &mut tee, Some(&mut split))?
        } else {
            self.driver
                .apply_diff_split(cache, parent, &mut tee, Some(&mut split))?
        };
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
        let (blob_digest, blob_size) = tee.finish(&stats)?;
        let kept = Kept {
            split: Some(split_file),
            blob: blob_file.map(tempfile::NamedTempFile::into_temp_path),
            blob_digest,
            blob_size,
        };
        Ok((stats, kept))
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
