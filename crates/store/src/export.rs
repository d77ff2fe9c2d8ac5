//! Exporting images (docker archive or OCI archive), committing containers,
//! and exporting a container's flattened root file system.

use std::io::{Read, Write};

use serde_json::json;
use strata_core::DiffBase;
use strata_core::archive::tar::{Kind, TarWriter, WriteHead};

use crate::digest::Digest;
use crate::error::{Error, IoCtx, Result};
use crate::{ImageRecord, LayerRecord, Store, now, reference};

/// Archive formats of `image export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `docker save` layout: manifest.json, config, one tar per layer.
    Docker,
    /// An OCI image layout in a tar (oci-layout, index.json, blobs/).
    Oci,
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn head<'a>(path: &'a [u8], size: u64, mtime: i64) -> WriteHead<'a> {
    WriteHead {
        path,
        kind: Kind::File,
        link: b"",
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: (mtime, 0),
        size,
        dev_major: 0,
        dev_minor: 0,
        xattrs: &[],
        sparse: None,
    }
}

/// Writes exactly the bytes it is given into an open tar entry.
struct EntryWriter<'a, W: Write> {
    tar: &'a mut TarWriter<W>,
    written: u64,
}

impl<W: Write> Write for EntryWriter<'_, W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.tar.write_data(b)?;
        self.written += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn guess_media(blob_head: &[u8]) -> &'static str {
    match blob_head {
        [0x1f, 0x8b, ..] => "application/vnd.oci.image.layer.v1.tar+gzip",
        [0x28, 0xb5, 0x2f, 0xfd, ..] => "application/vnd.oci.image.layer.v1.tar+zstd",
        _ => OCI_LAYER,
    }
}

impl Store {
    fn put_bytes<W: Write>(
        &self,
        tar: &mut TarWriter<W>,
        name: &str,
        data: &[u8],
        mtime: i64,
    ) -> Result<()> {
        let n = tar
            .write_head(&head(name.as_bytes(), data.len() as u64, mtime))
            .ctx("write", name)?;
        tar.write_data(data).ctx("write", name)?;
        tar.finish_data(n).ctx("write", name)?;
        Ok(())
    }

    fn put_layer_tar<W: Write>(
        &self,
        tar: &mut TarWriter<W>,
        name: &str,
        l: &LayerRecord,
        mtime: i64,
    ) -> Result<()> {
        let n = tar
            .write_head(&head(name.as_bytes(), l.tar_size, mtime))
            .ctx("write", name)?;
        let mut w = EntryWriter { tar, written: 0 };
        let written = self.write_layer_tar(l, &mut w)?;
        if written != l.tar_size {
            return Err(Error::DigestMismatch {
                what: format!("size of re-created layer {}", l.chain_id),
                expected: l.tar_size.to_string(),
                actual: written.to_string(),
            });
        }
        tar.finish_data(n).ctx("write", name)?;
        Ok(())
    }

    fn put_blob_file<W: Write>(
        &self,
        tar: &mut TarWriter<W>,
        name: &str,
        d: &Digest,
        size: u64,
        mtime: i64,
    ) -> Result<()> {
        let p = self.blob_path(d);
        let mut f = std::fs::File::open(&p).ctx("open blob", &p)?;
        let n = tar
            .write_head(&head(name.as_bytes(), size, mtime))
            .ctx("write", name)?;
        let mut w = EntryWriter { tar, written: 0 };
        let mut h = strata_core::Hashing::new(&mut w);
        let copied = std::io::copy(&mut (&mut f).take(size), &mut h).ctx("copy blob", &p)?;
        let (_, got, _) = h.finish();
        if copied != size || got != *d {
            return Err(Error::DigestMismatch {
                what: format!("stored blob {}", p.display()),
                expected: d.to_string(),
                actual: got.to_string(),
            });
        }
        tar.finish_data(n).ctx("write", name)?;
        Ok(())
    }

    /// Write image `r` as an archive of `format` to `out`.
    pub fn export_image(
        &self,
        r: &str,
        format: Format,
        out: &mut dyn Write,
    ) -> Result<ImageRecord> {
        let img = self.find_image(r)?;
        let config = self.blob(&img.id)?;
        let cfg: serde_json::Value =
            serde_json::from_slice(&config).map_err(|e| Error::Corrupt {
                path: self.blob_path(&img.id),
                reason: e.to_string(),
            })?;
        let mtime = cfg
            .get("created")
            .and_then(|v| v.as_str())
            .and_then(reference::parse_time)
            .unwrap_or(0)
            .max(0);
        let layers: Vec<LayerRecord> = img
            .layers
            .iter()
            .map(|c| {
                self.layer(c)?
                    .ok_or_else(|| Error::NoSuchLayer(c.to_string()))
            })
            .collect::<Result<_>>()?;
        let mut tar = TarWriter::new(out);
        // the requested name wins; else the image's tags
        let tags: Vec<String> = match reference::normalize_tag(r) {
            Ok(t) if img.repo_tags.contains(&t) => vec![t],
            _ => img.repo_tags.clone(),
        };
        match format {
            Format::Docker => {
                let cname = format!("{}.json", img.id.hex());
                self.put_bytes(&mut tar, &cname, &config, mtime)?;
                let mut names = Vec::new();
                for l in &layers {
                    let n = format!("{}.tar", l.diff_id.hex());
                    if !names.contains(&n) {
                        self.put_layer_tar(&mut tar, &n, l, mtime)?;
                    }
                    names.push(n);
                }
                let manifest = json!([{ "Config": cname, "RepoTags": tags, "Layers": names }]);
                self.put_bytes(
                    &mut tar,
                    "manifest.json",
                    manifest.to_string().as_bytes(),
                    mtime,
                )?;
            }
            Format::Oci => {
                self.put_bytes(
                    &mut tar,
                    "oci-layout",
                    br#"{"imageLayoutVersion":"1.0.0"}"#,
                    mtime,
                )?;
                self.put_bytes(
                    &mut tar,
                    &format!("blobs/sha256/{}", img.id.hex()),
                    &config,
                    mtime,
                )?;
                // each layer: the blob it was imported from, or its tar
                let mut descs = Vec::new();
                let mut done = std::collections::HashSet::new();
                for l in &layers {
                    let (digest, size, media) = match &l.blob {
                        Some(b) if self.blob_path(&b.digest).exists() => {
                            let media = if b.media_type.is_empty() {
                                let mut h = [0u8; 4];
                                let _ = std::fs::File::open(self.blob_path(&b.digest))
                                    .and_then(|mut f| f.read(&mut h));
                                guess_media(&h).to_string()
                            } else {
                                b.media_type.clone()
                            };
                            (b.digest.clone(), b.size, media)
                        }
                        _ => (l.diff_id.clone(), l.tar_size, OCI_LAYER.to_string()),
                    };
                    if done.insert(digest.clone()) {
                        let name = format!("blobs/sha256/{}", digest.hex());
                        if digest == l.diff_id {
                            self.put_layer_tar(&mut tar, &name, l, mtime)?;
                        } else {
                            self.put_blob_file(&mut tar, &name, &digest, size, mtime)?;
                        }
                    }
                    descs.push((digest, size, media));
                }
                // the original manifest when every blob it names is here
                let original = match &img.manifest {
                    Some(md) => {
                        let data = self.blob(md)?;
                        let v: serde_json::Value =
                            serde_json::from_slice(&data).unwrap_or(serde_json::Value::Null);
                        let names: Option<Vec<String>> =
                            v.get("layers").and_then(|x| x.as_array()).map(|a| {
                                a.iter()
                                    .filter_map(|d| {
                                        d.get("digest").and_then(|s| s.as_str()).map(String::from)
                                    })
                                    .collect()
                            });
                        let ours: Vec<String> =
                            descs.iter().map(|(d, _, _)| d.to_string()).collect();
                        if names.as_ref() == Some(&ours) {
                            let mt = v
                                .get("mediaType")
                                .and_then(|s| s.as_str())
                                .unwrap_or(OCI_MANIFEST)
                                .to_string();
                            Some((data, mt))
                        } else {
                            None
                        }
                    }
                    None => None,
                };
                let (manifest, media) = match original {
                    Some(m) => m,
                    None => {
                        let m = json!({
                            "schemaVersion": 2,
                            "mediaType": OCI_MANIFEST,
                            "config": { "mediaType": OCI_CONFIG, "digest": img.id.to_string(), "size": config.len() },
                            "layers": descs.iter().map(|(d, s, m)| json!({"mediaType": m, "digest": d.to_string(), "size": s})).collect::<Vec<_>>(),
                        });
                        (
                            serde_json::to_vec(&m).map_err(|e| Error::Conflict(e.to_string()))?,
                            OCI_MANIFEST.to_string(),
                        )
                    }
                };
                let md = Digest::of(&manifest);
                self.put_bytes(
                    &mut tar,
                    &format!("blobs/sha256/{}", md.hex()),
                    &manifest,
                    mtime,
                )?;
                let entries: Vec<serde_json::Value> = if tags.is_empty() {
                    vec![
                        json!({"mediaType": media, "digest": md.to_string(), "size": manifest.len()}),
                    ]
                } else {
                    tags.iter()
                        .map(|t| {
                            json!({
                                "mediaType": media,
                                "digest": md.to_string(),
                                "size": manifest.len(),
                                "annotations": {
                                    "io.containerd.image.name": t,
                                    "org.opencontainers.image.ref.name": t,
                                }
                            })
                        })
                        .collect()
                };
                let index =
                    json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
                self.put_bytes(&mut tar, "index.json", index.to_string().as_bytes(), mtime)?;
            }
        }
        tar.finish().ctx("write", "archive")?;
        Ok(img)
    }

    /// Commit a container's changes as a new layer and image.
    pub fn commit(
        &self,
        container: &str,
        tag: Option<&str>,
        message: Option<&str>,
        author: Option<&str>,
    ) -> Result<ImageRecord> {
        let tag = tag.map(reference::normalize_tag).transpose()?;
        let c = self.find_container(container)?;
        let img = self
            .image_record(&c.image)?
            .ok_or_else(|| Error::NoSuchImage(c.image.to_string()))?;
        let mut cfg = self.config(&img)?;
        let rw = Store::container_layer(&c)?;
        let work = self.work_lock()?;
        // the diff streams from the container layer straight into the new one
        let (rd, wr) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(std::io::Error::from)
            .ctx("pipe", "commit")?;
        let parent = img.layers.last().cloned();
        let (rec, _existed) = std::thread::scope(|s| -> Result<(LayerRecord, bool)> {
            let h = s.spawn(move || {
                let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::from(wr));
                let r = self.driver.diff(&rw, DiffBase::Parent, &mut w);
                let f = w.flush();
                r.map_err(Error::from).and(f.map_err(|e| Error::Io {
                    op: "write diff",
                    path: "commit".into(),
                    err: e,
                }))
            });
            let mut r = std::io::BufReader::new(std::fs::File::from(rd));
            let reg = self.register_layer(parent.as_ref(), None, &mut r, None);
            drop(r);
            let d = h
                .join()
                .map_err(|_| Error::Conflict("diff thread panicked".into()))?;
            let reg = reg?;
            d?;
            Ok(reg)
        })?;
        let created = reference::format_time(now());
        if let Some(o) = cfg.as_object_mut() {
            o.insert("created".into(), json!(created));
            if let Some(a) = author {
                o.insert("author".into(), json!(a));
            }
        }
        if let Some(ids) = cfg
            .pointer_mut("/rootfs/diff_ids")
            .and_then(|v| v.as_array_mut())
        {
            ids.push(json!(rec.diff_id.to_string()));
        }
        let mut entry = serde_json::Map::new();
        entry.insert("created".into(), json!(created));
        entry.insert(
            "created_by".into(),
            json!(format!("strata container commit {}", c.name)),
        );
        if let Some(m) = message {
            entry.insert("comment".into(), json!(m));
        }
        if let Some(a) = author {
            entry.insert("author".into(), json!(a));
        }
        match cfg.get_mut("history").and_then(|h| h.as_array_mut()) {
            Some(h) => h.push(serde_json::Value::Object(entry)),
            None => {
                if let Some(o) = cfg.as_object_mut() {
                    o.insert("history".into(), json!([entry]));
                }
            }
        }
        let data = serde_json::to_vec(&cfg).map_err(|e| Error::Conflict(e.to_string()))?;
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
        };
        {
            let _m = self.meta_lock()?;
            if self.image_record(&id)?.is_none() {
                self.put_image(&new)?;
            }
        }
        if let Some(t) = tag {
            self.tag_image(&id, &t)?;
        }
        drop(work);
        Ok(self.image_record(&id)?.unwrap_or(new))
    }

    /// The container's whole root file system as a tar.
    pub fn export_container(&self, r: &str, out: &mut dyn Write) -> Result<()> {
        let c = self.find_container(r)?;
        self.driver
            .diff(&Store::container_layer(&c)?, DiffBase::Empty, out)?;
        Ok(())
    }
}
