//! Blobs by digest (`store/blobs/sha256/HEX`): configs, manifests, and the
//! compressed layer blobs kept for byte-exact export. A blob goes when no
//! record refers to it any more.

use std::path::PathBuf;

use strata_core::{Digest, fsx};

use crate::error::{Error, IoCtx, Result};
use crate::{Store, records};

impl Store {
    /// Where blob `d` is kept.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(d.hex())
    }

    /// Store a blob (config, manifest) under its digest.
    pub(crate) fn put_blob(&self, data: &[u8]) -> Result<Digest> {
        let d = Digest::of(data);
        let p = self.blob_path(&d);
        if !p.exists() {
            fsx::write_atomic(&p, data).ctx("write blob", &p)?;
        }
        Ok(d)
    }

    /// A blob's bytes, checked against its digest. Configs and manifests
    /// are small; layer blobs are streamed by export instead.
    pub fn blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(d);
        let data = std::fs::read(&p).ctx("read blob", &p)?;
        let got = Digest::of(&data);
        if got != *d {
            return Err(Error::DigestMismatch {
                what: format!("stored blob {}", p.display()),
                expected: d.to_string(),
                actual: got.to_string(),
            });
        }
        Ok(data)
    }

    /// Remove blob `d` unless an image or (another) layer still refers to
    /// it.
    pub(crate) fn drop_blob_if_unused(
        &self,
        d: &Digest,
        except_layer: Option<&Digest>,
    ) -> Result<()> {
        let used = self.db.read("look up blob", |tx| {
            let by_layer = match except_layer {
                Some(l) => records::blob_kept_by_other(tx, d, l)?,
                None => records::blob_kept_by_other(tx, d, &Digest::of(b""))?,
            };
            Ok(by_layer || records::blob_used_by_image(tx, d)?)
        })?;
        if !used {
            let p = self.blob_path(d);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::Io {
                        op: "remove blob",
                        path: p,
                        err: e,
                    });
                }
            }
        }
        Ok(())
    }
}
