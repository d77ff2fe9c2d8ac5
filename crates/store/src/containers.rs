//! Containers: a read-write driver layer on an image's top layer. Create,
//! find, remove (marked first, record last), size, export, and commit to a
//! new layer and image.

use std::io::Write;

use serde_json::json;
use strata_core::{CreateOpts, DiffBase, Digest, LayerId};

use crate::error::{Error, IoCtx, Result};
use crate::records::{self, ContainerRecord, ImageRecord, LayerRecord};
use crate::{Store, now, random_id, reference, tarsplit};

impl Store {
    /// Every container, newest first.
    pub fn containers(&self) -> Result<Vec<ContainerRecord>> {
        self.db
            .read("list containers", |tx| records::containers(tx))
    }

    /// A container by name, full ID, or unambiguous ID prefix.
    pub fn find_container(&self, r: &str) -> Result<ContainerRecord> {
        self.db.read("find container", |tx| {
            if let Some(c) = records::container_by_name(tx, r)? {
                return Ok(c);
            }
            if r.is_empty() || !r.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::NoSuchContainer(r.to_string()));
            }
            let ids = records::container_ids_with_prefix(tx, r)?;
            match ids.as_slice() {
                [one] => records::container(tx, one)?
                    .ok_or_else(|| Error::NoSuchContainer(r.to_string())),
                [] => Err(Error::NoSuchContainer(r.to_string())),
                _ => Err(Error::Ambiguous {
                    what: "container",
                    prefix: r.to_string(),
                    count: ids.len(),
                }),
            }
        })
    }

    /// The driver id of a container's read-write layer.
    pub fn container_layer(c: &ContainerRecord) -> Result<LayerId> {
        Self::cache_id(&c.layer)
    }

    /// A read-write layer on the image's top layer, named `name`; the
    /// reference `image` is kept to show it as given.
    pub fn create_container(&self, name: &str, image: &str) -> Result<ContainerRecord> {
        reference::check_container_name(name)?;
        let _w = self.work_lock()?;
        let img = self.find_image(image)?;
        if self
            .db
            .read("find container", |tx| records::container_by_name(tx, name))?
            .is_some()
        {
            return Err(Error::NameInUse {
                name: name.to_string(),
            });
        }
        let parent = match img.layers.last() {
            Some(top) => {
                let l = self
                    .layer(top)?
                    .ok_or_else(|| Error::NoSuchLayer(top.to_string()))?;
                Some(Self::cache_id(&l.cache_id)?)
            }
            None => None,
        };
        let id = random_id();
        let layer = Self::cache_id(&format!("{id}-rw"))?;
        self.db.write("record intent", |tx| {
            records::add_intent(tx, layer.as_str(), "container")
        })?;
        let made = self
            .driver
            .create_rw(&layer, parent.as_ref(), &CreateOpts::default());
        let rec = ContainerRecord {
            id,
            name: name.to_string(),
            image: img.id.clone(),
            image_ref: image.to_string(),
            layer: layer.to_string(),
            created: now(),
            removing: false,
        };
        let r = made.map_err(Error::from).and_then(|()| {
            self.db.write("record container", |tx| {
                if records::container_by_name(tx, name)?.is_some() {
                    return Err(Error::NameInUse {
                        name: name.to_string(),
                    });
                }
                records::insert_container(tx, &rec)?;
                records::remove_intent(tx, layer.as_str())
            })
        });
        if let Err(e) = r {
            self.undo_made_layer(&layer);
            return Err(e);
        }
        Ok(rec)
    }

    /// Remove a driver layer made for a record that was never written,
    /// and its intent (left for recovery when the driver refuses).
    pub(crate) fn undo_made_layer(&self, layer: &LayerId) {
        match self.driver.remove(layer) {
            Ok(()) => {}
            Err(e) if e.kind() == strata_core::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(%layer, "removing a half-made layer: {e}");
                return;
            }
        }
        let _ = self.db.write("drop intent", |tx| {
            records::remove_intent(tx, layer.as_str())
        });
    }

    /// Remove a container; refused while it is mounted unless forced (then
    /// its mounts are dropped). The record is marked first and goes only
    /// after the driver removed the layer.
    pub fn remove_container(&self, r: &str, force: bool) -> Result<ContainerRecord> {
        let _w = self.work_lock()?;
        let c = self.find_container(r)?;
        let layer = Self::container_layer(&c)?;
        let mounted = match self.driver.layer(&layer) {
            Ok(i) => i.mount_count,
            Err(e) if e.kind() == strata_core::ErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        if mounted > 0 {
            if !force {
                return Err(Error::Mounted {
                    what: format!("container {}", c.name),
                    count: mounted,
                });
            }
            self.unmount_all_refs(&layer)?;
        }
        self.db.write("mark container", |tx| {
            records::set_container_removing(tx, &c.id, true)
        })?;
        match self.driver.remove(&layer) {
            Ok(()) => {}
            Err(e) if e.kind() == strata_core::ErrorKind::NotFound => {}
            Err(e) => {
                self.db.write("unmark container", |tx| {
                    records::set_container_removing(tx, &c.id, false)
                })?;
                return Err(e.into());
            }
        }
        self.db
            .write("drop container", |tx| records::delete_container(tx, &c.id))?;
        Ok(c)
    }

    /// Drop every mount reference of a layer at once (whatever number its
    /// count file holds).
    pub(crate) fn unmount_all_refs(&self, layer: &LayerId) -> Result<()> {
        let n = self.driver.release(layer)?;
        if n > 0 {
            tracing::info!(%layer, references = n, "dropped the mounts of a layer");
        }
        Ok(())
    }

    /// Bytes of the container's own changes.
    pub fn container_size(&self, c: &ContainerRecord) -> Result<u64> {
        Ok(self
            .driver
            .diff_size(&Self::container_layer(c)?, DiffBase::Parent)?)
    }

    /// The container's whole root file system as a tar.
    pub fn export_container(&self, r: &str, out: &mut dyn Write) -> Result<()> {
        let c = self.find_container(r)?;
        self.driver
            .diff(&Self::container_layer(&c)?, DiffBase::Empty, out)?;
        Ok(())
    }

    /// Commit a container's changes as a new layer and image (the config
    /// gains the diffID and a history entry). With `rm`, the container's
    /// layer itself becomes the new layer (no data is copied) and the
    /// container goes; else its diff is applied as a new layer and the
    /// container stays as it was.
    pub fn commit(&self, container: &str, opts: &CommitOpts<'_>) -> Result<ImageRecord> {
        let tag = opts.tag.map(reference::normalize_tag).transpose()?;
        let c = self.find_container(container)?;
        let img = self
            .image_record(&c.image)?
            .ok_or_else(|| Error::NoSuchImage(c.image.to_string()))?;
        let config = self.blob(&img.id)?;
        let work = self.work_lock()?;
        let rec = if opts.rm {
            self.commit_in_place(&c, img.layers.last())?
        } else {
            self.commit_by_copy(&c, img.layers.last())?
        };
        let data = committed_config(&config, &rec, &c.name, opts)?;
        let id = self.put_blob(&data)?;
        let mut layers = img.layers.clone();
        layers.push(rec.chain_id.clone());
        let new = ImageRecord {
            id: id.clone(),
            repo_tags: Vec::new(),
            repo_digests: Vec::new(),
            manifest: None,
            layers,
            loaded: now(),
            created: Some(now()),
            created_text: None,
            size: img.size + rec.size,
            os: img.os.clone(),
            architecture: img.architecture.clone(),
        };
        self.db.write("record image", |tx| {
            if records::image(tx, &id)?.is_none() {
                records::insert_image(tx, &new)?;
            }
            if let Some(t) = &tag {
                records::set_tag(tx, t, &id)?;
            }
            Ok(())
        })?;
        drop(work);
        self.image_record(&id)?
            .ok_or_else(|| Error::Internal(format!("image {id} vanished after commit")))
    }

    /// The container's diff streams into a new layer (a copy).
    fn commit_by_copy(&self, c: &ContainerRecord, parent: Option<&Digest>) -> Result<LayerRecord> {
        let rw = Self::container_layer(c)?;
        let (rd, wr) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(std::io::Error::from)
            .ctx("pipe", "commit")?;
        std::thread::scope(|s| -> Result<LayerRecord> {
            let h = s.spawn(move || {
                let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::from(wr));
                let r = self.driver.diff(&rw, DiffBase::Parent, &mut w);
                let f = w.flush();
                r.map_err(Error::from).and(f.ctx("write diff", "commit"))
            });
            let mut r = std::io::BufReader::new(std::fs::File::from(rd));
            let reg = self.register_layer(parent, crate::LayerIn::stream(&mut r));
            drop(r);
            let d = h
                .join()
                .map_err(|_| Error::Internal("the diff thread of a commit panicked".into()))?;
            let (rec, _) = reg?;
            d?;
            Ok(rec)
        })
    }

    /// The container's layer becomes the new layer (O(1)); its diff is
    /// read once, for the diffID and a tar-split, and the container goes.
    fn commit_in_place(&self, c: &ContainerRecord, parent: Option<&Digest>) -> Result<LayerRecord> {
        let rw = Self::container_layer(c)?;
        let cache = Self::cache_id(&random_id())?;
        self.db.write("record intent", |tx| {
            records::add_intent(tx, cache.as_str(), "commit")
        })?;
        self.db.write("mark container", |tx| {
            records::set_container_removing(tx, &c.id, true)
        })?;
        if let Err(e) = self.driver.commit(&rw, &cache) {
            self.db.write("unmark container", |tx| {
                records::set_container_removing(tx, &c.id, false)?;
                records::remove_intent(tx, cache.as_str())
            })?;
            return Err(e.into());
        }
        self.db
            .write("drop container", |tx| records::delete_container(tx, &c.id))?;
        let (diff_id, tar_size, size, split) = self.split_own_diff(&cache)?;
        let rec = LayerRecord {
            chain_id: Digest::chain(parent, &diff_id),
            diff_id,
            parent: parent.cloned(),
            cache_id: cache.to_string(),
            size,
            tar_size,
            created: now(),
            blob: None,
            removing: false,
        };
        let sp = self.tarsplit_path(&rec.chain_id);
        let known = self.db.write("record layer", |tx| {
            // the same changes on the same parent were committed before:
            // that layer is this one (as Docker reuses a known chain ID)
            if let Some(old) = records::layer(tx, &rec.chain_id)?.filter(|l| !l.removing) {
                return Ok(Some(old));
            }
            split.persist(&sp).map_err(|e| Error::Io {
                op: "keep tar-split",
                path: sp.clone(),
                err: e.error,
            })?;
            records::insert_layer(tx, &rec)?;
            records::remove_intent(tx, cache.as_str())?;
            Ok(None)
        })?;
        match known {
            Some(old) => {
                // the intent stays until the duplicate is gone
                self.undo_made_layer(&cache);
                Ok(old)
            }
            None => Ok(rec),
        }
    }

    /// Read a layer's own diff once: its digest (the diffID), its tar
    /// size, its content size, and a tar-split so that export re-creates
    /// the same bytes.
    fn split_own_diff(
        &self,
        cache: &LayerId,
    ) -> Result<(Digest, u64, u64, tempfile::NamedTempFile)> {
        let tmp = tempfile::Builder::new()
            .prefix("split.")
            .tempfile_in(self.tmp_dir())
            .ctx("create temp", self.tmp_dir())?;
        let (rd, wr) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(std::io::Error::from)
            .ctx("pipe", "commit")?;
        let out = tmp.reopen().ctx("reopen", tmp.path())?;
        let (digest, tar_size, size) = std::thread::scope(|s| -> Result<(Digest, u64, u64)> {
            let h = s.spawn(move || {
                let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::from(wr));
                let r = self.driver.diff(cache, DiffBase::Parent, &mut w);
                let f = w.flush();
                r.map_err(Error::from).and(f.ctx("write diff", "commit"))
            });
            let r = std::io::BufReader::new(std::fs::File::from(rd));
            let mut hashing = strata_core::Hashing::new(r);
            let split = tarsplit::split_stream(&mut hashing, std::io::BufWriter::new(out));
            std::io::copy(&mut hashing, &mut std::io::sink()).ctx("read diff", "commit")?;
            let d = h
                .join()
                .map_err(|_| Error::Internal("the diff thread of a commit panicked".into()))?;
            let size = split.ctx("tar-split", "commit")?;
            d?;
            let (_, digest, n) = hashing.finish();
            Ok((digest, n, size))
        })?;
        Ok((digest, tar_size, size, tmp))
    }
}

/// How `container commit` names and describes the new image.
#[derive(Debug, Clone, Default)]
pub struct CommitOpts<'a> {
    /// `NAME:TAG` to give the new image.
    pub tag: Option<&'a str>,
    /// The history entry's comment.
    pub message: Option<&'a str>,
    /// The config's and history entry's author.
    pub author: Option<&'a str>,
    /// Turn the container's layer into the image's (no copy) and remove
    /// the container.
    pub rm: bool,
}

/// The image config after a commit: the new diffID, a history entry, the
/// creation time; every other field kept as it was.
fn committed_config(
    config: &[u8],
    rec: &LayerRecord,
    container: &str,
    opts: &CommitOpts<'_>,
) -> Result<Vec<u8>> {
    let mut cfg: serde_json::Value =
        serde_json::from_slice(config).map_err(|e| Error::Corrupt {
            what: "image config".into(),
            reason: e.to_string(),
        })?;
    let created = reference::format_time(now());
    let Some(o) = cfg.as_object_mut() else {
        return Err(Error::Corrupt {
            what: "image config".into(),
            reason: "not a JSON object".into(),
        });
    };
    o.insert("created".into(), json!(created));
    if let Some(a) = opts.author {
        o.insert("author".into(), json!(a));
    }
    let mut entry = serde_json::Map::new();
    entry.insert("created".into(), json!(created));
    entry.insert(
        "created_by".into(),
        json!(format!("strata container commit {container}")),
    );
    if let Some(m) = opts.message {
        entry.insert("comment".into(), json!(m));
    }
    if let Some(a) = opts.author {
        entry.insert("author".into(), json!(a));
    }
    match o.get_mut("history").and_then(|h| h.as_array_mut()) {
        Some(h) => h.push(serde_json::Value::Object(entry)),
        None => {
            o.insert("history".into(), json!([entry]));
        }
    }
    if let Some(ids) = cfg
        .pointer_mut("/rootfs/diff_ids")
        .and_then(|v| v.as_array_mut())
    {
        ids.push(json!(rec.diff_id.to_string()));
    }
    serde_json::to_vec(&cfg).map_err(|e| Error::Internal(format!("writing a config: {e}")))
}
