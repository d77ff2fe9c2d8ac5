//! The Strata layer store: content-addressed layers, images and containers
//! over any driver (Docker's model).
//!
//! A layer is known by its chain ID (`sha256(parent_chain + " " +
//! diff_id)`, the diffID alone for a base layer), stored once however many
//! images use it; the driver holds it under a random cache id. Images
//! (config + manifest) point to chains; containers are read-write layers on
//! an image's top layer. References are computed from the records (images
//! and containers), never kept as counters that could drift.
//!
//! Layout under `ROOT/store`:
//!
//! ```text
//! layers/HEX.json       layer records, by chain ID
//! tarsplit/HEX.tsz      tar skeletons, by chain ID (see `tarsplit`)
//! images/HEX.json       image records, by image ID (config digest)
//! containers/ID.json    container records
//! blobs/sha256/HEX      configs, manifests, compressed layer blobs
//! meta.lock             guards read-modify-write of the records
//! gc.lock               shared by operations that create layers, exclusive
//!                       for garbage collection and crash recovery
//! ```
//!
//! Crash safety: every record is written to a temporary file, fsynced and
//! renamed. A driver layer is created before its record and its record is
//! removed before the driver layer, so a crash can only leave driver layers
//! no record claims; recovery (at open, when no other process is at work)
//! removes them.

// The store keeps its own records, blobs and lock files by path; it never
// opens layer contents by path (those go through the driver).
#![allow(clippy::disallowed_methods)]

pub mod digest;
pub mod error;
pub mod export;
pub mod import;
pub mod reference;
pub mod tarsplit;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};
use serde::{Deserialize, Serialize};
use strata_core::{CreateOpts, DiffBase, Driver, LayerId, fsx};

pub use digest::Digest;
use error::IoCtx;
pub use error::{Error, Result};

/// A compressed blob kept as imported (for byte-exact OCI export).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// A layer of the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub chain_id: Digest,
    pub diff_id: Digest,
    pub parent: Option<Digest>,
    /// The driver's id of the layer.
    pub cache_id: String,
    /// Bytes of file content (what Docker calls the layer's size).
    pub size: u64,
    /// Bytes of the uncompressed tar.
    pub tar_size: u64,
    pub created: i64,
    /// The compressed blob it came from, when that was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<BlobRef>,
}

/// An image: a config, its layers and its names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The config's digest.
    pub id: Digest,
    #[serde(default)]
    pub repo_tags: Vec<String>,
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// The manifest it was imported with (kept in the blobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Digest>,
    /// Chain IDs of its layers, bottom first.
    pub layers: Vec<Digest>,
    /// When it was stored here.
    pub loaded: i64,
}

/// A container: a read-write layer on an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    pub image: Digest,
    /// The driver's id of the read-write layer.
    pub layer: String,
    pub created: i64,
}

/// A held lock file; released on drop.
#[derive(Debug)]
pub struct LockGuard {
    _f: File,
}

/// The store.
pub struct Store {
    pub root: PathBuf,
    dir: PathBuf,
    pub driver: Box<dyn Driver>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.root)
            .field("driver", &self.driver.name())
            .finish()
    }
}

pub fn now() -> i64 {
    strata_core::state::now()
}

/// A random 64-hex id.
pub fn random_id() -> String {
    let mut seed = [0u8; 32];
    if let Ok(mut f) = File::open("/dev/urandom") {
        let _ = f.read_exact(&mut seed);
    }
    let extra = strata_core::state::unique_suffix();
    Digest::of(&[&seed[..], extra.as_bytes()].concat())
        .hex()
        .to_string()
}

fn read_json<T: for<'de> Deserialize<'de>>(p: &Path) -> Result<Option<T>> {
    match std::fs::read(p) {
        Ok(d) => serde_json::from_slice(&d)
            .map(Some)
            .map_err(|e| Error::Corrupt {
                path: p.to_path_buf(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io {
            op: "read",
            path: p.to_path_buf(),
            err: e,
        }),
    }
}

fn write_json<T: Serialize>(p: &Path, v: &T) -> Result<()> {
    let data = serde_json::to_vec_pretty(v).map_err(|e| Error::Corrupt {
        path: p.to_path_buf(),
        reason: e.to_string(),
    })?;
    fsx::write_atomic(p, &data).ctx("write", p)
}

fn remove_file(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io {
            op: "remove",
            path: p.to_path_buf(),
            err: e,
        }),
    }
}

fn list_json<T: for<'de> Deserialize<'de>>(dir: &Path) -> Result<Vec<T>> {
    let mut out = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .ctx("read", dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
        })
        .collect();
    names.sort();
    for p in names {
        if let Some(v) = read_json(&p)? {
            out.push(v);
        }
    }
    Ok(out)
}

/// What `check` found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CheckReport {
    pub problems: Vec<String>,
    pub repaired: Vec<String>,
}

/// Disk usage, like `docker system df`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct DiskUsage {
    pub images: Vec<ImageUsage>,
    pub containers: Vec<ContainerUsage>,
    pub layers_total: usize,
    pub layers_size: u64,
    pub layers_unreferenced: usize,
    pub layers_unreferenced_size: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageUsage {
    pub id: Digest,
    pub repo_tags: Vec<String>,
    pub created: i64,
    pub size: u64,
    pub shared_size: u64,
    pub unique_size: u64,
    pub containers: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContainerUsage {
    pub id: String,
    pub name: String,
    pub image: Digest,
    pub size_rw: u64,
    pub size_root_fs: u64,
}

impl Store {
    /// Open the store at `root` with an opened driver; cleans what a crash
    /// left when no other process is at work.
    pub fn open(root: &Path, driver: Box<dyn Driver>) -> Result<Store> {
        let dir = root.join("store");
        for d in [
            "layers",
            "tarsplit",
            "images",
            "containers",
            "blobs/sha256",
            "tmp",
            "pending",
        ] {
            let p = dir.join(d);
            fsx::mkdir_p(&p, 0o700).ctx("create", &p)?;
        }
        let s = Store {
            root: root.to_path_buf(),
            dir,
            driver,
        };
        if let Some(_gc) = s.try_gc_lock()? {
            let r = s.recover()?;
            if !r.repaired.is_empty() {
                tracing::info!(repaired = ?r.repaired, "store: recovered from an interrupted operation");
            }
        }
        Ok(s)
    }

    fn lock_file(&self, name: &str, op: FlockOperation) -> Result<Option<LockGuard>> {
        let p = self.dir.join(name);
        #[allow(clippy::disallowed_methods)]
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .ctx("open lock", &p)?;
        match flock(&f, op) {
            Ok(()) => Ok(Some(LockGuard { _f: f })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(Error::Io {
                op: "lock",
                path: p,
                err: e.into(),
            }),
        }
    }

    /// Exclusive lock for read-modify-write of records (held briefly).
    pub fn meta_lock(&self) -> Result<LockGuard> {
        self.lock_file("meta.lock", FlockOperation::LockExclusive)?
            .ok_or_else(|| Error::Conflict("meta lock".into()))
    }

    /// Shared lock held by operations that create driver layers before
    /// their records exist (import, commit, container create).
    pub fn work_lock(&self) -> Result<LockGuard> {
        self.lock_file("gc.lock", FlockOperation::LockShared)?
            .ok_or_else(|| Error::Conflict("gc lock".into()))
    }

    /// Exclusive lock for garbage collection (waits for work to finish).
    pub fn gc_lock(&self) -> Result<LockGuard> {
        self.lock_file("gc.lock", FlockOperation::LockExclusive)?
            .ok_or_else(|| Error::Conflict("gc lock".into()))
    }

    fn try_gc_lock(&self) -> Result<Option<LockGuard>> {
        self.lock_file("gc.lock", FlockOperation::NonBlockingLockExclusive)
    }
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// Say that a driver layer is about to be made for the store: until
    /// its record exists, a crash leaves it to recovery, which removes only
    /// layers marked this way (layers made with `strata layer` are not the
    /// store's and are never touched).
    fn mark_pending(&self, cache: &LayerId) -> Result<PathBuf> {
        let p = self.dir.join("pending").join(cache.as_str());
        fsx::write_atomic(&p, b"").ctx("write", &p)?;
        Ok(p)
    }

    // ------------------------------------------------------------ records

    fn layer_path(&self, chain: &Digest) -> PathBuf {
        self.dir
            .join("layers")
            .join(format!("{}.json", chain.hex()))
    }

    pub fn tarsplit_path(&self, chain: &Digest) -> PathBuf {
        self.dir
            .join("tarsplit")
            .join(format!("{}.tsz", chain.hex()))
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(d.hex())
    }

    fn image_path(&self, id: &Digest) -> PathBuf {
        self.dir.join("images").join(format!("{}.json", id.hex()))
    }

    fn container_path(&self, id: &str) -> PathBuf {
        self.dir.join("containers").join(format!("{id}.json"))
    }

    pub fn layer(&self, chain: &Digest) -> Result<Option<LayerRecord>> {
        read_json(&self.layer_path(chain))
    }

    pub fn layers(&self) -> Result<Vec<LayerRecord>> {
        list_json(&self.dir.join("layers"))
    }

    pub fn put_layer(&self, l: &LayerRecord) -> Result<()> {
        write_json(&self.layer_path(&l.chain_id), l)
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        list_json(&self.dir.join("images"))
    }

    pub fn image_record(&self, id: &Digest) -> Result<Option<ImageRecord>> {
        read_json(&self.image_path(id))
    }

    pub fn put_image(&self, i: &ImageRecord) -> Result<()> {
        write_json(&self.image_path(&i.id), i)
    }

    pub fn containers(&self) -> Result<Vec<ContainerRecord>> {
        list_json(&self.dir.join("containers"))
    }

    pub fn put_container(&self, c: &ContainerRecord) -> Result<()> {
        write_json(&self.container_path(&c.id), c)
    }

    /// Store a blob (config, manifest) under its digest.
    pub fn put_blob(&self, data: &[u8]) -> Result<Digest> {
        let d = Digest::of(data);
        let p = self.blob_path(&d);
        if !p.exists() {
            fsx::write_atomic(&p, data).ctx("write blob", &p)?;
        }
        Ok(d)
    }

    pub fn blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(d);
        let data = std::fs::read(&p).ctx("read blob", &p)?;
        if Digest::of(&data) != *d {
            return Err(Error::DigestMismatch {
                what: format!("stored blob {}", p.display()),
                expected: d.to_string(),
                actual: Digest::of(&data).to_string(),
            });
        }
        Ok(data)
    }

    /// Images with their configs, skipping any removed meanwhile by another
    /// process (its record or config vanished between the two reads).
    pub fn images_with_configs(&self) -> Result<Vec<(ImageRecord, serde_json::Value)>> {
        let mut v = Vec::new();
        for i in self.images()? {
            match self.config(&i) {
                Ok(c) => v.push((i, c)),
                Err(e) if self.image_record(&i.id)?.is_none() => {
                    tracing::debug!(image = %i.id, "image removed while listing: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(v)
    }

    /// An image's config JSON.
    pub fn config(&self, img: &ImageRecord) -> Result<serde_json::Value> {
        let data = self.blob(&img.id)?;
        serde_json::from_slice(&data).map_err(|e| Error::Corrupt {
            path: self.blob_path(&img.id),
            reason: e.to_string(),
        })
    }

    /// The layers of a chain, bottom first.
    pub fn chain_records(&self, top: &Digest) -> Result<Vec<LayerRecord>> {
        let mut v = Vec::new();
        let mut cur = Some(top.clone());
        while let Some(c) = cur {
            let l = self
                .layer(&c)?
                .ok_or_else(|| Error::NoSuchLayer(c.to_string()))?;
            cur = l.parent.clone();
            v.push(l);
            if v.len() > 10_000 {
                return Err(Error::Corrupt {
                    path: self.layer_path(top),
                    reason: "parent chain loops".into(),
                });
            }
        }
        v.reverse();
        Ok(v)
    }

    /// Total size of an image's layers.
    pub fn image_size(&self, img: &ImageRecord) -> Result<u64> {
        let mut total = 0;
        for c in &img.layers {
            if let Some(l) = self.layer(c)? {
                total += l.size;
            }
        }
        Ok(total)
    }

    // ------------------------------------------------------------ layers

    /// Register a layer from a diff stream: returns the record and whether
    /// it already existed (then the driver was not touched). `blob` is
    /// where the compressed input should be kept (its media type), or
    /// `None` to keep nothing. The caller holds the work lock.
    pub fn register_layer(
        &self,
        parent: Option<&Digest>,
        expected_diff: Option<&Digest>,
        input: &mut (dyn Read + Send),
        keep_blob: Option<&str>,
    ) -> Result<(LayerRecord, bool)> {
        if let Some(d) = expected_diff {
            let chain = Digest::chain(parent, d);
            if let Some(l) = self.layer(&chain)? {
                return Ok((l, true));
            }
        }
        let parent_rec = match parent {
            Some(p) => Some(
                self.layer(p)?
                    .ok_or_else(|| Error::NoSuchLayer(p.to_string()))?,
            ),
            None => None,
        };
        let cache = LayerId::new(random_id())?;
        let pending = self.mark_pending(&cache)?;
        let _unmark = Unmark(pending);
        let parent_cache = match &parent_rec {
            Some(p) => Some(LayerId::new(p.cache_id.clone())?),
            None => None,
        };
        // tar-split and (optionally) the compressed blob are written while
        // the driver reads the stream
        let tmp = tempfile::Builder::new()
            .prefix("split.")
            .tempfile_in(self.tmp_dir())
            .ctx("create temp", self.tmp_dir())?;
        let mut split = tarsplit::SplitWriter::new(std::io::BufWriter::new(
            tmp.reopen().ctx("reopen", tmp.path())?,
        ))
        .ctx("tar-split", tmp.path())?;
        let blob_tmp = match keep_blob {
            Some(_) => Some(
                tempfile::Builder::new()
                    .prefix("blob.")
                    .tempfile_in(self.tmp_dir())
                    .ctx("create temp", self.tmp_dir())?,
            ),
            None => None,
        };
        let mut tee = Tee {
            inner: strata_core::Hashing::new(input),
            copy: match &blob_tmp {
                Some(t) => Some(std::io::BufWriter::new(t.reopen().ctx("reopen", t.path())?)),
                None => None,
            },
            err: None,
        };
        let stats = self.driver.apply_diff_split(
            &cache,
            parent_cache.as_ref(),
            &mut tee,
            Some(&mut split),
        )?;
        // the blob's digest covers every byte, also any after the stream end
        if let Err(e) = std::io::copy(&mut tee, &mut std::io::sink()) {
            let _ = self.driver.remove(&cache);
            return Err(Error::Io {
                op: "read layer blob",
                path: self.tmp_dir(),
                err: e,
            });
        }
        if let Some(e) = tee.err.take() {
            let _ = self.driver.remove(&cache);
            return Err(Error::Io {
                op: "keep blob",
                path: self.tmp_dir(),
                err: e,
            });
        }
        if let Some(mut c) = tee.copy.take() {
            c.flush().ctx("write blob", self.tmp_dir())?;
        }
        let (_, blob_digest, blob_size) = tee.inner.finish();
        let undo = |e: Error| -> Error {
            let _ = self.driver.remove(&cache);
            e
        };
        let diff_id = stats.diff_id.clone();
        if let Some(want) = expected_diff
            && *want != diff_id
        {
            return Err(undo(Error::DigestMismatch {
                what: format!("layer diffID (blob {blob_digest})"),
                expected: want.to_string(),
                actual: diff_id.to_string(),
            }));
        }
        let chain = Digest::chain(parent, &diff_id);
        // a layer with this chain may have been registered meanwhile (or the
        // diffID was not known before applying): keep the existing one
        {
            let _m = self.meta_lock().map_err(undo)?;
            if let Some(l) = self.layer(&chain)? {
                drop(_m);
                let _ = self.driver.remove(&cache);
                return Ok((l, true));
            }
            let w = split.finish().map_err(|e| {
                undo(Error::Io {
                    op: "tar-split",
                    path: tmp.path().to_path_buf(),
                    err: e,
                })
            })?;
            drop(w);
            let sp = self.tarsplit_path(&chain);
            tmp.persist(&sp).map_err(|e| {
                undo(Error::Io {
                    op: "persist tar-split",
                    path: sp.clone(),
                    err: e.error,
                })
            })?;
            let blob = match (keep_blob, blob_tmp) {
                (Some(mt), Some(t)) if blob_digest != diff_id => {
                    let bp = self.blob_path(&blob_digest);
                    t.persist(&bp).map_err(|e| {
                        undo(Error::Io {
                            op: "persist blob",
                            path: bp.clone(),
                            err: e.error,
                        })
                    })?;
                    Some(BlobRef {
                        digest: blob_digest,
                        media_type: mt.to_string(),
                        size: blob_size,
                    })
                }
                _ => None,
            };
            let rec = LayerRecord {
                chain_id: chain,
                diff_id,
                parent: parent.cloned(),
                cache_id: cache.to_string(),
                size: stats.size,
                tar_size: stats.tar_bytes,
                created: now(),
                blob,
            };
            self.put_layer(&rec).map_err(undo)?;
            Ok((rec, false))
        }
    }

    /// The blob digest a just-registered layer was read from (for callers
    /// that verify manifests): the kept blob's, else the diffID.
    pub fn blob_digest_of(l: &LayerRecord) -> Digest {
        l.blob
            .as_ref()
            .map(|b| b.digest.clone())
            .unwrap_or_else(|| l.diff_id.clone())
    }

    /// Remove a layer (record first, then the driver's layer).
    fn delete_layer(&self, l: &LayerRecord) -> Result<()> {
        // marked first: a crash between the record and the driver layer
        // leaves it to recovery
        let id = LayerId::new(l.cache_id.clone())?;
        let _unmark = Unmark(self.mark_pending(&id)?);
        remove_file(&self.layer_path(&l.chain_id))?;
        remove_file(&self.tarsplit_path(&l.chain_id))?;
        match self.driver.remove(&id) {
            Ok(()) => {}
            Err(e) if e.kind() == strata_core::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(b) = &l.blob
            && !self
                .layers()?
                .iter()
                .any(|o| o.blob.as_ref().is_some_and(|ob| ob.digest == b.digest))
        {
            remove_file(&self.blob_path(&b.digest))?;
        }
        Ok(())
    }

    /// Chain IDs referenced by images and containers (with their parents).
    pub fn referenced(&self) -> Result<BTreeSet<Digest>> {
        let mut refs = BTreeSet::new();
        let layers: HashMap<Digest, LayerRecord> = self
            .layers()?
            .into_iter()
            .map(|l| (l.chain_id.clone(), l))
            .collect();
        let mut tops: Vec<Digest> = Vec::new();
        for i in self.images()? {
            tops.extend(i.layers.iter().cloned());
        }
        for c in self.containers()? {
            if let Some(i) = self.image_record(&c.image)? {
                tops.extend(i.layers.iter().cloned());
            }
        }
        for t in tops {
            let mut cur = Some(t);
            while let Some(c) = cur {
                if !refs.insert(c.clone()) {
                    break;
                }
                cur = layers.get(&c).and_then(|l| l.parent.clone());
            }
        }
        Ok(refs)
    }

    /// Remove layers no image or container references; returns them.
    /// Takes the gc lock (waits for imports and commits to finish).
    pub fn prune_layers(&self) -> Result<Vec<LayerRecord>> {
        let _g = self.gc_lock()?;
        self.prune_layers_locked()
    }

    /// [`prune_layers`](Self::prune_layers) for a caller holding the gc lock.
    fn prune_layers_locked(&self) -> Result<Vec<LayerRecord>> {
        let mut removed = Vec::new();
        loop {
            let refs = self.referenced()?;
            let all = self.layers()?;
            let parents: BTreeSet<Digest> = all.iter().filter_map(|l| l.parent.clone()).collect();
            let victims: Vec<LayerRecord> = all
                .into_iter()
                .filter(|l| !refs.contains(&l.chain_id) && !parents.contains(&l.chain_id))
                .collect();
            if victims.is_empty() {
                break;
            }
            for v in victims {
                self.delete_layer(&v)?;
                removed.push(v);
            }
        }
        Ok(removed)
    }

    // ------------------------------------------------------------ images

    /// Find an image by tag, digest reference, or (a prefix of) its ID.
    pub fn find_image(&self, r: &str) -> Result<ImageRecord> {
        let images = self.images()?;
        let hexpart = r.strip_prefix("sha256:").unwrap_or(r);
        if hexpart.len() >= 4 && hexpart.bytes().all(|b| b.is_ascii_hexdigit()) {
            let m: Vec<&ImageRecord> = images
                .iter()
                .filter(|i| i.id.hex().starts_with(hexpart))
                .collect();
            match m.len() {
                1 => return Ok(m[0].clone()),
                n if n > 1 => {
                    return Err(Error::Conflict(format!(
                        "image ID prefix {r} is ambiguous ({n} images)"
                    )));
                }
                _ => {}
            }
        }
        if r.contains('@') {
            if let Some(i) = images
                .iter()
                .find(|i| i.repo_digests.iter().any(|d| d == r))
            {
                return Ok(i.clone());
            }
            return Err(Error::NoSuchImage(r.to_string()));
        }
        let want = reference::normalize_tag(r)?;
        images
            .into_iter()
            .find(|i| i.repo_tags.contains(&want))
            .ok_or_else(|| Error::NoSuchImage(r.to_string()))
    }

    /// Give `tag` to image `id` (taking it from any other image).
    pub fn tag_image(&self, id: &Digest, tag: &str) -> Result<()> {
        let tag = reference::normalize_tag(tag)?;
        let _m = self.meta_lock()?;
        for mut i in self.images()? {
            if i.id != *id && i.repo_tags.contains(&tag) {
                i.repo_tags.retain(|t| *t != tag);
                self.put_image(&i)?;
            }
        }
        let mut img = self
            .image_record(id)?
            .ok_or_else(|| Error::NoSuchImage(id.to_string()))?;
        if !img.repo_tags.contains(&tag) {
            img.repo_tags.push(tag);
            img.repo_tags.sort();
            self.put_image(&img)?;
        }
        Ok(())
    }

    /// `image rm`: untag, and delete the image when no tag is left (and
    /// then its layers no other image or container uses). Returns the lines
    /// Docker prints (`Untagged: ...`, `Deleted: ...`).
    pub fn remove_image(&self, r: &str, force: bool) -> Result<Vec<String>> {
        // from the check of its users to the removal of its layers, no
        // container may be made on it: hold the gc lock throughout
        let _g = self.gc_lock()?;
        let mut out = Vec::new();
        let img = self.find_image(r)?;
        let by_tag = {
            let n = reference::normalize_tag(r).ok();
            n.filter(|t| img.repo_tags.contains(t))
        };
        let users: Vec<String> = self
            .containers()?
            .into_iter()
            .filter(|c| c.image == img.id)
            .map(|c| c.name)
            .collect();
        {
            let _m = self.meta_lock()?;
            let mut img = self
                .image_record(&img.id)?
                .ok_or_else(|| Error::NoSuchImage(r.to_string()))?;
            match &by_tag {
                Some(t) if img.repo_tags.len() > 1 || !users.is_empty() && !force => {
                    if img.repo_tags.len() == 1 && !users.is_empty() {
                        return Err(Error::Conflict(format!(
                            "conflict: unable to remove repository reference \"{r}\" (must force) - container {} is using its referenced image {}",
                            users[0],
                            img.id.short()
                        )));
                    }
                    img.repo_tags.retain(|x| x != t);
                    self.put_image(&img)?;
                    out.push(format!("Untagged: {t}"));
                    return Ok(out);
                }
                None if img.repo_tags.len() > 1 && !force => {
                    return Err(Error::Conflict(format!(
                        "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                        img.id.short()
                    )));
                }
                _ => {}
            }
            if !users.is_empty() {
                return Err(Error::Conflict(format!(
                    "conflict: unable to delete {} - image is being used by container {}",
                    img.id.short(),
                    users.join(", ")
                )));
            }
            for t in &img.repo_tags {
                out.push(format!("Untagged: {t}"));
            }
            for d in &img.repo_digests {
                out.push(format!("Untagged: {d}"));
            }
            remove_file(&self.image_path(&img.id))?;
            out.push(format!("Deleted: {}", img.id));
        }
        // blobs only this image used
        let still: Vec<ImageRecord> = self.images()?;
        if !still.iter().any(|i| i.id == img.id) {
            remove_file(&self.blob_path(&img.id))?;
        }
        if let Some(m) = &img.manifest
            && !still.iter().any(|i| i.manifest.as_ref() == Some(m))
        {
            remove_file(&self.blob_path(m))?;
        }
        for l in self.prune_layers_locked()? {
            out.push(format!("Deleted: {}", l.chain_id));
        }
        Ok(out)
    }

    // ------------------------------------------------------------ containers

    pub fn find_container(&self, r: &str) -> Result<ContainerRecord> {
        let all = self.containers()?;
        if let Some(c) = all.iter().find(|c| c.name == r || c.id == r) {
            return Ok(c.clone());
        }
        let m: Vec<&ContainerRecord> = all
            .iter()
            .filter(|c| r.len() >= 4 && c.id.starts_with(r))
            .collect();
        match m.len() {
            1 => Ok(m[0].clone()),
            0 => Err(Error::NoSuchContainer(r.to_string())),
            _ => Err(Error::Conflict(format!(
                "container ID prefix {r} is ambiguous"
            ))),
        }
    }

    /// A read-write layer on the image's top layer.
    pub fn create_container(&self, name: &str, image: &str) -> Result<ContainerRecord> {
        reference::check_container_name(name)?;
        let _w = self.work_lock()?;
        let img = self.find_image(image)?;
        if self.containers()?.iter().any(|c| c.name == name) {
            return Err(Error::Conflict(format!(
                "Conflict. The container name \"{name}\" is already in use"
            )));
        }
        let parent = match img.layers.last() {
            Some(top) => {
                let l = self
                    .layer(top)?
                    .ok_or_else(|| Error::NoSuchLayer(top.to_string()))?;
                Some(LayerId::new(l.cache_id)?)
            }
            None => None,
        };
        let id = random_id();
        let layer = LayerId::new(format!("{id}-rw"))?;
        let pending = self.mark_pending(&layer)?;
        let _unmark = Unmark(pending);
        self.driver
            .create_rw(&layer, parent.as_ref(), &CreateOpts::default())?;
        let rec = ContainerRecord {
            id,
            name: name.to_string(),
            image: img.id.clone(),
            layer: layer.to_string(),
            created: now(),
        };
        let r = {
            let _m = self.meta_lock()?;
            if self.containers()?.iter().any(|c| c.name == name) {
                Err(Error::Conflict(format!(
                    "Conflict. The container name \"{name}\" is already in use"
                )))
            } else {
                self.put_container(&rec)
            }
        };
        if let Err(e) = r {
            let _ = self.driver.remove(&layer);
            return Err(e);
        }
        Ok(rec)
    }

    pub fn container_layer(c: &ContainerRecord) -> Result<LayerId> {
        Ok(LayerId::new(c.layer.clone())?)
    }

    /// Remove a container; refused while it is mounted unless forced.
    pub fn remove_container(&self, r: &str, force: bool) -> Result<ContainerRecord> {
        // while the layer is pending removal, recovery must not run
        let _w = self.work_lock()?;
        let c = self.find_container(r)?;
        let layer = Self::container_layer(&c)?;
        let mounted = self
            .driver
            .metadata(&layer)
            .ok()
            .and_then(|m| {
                m.into_iter()
                    .find(|(k, _)| k == "MountCount")
                    .map(|(_, v)| v)
            })
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0);
        if mounted > 0 {
            if !force {
                return Err(Error::Conflict(format!(
                    "container {} is mounted ({mounted} references); unmount it or use --force",
                    c.name
                )));
            }
            for _ in 0..mounted {
                self.driver.unmount(&layer)?;
            }
        }
        let _unmark = Unmark(self.mark_pending(&layer)?);
        {
            let _m = self.meta_lock()?;
            remove_file(&self.container_path(&c.id))?;
        }
        match self.driver.remove(&layer) {
            Ok(()) => Ok(c),
            Err(e) if e.kind() == strata_core::ErrorKind::NotFound => Ok(c),
            Err(e) => Err(e.into()),
        }
    }

    /// Bytes of the container's own changes.
    pub fn container_size(&self, c: &ContainerRecord) -> Result<u64> {
        Ok(self
            .driver
            .diff_size(&Self::container_layer(c)?, DiffBase::Parent)?)
    }

    // ------------------------------------------------------------ usage

    pub fn disk_usage(&self, with_containers_size: bool) -> Result<DiskUsage> {
        let layers: BTreeMap<Digest, LayerRecord> = self
            .layers()?
            .into_iter()
            .map(|l| (l.chain_id.clone(), l))
            .collect();
        let images = self.images()?;
        let containers = self.containers()?;
        // how many images use each layer
        let mut users: HashMap<Digest, usize> = HashMap::new();
        for i in &images {
            for c in &i.layers {
                *users.entry(c.clone()).or_default() += 1;
            }
        }
        let mut du = DiskUsage::default();
        for i in &images {
            let mut size = 0;
            let mut shared = 0;
            for c in &i.layers {
                let s = layers.get(c).map(|l| l.size).unwrap_or(0);
                size += s;
                if users.get(c).copied().unwrap_or(0) > 1 {
                    shared += s;
                }
            }
            let created = self
                .config(i)
                .ok()
                .and_then(|c| {
                    c.get("created")
                        .and_then(|v| v.as_str())
                        .and_then(reference::parse_time)
                })
                .unwrap_or(0);
            du.images.push(ImageUsage {
                id: i.id.clone(),
                repo_tags: i.repo_tags.clone(),
                created,
                size,
                shared_size: shared,
                unique_size: size - shared,
                containers: containers.iter().filter(|c| c.image == i.id).count(),
            });
        }
        for c in &containers {
            let rw = if with_containers_size {
                self.container_size(c).unwrap_or(0)
            } else {
                0
            };
            let img_size = images
                .iter()
                .find(|i| i.id == c.image)
                .map(|i| self.image_size(i).unwrap_or(0))
                .unwrap_or(0);
            du.containers.push(ContainerUsage {
                id: c.id.clone(),
                name: c.name.clone(),
                image: c.image.clone(),
                size_rw: rw,
                size_root_fs: rw + img_size,
            });
        }
        let refs = self.referenced()?;
        du.layers_total = layers.len();
        du.layers_size = layers.values().map(|l| l.size).sum();
        for l in layers.values() {
            if !refs.contains(&l.chain_id) {
                du.layers_unreferenced += 1;
                du.layers_unreferenced_size += l.size;
            }
        }
        Ok(du)
    }

    // ------------------------------------------------------------ recovery

    /// Reconcile records with the driver after a crash: driver layers that
    /// no record claims are removed, temporary files dropped. Call with the
    /// gc lock held.
    pub fn recover(&self) -> Result<CheckReport> {
        let mut r = CheckReport::default();
        // temporary files of writers that died; a live writer's file is
        // fresh (records are written in well under a minute)
        let stale = |e: &std::fs::DirEntry| {
            e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(60))
        };
        let tmp = self.tmp_dir();
        for e in std::fs::read_dir(&tmp).ctx("read", &tmp)?.flatten() {
            // store/tmp is only used under the work lock: nobody is at work
            let _ = std::fs::remove_file(e.path());
            r.repaired
                .push(format!("removed temporary file {}", e.path().display()));
        }
        for sub in ["layers", "images", "containers", "blobs/sha256"] {
            let d = self.dir.join(sub);
            for e in std::fs::read_dir(&d).ctx("read", &d)?.flatten() {
                if e.file_name().to_string_lossy().starts_with(".tmp-") && stale(&e) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let claimed: BTreeSet<String> = self
            .layers()?
            .into_iter()
            .map(|l| l.cache_id)
            .chain(self.containers()?.into_iter().map(|c| c.layer))
            .collect(); // layers a crash left between their creation and their record
        let pdir = self.dir.join("pending");
        let mut pending = BTreeSet::new();
        for e in std::fs::read_dir(&pdir).ctx("read", &pdir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") {
                let _ = std::fs::remove_file(e.path());
                continue;
            }
            pending.insert(name);
        }
        // children before parents
        loop {
            let all = self.driver.layers()?;
            let parents: BTreeSet<LayerId> = all.iter().filter_map(|l| l.parent.clone()).collect();
            let orphans: Vec<LayerId> = all
                .iter()
                .filter(|l| {
                    pending.contains(l.id.as_str())
                        && !claimed.contains(l.id.as_str())
                        && !parents.contains(&l.id)
                })
                .map(|l| l.id.clone())
                .collect();
            if orphans.is_empty() {
                break;
            }
            for o in orphans {
                // drop mounts a dead process left, then the layer
                while self.driver.unmount(&o).is_ok() && self.mount_count(&o) > 0 {}
                self.driver.remove(&o)?;
                r.repaired
                    .push(format!("removed driver layer {o} that no record claims"));
            }
        }
        for p in pending {
            remove_file(&pdir.join(p))?;
        }
        Ok(r)
    }

    fn mount_count(&self, id: &LayerId) -> u32 {
        self.driver
            .metadata(id)
            .ok()
            .and_then(|m| {
                m.into_iter()
                    .find(|(k, _)| k == "MountCount")
                    .map(|(_, v)| v)
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Verify records against the driver and each other (`strata check`);
    /// with `repair`, fix what can be fixed.
    pub fn check(&self, repair: bool) -> Result<CheckReport> {
        let _g = self.gc_lock()?;
        let mut rep = CheckReport::default();
        if repair {
            rep = self.recover()?;
        }
        let layers = self.layers()?;
        let by_chain: HashMap<Digest, &LayerRecord> =
            layers.iter().map(|l| (l.chain_id.clone(), l)).collect();
        let driver_layers: BTreeSet<String> = self
            .driver
            .layers()?
            .into_iter()
            .map(|l| l.id.to_string())
            .collect();
        let mut broken_layers = BTreeSet::new();
        for l in &layers {
            if !driver_layers.contains(&l.cache_id) {
                rep.problems.push(format!(
                    "layer {} is recorded but the driver has no layer {}",
                    l.chain_id, l.cache_id
                ));
                broken_layers.insert(l.chain_id.clone());
            }
            if let Some(p) = &l.parent
                && !by_chain.contains_key(p)
            {
                rep.problems.push(format!(
                    "layer {} has a parent {} that is not recorded",
                    l.chain_id, p
                ));
                broken_layers.insert(l.chain_id.clone());
            }
            if Digest::chain(l.parent.as_ref(), &l.diff_id) != l.chain_id {
                rep.problems.push(format!(
                    "layer {} does not match its parent and diffID",
                    l.chain_id
                ));
                broken_layers.insert(l.chain_id.clone());
            }
            if !self.tarsplit_path(&l.chain_id).exists() {
                rep.problems.push(format!(
                    "layer {} has no tar-split (cannot be exported byte for byte)",
                    l.chain_id
                ));
            }
        }
        let claimed: BTreeSet<String> = layers
            .iter()
            .map(|l| l.cache_id.clone())
            .chain(self.containers()?.into_iter().map(|c| c.layer))
            .collect();
        let pdir = self.dir.join("pending");
        for d in &driver_layers {
            if !claimed.contains(d) && pdir.join(d).exists() {
                rep.problems.push(format!(
                    "driver layer {d} was being made for the store and has no record"
                ));
            }
        }
        let mut broken_images = Vec::new();
        for i in self.images()? {
            if !self.blob_path(&i.id).exists() {
                rep.problems
                    .push(format!("image {} has no config blob", i.id.short()));
                broken_images.push(i.id.clone());
                continue;
            }
            for c in &i.layers {
                if !by_chain.contains_key(c) || broken_layers.contains(c) {
                    rep.problems.push(format!(
                        "image {} needs layer {c}, which is missing or broken",
                        i.id.short()
                    ));
                    broken_images.push(i.id.clone());
                    break;
                }
            }
        }
        for c in self.containers()? {
            if !driver_layers.contains(&c.layer) {
                rep.problems.push(format!(
                    "container {} has no read-write layer in the driver",
                    c.name
                ));
                if repair {
                    remove_file(&self.container_path(&c.id))?;
                    rep.repaired
                        .push(format!("removed container record {}", c.name));
                }
            }
        }
        // mounts under the root that the driver does not account for
        for m in strata_core::mounts::mounts_under(&self.root).ctx("read mounts", &self.root)? {
            let counted = self.driver.layers()?.iter().any(|l| {
                self.mount_count(&l.id) > 0
                    && m.mount_point.to_string_lossy().contains(l.id.as_str())
            });
            if !counted {
                rep.problems
                    .push(format!("stray mount {}", m.mount_point.display()));
            }
        }
        if repair {
            for id in broken_images {
                remove_file(&self.image_path(&id))?;
                rep.repaired
                    .push(format!("removed broken image {}", id.short()));
            }
            for c in broken_layers {
                remove_file(&self.layer_path(&c))?;
                rep.repaired
                    .push(format!("removed broken layer record {c}"));
            }
            let _ = self.driver.cleanup();
            // what is left is consistent: say so by re-checking
            drop(_g);
            let again = self.check(false)?;
            rep.problems = again.problems;
        }
        Ok(rep)
    }

    /// The store's own directory (for tools).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Mount a layer's view for reading, run `f`, unmount.
    pub fn with_layer_view<T>(
        &self,
        cache_id: &str,
        f: impl FnOnce(&Path) -> Result<T>,
    ) -> Result<T> {
        let id = LayerId::new(cache_id.to_string())?;
        let p = self.driver.mount(&id)?;
        let r = f(&p);
        let u = self.driver.unmount(&id);
        let v = r?;
        u?;
        Ok(v)
    }

    /// Write a layer's original (uncompressed) tar: re-created from its
    /// tar-split and verified against its diffID.
    pub fn write_layer_tar(&self, l: &LayerRecord, out: &mut dyn Write) -> Result<u64> {
        let sp = self.tarsplit_path(&l.chain_id);
        let f = File::open(&sp).ctx("open tar-split", &sp)?;
        self.with_layer_view(&l.cache_id, |view| {
            let fd = fsx::open_dir_path(view).ctx("open", view)?;
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

/// Removes a pending marker when dropped (the record is written, or the
/// driver layer was removed again).
struct Unmark(PathBuf);

impl Drop for Unmark {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Reads through, hashing and counting every byte, optionally copying it.
struct Tee<'a, W: Write> {
    inner: strata_core::Hashing<&'a mut (dyn Read + Send)>,
    copy: Option<W>,
    err: Option<std::io::Error>,
}

impl<W: Write> Read for Tee<'_, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(c) = &mut self.copy
            && let Err(e) = c.write_all(&buf[..n])
        {
            self.err = Some(e);
            self.copy = None;
        }
        Ok(n)
    }
}
