//! Content digests (`sha256:HEX`), chain IDs, and the one hashing adapter
//! (a reader or writer that hashes and counts what passes through it).

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A `sha256:` digest with 64 lowercase hex digits (OCI's canonical form).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// Parse `sha256:HEX`; anything else is `InvalidInput` naming the text.
    pub fn parse(s: &str) -> Result<Digest> {
        let bad = || {
            Error::invalid(
                format!("digest {s:?}"),
                "expected sha256: and 64 lowercase hex digits",
            )
        };
        let hex = s.strip_prefix("sha256:").ok_or_else(bad)?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(bad());
        }
        Ok(Digest(s.to_string()))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// `sha256:HEX` from 64 hex digits.
    pub fn from_hex(hex: &str) -> Result<Digest> {
        Digest::parse(&format!("sha256:{hex}"))
    }

    fn from_hasher(h: Sha256) -> Digest {
        Digest(format!("sha256:{}", hex::encode(h.finalize())))
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    /// The first 12 hex digits (how Docker shows IDs).
    pub fn short(&self) -> &str {
        &self.0[7..19]
    }

    /// The whole `sha256:HEX` text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The chain ID of a layer with this diffID on `parent` (a chain ID):
    /// the diffID itself for a base layer, else
    /// `sha256(parent + " " + diff_id)` (OCI image spec, config.md).
    pub fn chain(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
        match parent {
            None => diff_id.clone(),
            Some(p) => Digest::of(format!("{} {}", p.0, diff_id.0).as_bytes()),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Digest> {
        Digest::parse(s)
    }
}

impl TryFrom<String> for Digest {
    type Error = Error;
    fn try_from(s: String) -> Result<Digest> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

/// Hashes (sha256) and counts every byte read from or written to the
/// wrapped stream: the one adapter every digest of a stream goes through.
pub struct Hashing<S> {
    inner: S,
    hasher: Sha256,
    count: u64,
}

impl<S> fmt::Debug for Hashing<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hashing")
            .field("count", &self.count)
            .finish()
    }
}

impl<S> Hashing<S> {
    /// Hash what passes through `inner`.
    pub fn new(inner: S) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes that went through so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The wrapped stream, the digest and the byte count.
    pub fn finish(self) -> (S, Digest, u64) {
        (self.inner, Digest::from_hasher(self.hasher), self.count)
    }

    /// The wrapped reader or writer (what passes by it directly is not hashed).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_docker() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        assert_eq!(Digest::chain(None, &a), a);
        let c = Digest::chain(Some(&a), &b);
        assert_eq!(c, Digest::of(format!("{a} {b}").as_bytes()));
        assert_ne!(c, Digest::chain(Some(&b), &a));
    }

    #[test]
    fn parse_refuses_bad_digests() {
        for bad in [
            "",
            "sha256:",
            "md5:00",
            "sha256:ABC",
            &format!("sha256:{}", "g".repeat(64)),
            &format!("sha256:{}", "A".repeat(64)),
        ] {
            let e = Digest::parse(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{bad}");
        }
        assert!(Digest::parse(&format!("sha256:{}", "0".repeat(64))).is_ok());
    }

    #[test]
    fn hashing_reader_and_writer_agree() {
        let data = b"hello layers".repeat(1000);
        let mut r = Hashing::new(&data[..]);
        std::io::copy(&mut r, &mut std::io::sink()).unwrap();
        let (_, dr, nr) = r.finish();
        let mut w = Hashing::new(Vec::new());
        w.write_all(&data).unwrap();
        let (out, dw, nw) = w.finish();
        assert_eq!(out, data);
        assert_eq!((dr.clone(), nr), (dw, nw));
        assert_eq!(dr, Digest::of(&data));
    }
}
