//! `push`: send an image as export writes it (the same config, blobs and
//! manifest digests). Blobs the registry has are skipped (`Layer already
//! exists`); a blob known in another repository of the same registry is
//! mounted from there (`Mounted from REPO`); the others are uploaded
//! (POST, then a monolithic PUT of the stream).

use strata_core::Digest;
use strata_store::distribution::PushBlob;
use strata_store::{Store, reference};
use ureq::http::Method;

use crate::client::{Body, Client, Req};
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};

/// What a push reports, in `docker push`'s words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `The push refers to repository [NAME]`.
    Refers(String),
    /// Preparing a blob.
    Preparing(String),
    /// The registry has it.
    LayerAlreadyExists(String),
    /// Mounted from another repository.
    MountedFrom { layer: String, repo: String },
    /// Uploading (bytes of total).
    Pushing {
        layer: String,
        done: u64,
        total: u64,
    },
    /// Uploaded.
    Pushed(String),
    /// `TAG: digest: sha256:... size: N`.
    Done {
        tag: String,
        digest: Digest,
        size: usize,
    },
}

fn scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

/// Push image `r` to `target` (default: `r` itself).
pub fn push(
    store: &Store,
    client: &Client,
    r: &str,
    target: Option<&str>,
    ev: &(dyn Fn(Event) + Sync),
) -> Result<Digest> {
    let to = target.unwrap_or(r);
    let named = reference::parse_named(to)?;
    let ep = client.endpoint(&named.registry);
    let repo = named.repository.as_str();
    let p = store.pushable(r)?;
    ev(Event::Refers(format!(
        "{}/{}",
        named.registry, named.repository
    )));
    let mut done = std::collections::HashSet::new();
    for l in &p.layers {
        if done.insert(l.digest.clone()) {
            push_layer(store, client, &ep, repo, l, ev)?;
        }
    }
    let cfg = Digest::of(&p.config);
    if !exists(client, &ep, repo, &cfg)? {
        upload(
            client,
            &ep,
            repo,
            &cfg,
            Body::Bytes(&p.config),
            p.config.len() as u64,
        )?;
    }
    let tag = named.reference().to_string();
    let what = format!("manifest {repo}:{tag}");
    let mut req = Req::new(
        Method::PUT,
        format!("/v2/{repo}/manifests/{tag}"),
        scope(repo),
    )
    .header("Content-Type", p.manifest_media_type.clone());
    req.body = Body::Bytes(&p.manifest);
    client.check(&ep, client.send(&ep, req)?, &[201, 200], &what)?;
    let md = Digest::of(&p.manifest);
    for l in &p.layers {
        store.add_blob_source(&l.digest, &named.registry, repo)?;
    }
    ev(Event::Done {
        tag,
        digest: md.clone(),
        size: p.manifest.len(),
    });
    Ok(md)
}

fn push_layer(
    store: &Store,
    client: &Client,
    ep: &Endpoint,
    repo: &str,
    l: &PushBlob,
    ev: &(dyn Fn(Event) + Sync),
) -> Result<()> {
    let short = l.digest.short().to_string();
    ev(Event::Preparing(short.clone()));
    if exists(client, ep, repo, &l.digest)? {
        ev(Event::LayerAlreadyExists(short));
        return Ok(());
    }
    for from in store.blob_sources(&l.digest, &ep.registry)? {
        if from != repo && mount(client, ep, repo, &from, &l.digest)? {
            ev(Event::MountedFrom {
                layer: short,
                repo: from,
            });
            return Ok(());
        }
    }
    store.read_push_blob(l, |r| {
        let mut counting = Progressing {
            inner: r,
            done: 0,
            last: 0,
            total: l.size,
            short: &short,
            ev,
        };
        upload(
            client,
            ep,
            repo,
            &l.digest,
            Body::Reader(&mut counting, l.size),
            l.size,
        )
        .map_err(|e| strata_store::Error::Internal(e.to_string()))
    })?;
    ev(Event::Pushed(short));
    Ok(())
}

/// Does the registry have `d` in `repo`?
fn exists(client: &Client, ep: &Endpoint, repo: &str, d: &Digest) -> Result<bool> {
    let req = Req::new(Method::HEAD, format!("/v2/{repo}/blobs/{d}"), scope(repo));
    let resp = client.send(ep, req)?;
    match resp.status().as_u16() {
        200 => Ok(true),
        404 => Ok(false),
        _ => client
            .check(ep, resp, &[], &format!("blob {d}"))
            .map(|_| false),
    }
}

/// Cross-repository mount: `true` when the registry mounted it.
fn mount(client: &Client, ep: &Endpoint, repo: &str, from: &str, d: &Digest) -> Result<bool> {
    let mut req = Req::new(
        Method::POST,
        format!("/v2/{repo}/blobs/uploads/?mount={d}&from={from}"),
        scope(repo),
    );
    req.scopes.push(format!("repository:{from}:pull"));
    let resp = client.send(ep, req)?;
    Ok(resp.status() == 201)
}

fn upload(
    client: &Client,
    ep: &Endpoint,
    repo: &str,
    d: &Digest,
    body: Body<'_>,
    size: u64,
) -> Result<()> {
    let what = format!("upload of {d} to {repo}");
    let start = Req::new(
        Method::POST,
        format!("/v2/{repo}/blobs/uploads/"),
        scope(repo),
    );
    let resp = client.check(ep, client.send(ep, start)?, &[202], &what)?;
    let loc = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::transport(&ep.registry, format!("{what}: no Location")))?
        .to_string();
    let sep = if loc.contains('?') { '&' } else { '?' };
    let mut put = Req::new(Method::PUT, format!("{loc}{sep}digest={d}"), scope(repo))
        .header("Content-Type", "application/octet-stream");
    put.body = body;
    let _ = size;
    client
        .check(ep, client.send(ep, put)?, &[201], &what)
        .map(|_| ())
}

struct Progressing<'a> {
    inner: &'a mut (dyn std::io::Read + Send),
    done: u64,
    last: u64,
    total: u64,
    short: &'a str,
    ev: &'a (dyn Fn(Event) + Sync),
}

impl std::io::Read for Progressing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.done - self.last >= 1 << 20 || (n == 0 && self.done != self.last) {
            self.last = self.done;
            (self.ev)(Event::Pushing {
                layer: self.short.to_string(),
                done: self.done,
                total: self.total,
            });
        }
        Ok(n)
    }
}
