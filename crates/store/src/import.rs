//! Importing images: `docker save` archives, OCI image layouts (a
//! directory) and OCI archives (a tar of one). Every blob is checked
//! against its digest and every layer against the config's diffIDs; on any
//! mismatch nothing is registered (layers this import created are removed).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use strata_core::archive::tar::{Kind, TarReader};

use crate::digest::Digest;
use crate::error::{Error, IoCtx, Result, archive};
use crate::{ImageRecord, LayerRecord, Store, now, reference};

/// Progress of an import, for output like `docker pull`.
#[derive(Debug, Clone)]
pub enum Event {
    /// A layer will be read (short digest, bytes).
    Layer {
        short: String,
        size: u64,
    },
    /// Bytes of a layer read so far.
    Progress {
        short: String,
        done: u64,
        size: u64,
    },
    AlreadyExists {
        short: String,
    },
    Complete {
        short: String,
    },
    /// The image is stored: its digest (manifest, or config) and tags.
    Done {
        digest: Digest,
        id: Digest,
        tags: Vec<String>,
    },
}

/// Where blobs of an image come from.
trait Source {
    fn describe(&self) -> &Path;
    fn exists(&self, member: &str) -> bool;
    fn size(&self, member: &str) -> Option<u64>;
    fn open(&mut self, member: &str) -> Result<Box<dyn Read + Send + '_>>;
    fn read_all(&mut self, member: &str, limit: u64) -> Result<Vec<u8>> {
        let what = self.describe().to_path_buf();
        let mut r = self.open(member)?;
        let mut v = Vec::new();
        (&mut r)
            .take(limit + 1)
            .read_to_end(&mut v)
            .ctx("read", &what)?;
        if v.len() as u64 > limit {
            return Err(archive(
                &what,
                format!("{member} is larger than {limit} bytes"),
            ));
        }
        Ok(v)
    }
}

fn clean(member: &str) -> String {
    member
        .trim_start_matches("./")
        .trim_start_matches('/')
        .to_string()
}

struct DirSource {
    root: PathBuf,
}

impl DirSource {
    /// Members are only ever blob paths or fixed names; `..` is refused.
    fn path(&self, member: &str) -> Result<PathBuf> {
        let m = clean(member);
        if m.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(archive(
                &self.root,
                format!("member name {member:?} leaves the layout"),
            ));
        }
        Ok(self.root.join(m))
    }
}

impl Source for DirSource {
    fn describe(&self) -> &Path {
        &self.root
    }
    fn exists(&self, member: &str) -> bool {
        self.path(member).is_ok_and(|p| p.is_file())
    }
    fn size(&self, member: &str) -> Option<u64> {
        self.path(member)
            .ok()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
    }
    fn open(&mut self, member: &str) -> Result<Box<dyn Read + Send + '_>> {
        let p = self.path(member)?;
        let f = File::open(&p).map_err(|e| archive(&self.root, format!("{member}: {e}")))?;
        Ok(Box::new(BufReader::with_capacity(1 << 20, f)))
    }
}

/// A tar archive, indexed once (member -> offset, size), read by seeking.
struct TarSource {
    path: PathBuf,
    file: File,
    index: HashMap<String, (u64, u64)>,
}

impl TarSource {
    fn open(path: &Path) -> Result<TarSource> {
        let file = File::open(path).ctx("open", path)?;
        let mut r = TarReader::new(BufReader::with_capacity(
            1 << 20,
            file.try_clone().ctx("open", path)?,
        ));
        let mut index = HashMap::new();
        loop {
            let h = r.next_entry().map_err(|e| archive(path, e.to_string()))?;
            let Some(h) = h else { break };
            if h.kind == Kind::File {
                index.insert(
                    clean(&String::from_utf8_lossy(&h.path)),
                    (r.position(), r.data_remaining()),
                );
            }
        }
        Ok(TarSource {
            path: path.to_path_buf(),
            file,
            index,
        })
    }
}

impl Source for TarSource {
    fn describe(&self) -> &Path {
        &self.path
    }
    fn exists(&self, member: &str) -> bool {
        self.index.contains_key(&clean(member))
    }
    fn size(&self, member: &str) -> Option<u64> {
        self.index.get(&clean(member)).map(|(_, s)| *s)
    }
    fn open(&mut self, member: &str) -> Result<Box<dyn Read + Send + '_>> {
        let (off, size) = *self
            .index
            .get(&clean(member))
            .ok_or_else(|| archive(&self.path, format!("no member {member}")))?;
        self.file
            .seek(SeekFrom::Start(off))
            .ctx("seek", &self.path)?;
        Ok(Box::new(BufReader::with_capacity(
            1 << 20,
            (&self.file).take(size),
        )))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: Option<HashMap<String, String>>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Deserialize, Clone)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Debug, Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// What to import: one image of the source.
struct Plan {
    config: Vec<u8>,
    manifest: Option<Vec<u8>>,
    tags: Vec<String>,
    /// (member, expected blob digest, media type)
    layers: Vec<(String, Option<Digest>, String)>,
}

const MAX_JSON: u64 = 64 << 20;

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn verify_blob(src: &dyn Source, what: &str, data: &[u8], want: &Digest) -> Result<()> {
    let got = Digest::of(data);
    if got != *want {
        return Err(Error::DigestMismatch {
            what: format!("{what} in {}", src.describe().display()),
            expected: want.to_string(),
            actual: got.to_string(),
        });
    }
    Ok(())
}

fn blob_member(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn plans_docker(src: &mut dyn Source) -> Result<Vec<Plan>> {
    let m = src.read_all("manifest.json", MAX_JSON)?;
    let entries: Vec<DockerManifestEntry> = serde_json::from_slice(&m)
        .map_err(|e| archive(src.describe(), format!("manifest.json: {e}")))?;
    let mut plans = Vec::new();
    for e in entries {
        let config = src.read_all(&e.config, MAX_JSON)?;
        // the config's file name carries its digest (<hex>.json or blobs/sha256/<hex>)
        let stem = Path::new(&e.config)
            .file_name()
            .map(|n| n.to_string_lossy().trim_end_matches(".json").to_string())
            .unwrap_or_default();
        if let Ok(d) = Digest::from_hex(&stem) {
            verify_blob(src, &format!("config {}", e.config), &config, &d)?;
        }
        let layers = e
            .layers
            .iter()
            .map(|l| {
                // blobs/sha256/<hex> names the blob's digest; other names do not
                let d = l
                    .strip_prefix("blobs/sha256/")
                    .and_then(|h| Digest::from_hex(h).ok());
                (l.clone(), d, String::new())
            })
            .collect();
        let mut tags = Vec::new();
        for t in e.repo_tags.unwrap_or_default() {
            tags.push(reference::normalize_tag(&t)?);
        }
        plans.push(Plan {
            config,
            manifest: None,
            tags,
            layers,
        });
    }
    Ok(plans)
}

fn plans_oci(src: &mut dyn Source) -> Result<Vec<Plan>> {
    let idx = src.read_all("index.json", MAX_JSON)?;
    let index: Index = serde_json::from_slice(&idx)
        .map_err(|e| archive(src.describe(), format!("index.json: {e}")))?;
    let mut plans = Vec::new();
    let mut queue: Vec<(Descriptor, Option<String>)> =
        index.manifests.into_iter().map(|d| (d, None)).collect();
    while let Some((desc, inherited_name)) = queue.pop() {
        let d = Digest::parse(&desc.digest)?;
        let data = src.read_all(&blob_member(&d), MAX_JSON)?;
        verify_blob(
            src,
            &format!("{} {}", desc.media_type, desc.digest),
            &data,
            &d,
        )?;
        if data.len() as u64 != desc.size {
            return Err(archive(
                src.describe(),
                format!(
                    "{}: size {} but the index says {}",
                    desc.digest,
                    data.len(),
                    desc.size
                ),
            ));
        }
        let ann = desc.annotations.clone().unwrap_or_default();
        let name = ann
            .get("io.containerd.image.name")
            .or_else(|| ann.get("org.opencontainers.image.ref.name"))
            .cloned()
            .or(inherited_name);
        let v: serde_json::Value = serde_json::from_slice(&data)
            .map_err(|e| archive(src.describe(), format!("{}: {e}", desc.digest)))?;
        if v.get("manifests").is_some() {
            // an index: pick this host's platform
            let inner: Index =
                serde_json::from_value(v).map_err(|e| archive(src.describe(), e.to_string()))?;
            let pick = inner
                .manifests
                .iter()
                .find(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == host_arch())
                })
                .or_else(|| inner.manifests.first())
                .cloned();
            if let Some(p) = pick {
                queue.push((p, name));
            }
            continue;
        }
        let m: Manifest = serde_json::from_slice(&data)
            .map_err(|e| archive(src.describe(), format!("manifest {}: {e}", desc.digest)))?;
        let cd = Digest::parse(&m.config.digest)?;
        let config = src.read_all(&blob_member(&cd), MAX_JSON)?;
        verify_blob(src, "config", &config, &cd)?;
        let mut layers = Vec::new();
        for l in &m.layers {
            let ld = Digest::parse(&l.digest)?;
            let member = blob_member(&ld);
            if !src.exists(&member) {
                return Err(archive(
                    src.describe(),
                    format!("layer blob {ld} is missing"),
                ));
            }
            if src.size(&member) != Some(l.size) {
                return Err(Error::DigestMismatch {
                    what: format!("size of layer blob {ld}"),
                    expected: l.size.to_string(),
                    actual: src.size(&member).unwrap_or(0).to_string(),
                });
            }
            layers.push((member, Some(ld), l.media_type.clone()));
        }
        let mut tags = Vec::new();
        if let Some(n) = name {
            // a bare tag ("latest") names no repository: keep it untagged
            if n.contains('/') || n.contains(':') {
                tags.push(reference::normalize_tag(&n)?);
            } else {
                tracing::info!(tag = %n, "OCI ref name has no repository; use --tag to name the image");
            }
        }
        plans.push(Plan {
            config,
            manifest: Some(data),
            tags,
            layers,
        });
    }
    plans.reverse();
    Ok(plans)
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
            (self.cb)(Event::Progress {
                short: self.short.to_string(),
                done: self.done,
                size: self.size,
            });
        }
        Ok(n)
    }
}

fn diff_ids(config: &[u8], what: &Path) -> Result<Vec<Digest>> {
    let v: serde_json::Value =
        serde_json::from_slice(config).map_err(|e| archive(what, format!("config: {e}")))?;
    let ids = v
        .pointer("/rootfs/diff_ids")
        .and_then(|x| x.as_array())
        .ok_or_else(|| archive(what, "config has no rootfs.diff_ids"))?;
    ids.iter()
        .map(|d| {
            d.as_str()
                .ok_or_else(|| archive(what, "diff_id is not a string"))
                .and_then(|s| Ok(Digest::parse(s)?))
        })
        .collect()
}

impl Store {
    /// Import every image of `path` (docker archive, OCI layout directory
    /// or OCI archive); `extra_tag` names the (last) image too.
    pub fn import(
        &self,
        path: &Path,
        extra_tag: Option<&str>,
        progress: &mut (dyn FnMut(Event) + Send),
    ) -> Result<Vec<ImageRecord>> {
        let extra = extra_tag.map(reference::normalize_tag).transpose()?;
        let mut src: Box<dyn Source> = if path.is_dir() {
            Box::new(DirSource {
                root: path.to_path_buf(),
            })
        } else {
            let mut f = File::open(path).ctx("open", path)?;
            let mut magic = [0u8; 4];
            let n = f.read(&mut magic).ctx("read", path)?;
            if n >= 2 && (magic[..2] == [0x1f, 0x8b] || magic[..4] == [0x28, 0xb5, 0x2f, 0xfd]) {
                return Err(archive(
                    path,
                    "compressed image archives are not read directly; decompress it first (gunzip / unzstd)",
                ));
            }
            Box::new(TarSource::open(path)?)
        };
        let plans = if src.exists("manifest.json") {
            plans_docker(src.as_mut())?
        } else if src.exists("index.json") && src.exists("oci-layout") {
            plans_oci(src.as_mut())?
        } else {
            return Err(archive(
                path,
                "neither a docker archive (manifest.json) nor an OCI layout (oci-layout, index.json)",
            ));
        };
        if plans.is_empty() {
            return Err(archive(path, "no image in it"));
        }
        let n = plans.len();
        let mut out = Vec::new();
        for (i, mut p) in plans.into_iter().enumerate() {
            if i + 1 == n
                && let Some(t) = &extra
                && !p.tags.contains(t)
            {
                p.tags.push(t.clone());
            }
            out.push(self.import_one(src.as_mut(), p, progress)?);
        }
        Ok(out)
    }

    fn import_one(
        &self,
        src: &mut dyn Source,
        p: Plan,
        progress: &mut (dyn FnMut(Event) + Send),
    ) -> Result<ImageRecord> {
        let what = src.describe().to_path_buf();
        let diffs = diff_ids(&p.config, &what)?;
        if diffs.len() != p.layers.len() {
            return Err(archive(
                &what,
                format!(
                    "the config lists {} layers, the manifest {}",
                    diffs.len(),
                    p.layers.len()
                ),
            ));
        }
        let work = self.work_lock()?;
        let mut created: Vec<LayerRecord> = Vec::new();
        let r = (|| -> Result<Vec<Digest>> {
            let mut chain: Option<Digest> = None;
            let mut chains = Vec::new();
            for ((member, blob_digest, media), diff) in p.layers.iter().zip(&diffs) {
                let short = blob_digest.as_ref().unwrap_or(diff).short().to_string();
                let next = Digest::chain(chain.as_ref(), diff);
                if self.layer(&next)?.is_some() {
                    progress(Event::AlreadyExists { short });
                    chains.push(next.clone());
                    chain = Some(next);
                    continue;
                }
                let size = src.size(member).unwrap_or(0);
                progress(Event::Layer {
                    short: short.clone(),
                    size,
                });
                let mut r = src.open(member)?;
                let mut counting = Counting {
                    inner: &mut r,
                    done: 0,
                    size,
                    short: &short,
                    last: 0,
                    cb: progress,
                };
                let keep = if media.is_empty() {
                    // docker archive: the media type follows the bytes
                    Some("")
                } else {
                    Some(media.as_str())
                };
                let named = blob_digest
                    .as_ref()
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| member.clone());
                let (rec, existed) = self
                    .register_layer(chain.as_ref(), Some(diff), &mut counting, keep)
                    .map_err(|e| Error::InLayer {
                        what: named,
                        inner: Box::new(e),
                    })?;
                drop(r);
                let got = Store::blob_digest_of(&rec);
                if let Some(want) = blob_digest
                    && !existed
                    && got != *want
                {
                    created.push(rec);
                    return Err(Error::DigestMismatch {
                        what: format!("layer blob {member}"),
                        expected: want.to_string(),
                        actual: got.to_string(),
                    });
                }
                if !existed {
                    created.push(rec.clone());
                }
                progress(Event::Complete { short });
                chains.push(rec.chain_id.clone());
                chain = Some(rec.chain_id);
            }
            Ok(chains)
        })();
        let chains = match r {
            Ok(c) => c,
            Err(e) => {
                drop(work);
                self.rollback(&created);
                return Err(e);
            }
        };
        // the image
        let id = self.put_blob(&p.config)?;
        let manifest = match &p.manifest {
            Some(m) => Some(self.put_blob(m)?),
            None => None,
        };
        let img = {
            let _m = self.meta_lock()?;
            let mut img = self.image_record(&id)?.unwrap_or(ImageRecord {
                id: id.clone(),
                repo_tags: Vec::new(),
                repo_digests: Vec::new(),
                manifest: manifest.clone(),
                layers: chains.clone(),
                loaded: now(),
            });
            if img.manifest.is_none() {
                img.manifest = manifest.clone();
            }
            if let Some(md) = &manifest {
                for t in &p.tags {
                    let (repo, _) = reference::split_tag(t);
                    let d = format!("{repo}@{md}");
                    if !img.repo_digests.contains(&d) {
                        img.repo_digests.push(d);
                    }
                }
            }
            self.put_image(&img)?;
            img
        };
        // tagged before the work lock goes: an `image rm` cannot slip in
        for t in &p.tags {
            self.tag_image(&id, t)?;
        }
        drop(work);
        let img = self.image_record(&id)?.unwrap_or(img);
        progress(Event::Done {
            digest: manifest.unwrap_or_else(|| id.clone()),
            id,
            tags: img.repo_tags.clone(),
        });
        Ok(img)
    }

    /// Remove layers an interrupted import created, unless something else
    /// uses them by now.
    fn rollback(&self, created: &[LayerRecord]) {
        let Ok(_g) = self.gc_lock() else { return };
        let refs = self.referenced().unwrap_or_default();
        for l in created.iter().rev() {
            let has_children = self
                .layers()
                .map(|all| all.iter().any(|o| o.parent.as_ref() == Some(&l.chain_id)))
                .unwrap_or(true);
            if !refs.contains(&l.chain_id)
                && !has_children
                && let Err(e) = self.delete_layer(l)
            {
                tracing::warn!(layer = %l.chain_id, "rolling back: {e}");
            }
        }
    }
}
