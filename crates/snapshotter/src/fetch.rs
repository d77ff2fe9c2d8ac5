//! containerd's remote-snapshotter protocol, as stargz-snapshotter uses
//! it: when a Prepare carries `containerd.io/snapshot.ref` (the layer's
//! chain ID) and the CRI plugin's `containerd.io/snapshot/cri.image-ref` /
//! `cri.layer-digest` labels, Strata fetches the layer from the registry
//! itself, applies it with its own apply into a committed snapshot
//! labelled with that chain ID, and answers `AlreadyExists`; containerd
//! then finds it (a Walk filtered by the label and the parent) and skips
//! its own download and unpack. When the fetch cannot be made (no labels,
//! credentials, network), the Prepare goes on as usual and containerd
//! unpacks the layer itself.

use std::collections::BTreeMap;

use strata_core::Digest;
use strata_registry::Client;
use strata_registry::download::open_blob;
use strata_store::Store;

use crate::error::{Error, Result};

/// The chain ID containerd wants.
pub const SNAPSHOT_REF: &str = "containerd.io/snapshot.ref";
/// The image the layer belongs to.
pub const IMAGE_REF: &str = "containerd.io/snapshot/cri.image-ref";
/// The layer's blob digest.
pub const LAYER_DIGEST: &str = "containerd.io/snapshot/cri.layer-digest";

/// Fetches layers for containerd.
#[derive(Debug)]
pub struct Fetcher {
    client: Client,
}

impl Fetcher {
    /// A fetcher using `client` (its credentials and insecure registries).
    pub fn new(client: Client) -> Fetcher {
        Fetcher { client }
    }

    /// The chain ID a Prepare asks for, when its labels allow a fetch.
    pub fn wants(labels: &BTreeMap<String, String>) -> Option<&str> {
        let t = labels.get(SNAPSHOT_REF)?;
        (labels.contains_key(IMAGE_REF) && labels.contains_key(LAYER_DIGEST)).then_some(t.as_str())
    }

    /// Make the committed snapshot containerd wants on `parent`; `Ok(true)`
    /// when it exists now (answer `AlreadyExists`).
    pub fn fetch(
        &self,
        store: &Store,
        parent: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<bool> {
        let Some(target) = Self::wants(labels) else {
            return Ok(false);
        };
        if store
            .snapshot_by_label(SNAPSHOT_REF, target, parent)?
            .is_some()
        {
            return Ok(true);
        }
        let image = &labels[IMAGE_REF];
        let digest = Digest::parse(&labels[LAYER_DIGEST])
            .map_err(|e| Error::BadRequest(format!("label {LAYER_DIGEST}: {e}")))?;
        let named = strata_store::reference::parse_named(image)?;
        let ep = self.client.endpoint(&named.registry);
        let mut body = open_blob(&self.client, &ep, &named.repository, &digest)
            .map_err(|e| Error::Fetch(e.to_string()))?;
        let name = format!(
            "strata-fetched/{target}/{}",
            if parent.is_empty() { "-" } else { parent }
        );
        tracing::info!(layer = %digest, image, snapshot = name, "fetching the layer for containerd");
        store.snapshot_apply(&name, parent, labels.clone(), &mut body, Some(&digest))?;
        Ok(true)
    }
}
