//! Forcing lazily committed layers to disk in one pass: an import of many
//! layers syncs their metadata together instead of a few fsyncs each.

use std::path::PathBuf;

use super::DriverState;
use crate::error::{Error, IoContext, Result};
use crate::fsx;
use crate::id::LayerId;

impl DriverState {
    /// Threads that force layers' metadata to disk together.
    const SYNC_THREADS: usize = 8;

    /// Force to disk what a lazy `commit` of the layers `ids` left: each
    /// one's metadata file, then the metadata and layer directories once.
    pub fn sync_layers(&self, ids: &[LayerId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        // from a few threads at once: the file system commits concurrent
        // fsyncs together (one journal commit for many files)
        let paths: Vec<PathBuf> = ids.iter().map(|id| self.meta_path(id)).collect();
        let per = paths.len().div_ceil(Self::SYNC_THREADS);
        std::thread::scope(|sc| {
            let workers: Vec<_> = paths
                .chunks(per)
                .map(|part| {
                    sc.spawn(move || {
                        part.iter()
                            .try_for_each(|p| fsx::fsync_path(p).ctx("fsync", p))
                    })
                })
                .collect();
            workers.into_iter().try_for_each(|w| {
                w.join()
                    .map_err(|_| Error::invalid("fsync", "a syncing thread panicked"))?
            })
        })?;
        let metas = self.home.join(".meta");
        fsx::fsync_dir(&metas).ctx("fsync", &metas)?;
        fsx::fsync_dir(&self.layers).ctx("fsync", &self.layers)
    }
}
