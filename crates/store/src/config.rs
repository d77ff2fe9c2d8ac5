//! Image configs, read through `oci-spec`'s types: the diffIDs an import
//! checks layers against, and what listings show (creation time,
//! platform). A config is kept as the bytes it came as (its digest is the
//! image ID); it is only parsed, never re-serialised, except by commit.

use oci_spec::image::ImageConfiguration;
use strata_core::Digest;

use crate::error::{Error, Result};
use crate::reference;

/// What listings show of a config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageMeta {
    /// `created`, as seconds (`None`: missing or not an RFC 3339 time).
    pub created: Option<i64>,
    /// `created` as written.
    pub created_text: Option<String>,
    /// `os` (e.g. `linux`).
    pub os: Option<String>,
    /// `architecture` (e.g. `amd64`).
    pub architecture: Option<String>,
}

/// Parse a config; `what` names it in errors.
pub fn parse(config: &[u8], what: &str) -> Result<ImageConfiguration> {
    ImageConfiguration::from_reader(config).map_err(|e| Error::Corrupt {
        what: what.to_string(),
        reason: format!("not an image config: {e}"),
    })
}

/// What listings show of a config; a config that does not parse shows
/// nothing (it is still stored as it is).
pub fn image_meta(config: &[u8]) -> ImageMeta {
    let Ok(c) = ImageConfiguration::from_reader(config) else {
        return ImageMeta::default();
    };
    let text = c.created().clone();
    ImageMeta {
        created: text.as_deref().and_then(reference::parse_time),
        created_text: text,
        os: Some(c.os().to_string()),
        architecture: Some(c.architecture().to_string()),
    }
}

/// The config's diffIDs, bottom first.
pub fn diff_ids(c: &ImageConfiguration, what: &str) -> Result<Vec<Digest>> {
    c.rootfs()
        .diff_ids()
        .iter()
        .map(|d| {
            Digest::parse(d).map_err(|e| Error::Corrupt {
                what: what.to_string(),
                reason: format!("diff_id: {e}"),
            })
        })
        .collect()
}
