//! Exporting images as archives: `docker save`'s layout or an OCI image
//! layout in a tar. Each layer goes out as the blob it was imported from
//! (byte for byte) or as its tar re-created from its tar-split, so the
//! digests are the ones the image came with. Export holds the work lock:
//! `image rm` waits until the layers have been read.

use std::io::{Read, Write};

use oci_spec::image::{DescriptorBuilder, ImageManifest, ImageManifestBuilder, MediaType};
use serde_json::json;
use strata_core::Digest;
use strata_core::archive::tar::{Kind, TarWriter, WriteHead};

use crate::error::{Error, IoCtx, Result};
use crate::{ImageRecord, LayerRecord, Store, reference};

/// Archive formats of `image export` / `image save`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `docker save` layout: manifest.json, config, one tar per layer.
    Docker,
    /// An OCI image layout in a tar (oci-layout, index.json, blobs/).
    Oci,
}

const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

fn head(path: &[u8], size: u64, mtime: i64) -> WriteHead<'_> {
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
}

impl<W: Write> Write for EntryWriter<'_, W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.tar.write_data(b)?;
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

/// An image to write: its record, config, layers and names.
pub(crate) struct Export {
    pub(crate) img: ImageRecord,
    pub(crate) config: Vec<u8>,
    pub(crate) layers: Vec<LayerRecord>,
    tags: Vec<String>,
    mtime: i64,
}

/// One layer in an OCI layout: the blob that goes out for it.
pub(crate) struct Blob {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    pub(crate) media: String,
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
        tar.finish_data(n).ctx("write", name)
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
        let mut w = EntryWriter { tar };
        let written = self.write_layer_tar(l, &mut w)?;
        if written != l.tar_size {
            return Err(Error::DigestMismatch {
                what: format!("size of re-created layer {}", l.chain_id),
                expected: l.tar_size.to_string(),
                actual: written.to_string(),
            });
        }
        tar.finish_data(n).ctx("write", name)
    }

    fn put_blob_file<W: Write>(
        &self,
        tar: &mut TarWriter<W>,
        name: &str,
        b: &Blob,
        mtime: i64,
    ) -> Result<()> {
        let p = self.blob_path(&b.digest);
        let mut f = std::fs::File::open(&p).ctx("open blob", &p)?;
        let n = tar
            .write_head(&head(name.as_bytes(), b.size, mtime))
            .ctx("write", name)?;
        let mut w = EntryWriter { tar };
        let mut h = strata_core::Hashing::new(&mut w);
        let copied = std::io::copy(&mut (&mut f).take(b.size), &mut h).ctx("copy blob", &p)?;
        let (_, got, _) = h.finish();
        if copied != b.size || got != b.digest {
            return Err(Error::DigestMismatch {
                what: format!("stored blob {}", p.display()),
                expected: b.digest.to_string(),
                actual: got.to_string(),
            });
        }
        tar.finish_data(n).ctx("write", name)
    }

    /// Write the images `refs` names as one archive of `format` to `out`,
    /// as `docker save A B` does: shared blobs go once, and an image named
    /// twice goes once, with each name given.
    pub fn export_images(
        &self,
        refs: &[String],
        format: Format,
        out: &mut dyn Write,
    ) -> Result<Vec<ImageRecord>> {
        let _w = self.work_lock()?;
        let mut es: Vec<Export> = Vec::new();
        for r in refs {
            let e = self.prepare_export(r)?;
            match es.iter_mut().find(|x| x.img.id == e.img.id) {
                Some(x) => {
                    let new: Vec<String> =
                        e.tags.into_iter().filter(|t| !x.tags.contains(t)).collect();
                    x.tags.extend(new);
                }
                None => es.push(e),
            }
        }
        let mut tar = TarWriter::new(out);
        match format {
            Format::Docker => self.write_docker(&mut tar, &es)?,
            Format::Oci => self.write_oci(&mut tar, &es)?,
        }
        tar.finish().ctx("write", "archive")?;
        Ok(es.into_iter().map(|e| e.img).collect())
    }

    pub(crate) fn prepare_export(&self, r: &str) -> Result<Export> {
        let img = self.find_image(r)?;
        let config = self.blob(&img.id)?;
        let layers: Vec<LayerRecord> = img
            .layers
            .iter()
            .map(|c| {
                self.layer(c)?
                    .ok_or_else(|| Error::NoSuchLayer(c.to_string()))
            })
            .collect::<Result<_>>()?;
        // the requested name wins; else the image's tags
        let tags = match reference::normalize_tag(r) {
            Ok(t) if img.repo_tags.contains(&t) => vec![t],
            _ => img.repo_tags.clone(),
        };
        let mtime = img.created.unwrap_or(0).max(0);
        Ok(Export {
            img,
            config,
            layers,
            tags,
            mtime,
        })
    }

    fn write_docker<W: Write>(&self, tar: &mut TarWriter<W>, es: &[Export]) -> Result<()> {
        let mut written = std::collections::HashSet::new();
        let mut entries = Vec::new();
        for e in es {
            let cname = format!("{}.json", e.img.id.hex());
            self.put_bytes(tar, &cname, &e.config, e.mtime)?;
            let mut names = Vec::new();
            for l in &e.layers {
                let n = format!("{}.tar", l.diff_id.hex());
                if written.insert(n.clone()) {
                    self.put_layer_tar(tar, &n, l, e.mtime)?;
                }
                names.push(n);
            }
            entries.push(json!({ "Config": cname, "RepoTags": e.tags, "Layers": names }));
        }
        self.put_bytes(
            tar,
            "manifest.json",
            serde_json::Value::Array(entries).to_string().as_bytes(),
            newest(es),
        )
    }

    /// The blob that goes out for a layer: the one it was imported from
    /// when it is kept, else its tar.
    pub(crate) fn layer_blob(&self, l: &LayerRecord) -> Blob {
        match &l.blob {
            Some(b) if self.blob_path(&b.digest).exists() => {
                let media = if b.media_type.is_empty() {
                    let mut h = [0u8; 4];
                    let _ = std::fs::File::open(self.blob_path(&b.digest))
                        .and_then(|mut f| f.read(&mut h));
                    guess_media(&h).to_string()
                } else {
                    b.media_type.clone()
                };
                Blob {
                    digest: b.digest.clone(),
                    size: b.size,
                    media,
                }
            }
            _ => Blob {
                digest: l.diff_id.clone(),
                size: l.tar_size,
                media: OCI_LAYER.to_string(),
            },
        }
    }

    fn write_oci<W: Write>(&self, tar: &mut TarWriter<W>, es: &[Export]) -> Result<()> {
        let mtime = newest(es);
        self.put_bytes(
            tar,
            "oci-layout",
            br#"{"imageLayoutVersion":"1.0.0"}"#,
            mtime,
        )?;
        // every blob goes once, whichever images share it
        let mut done = std::collections::HashSet::new();
        let mut entries = Vec::new();
        for e in es {
            if done.insert(e.img.id.clone()) {
                let name = format!("blobs/sha256/{}", e.img.id.hex());
                self.put_bytes(tar, &name, &e.config, e.mtime)?;
            }
            let mut blobs = Vec::new();
            for l in &e.layers {
                let b = self.layer_blob(l);
                if done.insert(b.digest.clone()) {
                    let name = format!("blobs/sha256/{}", b.digest.hex());
                    if b.digest == l.diff_id {
                        self.put_layer_tar(tar, &name, l, e.mtime)?;
                    } else {
                        self.put_blob_file(tar, &name, &b, e.mtime)?;
                    }
                }
                blobs.push(b);
            }
            let (manifest, media) = self.manifest_for(e, &blobs)?;
            let md = Digest::of(&manifest);
            if done.insert(md.clone()) {
                let name = format!("blobs/sha256/{}", md.hex());
                self.put_bytes(tar, &name, &manifest, e.mtime)?;
            }
            entries.extend(index_entries(&md, manifest.len(), &media, &e.tags));
        }
        let index = json!({"schemaVersion": 2, "mediaType": MediaType::ImageIndex.to_string(), "manifests": entries});
        self.put_bytes(tar, "index.json", index.to_string().as_bytes(), mtime)
    }

    /// The manifest that goes out: the one the image came with when every
    /// blob it names goes out, else a new OCI manifest.
    pub(crate) fn manifest_for(&self, e: &Export, blobs: &[Blob]) -> Result<(Vec<u8>, String)> {
        match self.original_manifest(&e.img, blobs)? {
            Some(m) => Ok(m),
            None => new_manifest(e, blobs),
        }
    }

    /// The manifest the image came with, when every blob it names goes out.
    fn original_manifest(
        &self,
        img: &ImageRecord,
        blobs: &[Blob],
    ) -> Result<Option<(Vec<u8>, String)>> {
        let Some(md) = &img.manifest else {
            return Ok(None);
        };
        let data = self.blob(md)?;
        let Ok(m) = ImageManifest::from_reader(&data[..]) else {
            return Ok(None);
        };
        let names: Vec<String> = m.layers().iter().map(|d| d.digest().to_string()).collect();
        let ours: Vec<String> = blobs.iter().map(|b| b.digest.to_string()).collect();
        if names != ours {
            return Ok(None);
        }
        let media = m
            .media_type()
            .as_ref()
            .map_or_else(|| MediaType::ImageManifest.to_string(), |t| t.to_string());
        Ok(Some((data, media)))
    }
}

fn oci_digest(d: &Digest) -> Result<oci_spec::image::Digest> {
    d.as_str()
        .parse()
        .map_err(|e| Error::Internal(format!("digest {d} for oci-spec: {e}")))
}

/// A new OCI manifest for the config and blobs.
fn new_manifest(e: &Export, blobs: &[Blob]) -> Result<(Vec<u8>, String)> {
    let err = |x: oci_spec::OciSpecError| Error::Internal(format!("building a manifest: {x}"));
    let config = DescriptorBuilder::default()
        .media_type(MediaType::ImageConfig)
        .digest(oci_digest(&e.img.id)?)
        .size(e.config.len() as u64)
        .build()
        .map_err(err)?;
    let layers = blobs
        .iter()
        .map(|b| {
            DescriptorBuilder::default()
                .media_type(MediaType::from(b.media.as_str()))
                .digest(oci_digest(&b.digest)?)
                .size(b.size)
                .build()
                .map_err(err)
        })
        .collect::<Result<Vec<_>>>()?;
    let m = ImageManifestBuilder::default()
        .schema_version(oci_spec::image::SCHEMA_VERSION)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers)
        .build()
        .map_err(err)?;
    let data = m.to_string().map_err(err)?.into_bytes();
    Ok((data, MediaType::ImageManifest.to_string()))
}

/// The newest image time of an archive: the time of its shared files.
fn newest(es: &[Export]) -> i64 {
    es.iter().map(|e| e.mtime).max().unwrap_or(0)
}

/// An image's entries in `index.json`: one per name (or one unnamed).
/// Written with a fixed key order, so that the same image exports to the
/// same bytes.
fn index_entries(md: &Digest, size: usize, media: &str, tags: &[String]) -> Vec<serde_json::Value> {
    let entry = |t: Option<&String>| {
        let mut e = json!({"mediaType": media, "digest": md.to_string(), "size": size});
        if let Some(t) = t {
            e["annotations"] = json!({
                "io.containerd.image.name": t,
                "org.opencontainers.image.ref.name": t,
            });
        }
        e
    };
    if tags.is_empty() {
        vec![entry(None)]
    } else {
        tags.iter().map(|t| entry(Some(t))).collect()
    }
}
