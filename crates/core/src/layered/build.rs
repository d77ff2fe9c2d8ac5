//! Making and unmaking layers: build in staging and publish, apply staged
//! or in place with rollback, commit in place, remove through the trash.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;

use super::{Backend, Layered, NewLayer, open_content};
use crate::archive::tar::RawSink;
use crate::archive::{self, ApplyOptions, ApplyStats};
use crate::error::{Error, Result};
use crate::id::LayerId;
use crate::state::{APPLIED, LayerMeta, now};

/// A diff to fill a new layer with, and where its raw bytes go.
pub(super) type Fill<'a, 'r> = (&'a mut (dyn Read + Send), Option<&'r mut dyn RawSink>);

impl<B: Backend> Layered<B> {
    /// Build layer `id` on `parent` in a staging directory, fill it with a
    /// diff if one is given, and publish it atomically; on any error
    /// nothing named `id` is left. `durable`: forced to disk before
    /// returning (else by `sync_layers` later, or never for empty layers).
    pub(super) fn build(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        rw: bool,
        fill: Option<Fill<'_, '_>>,
        durable: bool,
    ) -> Result<Option<ApplyStats>> {
        let parent_chain = {
            let _l = self.state.lock()?;
            self.state.check_new(id, parent)?
        };
        let depth = parent_chain.len() + 1;
        if let Some(max) = self.backend.capabilities().max_depth
            && depth > max
        {
            return Err(Error::MaxDepth {
                depth,
                max,
                driver: self.backend.name().into(),
            });
        }
        let started = std::time::Instant::now();
        let held = self.state.new_staging(id)?;
        let staging = held.path.clone();
        let mut meta = LayerMeta::new(id, parent, rw);
        let r = (|| {
            let new = NewLayer {
                dir: &staging,
                parent: &parent_chain,
                meta: &mut meta,
            };
            self.backend.make_layer(&self.state, new)?;
            let stats = match fill {
                Some((diff, raw)) => {
                    let s = self.fill(&staging, &parent_chain, diff, raw, &mut meta)?;
                    meta.extra.insert(APPLIED.into(), "true".into());
                    Some(s)
                }
                None => None,
            };
            self.backend.publish(&self.state, &meta)?;
            self.state.commit(&staging, &meta, durable)?;
            if !rw {
                self.backend
                    .set_read_only(&self.state.layer_path(id), true)?;
            }
            let ms = started.elapsed().as_secs_f64() * 1e3;
            match &stats {
                Some(s) => tracing::info!(
                    layer = %id, parent = ?parent.map(|p| p.as_str()), entries = s.entries,
                    bytes = s.tar_bytes, diff_id = %s.diff_id, ms = format_args!("{ms:.1}"),
                    "applied a layer"
                ),
                None => tracing::info!(
                    layer = %id, parent = ?parent.map(|p| p.as_str()), rw,
                    ms = format_args!("{ms:.1}"), "created a layer"
                ),
            }
            Ok(stats)
        })();
        if let Err(e) = &r
            && staging.symlink_metadata().is_ok()
        {
            tracing::info!(layer = %id, "removing a layer that could not be made: {e}");
            let _ = crate::mounts::unmount_all_under(&staging);
            let _ = self.backend.discard(&staging, e);
            self.backend.forget(&self.state, &meta);
        }
        r
    }

    /// Apply a diff into layer `id`: in place when `create` made it, else
    /// into a new layer (forced to disk at once when `durable`).
    pub(super) fn apply_new_or_in_place(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        diff: &mut (dyn Read + Send),
        raw: Option<&mut dyn RawSink>,
        durable: bool,
    ) -> Result<ApplyStats> {
        if self.state.exists(id) {
            return self.apply_in_place(id, parent, diff, raw);
        }
        self.build(id, parent, false, Some((diff, raw)), durable)?
            .ok_or_else(|| {
                Error::invalid(format!("apply to layer {id}"), "internal: no statistics")
            })
    }

    /// Apply `diff` into the layer directory `dir` whose parent's chain is
    /// `parent`.
    fn fill(
        &self,
        dir: &Path,
        parent: &[LayerMeta],
        diff: &mut (dyn Read + Send),
        mut raw: Option<&mut dyn RawSink>,
        meta: &mut LayerMeta,
    ) -> Result<ApplyStats> {
        let lower = if self.backend.apply_sees_parent() && !parent.is_empty() {
            Some(self.backend.view(&self.state, parent)?)
        } else {
            None
        };
        let content = self.backend.content_dir(dir);
        let fd = open_content(&self.backend, dir)?;
        let stats = archive::apply(
            fd.as_fd(),
            &content,
            diff,
            ApplyOptions {
                whiteouts: Some(self.backend.whiteouts()),
                lower: lower.as_ref().map(|v| v.fd()),
                raw: crate::archive::tar::reborrow_sink(&mut raw),
                ..Default::default()
            },
        )?;
        drop(lower);
        self.backend.after_apply(&content, meta)?;
        Ok(stats)
    }

    /// Apply a diff into layer `id`, made by `create` and never filled;
    /// the layer is removed if applying fails.
    pub(super) fn apply_in_place(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        diff: &mut (dyn Read + Send),
        raw: Option<&mut dyn RawSink>,
    ) -> Result<ApplyStats> {
        let meta = self.state.begin_apply_in_place(id, parent)?;
        let r = (|| {
            let dir = self.state.layer_path(id);
            let parent_chain = match &meta.parent {
                Some(p) => self.state.chain(p)?,
                None => Vec::new(),
            };
            self.backend.set_read_only(&dir, false)?;
            let mut m = meta.clone();
            let s = self.fill(&dir, &parent_chain, diff, raw, &mut m)?;
            self.backend.set_read_only(&dir, true)?;
            self.state.mark_applied(m)?;
            Ok(s)
        })();
        if r.is_err() {
            tracing::info!(layer = %id, "apply failed; removing the half-made layer");
            let _ = self.remove_layer(id);
        }
        r
    }

    /// The read-write layer `id` becomes the read-only layer `new_id`.
    pub(super) fn commit_in_place(&self, id: &LayerId, new_id: &LayerId) -> Result<()> {
        let old = self.state.meta(id)?;
        let mut new = old.clone();
        new.id = new_id.clone();
        new.rw = false;
        new.created = now();
        new.extra.insert(APPLIED.into(), "true".into());
        self.state.promote(id, &new, &|dir| {
            self.backend.promoted(&self.state, dir, &new)
        })?;
        if let super::MountPoint::At(p) = self.backend.mount_point(&self.state, &old) {
            #[allow(clippy::disallowed_methods)] // our mount point, not layer content
            let _ = std::fs::remove_dir(p);
        }
        tracing::info!(layer = %id, now = %new_id, "committed a read-write layer in place");
        Ok(())
    }

    /// Remove a layer: refused while it has children or is mounted.
    pub(super) fn remove_layer(&self, id: &LayerId) -> Result<()> {
        let meta = self.state.meta(id)?;
        let trash = self
            .state
            .begin_remove(id, &|dir| self.backend.set_read_only(dir, false))?;
        if let super::MountPoint::At(p) = self.backend.mount_point(&self.state, &meta) {
            #[allow(clippy::disallowed_methods)] // our mount point, not layer content
            let _ = std::fs::remove_dir(p);
        }
        self.backend.forget(&self.state, &meta);
        let started = std::time::Instant::now();
        let r = self.backend.destroy(&trash.path);
        tracing::info!(
            layer = %id, ms = format_args!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
            "removed a layer"
        );
        r
    }
}
