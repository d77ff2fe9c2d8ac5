//! Images: finding one the way Docker resolves a reference, tagging,
//! removing (untag; delete when untagged and unused; prune its layers).

use strata_core::Digest;

use crate::error::{Error, Result};
use crate::records::{self, ImageRecord};
use crate::{Store, reference};

impl Store {
    /// Every image, newest first.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        self.db.read("list images", |tx| records::images(tx))
    }

    /// The image with ID `id`.
    pub fn image_record(&self, id: &Digest) -> Result<Option<ImageRecord>> {
        self.db.read("read image", |tx| records::image(tx, id))
    }

    /// Find an image the way Docker does: a digest reference
    /// (`repo@sha256:...`), else an exact tag, else a full image ID, else
    /// an unambiguous prefix of one. A tag that looks like hex is a tag
    /// first: `rm edfe98` never deletes another image whose ID starts so.
    pub fn find_image(&self, r: &str) -> Result<ImageRecord> {
        let id = self.db.read("find image", |tx| resolve(tx, r))?;
        self.image_record(&id)?
            .ok_or_else(|| Error::NoSuchImage(r.to_string()))
    }

    /// The images that references `refs` name, in one read (what `ps`
    /// shows per container); `None` where a reference names no image.
    pub fn resolve_images(&self, refs: &[&str]) -> Result<Vec<Option<Digest>>> {
        self.db.read("find images", |tx| {
            refs.iter()
                .map(|r| match resolve(tx, r) {
                    Ok(id) => Ok(Some(id)),
                    Err(e)
                        if matches!(
                            e.kind(),
                            crate::ErrorKind::NotFound
                                | crate::ErrorKind::Conflict
                                | crate::ErrorKind::InvalidInput
                        ) =>
                    {
                        Ok(None)
                    }
                    Err(e) => Err(e),
                })
                .collect()
        })
    }

    /// An image's config, parsed.
    pub fn image_config(&self, img: &ImageRecord) -> Result<oci_spec::image::ImageConfiguration> {
        let data = self.blob(&img.id)?;
        crate::config::parse(&data, &format!("config of image {}", img.id.short()))
    }

    /// The image's top layer record (`None` for an image without layers).
    pub fn top_layer(&self, img: &ImageRecord) -> Result<Option<crate::LayerRecord>> {
        match img.layers.last() {
            Some(c) => Ok(Some(
                self.layer(c)?
                    .ok_or_else(|| Error::NoSuchLayer(c.to_string()))?,
            )),
            None => Ok(None),
        }
    }

    /// Give `tag` to image `id` (taking it from any other image).
    pub fn tag_image(&self, id: &Digest, tag: &str) -> Result<()> {
        let tag = reference::normalize_tag(tag)?;
        self.db.write("tag image", |tx| {
            if records::image(tx, id)?.is_none() {
                return Err(Error::NoSuchImage(id.to_string()));
            }
            records::set_tag(tx, &tag, id)
        })
    }

    /// `image rm`: untag, and delete the image when no tag is left (and
    /// then its layers no other image or container uses). Returns the lines
    /// Docker prints (`Untagged: ...`, `Deleted: ...`).
    pub fn remove_image(&self, r: &str, force: bool) -> Result<Vec<String>> {
        // from the check of its users to the removal of its layers, no
        // container may be made on it and no export read it
        let _g = self.gc_lock()?;
        let mut out = Vec::new();
        let img = self.find_image(r)?;
        let by_tag = reference::normalize_tag(r)
            .ok()
            .filter(|t| img.repo_tags.contains(t));
        let users = self
            .db
            .read("find users", |tx| records::containers_of_image(tx, &img.id))?;
        if let Some(t) = &by_tag
            && (img.repo_tags.len() > 1 || !users.is_empty() && !force)
        {
            if img.repo_tags.len() == 1 {
                return Err(Error::MustForce {
                    reason: format!(
                        "unable to remove repository reference \"{r}\" (must force) - container {} is using its referenced image {}",
                        users[0],
                        img.id.short()
                    ),
                });
            }
            self.db.write("untag", |tx| records::remove_tag(tx, t))?;
            out.push(format!("Untagged: {t}"));
            return Ok(out);
        }
        if by_tag.is_none() && img.repo_tags.len() > 1 && !force {
            return Err(Error::MustForce {
                reason: format!(
                    "unable to delete {} (must be forced) - image is referenced in multiple repositories",
                    img.id.short()
                ),
            });
        }
        if !users.is_empty() {
            return Err(Error::ImageInUse {
                image: img.id.short().to_string(),
                containers: users.join(", "),
            });
        }
        out.extend(img.repo_tags.iter().map(|t| format!("Untagged: {t}")));
        out.extend(img.repo_digests.iter().map(|d| format!("Untagged: {d}")));
        self.db
            .write("drop image", |tx| records::delete_image(tx, &img.id))?;
        out.push(format!("Deleted: {}", img.id));
        self.drop_blob_if_unused(&img.id, None)?;
        if let Some(m) = &img.manifest {
            self.drop_blob_if_unused(m, None)?;
        }
        for l in self.prune_chain(img.layers.last())? {
            out.push(format!("Deleted: {}", l.chain_id));
        }
        Ok(out)
    }
}

/// The ID `r` names (see [`Store::find_image`]).
fn resolve(tx: &rusqlite::Connection, r: &str) -> Result<Digest> {
    let not_found = || Error::NoSuchImage(r.to_string());
    if r.contains('@') {
        let d = reference::normalize_digest_ref(r)?;
        return records::image_by_repo_digest(tx, &d)?.ok_or_else(not_found);
    }
    if let Ok(tag) = reference::normalize_tag(r)
        && let Some(id) = records::image_by_tag(tx, &tag)?
    {
        return Ok(id);
    }
    let hex = r.strip_prefix("sha256:").unwrap_or(r);
    let is_hex = !hex.is_empty() && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !is_hex || (hex.len() < 4 && !r.starts_with("sha256:")) {
        return Err(not_found());
    }
    let ids = records::image_ids_with_prefix(tx, hex)?;
    match ids.as_slice() {
        [one] => Ok(Digest::parse(one)?),
        [] => Err(not_found()),
        _ => Err(Error::Ambiguous {
            what: "image",
            prefix: r.to_string(),
            count: ids.len(),
        }),
    }
}
