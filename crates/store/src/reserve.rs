//! Driver layer names reserved ahead of an import of many layers: their
//! intents are recorded in one transaction (one fsync) instead of one
//! each, and recovery treats them like any other intent (a name whose
//! driver layer was never made is simply dropped).

use strata_core::LayerId;

use crate::error::Result;
use crate::{Store, random_id, records};

/// Names with recorded intents; those not taken are dropped again when
/// this goes.
pub(crate) struct Reserved<'s> {
    store: &'s Store,
    ids: Vec<LayerId>,
}

impl Store {
    /// Reserve `n` new driver layer names (one transaction). Call with the
    /// work lock held, as for any intent.
    pub(crate) fn reserve_caches(&self, n: usize) -> Result<Reserved<'_>> {
        let ids = (0..n)
            .map(|_| Self::cache_id(&random_id()))
            .collect::<Result<Vec<_>>>()?;
        if !ids.is_empty() {
            self.db.write("record intents", |tx| {
                ids.iter()
                    .try_for_each(|id| records::add_intent(tx, id.as_str(), "create"))
            })?;
        }
        Ok(Reserved { store: self, ids })
    }
}

impl Reserved<'_> {
    /// The next reserved name, if one is left.
    pub(crate) fn take(&mut self) -> Option<LayerId> {
        self.ids.pop()
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.ids);
        // no driver layer was made under these names: only the intents go
        // (recovery would drop them the same way after a crash)
        if let Err(e) = self.store.db.write_lazy("drop intents", |tx| {
            ids.iter()
                .try_for_each(|id| records::remove_intent(tx, id.as_str()))
        }) {
            tracing::warn!("dropping unused intents: {e}");
        }
    }
}
