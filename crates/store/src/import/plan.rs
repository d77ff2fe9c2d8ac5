//! What an import will store: one [`Plan`] per image, made from the
//! archive's `manifest.json` (docker) or `index.json` (OCI) before any
//! layer is read. A plan holds only names and digests (manifests and
//! configs are read again, one image at a time, when it is imported), so
//! planning costs the same however large the configs are, and an image
//! listed many times is planned once.
//!
//! Platforms: at every level of an index, the entries that name a platform
//! are narrowed to the one asked for (the host's by default); if such
//! entries exist and none matches, the import fails like Docker's ("no
//! matching manifest for linux/amd64 in the manifest list entries").

use std::collections::HashMap;
use std::fmt;

use oci_spec::image::{Descriptor, ImageIndex, MediaType};
use serde::Deserialize;
use strata_core::Digest;

use super::source::Source;
use crate::error::{Error, Result};
use crate::reference;

/// Largest manifest, index or config read into memory.
pub(super) const MAX_JSON: u64 = 64 << 20;
/// Deepest nesting of indexes followed.
const MAX_DEPTH: usize = 8;

/// A platform: `os/architecture[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// The operating system (`linux`).
    pub os: String,
    /// The architecture, as OCI names it (`amd64`, `arm64`).
    pub architecture: String,
    /// The variant (`v7`, `v8`), when there is one.
    pub variant: Option<String>,
}

impl Platform {
    /// This machine's platform, in OCI names.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
        }
    }

    /// `os/arch[/variant]`, as `--platform` takes it.
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok =
            |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(Error::BadName {
                name: s.to_string(),
                reason: "a platform is os/architecture[/variant], e.g. linux/arm64/v8".into(),
            }),
        }
    }

    /// Whether an index entry's platform is this one.
    pub fn matches(&self, p: &oci_spec::image::Platform) -> bool {
        p.os().to_string() == self.os
            && p.architecture().to_string() == self.architecture
            && match (&self.variant, p.variant()) {
                (Some(want), Some(have)) => want == have,
                (Some(want), None) => want == "v8" && self.architecture == "arm64",
                (None, _) => true,
            }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// One image to import.
#[derive(Debug, Clone)]
pub(super) enum Plan {
    /// From a docker archive: the config and layer members.
    Docker {
        config: String,
        layers: Vec<String>,
        tags: Vec<String>,
    },
    /// From an OCI layout: the manifest's descriptor.
    Oci {
        manifest: Digest,
        size: u64,
        tags: Vec<String>,
    },
}

impl Plan {
    pub(super) fn tags_mut(&mut self) -> &mut Vec<String> {
        match self {
            Plan::Docker { tags, .. } | Plan::Oci { tags, .. } => tags,
        }
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

/// The images of a docker archive (`manifest.json`), one per config.
pub(super) fn docker(src: &mut dyn Source) -> Result<Vec<Plan>> {
    let m = src.read_all("manifest.json", MAX_JSON)?;
    let entries: Vec<DockerManifestEntry> = serde_json::from_slice(&m)
        .map_err(|e| Error::bad_archive(src.describe(), format!("manifest.json: {e}")))?;
    let mut plans: Vec<Plan> = Vec::new();
    for e in entries {
        let mut tags = Vec::new();
        for t in e.repo_tags.unwrap_or_default() {
            tags.push(reference::normalize_tag(&t)?);
        }
        let same = plans
            .iter_mut()
            .find(|p| matches!(p, Plan::Docker { config, .. } if *config == e.config));
        match same {
            Some(p) => p.tags_mut().extend(tags),
            None => plans.push(Plan::Docker {
                config: e.config,
                layers: e.layers,
                tags,
            }),
        }
    }
    Ok(plans)
}

/// The blob member of a digest in an OCI layout.
pub(super) fn blob_member(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// A descriptor's digest as ours (sha256 only).
pub(super) fn digest_of(d: &Descriptor, what: &std::path::Path) -> Result<Digest> {
    Digest::parse(d.digest().as_ref())
        .map_err(|e| Error::bad_archive(what, format!("descriptor: {e}")))
}

/// The name an index entry carries (containerd's, else OCI's).
fn name_of(d: &Descriptor) -> Option<String> {
    let a = d.annotations().as_ref()?;
    a.get("io.containerd.image.name")
        .or_else(|| a.get("org.opencontainers.image.ref.name"))
        .cloned()
}

/// The images of an OCI layout (`index.json`), for `want`.
pub(super) fn oci(src: &mut dyn Source, want: &Platform) -> Result<Vec<Plan>> {
    let idx = src.read_all("index.json", MAX_JSON)?;
    let index = ImageIndex::from_reader(&idx[..])
        .map_err(|e| Error::bad_archive(src.describe(), format!("index.json: {e}")))?;
    let mut plans: Vec<Plan> = Vec::new();
    walk_index(src, &index, None, want, 0, &mut plans)?;
    Ok(plans)
}

/// Plans of one index: entries grouped by name; in each group the entries
/// with a platform are narrowed to `want`.
fn walk_index(
    src: &mut dyn Source,
    index: &ImageIndex,
    inherited: Option<&str>,
    want: &Platform,
    depth: usize,
    plans: &mut Vec<Plan>,
) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::bad_archive(src.describe(), "indexes nest too deep"));
    }
    let mut groups: Vec<(Option<String>, Vec<&Descriptor>)> = Vec::new();
    for d in index.manifests() {
        let name = name_of(d).or_else(|| inherited.map(String::from));
        match groups.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => v.push(d),
            None => groups.push((name, vec![d])),
        }
    }
    for (name, entries) in groups {
        let with_platform: Vec<&&Descriptor> =
            entries.iter().filter(|d| d.platform().is_some()).collect();
        let chosen: Vec<&Descriptor> = if with_platform.is_empty() {
            entries
        } else {
            let m = with_platform
                .iter()
                .find(|d| d.platform().as_ref().is_some_and(|p| want.matches(p)))
                .ok_or_else(|| {
                    Error::bad_archive(
                        src.describe(),
                        format!("no matching manifest for {want} in the manifest list entries (use --platform)"),
                    )
                })?;
            vec![**m]
        };
        for d in chosen {
            plan_entry(src, d, name.as_deref(), want, depth, plans)?;
        }
    }
    Ok(())
}

/// One index entry: a nested index (followed) or a manifest (planned).
fn plan_entry(
    src: &mut dyn Source,
    d: &Descriptor,
    name: Option<&str>,
    want: &Platform,
    depth: usize,
    plans: &mut Vec<Plan>,
) -> Result<()> {
    let digest = digest_of(d, src.describe())?;
    let is_index = matches!(d.media_type(), MediaType::ImageIndex)
        || d.media_type().to_string()
            == "application/vnd.docker.distribution.manifest.list.v2+json";
    if is_index {
        let data = read_verified(src, &digest, d.size())?;
        let inner = ImageIndex::from_reader(&data[..])
            .map_err(|e| Error::bad_archive(src.describe(), format!("index {digest}: {e}")))?;
        return walk_index(src, &inner, name, want, depth + 1, plans);
    }
    let mut tags = Vec::new();
    if let Some(n) = name {
        // a bare tag ("latest") names no repository: keep it untagged
        if n.contains('/') || n.contains(':') {
            tags.push(reference::normalize_tag(n)?);
        } else {
            tracing::info!(tag = %n, "OCI ref name has no repository; use --tag to name the image");
        }
    }
    let same = plans
        .iter_mut()
        .find(|p| matches!(p, Plan::Oci { manifest, .. } if *manifest == digest));
    match same {
        Some(p) => p.tags_mut().extend(tags),
        None => plans.push(Plan::Oci {
            manifest: digest,
            size: d.size(),
            tags,
        }),
    }
    Ok(())
}

/// A small blob of the layout, checked against its digest and size.
pub(super) fn read_verified(src: &mut dyn Source, d: &Digest, size: u64) -> Result<Vec<u8>> {
    let data = src.read_all(&blob_member(d), MAX_JSON)?;
    let got = Digest::of(&data);
    if got != *d {
        return Err(Error::DigestMismatch {
            what: format!("blob {d} in {}", src.describe().display()),
            expected: d.to_string(),
            actual: got.to_string(),
        });
    }
    if data.len() as u64 != size {
        return Err(Error::bad_archive(
            src.describe(),
            format!("{d}: {} bytes, but its descriptor says {size}", data.len()),
        ));
    }
    Ok(data)
}

/// Names a plan's tags should get beyond its own (`--tag` for the last).
pub(super) fn add_tag(plans: &mut [Plan], tag: &str) {
    if let Some(p) = plans.last_mut()
        && !p.tags_mut().iter().any(|t| t == tag)
    {
        p.tags_mut().push(tag.to_string());
    }
}

/// Plans' tags, deduplicated.
pub(super) fn dedup_tags(plans: &mut [Plan]) {
    for p in plans {
        let t = p.tags_mut();
        let mut seen = HashMap::new();
        t.retain(|x| seen.insert(x.clone(), ()).is_none());
    }
}
