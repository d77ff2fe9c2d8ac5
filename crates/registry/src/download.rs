//! Blob downloads: into a file that the layer's apply reads while it grows
//! (so a layer is applied as soon as its bytes arrive, and there is never
//! an uncompressed copy), resumed with an HTTP `Range` request when the
//! connection breaks, retried with backoff as Docker does (5 tries, the
//! output says `Retrying in N seconds`), and verified against the blob's
//! digest before the reader sees its end.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ureq::http::Method;

use crate::client::{Client, Req};
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::manifest::Blob;

/// Tries per blob, and the delay before the second (doubled each time).
pub const TRIES: u32 = 5;
const FIRST_DELAY: Duration = Duration::from_secs(1);

/// How far a download is, shared with the reader of its file.
#[derive(Debug)]
pub struct Growing {
    state: Mutex<(u64, Option<std::result::Result<(), String>>)>,
    cond: Condvar,
}

impl Default for Growing {
    fn default() -> Self {
        Growing {
            state: Mutex::new((0, None)),
            cond: Condvar::new(),
        }
    }
}

impl Growing {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, Option<std::result::Result<(), String>>)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn advance(&self, to: u64) {
        self.lock().0 = to;
        self.cond.notify_all();
    }

    /// The download ended: `Ok` once the bytes are verified, else why not.
    pub fn finish(&self, r: std::result::Result<(), String>) {
        self.lock().1 = Some(r);
        self.cond.notify_all();
    }

    /// A reader of `file` that waits for bytes not yet written, and ends
    /// (or fails) when the download does.
    pub fn reader(self: &Arc<Self>, file: File) -> GrowingReader {
        GrowingReader {
            file,
            pos: 0,
            g: self.clone(),
        }
    }
}

/// Reads a file while its download appends to it.
#[derive(Debug)]
pub struct GrowingReader {
    file: File,
    pos: u64,
    g: Arc<Growing>,
}

impl Read for GrowingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut st = self.g.lock();
        loop {
            if self.pos < st.0 {
                let n = ((st.0 - self.pos) as usize).min(buf.len());
                drop(st);
                let k = self.file.read_at(&mut buf[..n], self.pos)?;
                self.pos += k as u64;
                return Ok(k);
            }
            match &st.1 {
                Some(Ok(())) => return Ok(0),
                Some(Err(e)) => return Err(io::Error::other(e.clone())),
                None => {
                    st = self.g.cond.wait(st).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }
}

/// What a download reports.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Bytes of the blob in the file so far.
    Bytes(u64),
    /// A try failed; the next starts in this many seconds.
    Retrying { secs: u64, why: String },
    /// Every byte is in and its digest is being checked.
    Verifying,
}

/// The digest of the bytes appended so far, across tries.
type Sha = strata_core::Hashing<io::Sink>;

/// Which blob to fetch, and from where.
#[derive(Debug, Clone, Copy)]
pub struct Fetch<'a> {
    /// The client.
    pub client: &'a Client,
    /// The registry.
    pub ep: &'a Endpoint,
    /// The repository.
    pub repo: &'a str,
    /// The blob.
    pub blob: &'a Blob,
}

/// Download a blob into `file` (empty), telling `g` as bytes arrive.
/// Returns the bytes received over the network (more than the blob's size
/// when a try was cut). `cancel` stops it early.
pub fn download(
    f: Fetch<'_>,
    file: &mut File,
    g: &Growing,
    cancel: &AtomicBool,
    progress: &dyn Fn(Progress),
) -> Result<u64> {
    let Fetch {
        client,
        ep,
        repo,
        blob,
    } = f;
    let received = AtomicU64::new(0);
    let mut sha = Sha::new(io::sink());
    let mut have = 0u64;
    let mut delay = FIRST_DELAY;
    for attempt in 1..=TRIES {
        match try_once(
            client, ep, repo, blob, file, g, &mut sha, &mut have, &received, cancel, progress,
        ) {
            Ok(()) => break,
            Err(e) if e.retryable() && attempt < TRIES && !cancel.load(Ordering::Relaxed) => {
                tracing::info!(blob = %blob.digest, attempt, "download: {e}");
                progress(Progress::Retrying {
                    secs: delay.as_secs(),
                    why: e.to_string(),
                });
                std::thread::sleep(delay);
                delay *= 2;
            }
            Err(e) => return Err(e),
        }
    }
    progress(Progress::Verifying);
    let (_, got, _) = sha.finish();
    if have != blob.size || got != blob.digest {
        return Err(Error::DigestMismatch {
            what: format!(
                "blob {} of {}/{repo} ({have} bytes)",
                blob.digest, ep.registry
            ),
            expected: blob.digest.to_string(),
            actual: got.to_string(),
        });
    }
    Ok(received.load(Ordering::Relaxed))
}

#[allow(clippy::too_many_arguments)]
fn try_once(
    client: &Client,
    ep: &Endpoint,
    repo: &str,
    blob: &Blob,
    file: &mut File,
    g: &Growing,
    sha: &mut Sha,
    have: &mut u64,
    received: &AtomicU64,
    cancel: &AtomicBool,
    progress: &dyn Fn(Progress),
) -> Result<()> {
    let what = format!("blob {}", blob.digest);
    let mut req = Req::new(
        Method::GET,
        format!("/v2/{repo}/blobs/{}", blob.digest),
        format!("repository:{repo}:pull"),
    );
    if *have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
    }
    let resp = client.check(ep, client.send(ep, req)?, &[200, 206], &what)?;
    // a server that ignores Range sends it all again: skip what we have
    let mut skip = if resp.status() == 200 { *have } else { 0 };
    let mut body = resp.into_body().into_reader();
    let mut buf = vec![0u8; 256 << 10];
    let t = |e: io::Error| Error::transport(&ep.registry, format!("{what}: {e}"));
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::transport(&ep.registry, format!("{what}: cancelled")));
        }
        let n = body.read(&mut buf).map_err(t)?;
        if n == 0 {
            break;
        }
        received.fetch_add(n as u64, Ordering::Relaxed);
        let mut chunk = &buf[..n];
        if skip > 0 {
            let k = (skip as usize).min(chunk.len());
            skip -= k as u64;
            chunk = &chunk[k..];
        }
        if *have + chunk.len() as u64 > blob.size {
            return Err(Error::DigestMismatch {
                what: format!("{what} of {}/{repo}", ep.registry),
                expected: format!("{} bytes", blob.size),
                actual: "more".into(),
            });
        }
        file.write_all(chunk).map_err(|e| Error::Io {
            op: "write download",
            path: std::path::PathBuf::from(&what),
            err: e,
        })?;
        sha.write_all(chunk).map_err(t)?;
        *have += chunk.len() as u64;
        g.advance(*have);
        progress(Progress::Bytes(*have));
    }
    if *have < blob.size {
        return Err(Error::transport(
            &ep.registry,
            format!(
                "{what}: the connection closed after {have} of {} bytes",
                blob.size
            ),
        ));
    }
    Ok(())
}

/// A blob's bytes as one stream, without resume (for callers that check
/// the digest as they consume it, and fall back on failure).
pub fn open_blob(
    client: &Client,
    ep: &Endpoint,
    repo: &str,
    digest: &strata_core::Digest,
) -> Result<ureq::BodyReader<'static>> {
    let what = format!("blob {digest}");
    let req = Req::new(
        Method::GET,
        format!("/v2/{repo}/blobs/{digest}"),
        format!("repository:{repo}:pull"),
    );
    let resp = client.check(ep, client.send(ep, req)?, &[200], &what)?;
    Ok(resp.into_body().into_reader())
}
