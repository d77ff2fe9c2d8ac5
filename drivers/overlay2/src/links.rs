//! Short links: `l/SHORT -> ../ID/diff`, so that a long stack of lower
//! directories fits in one mount(2) option string (Docker's overlay2 does
//! the same). Each layer's short name is in its metadata (`link`) and in
//! `ID/link`; `ID/lower` lists its ancestors' links, top first.

use std::path::{Path, PathBuf};

use strata_core::error::IoContext;
use strata_core::state::{DriverState, LayerMeta, unique_suffix};
use strata_core::{LayerId, Result};

/// The directory of short links under the driver's home.
pub const LINK_DIR: &str = "l";
/// Metadata key of a layer's short name.
pub const LINK_KEY: &str = "link";

/// A random-looking 26-character short name (Docker's format).
pub fn short_name(id: &LayerId) -> String {
    use sha2::Digest;
    let seed = format!("{id}-{}", unique_suffix());
    let h = sha2::Sha256::digest(seed.as_bytes());
    h.iter().take(26).map(|b| (b'A' + b % 26) as char).collect()
}

/// `l/SHORT` of a layer.
pub fn link_of(home: &Path, meta: &LayerMeta) -> PathBuf {
    let short = meta.extra.get(LINK_KEY).cloned().unwrap_or_default();
    home.join(LINK_DIR).join(short)
}

/// Point the layer's short link at `../ID/diff` (made anew, atomically).
#[allow(clippy::disallowed_methods)] // short links are driver files, not layer content
pub fn point(home: &Path, meta: &LayerMeta) -> Result<()> {
    let link = link_of(home, meta);
    let tmp = home
        .join(LINK_DIR)
        .join(format!(".tmp-{}", unique_suffix()));
    std::os::unix::fs::symlink(format!("../{}/diff", meta.id), &tmp).ctx("symlink", &tmp)?;
    if let Err(e) = std::fs::rename(&tmp, &link) {
        let _ = std::fs::remove_file(&tmp);
        return Err(strata_core::Error::io("rename short link", &link, e));
    }
    Ok(())
}

/// Remove the layer's short link.
#[allow(clippy::disallowed_methods)] // short links are driver files, not layer content
pub fn remove(home: &Path, meta: &LayerMeta) {
    if meta.extra.contains_key(LINK_KEY) {
        let _ = std::fs::remove_file(link_of(home, meta));
    }
}

/// The `lower` file of a layer on `parent` (its visible chain, top first).
pub fn lower_list(visible_parent: &[LayerMeta]) -> String {
    visible_parent
        .iter()
        .map(|m| {
            format!(
                "{LINK_DIR}/{}",
                m.extra.get(LINK_KEY).map_or("", |s| s.as_str())
            )
        })
        .collect::<Vec<_>>()
        .join(":")
}

/// After a crash: every layer's link is made to point at it again, and
/// links whose layer is gone are removed. (Links change only while a
/// staging, trash or intent entry is held, so without one there is
/// nothing to do.)
#[allow(clippy::disallowed_methods)] // short links are driver files, not layer content
pub fn recover(st: &DriverState, full: bool) -> Result<()> {
    if !full {
        return Ok(());
    }
    let links = st.home.join(LINK_DIR);
    for m in st.list()? {
        if m.extra.contains_key(LINK_KEY) {
            point(&st.home, &m)?;
        }
    }
    for e in std::fs::read_dir(&links).ctx("read", &links)? {
        let e = e.ctx("read", &links)?;
        if std::fs::metadata(e.path()).is_err() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}
