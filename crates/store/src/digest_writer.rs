//! A writer that hashes what passes through it.

use std::io::Write;

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

pub struct DigestWriter<W: Write> {
    inner: W,
    h: Sha256,
}

impl<W: Write> std::fmt::Debug for DigestWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestWriter").finish()
    }
}

impl<W: Write> DigestWriter<W> {
    pub fn new(inner: W) -> Self {
        DigestWriter {
            inner,
            h: Sha256::new(),
        }
    }

    pub fn finish(self) -> Digest {
        Digest::parse(&format!("sha256:{}", hex::encode(self.h.finalize())))
            .unwrap_or_else(|_| Digest::of(b""))
    }
}

impl<W: Write> Write for DigestWriter<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(b)?;
        self.h.update(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
