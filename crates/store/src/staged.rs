//! Layers applied in the driver and not yet recorded, and recording them:
//! one layer (`register_layer`), or a batch of consecutive layers of one
//! image (an import), whose driver metadata is forced to disk in one pass
//! and whose records go in one transaction, instead of a few fsyncs each.
//!
//! Until it is recorded, a staged layer is undone when it drops: its
//! driver layer and its intent go. A batch drops its layers last first
//! (a child before its parent, which the driver insists on).

use std::io::Read;

use strata_core::{Digest, LayerId};

use crate::error::{Error, Result};
use crate::layers::{Keep, Kept, LayerIn};
use crate::records::{self, BlobRef, LayerRecord};
use crate::{Store, now};

/// A driver layer being made for the store: until disarmed, dropping it
/// removes the driver layer and its intent (every early return of an
/// import undoes its half-made layer the same way).
pub(crate) struct Pending<'s> {
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

/// A layer applied in the driver, its files kept aside, not recorded.
pub(crate) struct Staged<'s> {
    rec: LayerRecord,
    kept: Kept,
    media: Option<String>,
    /// Applied with the driver's metadata not yet forced to disk.
    lazy: bool,
    pending: Pending<'s>,
}

impl Staged<'_> {
    /// The driver layer it made.
    pub(crate) fn cache(&self) -> &LayerId {
        &self.pending.cache
    }

    /// The record it will get.
    pub(crate) fn record(&self) -> &LayerRecord {
        &self.rec
    }
}

/// Staged layers of one chain, bottom first; those left when it drops are
/// undone top first.
#[derive(Default)]
pub(crate) struct Batch<'s>(Vec<Staged<'s>>);

impl<'s> Batch<'s> {
    pub(crate) fn push(&mut self, s: Staged<'s>) {
        self.0.push(s);
    }
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The driver layer of the last one.
    pub(crate) fn last_cache(&self) -> Option<&LayerId> {
        self.0.last().map(Staged::cache)
    }
}

impl<'s> From<Vec<Staged<'s>>> for Batch<'s> {
    fn from(v: Vec<Staged<'s>>) -> Self {
        Batch(v)
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        while let Some(s) = self.0.pop() {
            drop(s);
        }
    }
}

impl Store {
    /// Apply `input` into the new driver layer `cache` (its intent is
    /// recorded) on the driver layer `parent_cache` (the layer of chain
    /// `parent`), and check it against what `input` expects. `lazy`: the
    /// driver's metadata is forced to disk only when the layer is
    /// recorded.
    pub(crate) fn stage_layer(
        &self,
        parent: Option<&Digest>,
        parent_cache: Option<&LayerId>,
        input: LayerIn<'_>,
        cache: LayerId,
        lazy: bool,
    ) -> Result<Staged<'_>> {
        let pending = Pending {
            store: self,
            cache,
            armed: true,
        };
        let LayerIn {
            input: stream,
            diff: expected_diff,
            blob: expected_blob,
            keep,
        } = input;
        let stream: &mut (dyn Read + Send) = stream;
        let (stats, mut kept) =
            self.apply_keeping(&pending.cache, parent_cache, stream, &keep, lazy)?;
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
            cache_id: pending.cache.to_string(),
            size: stats.size,
            tar_size: stats.tar_bytes,
            created: now(),
            blob: None,
            removing: false,
        };
        Ok(Staged {
            rec,
            kept,
            media,
            lazy,
            pending,
        })
    }

    /// Record a batch, bottom first, in one transaction, after forcing the
    /// lazily applied driver layers to disk. A chain that was registered
    /// meanwhile (by another process) stops the batch there: that record
    /// wins, and the staged layers from it on are undone. Returns each
    /// recorded layer's record and whether it existed already: the records
    /// of the batch's bottom layers, up to and including a winning one.
    pub(crate) fn publish_staged(&self, mut batch: Batch<'_>) -> Result<Vec<(LayerRecord, bool)>> {
        let lazy: Vec<LayerId> = batch
            .0
            .iter()
            .filter(|s| s.lazy)
            .map(|s| s.cache().clone())
            .collect();
        self.driver.sync_layers(&lazy)?;
        let mut taken: Vec<Staged<'_>> = batch.0.drain(..).collect();
        let outcome = self.db.write("record layers", |tx| {
            let mut out: Vec<Option<LayerRecord>> = Vec::new();
            for s in taken.iter_mut() {
                if let Some(l) = records::layer(tx, &s.rec.chain_id)? {
                    out.push(Some(l));
                    break;
                }
                self.persist_kept(s)?;
                records::insert_layer(tx, &s.rec)?;
                records::remove_intent(tx, &s.rec.cache_id)?;
                out.push(None);
            }
            Ok(out)
        });
        // a Vec drops its elements first to last, parents before their
        // children, which the driver refuses: undo as a batch
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                drop(Batch(taken));
                return Err(e);
            }
        };
        let mut result = Vec::new();
        let rest = taken.split_off(outcome.len().min(taken.len()));
        for (s, o) in taken.into_iter().zip(outcome) {
            match o {
                Some(l) if l.removing => {
                    drop(Batch(rest));
                    drop(s);
                    return Err(Error::Internal(format!(
                        "layer {} is being removed while it is imported again",
                        l.chain_id
                    )));
                }
                // the winner; ours (and those above it) are undone
                Some(l) => {
                    tracing::info!(chain_id = %l.chain_id, "another process registered this layer meanwhile; its record is used");
                    drop(Batch(rest));
                    drop(s);
                    result.push((l, true));
                    return Ok(result);
                }
                None => {
                    let Staged { rec, pending, .. } = s;
                    pending.disarm();
                    tracing::info!(chain_id = %rec.chain_id, cache_id = %rec.cache_id, size = rec.size, "registered a layer");
                    result.push((rec, false));
                }
            }
        }
        drop(Batch(rest));
        Ok(result)
    }

    /// Move a staged layer's tar-split (and blob copy, if it differs from
    /// the plain tar) to their places; sets the record's blob.
    fn persist_kept(&self, s: &mut Staged<'_>) -> Result<()> {
        let sp = self.tarsplit_path(&s.rec.chain_id);
        if let Some(split) = s.kept.split.take() {
            split.persist(&sp).map_err(|e| Error::Io {
                op: "keep tar-split",
                path: sp.clone(),
                err: e.error,
            })?;
        }
        if let (Some(mt), Some(t)) = (&s.media, s.kept.blob.take())
            && s.kept.blob_digest != s.rec.diff_id
        {
            let bp = self.blob_path(&s.kept.blob_digest);
            t.persist(&bp).map_err(|e| Error::Io {
                op: "keep blob",
                path: bp.clone(),
                err: e.error,
            })?;
            s.rec.blob = Some(BlobRef {
                digest: s.kept.blob_digest.clone(),
                media_type: mt.clone(),
                size: s.kept.blob_size,
            });
        }
        Ok(())
    }
}
