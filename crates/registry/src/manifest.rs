//! Manifests: fetched by tag or digest with every media type Strata reads
//! (OCI index and manifest, Docker manifest list and v2 manifest),
//! verified against their digest, and an index resolved to one platform.

use oci_spec::image::{ImageIndex, ImageManifest};
use strata_core::Digest;
use strata_store::import::Platform;
use ureq::http::Method;

use crate::client::{Client, Req};
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};

/// Every manifest type Strata reads, for `Accept`.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Manifests and configs are small; anything bigger is refused.
pub const MAX_MANIFEST: u64 = 4 << 20;
const MAX_CONFIG: u64 = 16 << 20;
const MAX_DEPTH: usize = 4;

/// A blob a manifest names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Its media type.
    pub media_type: String,
}

/// An image manifest, resolved for one platform.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The digest the reference points to (an index's, for multi-platform
    /// images): what `Digest:` shows and RepoDigests keep.
    pub top_digest: Digest,
    /// The image manifest.
    pub manifest: Vec<u8>,
    /// Its digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// The config blob.
    pub config: Blob,
    /// The layer blobs, bottom first.
    pub layers: Vec<Blob>,
}

fn is_index(media: &str) -> bool {
    media.contains("image.index") || media.contains("manifest.list")
}

fn blob(d: &oci_spec::image::Descriptor, what: &str) -> Result<Blob> {
    Ok(Blob {
        digest: Digest::parse(d.digest().as_ref())
            .map_err(|e| Error::bad(what.to_string(), e.to_string()))?,
        size: d.size(),
        media_type: d.media_type().to_string(),
    })
}

/// Fetch one manifest (or index) by tag or digest: its bytes, digest and
/// media type, verified.
pub fn fetch(
    client: &Client,
    ep: &Endpoint,
    repo: &str,
    reference: &str,
) -> Result<(Vec<u8>, Digest, String)> {
    let what = format!("manifest {repo}:{reference}");
    let req = Req::new(
        Method::GET,
        format!("/v2/{repo}/manifests/{reference}"),
        format!("repository:{repo}:pull"),
    )
    .header("Accept", ACCEPT);
    let resp = client.check(ep, client.send(ep, req)?, &[200], &what)?;
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let media = header("content-type").unwrap_or_default();
    let claimed = header("docker-content-digest");
    let data = client.read_small(ep, resp, MAX_MANIFEST, &what)?;
    let got = Digest::of(&data);
    let want = if reference.starts_with("sha256:") {
        Some(reference.to_string())
    } else {
        claimed
    };
    if let Some(w) = want
        && w != got.as_str()
    {
        return Err(Error::DigestMismatch {
            what,
            expected: w,
            actual: got.to_string(),
        });
    }
    // the body says what it is when the header does not
    let media = if media.is_empty()
        || media.starts_with("application/json")
        || media.starts_with("text/")
    {
        serde_json::from_slice::<serde_json::Value>(&data)
            .ok()
            .and_then(|v| {
                v.get("mediaType")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| {
                if data.windows(11).any(|w| w == b"\"manifests\"") {
                    "application/vnd.oci.image.index.v1+json".into()
                } else {
                    "application/vnd.oci.image.manifest.v1+json".into()
                }
            })
    } else {
        media.split(';').next().unwrap_or("").trim().to_string()
    };
    Ok((data, got, media))
}

/// Resolve `reference` in `repo` to an image manifest for `platform`.
pub fn resolve(
    client: &Client,
    ep: &Endpoint,
    repo: &str,
    reference: &str,
    platform: &Platform,
) -> Result<Resolved> {
    let (mut data, mut digest, mut media) = fetch(client, ep, repo, reference)?;
    let top = digest.clone();
    let shown = format!("{}/{repo}:{reference}", ep.registry);
    for _ in 0..MAX_DEPTH {
        if !is_index(&media) {
            return finish(repo, top, data, digest, media);
        }
        let idx = ImageIndex::from_reader(&data[..])
            .map_err(|e| Error::bad(format!("index of {shown}"), e.to_string()))?;
        let pick = idx
            .manifests()
            .iter()
            .find(|m| m.platform().as_ref().is_some_and(|p| platform.matches(p)))
            .ok_or_else(|| Error::NoPlatform {
                reference: shown.clone(),
                platform: platform.to_string(),
                has: idx
                    .manifests()
                    .iter()
                    .filter_map(|m| m.platform().as_ref())
                    .map(|p| match p.variant() {
                        Some(v) => format!("{}/{}/{v}", p.os(), p.architecture()),
                        None => format!("{}/{}", p.os(), p.architecture()),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let d = pick.digest().to_string();
        (data, digest, media) = fetch(client, ep, repo, &d)?;
    }
    Err(Error::bad(shown, "indexes nested too deep"))
}

fn finish(
    repo: &str,
    top: Digest,
    data: Vec<u8>,
    digest: Digest,
    media: String,
) -> Result<Resolved> {
    let what = format!("manifest {digest} of {repo}");
    let m = ImageManifest::from_reader(&data[..])
        .map_err(|e| Error::bad(what.clone(), e.to_string()))?;
    let config = blob(m.config(), &what)?;
    let layers = m
        .layers()
        .iter()
        .map(|l| blob(l, &what))
        .collect::<Result<Vec<_>>>()?;
    if config.size > MAX_CONFIG {
        return Err(Error::bad(
            what,
            format!("its config is {} bytes", config.size),
        ));
    }
    Ok(Resolved {
        top_digest: top,
        manifest: data,
        digest,
        media_type: media,
        config,
        layers,
    })
}

/// Fetch and verify the config blob.
pub fn config(client: &Client, ep: &Endpoint, repo: &str, c: &Blob) -> Result<Vec<u8>> {
    let what = format!("config {}", c.digest);
    let req = Req::new(
        Method::GET,
        format!("/v2/{repo}/blobs/{}", c.digest),
        format!("repository:{repo}:pull"),
    );
    let resp = client.check(ep, client.send(ep, req)?, &[200], &what)?;
    let data = client.read_small(ep, resp, MAX_CONFIG, &what)?;
    let got = Digest::of(&data);
    if got != c.digest {
        return Err(Error::DigestMismatch {
            what,
            expected: c.digest.to_string(),
            actual: got.to_string(),
        });
    }
    Ok(data)
}
