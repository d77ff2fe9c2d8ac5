//! The reading side of an apply: a helper thread reads, decompresses and
//! hashes the stream (the diffID) and hands 1 MiB chunks to the applying
//! thread, reusing the buffers it gets back, so memory stays flat.

use std::io::{self, Read};
use std::sync::mpsc;

use crate::digest::{Digest, Hashing};

/// Chunks in flight between the reading thread and the applying one.
pub(super) const PIPE_DEPTH: usize = 8;
const CHUNK: usize = 1 << 20;
/// Buffers of one apply: those in flight, the applier's, one being filled.
const POOL: usize = PIPE_DEPTH + 2;

/// The reading thread: decompress, hash, count, hand over chunks (reusing
/// the buffers the applier gives back, so memory stays flat).
pub(super) fn produce(
    r: Box<dyn Read + Send + '_>,
    tx: mpsc::SyncSender<io::Result<Vec<u8>>>,
    back: mpsc::Receiver<Vec<u8>>,
) -> io::Result<(Digest, u64)> {
    let mut r = Hashing::new(r);
    let mut made = 0;
    loop {
        // a fixed set of buffers, reused: fresh memory costs page faults
        // on every chunk (a third of the reading thread's time), and the
        // set stays in the caches
        let mut buf = match back.try_recv() {
            Ok(b) if b.capacity() > 0 => b,
            Ok(_) | Err(_) if made < POOL => {
                // small first: a tiny layer touches little memory
                let size = (CHUNK >> 4) << made.min(4);
                made += 1;
                vec![0u8; size]
            }
            Ok(_) | Err(_) => match back.recv() {
                Ok(b) if b.capacity() > 0 => b,
                Ok(_) => vec![0u8; CHUNK],
                // the applier stopped (an error): nothing more to do
                Err(_) => {
                    let (_, digest, count) = r.finish();
                    return Ok((digest, count));
                }
            },
        };
        // back to its full size: only the tail after a short chunk is
        // zeroed again (reading into a reused buffer costs no memset)
        let full = buf.capacity();
        buf.resize(full, 0);
        let mut n = 0;
        while n < buf.len() {
            match r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let kind = e.kind();
                    let msg = e.to_string();
                    let _ = tx.send(Err(e));
                    return Err(io::Error::new(kind, msg));
                }
            }
        }
        buf.truncate(n);
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
            if done.capacity() > 0 {
                let _ = self.back.send(done);
            }
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
