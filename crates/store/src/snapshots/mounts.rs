//! The mounts of snapshots this process made or was asked about, kept so
//! that containerd's `Mounts` (called for every container start) costs a
//! stat instead of a database read and a walk of the parent chain.
//!
//! An entry is dropped when its snapshot is removed or committed here, and
//! a hit counts only while the snapshot's driver layer stands (a layer
//! that goes with a row removed by another process is not served).

use std::collections::HashMap;
use std::sync::Mutex;

use strata_core::{LayerId, MountSpec};

/// Entries kept at most; past it the cache starts over.
const MAX: usize = 16_384;

/// key -> (driver layer, mounts).
#[derive(Debug, Default)]
pub(crate) struct MountsCache(Mutex<HashMap<String, (LayerId, Vec<MountSpec>)>>);

impl MountsCache {
    pub(crate) fn get(&self, key: &str) -> Option<(LayerId, Vec<MountSpec>)> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    pub(crate) fn put(&self, key: &str, layer: &LayerId, specs: &[MountSpec]) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX {
            m.clear();
        }
        m.insert(key.to_string(), (layer.clone(), specs.to_vec()));
    }

    pub(crate) fn forget(&self, key: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    pub(crate) fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}
