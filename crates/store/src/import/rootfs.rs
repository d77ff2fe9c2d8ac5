//! `image import`: a flat root file system tarball (plain or compressed,
//! from a file or a stream) becomes a one-layer image, as `docker import`
//! makes it: a config for this platform, one history entry.

use std::io::Read;

use serde_json::json;

use super::Platform;
use crate::error::Result;
use crate::records::ImageRecord;
use crate::{Store, now, reference};

/// How `image import` names and describes the image.
#[derive(Debug, Clone, Default)]
pub struct RootfsOpts {
    /// `NAME[:TAG]` to give it.
    pub tag: Option<String>,
    /// The history entry's comment.
    pub message: Option<String>,
    /// Its platform (default: this machine's).
    pub platform: Option<Platform>,
    /// Where it came from, for the history entry.
    pub source: String,
}

impl Store {
    /// Make a one-layer image of a root file system tarball.
    pub fn import_rootfs(
        &self,
        input: &mut (dyn Read + Send),
        opts: &RootfsOpts,
    ) -> Result<ImageRecord> {
        let tag = opts
            .tag
            .as_deref()
            .map(reference::normalize_tag)
            .transpose()?;
        let p = opts.platform.clone().unwrap_or_else(Platform::host);
        let work = self.work_lock()?;
        let (layer, _) = self.register_layer(None, crate::LayerIn::stream(input))?;
        let created = reference::format_time(now());
        let mut history = json!({"created": created, "created_by": format!("strata image import {}", opts.source)});
        if let Some(m) = &opts.message {
            history["comment"] = json!(m);
        }
        let mut cfg = json!({
            "architecture": p.architecture,
            "os": p.os,
            "created": created,
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id.to_string()]},
            "history": [history],
        });
        if let Some(v) = &p.variant {
            cfg["variant"] = json!(v);
        }
        let bytes = serde_json::to_vec(&cfg)
            .map_err(|e| crate::Error::Internal(format!("writing a config: {e}")))?;
        let tags: Vec<String> = tag.into_iter().collect();
        let img = self.record_image(&bytes, None, std::slice::from_ref(&layer.chain_id), &tags)?;
        drop(work);
        Ok(img)
    }
}
