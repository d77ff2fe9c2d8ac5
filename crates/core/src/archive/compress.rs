//! Compression of layer blobs: detected by magic bytes, undone while
//! streaming.

use std::io::{self, Read};

use crate::error::{Error, Result};

/// Compression of a layer blob, detected by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (RFC 1952).
    Gzip,
    /// zstd (RFC 8878), skippable frames allowed.
    Zstd,
    /// xz (concatenated streams allowed, as `xz -d` reads them).
    Xz,
}

impl Compression {
    /// The compression whose magic `magic` (the first bytes) starts with.
    pub fn detect(magic: &[u8]) -> Result<Compression> {
        Ok(match magic {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
            // a zstd skippable frame (RFC 8878: magic 0x184D2A50 to
            // 0x184D2A5F, little-endian), which writers use for metadata;
            // the decoder skips it
            [0x50..=0x5f, 0x2a, 0x4d, 0x18, ..] => Compression::Zstd,
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Compression::Xz,
            [b'B', b'Z', b'h', ..] => {
                return Err(Error::unsupported(
                    "bzip2-compressed layer",
                    "use plain, gzip, zstd or xz",
                ));
            }
            _ => Compression::None,
        })
    }

    /// Its name, as messages print it.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
        }
    }
}

/// Wrap `input` so that reading gives the uncompressed tar stream.
pub fn decompress<'a>(input: &'a mut (dyn Read + Send)) -> Result<Box<dyn Read + Send + 'a>> {
    let mut magic = [0u8; 6];
    let mut n = 0;
    while n < magic.len() {
        match input.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::archive("read error", Some(e))),
        }
    }
    let head = io::Cursor::new(magic[..n].to_vec());
    let chained = head.chain(input);
    Ok(match Compression::detect(&magic[..n])? {
        Compression::None => Box::new(chained),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
            io::BufReader::with_capacity(128 * 1024, chained),
        )),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(chained)
                .map_err(|e| Error::archive("zstd stream", Some(e)))?,
        ),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(
            io::BufReader::with_capacity(128 * 1024, chained),
        )),
    })
}
