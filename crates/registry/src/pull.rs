//! `pull`: resolve the reference to a manifest for the platform, skip the
//! layers whose chain ID is stored (`Already exists`), download the others
//! in parallel (3 at a time by default) into files in the store's tmp
//! directory, and apply each, in order, as soon as its parent is in place
//! and while its bytes arrive. A layer is registered only when its blob
//! matches its digest and its tar its diffID; its compressed blob is kept,
//! so that save and push send the very bytes pulled.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use strata_core::Digest;
use strata_store::import::Platform;
use strata_store::{ImageRecord, Keep, LayerIn, Store, config, reference};

use crate::client::Client;
use crate::download::{self, Growing};
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::manifest::{self, Blob, Resolved};

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOpts {
    /// The platform to pick from an index (default: this machine's).
    pub platform: Option<Platform>,
    /// Downloads at once.
    pub max_concurrent: usize,
}

impl Default for PullOpts {
    fn default() -> Self {
        PullOpts {
            platform: None,
            max_concurrent: 3,
        }
    }
}

/// What a pull reports, in `docker pull`'s words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `TAG: Pulling from REPO`.
    Pulling { repo: String, tag: String },
    /// The layer's chain ID is stored.
    AlreadyExists(String),
    /// The layer will be downloaded.
    PullingFsLayer(String),
    /// Queued behind other downloads.
    Waiting(String),
    /// Bytes downloaded of the layer's blob.
    Downloading {
        layer: String,
        done: u64,
        total: u64,
    },
    /// A try failed; the next starts in `secs`.
    Retrying { layer: String, secs: u64 },
    /// The blob's digest is being checked.
    VerifyingChecksum(String),
    /// The blob is complete and verified.
    DownloadComplete(String),
    /// Bytes of the blob applied.
    Extracting {
        layer: String,
        done: u64,
        total: u64,
    },
    /// The layer is stored.
    PullComplete(String),
    /// The digest the reference resolved to.
    Digest(Digest),
    /// The final status line.
    Status(String),
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The image.
    pub image: ImageRecord,
    /// The digest the reference resolved to.
    pub digest: Digest,
    /// Nothing was downloaded and the name already pointed here.
    pub up_to_date: bool,
    /// Bytes received from the registry for layer blobs (retries included).
    pub received: u64,
}

/// One layer to download and apply.
struct Job {
    blob: Blob,
    diff: Digest,
    short: String,
    file: Mutex<Option<std::fs::File>>,
    path: Mutex<Option<tempfile::TempPath>>,
    g: Arc<Growing>,
}

/// Pull `reference` into `store`.
pub fn pull(
    store: &Store,
    client: &Client,
    reference: &str,
    opts: &PullOpts,
    ev: &(dyn Fn(Event) + Sync),
) -> Result<Pulled> {
    let named = reference::parse_named(reference)?;
    let ep = client.endpoint(&named.registry);
    let repo = named.repository.as_str();
    ev(Event::Pulling {
        repo: named.repository.clone(),
        tag: named.reference().to_string(),
    });
    let platform = opts.platform.clone().unwrap_or_else(Platform::host);
    let r = manifest::resolve(client, &ep, repo, named.reference(), &platform)?;
    let cfg = manifest::config(client, &ep, repo, &r.config)?;
    let diffs = config::diff_ids(
        &config::parse(&cfg, &format!("config {}", r.config.digest))?,
        "config",
    )?;
    if diffs.len() != r.layers.len() {
        return Err(Error::bad(
            format!("image {reference}"),
            format!(
                "its config lists {} layers, its manifest {}",
                diffs.len(),
                r.layers.len()
            ),
        ));
    }
    let (chains, missing) = plan(store, &r.layers, &diffs, ev)?;
    let tag = named.familiar_tag();
    let repo_digest = format!("{}@{}", named.familiar, r.top_digest);
    let id = Digest::of(&cfg);
    let had = store.image_record(&id)?.is_some()
        && tag
            .as_ref()
            .is_none_or(|t| store.find_image(t).is_ok_and(|i| i.id == id));
    let received = if missing.is_empty() {
        0
    } else {
        let _w = store.work_lock()?;
        fetch_layers(
            store,
            client,
            &ep,
            repo,
            &r,
            &chains,
            missing,
            opts.max_concurrent.max(1),
            ev,
        )?
    };
    let image = store.record_pulled(&cfg, &r.manifest, &chains, tag.as_deref(), &repo_digest)?;
    for b in r.layers.iter().chain(std::iter::once(&r.config)) {
        store.add_blob_source(&b.digest, &named.registry, repo)?;
    }
    let up_to_date = had && received == 0;
    ev(Event::Digest(r.top_digest.clone()));
    let shown = tag.unwrap_or_else(|| repo_digest.clone());
    ev(Event::Status(if up_to_date {
        format!("Image is up to date for {shown}")
    } else {
        format!("Downloaded newer image for {shown}")
    }));
    Ok(Pulled {
        image,
        digest: r.top_digest,
        up_to_date,
        received,
    })
}

/// The image's chain IDs, and the layers to fetch (those after the last
/// stored one); the stored ones are reported `Already exists`.
#[allow(clippy::type_complexity)]
fn plan(
    store: &Store,
    layers: &[Blob],
    diffs: &[Digest],
    ev: &(dyn Fn(Event) + Sync),
) -> Result<(Vec<Digest>, Vec<(Blob, Digest, String)>)> {
    let mut chains = Vec::new();
    let mut missing = Vec::new();
    let mut parent: Option<Digest> = None;
    for (b, d) in layers.iter().zip(diffs) {
        let c = Digest::chain(parent.as_ref(), d);
        let short = b.digest.short().to_string();
        if missing.is_empty() && store.layer(&c)?.is_some() {
            ev(Event::AlreadyExists(short));
        } else {
            missing.push((b.clone(), d.clone(), short));
        }
        chains.push(c.clone());
        parent = Some(c);
    }
    Ok((chains, missing))
}

/// Download the missing layers (a suffix of the image) in parallel and
/// apply them in order; returns the bytes received.
#[allow(clippy::too_many_arguments)]
fn fetch_layers(
    store: &Store,
    client: &Client,
    ep: &Endpoint,
    repo: &str,
    r: &Resolved,
    chains: &[Digest],
    missing: Vec<(Blob, Digest, String)>,
    workers: usize,
    ev: &(dyn Fn(Event) + Sync),
) -> Result<u64> {
    let first = chains.len() - missing.len();
    let mut jobs = Vec::new();
    for (blob, diff, short) in missing {
        let t = store.temp_file("download.")?;
        let (file, path) = t.into_parts();
        ev(Event::PullingFsLayer(short.clone()));
        jobs.push(Job {
            blob,
            diff,
            short,
            file: Mutex::new(Some(file)),
            path: Mutex::new(Some(path)),
            g: Arc::new(Growing::default()),
        });
    }
    for j in jobs.iter().skip(workers) {
        ev(Event::Waiting(j.short.clone()));
    }
    let next = AtomicUsize::new(0);
    let cancel = AtomicBool::new(false);
    let received = AtomicU64::new(0);
    let _ = r;
    std::thread::scope(|s| {
        for _ in 0..workers.min(jobs.len()) {
            s.spawn(|| worker(client, ep, repo, &jobs, &next, &cancel, &received, ev));
        }
        let applied = apply_in_order(store, &jobs, chains, first, ev);
        if applied.is_err() {
            cancel.store(true, Ordering::Relaxed);
            for j in &jobs {
                j.g.finish(Err("cancelled".into()));
            }
        }
        applied
    })?;
    Ok(received.load(Ordering::Relaxed))
}

#[allow(clippy::too_many_arguments)]
fn worker(
    client: &Client,
    ep: &Endpoint,
    repo: &str,
    jobs: &[Job],
    next: &AtomicUsize,
    cancel: &AtomicBool,
    received: &AtomicU64,
    ev: &(dyn Fn(Event) + Sync),
) {
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(j) = jobs.get(i) else { return };
        if cancel.load(Ordering::Relaxed) {
            j.g.finish(Err("cancelled".into()));
            continue;
        }
        let Some(mut file) = j.file.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            continue;
        };
        let total = j.blob.size;
        let progress = |p: download::Progress| match p {
            download::Progress::Bytes(done) => ev(Event::Downloading {
                layer: j.short.clone(),
                done,
                total,
            }),
            download::Progress::Retrying { secs, .. } => ev(Event::Retrying {
                layer: j.short.clone(),
                secs,
            }),
            download::Progress::Verifying => ev(Event::VerifyingChecksum(j.short.clone())),
        };
        let f = download::Fetch {
            client,
            ep,
            repo,
            blob: &j.blob,
        };
        match download::download(f, &mut file, &j.g, cancel, &progress) {
            Ok(n) => {
                received.fetch_add(n, Ordering::Relaxed);
                ev(Event::DownloadComplete(j.short.clone()));
                j.g.finish(Ok(()));
            }
            Err(e) => {
                tracing::warn!(layer = %j.blob.digest, "download failed: {e}");
                j.g.finish(Err(e.to_string()));
            }
        }
    }
}

/// Apply each job on the one before it, reading its file as it grows.
fn apply_in_order(
    store: &Store,
    jobs: &[Job],
    chains: &[Digest],
    first: usize,
    ev: &(dyn Fn(Event) + Sync),
) -> Result<()> {
    for (k, j) in jobs.iter().enumerate() {
        let parent = (first + k).checked_sub(1).map(|p| &chains[p]);
        let path = j
            .path
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| Error::bad(j.blob.digest.to_string(), "applied twice"))?;
        let file = std::fs::File::open(&path).map_err(|e| Error::Io {
            op: "open download",
            path: path.to_path_buf(),
            err: e,
        })?;
        let mut reader = Counting {
            inner: j.g.reader(file),
            done: 0,
            last: 0,
            total: j.blob.size,
            short: &j.short,
            ev,
        };
        let input = LayerIn {
            input: &mut reader,
            diff: Some(&j.diff),
            blob: Some(&j.blob.digest),
            keep: Keep::File {
                media_type: j.blob.media_type.clone(),
                path,
            },
        };
        let (rec, _) = store.register_layer(parent, input).map_err(|e| {
            Error::Store(strata_store::Error::InLayer {
                what: j.blob.digest.to_string(),
                inner: Box::new(e),
            })
        })?;
        if rec.chain_id != chains[first + k] {
            return Err(Error::bad(
                j.blob.digest.to_string(),
                "the layer's chain ID is not the one its config gives",
            ));
        }
        ev(Event::PullComplete(j.short.clone()));
    }
    Ok(())
}

/// Counts the bytes applied, for `Extracting` progress.
struct Counting<'a, R> {
    inner: R,
    done: u64,
    last: u64,
    total: u64,
    short: &'a str,
    ev: &'a (dyn Fn(Event) + Sync),
}

impl<R: std::io::Read> std::io::Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.done - self.last >= 1 << 20 || (n == 0 && self.done != self.last) {
            self.last = self.done;
            (self.ev)(Event::Extracting {
                layer: self.short.to_string(),
                done: self.done,
                total: self.total,
            });
        }
        Ok(n)
    }
}
