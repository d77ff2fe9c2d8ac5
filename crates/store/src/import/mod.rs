//! Importing images: `docker save` archives, OCI image layouts (a
//! directory) and OCI archives (a tar of one), plain or compressed (gzip,
//! zstd), from a path or a stream. Every blob is checked against its
//! digest and every layer against the config's diffIDs; on any mismatch
//! nothing is registered (layers this import created are removed).
//!
//! Rooms: `source` (members of a directory or a tar, opened safely),
//! `plan` (which images, for which platform), `spool` (streams and
//! compressed archives into a temporary file first), `rootfs` (a flat
//! root file system as a one-layer image, `docker import`).

mod plan;
mod rootfs;
mod source;
mod spool;

use std::io::Read;
use std::path::Path;

use oci_spec::image::ImageManifest;
use strata_core::Digest;

pub use plan::Platform;
use plan::{MAX_JSON, Plan, blob_member, digest_of, read_verified};
pub use rootfs::RootfsOpts;
use source::{DirSource, Source, TarSource};

use crate::error::{Error, Result};
use crate::layers::{Keep, LayerIn};
use crate::records::{self, ImageRecord, LayerRecord};
use crate::staged::{Batch, Staged};
use crate::{Store, config, now, reference};

/// Most layers applied before they are recorded together (each holds two
/// open temporary files until then).
const BATCH: usize = 32;

/// Progress of an import, for output like `docker pull`.
#[derive(Debug, Clone)]
pub enum Event {
    /// A layer will be read (short digest, bytes).
    Layer {
        /// The layer's short digest.
        short: String,
        /// Its size in bytes, as the archive says.
        size: u64,
    },
    /// Bytes of a layer read so far.
    Progress {
        /// The layer's short digest.
        short: String,
        /// Bytes read.
        done: u64,
        /// Bytes in all.
        size: u64,
    },
    /// The layer is stored already.
    AlreadyExists {
        /// The layer's short digest.
        short: String,
    },
    /// The layer is stored.
    Complete {
        /// The layer's short digest.
        short: String,
    },
    /// The image is stored: its digest (manifest, or config) and tags.
    Done {
        /// The manifest's digest (the config's when there is no manifest).
        digest: Digest,
        /// The image ID (its config's digest).
        id: Digest,
        /// The tags it was given.
        tags: Vec<String>,
    },
}

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOpts {
    /// Name the (last) image too.
    pub tag: Option<String>,
    /// The platform to pick from indexes (default: this machine's).
    pub platform: Option<Platform>,
}

/// Where an archive comes from.
pub enum Input<'a> {
    /// A directory (OCI layout) or a file (an archive, maybe compressed).
    Path(&'a Path),
    /// A stream (standard input), maybe compressed.
    Stream(&'a mut (dyn Read + Send)),
}

impl std::fmt::Debug for Input<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Path(p) => write!(f, "{}", p.display()),
            Input::Stream(_) => f.write_str("(stream)"),
        }
    }
}

/// What a plan resolves to: the config, the manifest, the layers.
struct Resolved {
    config: Vec<u8>,
    manifest: Option<Vec<u8>>,
    layers: Vec<LayerPlan>,
}

/// One layer to read: its member, the digest its blob should have, its
/// media type (empty for docker archives), and its diffID.
struct LayerPlan {
    member: String,
    blob: Option<Digest>,
    media: String,
    diff: Digest,
}

/// Counts bytes read and reports progress.
struct Counting<'a, 'b> {
    inner: &'a mut (dyn Read + Send),
    done: u64,
    size: u64,
    short: &'a str,
    last: u64,
    cb: &'a mut (dyn FnMut(Event) + Send + 'b),
}

impl Read for Counting<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.done - self.last >= 1 << 20 || n == 0 {
            self.last = self.done;
            let ev = Event::Progress {
                short: self.short.to_string(),
                done: self.done,
                size: self.size,
            };
            (self.cb)(ev);
        }
        Ok(n)
    }
}

impl Store {
    /// Import every image of `input`; returns their records.
    pub fn import(
        &self,
        input: Input<'_>,
        opts: &ImportOpts,
        progress: &mut (dyn FnMut(Event) + Send),
    ) -> Result<Vec<ImageRecord>> {
        let extra = opts
            .tag
            .as_deref()
            .map(reference::normalize_tag)
            .transpose()?;
        let want = opts.platform.clone().unwrap_or_else(Platform::host);
        let spooled;
        let mut src: Box<dyn Source> = match input {
            Input::Path(p) if p.is_dir() => Box::new(DirSource::open(p)?),
            Input::Path(p) => {
                spooled = spool::archive_file(self, p)?;
                Box::new(TarSource::open(p, spooled)?)
            }
            Input::Stream(r) => {
                let f = spool::stream(self, r)?;
                Box::new(TarSource::open(Path::new("(standard input)"), f)?)
            }
        };
        let mut plans = if src.exists("manifest.json") {
            plan::docker(src.as_mut())?
        } else if src.exists("index.json") && src.exists("oci-layout") {
            plan::oci(src.as_mut(), &want)?
        } else {
            return Err(Error::bad_archive(
                src.describe(),
                "it has neither manifest.json (docker-archive) nor oci-layout and index.json (OCI)",
            ));
        };
        if plans.is_empty() {
            return Err(Error::bad_archive(src.describe(), "it holds no image"));
        }
        if let Some(t) = &extra {
            plan::add_tag(&mut plans, t);
        }
        plan::dedup_tags(&mut plans);
        let mut out = Vec::new();
        for p in plans {
            out.push(self.import_one(src.as_mut(), p, progress)?);
        }
        Ok(out)
    }

    /// Read one plan's config (and manifest), and its layers.
    fn resolve_plan(&self, src: &mut dyn Source, p: &Plan) -> Result<Resolved> {
        let what = src.describe().to_path_buf();
        let (cfg, manifest, members) = match p {
            Plan::Docker { config, layers, .. } => {
                let cfg = src.read_all(config, MAX_JSON)?;
                // the config's name carries its digest (<hex>.json or blobs/sha256/<hex>)
                let stem = Path::new(config)
                    .file_name()
                    .map(|n| n.to_string_lossy().trim_end_matches(".json").to_string())
                    .unwrap_or_default();
                if let Ok(d) = Digest::from_hex(&stem) {
                    check_digest(&cfg, &d, &format!("config {config}"))?;
                }
                let members = layers
                    .iter()
                    .map(|l| {
                        let d = l
                            .strip_prefix("blobs/sha256/")
                            .and_then(|h| Digest::from_hex(h).ok());
                        (l.clone(), d, String::new())
                    })
                    .collect();
                (cfg, None, members)
            }
            Plan::Oci { manifest, size, .. } => {
                let data = read_verified(src, manifest, *size)?;
                let m = ImageManifest::from_reader(&data[..])
                    .map_err(|e| Error::bad_archive(&what, format!("manifest {manifest}: {e}")))?;
                let cd = digest_of(m.config(), &what)?;
                let cfg = read_verified(src, &cd, m.config().size())?;
                let mut members = Vec::new();
                for l in m.layers() {
                    let ld = digest_of(l, &what)?;
                    let member = blob_member(&ld);
                    let have = src.size(&member);
                    if have != Some(l.size()) {
                        return Err(Error::bad_archive(
                            &what,
                            match have {
                                None => format!("layer blob {ld} is missing"),
                                Some(_) => format!(
                                    "layer blob {ld} does not have the size its manifest says"
                                ),
                            },
                        ));
                    }
                    members.push((member, Some(ld), l.media_type().to_string()));
                }
                (cfg, Some(data), members)
            }
        };
        let parsed = config::parse(&cfg, &format!("config of an image in {}", what.display()))?;
        let diffs = config::diff_ids(&parsed, "config")?;
        if diffs.len() != members.len() {
            return Err(Error::bad_archive(
                &what,
                format!(
                    "the config lists {} layers, the manifest {}",
                    diffs.len(),
                    members.len()
                ),
            ));
        }
        let layers = members
            .into_iter()
            .zip(diffs)
            .map(|((member, blob, media), diff)| LayerPlan {
                member,
                blob,
                media,
                diff,
            })
            .collect();
        Ok(Resolved {
            config: cfg,
            manifest,
            layers,
        })
    }

    fn import_one(
        &self,
        src: &mut dyn Source,
        p: Plan,
        progress: &mut (dyn FnMut(Event) + Send),
    ) -> Result<ImageRecord> {
        let Resolved {
            config: cfg,
            manifest,
            layers,
        } = self.resolve_plan(src, &p)?;
        let work = self.work_lock()?;
        let mut created: Vec<LayerRecord> = Vec::new();
        let chains = match self.import_layers(src, &layers, progress, &mut created) {
            Ok(c) => c,
            Err(e) => {
                drop(work);
                self.rollback(&created);
                return Err(e);
            }
        };
        let tags = match &p {
            Plan::Docker { tags, .. } | Plan::Oci { tags, .. } => tags.clone(),
        };
        let img = self.record_image(&cfg, manifest.as_deref(), &chains, &tags)?;
        drop(work);
        progress(Event::Done {
            digest: img.manifest.clone().unwrap_or_else(|| img.id.clone()),
            id: img.id.clone(),
            tags: img.repo_tags.clone(),
        });
        Ok(img)
    }

    /// Register the layers in order; returns their chain IDs. Layers are
    /// applied one after the other and recorded in batches (one pass of
    /// driver fsyncs and one transaction per batch); a chain another
    /// process registered meanwhile wins, and the import goes on from it.
    fn import_layers(
        &self,
        src: &mut dyn Source,
        layers: &[LayerPlan],
        progress: &mut (dyn FnMut(Event) + Send),
        created: &mut Vec<LayerRecord>,
    ) -> Result<Vec<Digest>> {
        let mut reserved = self.reserve_caches(self.missing_layers(layers)?)?;
        let mut chains: Vec<Digest> = Vec::new();
        let mut batch = Batch::default();
        let mut i = 0;
        while i < layers.len() || !batch.is_empty() {
            let l = layers.get(i);
            if let Some(l) = l.filter(|_| batch.len() < BATCH) {
                let chain = chains.last();
                let short = l.blob.as_ref().unwrap_or(&l.diff).short().to_string();
                let next = Digest::chain(chain, &l.diff);
                if batch.is_empty() && self.layer(&next)?.is_some() {
                    progress(Event::AlreadyExists { short });
                    chains.push(next);
                    i += 1;
                    continue;
                }
                let parent_cache = match batch.last_cache() {
                    Some(c) => Some(c.clone()),
                    None => self.cache_of(chain)?,
                };
                let cache = match reserved.take() {
                    Some(c) => c,
                    // a layer that was stored when the import began and
                    // went since
                    None => self.reserve_caches(1)?.take().ok_or_else(|| {
                        Error::Internal("no driver layer name was reserved".into())
                    })?,
                };
                let staged =
                    self.stage_from(src, l, chain, parent_cache.as_ref(), cache, progress)?;
                progress(Event::Complete { short });
                chains.push(staged.record().chain_id.clone());
                batch.push(staged);
                i += 1;
                continue;
            }
            // record what is staged; a winner elsewhere restarts from it
            let start = chains.len() - batch.len();
            let done = self.publish_staged(std::mem::take(&mut batch))?;
            chains.truncate(start);
            for (rec, existed) in done {
                if !existed {
                    created.push(rec.clone());
                }
                chains.push(rec.chain_id);
            }
            i = chains.len();
        }
        Ok(chains)
    }

    /// How many of `layers` are not stored yet.
    fn missing_layers(&self, layers: &[LayerPlan]) -> Result<usize> {
        let mut chain: Option<Digest> = None;
        let mut missing = 0;
        for l in layers {
            let next = Digest::chain(chain.as_ref(), &l.diff);
            if self.layer(&next)?.is_none() {
                missing += 1;
            }
            chain = Some(next);
        }
        Ok(missing)
    }

    /// The driver layer of a recorded chain.
    fn cache_of(&self, chain: Option<&Digest>) -> Result<Option<strata_core::LayerId>> {
        let Some(c) = chain else { return Ok(None) };
        let l = self
            .layer(c)?
            .ok_or_else(|| Error::NoSuchLayer(c.to_string()))?;
        Ok(Some(strata_core::LayerId::new(l.cache_id)?))
    }

    /// Read one layer's blob from the archive and stage it (applied, not
    /// recorded) as the driver layer `cache`.
    fn stage_from<'s>(
        &'s self,
        src: &mut dyn Source,
        l: &LayerPlan,
        parent: Option<&Digest>,
        parent_cache: Option<&strata_core::LayerId>,
        cache: strata_core::LayerId,
        progress: &mut (dyn FnMut(Event) + Send),
    ) -> Result<Staged<'s>> {
        let short = l.blob.as_ref().unwrap_or(&l.diff).short().to_string();
        let size = src.size(&l.member).unwrap_or(0);
        progress(Event::Layer {
            short: short.clone(),
            size,
        });
        let mut r = src.open(&l.member)?;
        let mut counting = Counting {
            inner: &mut r,
            done: 0,
            size,
            short: &short,
            last: 0,
            cb: progress,
        };
        let input = LayerIn {
            input: &mut counting,
            diff: Some(&l.diff),
            blob: l.blob.as_ref(),
            keep: Keep::Copy {
                media_type: l.media.clone(),
            },
        };
        self.stage_layer(parent, parent_cache, input, cache, true)
            .map_err(|e| Error::InLayer {
                what: l
                    .blob
                    .as_ref()
                    .map_or_else(|| l.member.clone(), |d| d.to_string()),
                inner: Box::new(e),
            })
    }

    /// Store the config (and manifest) blobs and the image's record, tags
    /// and digest references, in one transaction.
    pub(crate) fn record_image(
        &self,
        cfg: &[u8],
        manifest: Option<&[u8]>,
        chains: &[Digest],
        tags: &[String],
    ) -> Result<ImageRecord> {
        let id = self.put_blob(cfg)?;
        let md = manifest.map(|m| self.put_blob(m)).transpose()?;
        let meta = config::image_meta(cfg);
        let sizes: u64 = chains
            .iter()
            .map(|c| self.layer(c).map(|l| l.map_or(0, |l| l.size)))
            .sum::<Result<u64>>()?;
        let digests: Vec<String> = match &md {
            Some(md) => tags
                .iter()
                .map(|t| format!("{}@{md}", reference::split_tag(t).0))
                .collect(),
            None => Vec::new(),
        };
        let rec = ImageRecord {
            id: id.clone(),
            repo_tags: Vec::new(),
            repo_digests: digests.clone(),
            manifest: md.clone(),
            layers: chains.to_vec(),
            loaded: now(),
            created: meta.created,
            created_text: meta.created_text,
            size: sizes,
            os: meta.os,
            architecture: meta.architecture,
        };
        self.db.write("record image", |tx| {
            if records::image(tx, &id)?.is_none() {
                records::insert_image(tx, &rec)?;
            }
            for d in &digests {
                records::add_repo_digest(tx, d, &id)?;
            }
            for t in tags {
                records::set_tag(tx, t, &id)?;
            }
            Ok(())
        })?;
        self.image_record(&id)?
            .ok_or_else(|| Error::Internal(format!("image {id} vanished after it was recorded")))
    }

    /// Remove layers an interrupted import created, unless something else
    /// uses them by now.
    fn rollback(&self, created: &[LayerRecord]) {
        let Ok(_g) = self.gc_lock() else { return };
        for l in created.iter().rev() {
            if let Err(e) = self.prune_chain(Some(&l.chain_id)) {
                tracing::warn!(layer = %l.chain_id, "rolling back: {e}");
            }
        }
    }
}

fn check_digest(data: &[u8], want: &Digest, what: &str) -> Result<()> {
    let got = Digest::of(data);
    if got != *want {
        return Err(Error::DigestMismatch {
            what: what.to_string(),
            expected: want.to_string(),
            actual: got.to_string(),
        });
    }
    Ok(())
}
