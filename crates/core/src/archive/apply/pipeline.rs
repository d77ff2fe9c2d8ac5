//! The reading side of an apply: a helper thread reads, decompresses and
//! hashes the stream (the diffID) and hands 1 MiB chunks to the applying
//! thread, reusing the buffers it gets back, so memory stays flat.

use std::io::{self, Read};
use std::sync::mpsc;

use crate::digest::{Digest, Hashing};

/// Chunks in flight between the reading thread and the applying one.
pub(super) const PIPE_DEPTH: usize = 8;
const CHUNK: usize = 1 << 20;

/// The reading thread: decompress, hash, count, hand over chunks (reusing
/// the buffers the applier gives back, so memory stays flat).
pub(super) fn produce(
    r: Box<dyn Read + Send + '_>,
    tx: mpsc::SyncSender<io::Result<Vec<u8>>>,
    back: mpsc::Receiver<Vec<u8>>,
) -> io::Result<(Digest, u64)> {
    let mut r = Hashing::new(r);
    loop {
        let mut buf = back.try_recv().unwrap_or_default();
        buf.clear();
        // read_to_end fills the spare capacity without zeroing it first:
        // a tiny layer costs no megabyte of memset and page faults
        buf.reserve_exact(CHUNK);
        let n = match (&mut r).take(CHUNK as u64).read_to_end(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                let kind = e.kind();
                let msg = e.to_string();
                let _ = tx.send(Err(e));
                return Err(io::Error::new(kind, msg));
            }
        };
        let end = n == 0;
        // a failed send: the applier stopped (an error), nothing more to do
        if tx.send(Ok(buf)).is_err() || end {
            let (_, digest, count) = r.finish();
            return Ok((digest, count));
        }
    }
}

/// The applying side of the pipe: a `Read` over the chunks.
pub(super) struct ChunkReader {
    pub(super) rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    pub(super) back: mpsc::Sender<Vec<u8>>,
    pub(super) cur: Vec<u8>,
    pub(super) pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.cur.len() {
            let next = match self.rx.recv() {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            };
            let done = std::mem::replace(&mut self.cur, next);
            let _ = self.back.send(done);
            self.pos = 0;
            if self.cur.is_empty() {
                return Ok(0);
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
