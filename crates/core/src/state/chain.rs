//! Parent chains, kept between calls: a long-lived process (the
//! snapshotter) asks for the chain of the same deep image on every
//! container it prepares and mounts, and reading it afresh costs a stat
//! per layer.
//!
//! A chain is a list of shared nodes (one per layer, each pointing at its
//! parent's), so the cache holds one node a layer however many chains
//! share it. A hit costs one stat: the node of the layer asked about is
//! used when its metadata file is the one the node was read from (same
//! inode and ctime; every rewrite renames a new file over it). Its
//! ancestors are not stat'ed again: a layer's parent never changes and a
//! layer with children cannot be removed, so while the layer stands, its
//! ancestors stand as they were read. (The one value written later into a
//! layer that may have children, overlay2's "native diff verified" mark,
//! only saves work when present; a node without it is merely slower.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{DriverState, LayerMeta};
use crate::error::{Error, Result};
use crate::id::LayerId;

/// (inode, ctime seconds, ctime nanoseconds) of a metadata file.
pub(super) type Stamp = (u64, i64, i64);

/// Nodes kept at most; past it the cache starts over.
const MAX_NODES: usize = 16_384;

#[derive(Debug)]
pub(super) struct Node {
    meta: LayerMeta,
    stamp: Stamp,
    parent: Option<Arc<Node>>,
}

/// The cache: each layer's latest node.
pub(super) type Chains = Mutex<HashMap<LayerId, Arc<Node>>>;

impl DriverState {
    /// The layer and its ancestors, the layer first.
    pub fn chain(&self, id: &LayerId) -> Result<Vec<LayerMeta>> {
        let mut out = Vec::new();
        let mut n = Some(self.chain_node(id)?);
        while let Some(node) = n {
            out.push(node.meta.clone());
            n = node.parent.clone();
        }
        Ok(out)
    }

    /// Drop the node of a layer that goes.
    pub(super) fn forget_chain(&self, id: &LayerId) {
        self.chains
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    fn cached_node(&self, id: &LayerId, stamp: Stamp) -> Option<Arc<Node>> {
        let c = self.chains.lock().unwrap_or_else(|e| e.into_inner());
        c.get(id).filter(|n| n.stamp == stamp).cloned()
    }

    /// The node of `id`: layers are read from `id` up until one whose
    /// node is cached and current (or the base layer).
    fn chain_node(&self, id: &LayerId) -> Result<Arc<Node>> {
        let mut read: Vec<(Stamp, LayerMeta)> = Vec::new();
        let mut tail = None;
        let mut cur = Some(id.clone());
        while let Some(c) = cur {
            if read.iter().any(|(_, m)| m.id == c) {
                return Err(self.loops(id, &c));
            }
            let (stamp, m) = self.meta_stamped(&c)?;
            if let Some(n) = self.cached_node(&c, stamp) {
                tail = Some(n);
                break;
            }
            cur = m.parent.clone();
            read.push((stamp, m));
        }
        if let Some(t) = &tail {
            // what was read must not sit below itself in the cached part
            let mut n = Some(t);
            while let Some(node) = n {
                if read.iter().any(|(_, m)| m.id == node.meta.id) {
                    return Err(self.loops(id, &node.meta.id));
                }
                n = node.parent.as_ref();
            }
        }
        let mut c = self.chains.lock().unwrap_or_else(|e| e.into_inner());
        if c.len() + read.len() > MAX_NODES {
            c.clear();
        }
        for (stamp, meta) in read.into_iter().rev() {
            let n = Arc::new(Node {
                meta,
                stamp,
                parent: tail.take(),
            });
            c.insert(n.meta.id.clone(), n.clone());
            tail = Some(n);
        }
        tail.ok_or_else(|| Error::not_found(format!("layer {id}")))
    }

    fn loops(&self, id: &LayerId, at: &LayerId) -> Error {
        Error::Corrupt {
            path: self.home.clone(),
            reason: format!("the parent chain of layer {id} loops back to {at}"),
        }
    }
}
