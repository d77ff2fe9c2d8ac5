//! The storage driver trait and the types it speaks.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::archive::tar::RawSink;
use crate::error::{Error, Result};
use crate::id::LayerId;

pub use crate::archive::ApplyStats;
pub use crate::walk::{Change, ChangeKind, DiffMethod, WalkPurpose};

/// What a driver can do; the conformance suite branches on these, never on
/// driver names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// `diff` / `changes` look only at what the layer itself holds
    /// (O(changes)), not at both full trees.
    pub native_diff: bool,
    /// The deepest stack of layers (a layer and all its ancestors) the
    /// driver can create and mount; `None` when unlimited.
    pub max_depth: Option<usize>,
    /// `create` of a child shares data blocks with the parent (reflink,
    /// snapshot or union) instead of copying them.
    pub shares_data: bool,
    /// Mounting a read-only layer gives a view that refuses writes.
    pub read_only_mounts: bool,
    /// The driver can create device nodes and set any owner (runs as root).
    pub privileged: bool,
    /// `user.*` extended attributes can be stored in layers.
    pub user_xattrs: bool,
    /// `trusted.*` extended attributes can be stored in layers.
    pub trusted_xattrs: bool,
}

impl Capabilities {
    /// What a backend that runs as root on a file system with every
    /// feature has (kernel backends: overlay2, btrfs); `native_diff` and
    /// `max_depth` are the backend's to say.
    pub fn full(native_diff: bool, max_depth: Option<usize>) -> Capabilities {
        Capabilities {
            native_diff,
            max_depth,
            shares_data: true,
            read_only_mounts: true,
            privileged: true,
            user_xattrs: true,
            trusted_xattrs: true,
        }
    }
}

/// Options of `create` / `create_rw`, like Docker's `--storage-opt`.
/// No driver accepts options it does not understand: an unknown key is an
/// `InvalidInput` error naming it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOpts {
    /// Driver-specific options (`size=`, ...).
    pub storage_opts: BTreeMap<String, String>,
}

impl CreateOpts {
    /// Refuse any option (for drivers that support none).
    pub fn refuse_all(&self, driver: &str) -> Result<()> {
        if let Some((k, _)) = self.storage_opts.iter().next() {
            return Err(Error::invalid(
                format!("storage option {k:?}"),
                format!("driver {driver} supports no storage options"),
            ));
        }
        Ok(())
    }
}

/// What `diff` wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DiffStats {
    /// Bytes of the tar written.
    pub tar_bytes: u64,
    /// Tar entries written.
    pub entries: u64,
    /// How the changes were found.
    pub method: DiffMethod,
}

/// A layer as `layers()` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// The layer.
    pub id: LayerId,
    /// The layer it sits on.
    pub parent: Option<LayerId>,
    /// A container (read-write) layer.
    pub rw: bool,
    /// Seconds since the epoch.
    pub created: i64,
    /// Live references of `mount` not yet dropped by `unmount`.
    #[serde(default)]
    pub mount_count: u32,
}

/// A mount that shows a layer, as data, for a caller that mounts it itself
/// (containerd's `Mount`: `mount -t KIND -o OPTIONS SOURCE TARGET`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// The file system type: `bind` or `overlay`.
    pub kind: String,
    /// The source (a directory for `bind`, `overlay` for overlays).
    pub source: String,
    /// fstab-style options (`ro`, `rbind`, `lowerdir=...`).
    pub options: Vec<String>,
}

impl MountSpec {
    /// A bind mount of `dir`, read-only or read-write.
    pub fn bind(dir: &Path, read_only: bool) -> MountSpec {
        MountSpec {
            kind: "bind".into(),
            source: dir.display().to_string(),
            options: vec!["rbind".into(), if read_only { "ro" } else { "rw" }.into()],
        }
    }

    /// Whether the mount refuses writes.
    pub fn read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
            || (self.kind == "overlay" && !self.options.iter().any(|o| o.starts_with("upperdir=")))
    }
}

/// Disk used by a layer's own content (`du`: allocated blocks, each inode
/// once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Bytes of allocated blocks.
    pub bytes: u64,
    /// Inodes, hardlinks counted once.
    pub inodes: u64,
}

/// Which base to compare a layer with in `diff` / `changes` / `diff_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffBase<'a> {
    /// The layer's own parent (the whole tree for a base layer).
    Parent,
    /// Any other layer (typically an older ancestor).
    Layer(&'a LayerId),
    /// Nothing: the whole merged tree of the layer.
    Empty,
}

impl<'a> DiffBase<'a> {
    /// `Parent` for `None`, else `Layer`.
    pub fn from_option(parent: Option<&'a LayerId>) -> Self {
        match parent {
            Some(p) => DiffBase::Layer(p),
            None => DiffBase::Parent,
        }
    }
}

/// Key/value pairs for humans (`driver status`, `metadata`).
pub type Pairs = Vec<(String, String)>;

/// A storage driver: keeps layers (read-only image layers and read-write
/// container layers) and turns them into mounted root file systems and back
/// into layer diffs.
///
/// All methods take `&self` and are safe to call from several threads and
/// processes at once on one root: drivers serialise through file locks under
/// their root.
pub trait Driver: Send + Sync + fmt::Debug {
    /// The registry name (`vfs`, `overlay2`, `btrfs`).
    fn name(&self) -> &'static str;

    /// The root the driver was opened on.
    fn root(&self) -> &Path;

    /// What this driver can do here.
    fn capabilities(&self) -> Capabilities;

    /// Create an empty read-only layer on `parent` (its view is the parent's
    /// view), to be filled by `apply_diff`. Atomic: after a crash either
    /// the whole layer exists or nothing does.
    fn create(&self, id: &LayerId, parent: Option<&LayerId>, opts: &CreateOpts) -> Result<()>;

    /// Create a read-write (container) layer on `parent`.
    fn create_rw(&self, id: &LayerId, parent: Option<&LayerId>, opts: &CreateOpts) -> Result<()>;

    /// Apply an OCI layer diff (plain, gzip or zstd tar). When `id` does
    /// not exist, the layer is created on `parent` and filled atomically: on
    /// any error nothing named `id` is left. When `id` exists (made by
    /// `create`, no children, not mounted), the diff is applied in place and
    /// the layer is removed if applying fails.
    fn apply_diff(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        diff: &mut (dyn Read + Send),
    ) -> Result<ApplyStats> {
        self.apply_diff_split(id, parent, diff, None)
    }

    /// [`apply_diff`](Self::apply_diff), reporting every raw byte of the
    /// tar that is not file content to `raw` (the store keeps these to
    /// re-create the tar byte for byte, like tar-split).
    fn apply_diff_split(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        diff: &mut (dyn Read + Send),
        raw: Option<&mut dyn RawSink>,
    ) -> Result<ApplyStats>;

    /// [`apply_diff_split`](Self::apply_diff_split) into a new layer,
    /// without forcing the layer's own metadata to disk yet: the caller
    /// calls [`sync_layers`](Self::sync_layers) before it records the
    /// layer anywhere that must survive a power cut. An import of many
    /// layers syncs them in one pass instead of one by one. By default the
    /// layer is made durable at once.
    fn apply_diff_lazy(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        diff: &mut (dyn Read + Send),
        raw: Option<&mut dyn RawSink>,
    ) -> Result<ApplyStats> {
        self.apply_diff_split(id, parent, diff, raw)
    }

    /// Force to disk what [`apply_diff_lazy`](Self::apply_diff_lazy) left
    /// unforced for the layers `ids` (each directory synced once for all
    /// of them). Their content is not forced, as by no apply: like Docker's
    /// and containerd's, it follows the file system's own writeback.
    fn sync_layers(&self, ids: &[LayerId]) -> Result<()> {
        let _ = ids;
        Ok(())
    }

    /// Turn the read-write layer `id` into the read-only layer `new_id`,
    /// in place and in O(1) (no data is copied): what containerd's Commit
    /// and `container commit` need. `id` must not be mounted and must have
    /// no children; afterwards `id` no longer exists, and `new_id` has the
    /// same parent and the same view.
    fn commit(&self, id: &LayerId, new_id: &LayerId) -> Result<()>;

    /// Mount the layer's merged view and return its path. Reference counted
    /// across processes: every `mount` needs one `unmount`.
    fn mount(&self, id: &LayerId) -> Result<PathBuf>;

    /// Drop one reference; unmount when none is left.
    fn unmount(&self, id: &LayerId) -> Result<()>;

    /// The mounts that show the layer's merged view, as data, for a
    /// caller that mounts and unmounts them itself (containerd): read-write
    /// for a read-write layer, read-only otherwise. Nothing is mounted and
    /// nothing is counted; absolute paths only.
    fn mount_specs(&self, id: &LayerId) -> Result<Vec<MountSpec>>;

    /// Disk used by what the layer itself holds: O(changes) where the
    /// backend keeps only the layer's own files (overlay2), else the
    /// layer's whole tree (as containerd's native and btrfs snapshotters).
    fn usage(&self, id: &LayerId) -> Result<Usage>;

    /// Drop every reference at once and unmount (a forced removal);
    /// returns how many references there were. O(1) whatever the count
    /// file says.
    fn release(&self, id: &LayerId) -> Result<u32>;

    /// Write the layer's changes against `base` as an OCI layer tar.
    fn diff(&self, id: &LayerId, base: DiffBase<'_>, out: &mut dyn Write) -> Result<DiffStats>;

    /// The changed paths against `base`, sorted, like `docker diff`.
    fn changes(&self, id: &LayerId, base: DiffBase<'_>) -> Result<Vec<Change>>;

    /// Bytes of file content the layer adds or changes against `base`.
    fn diff_size(&self, id: &LayerId, base: DiffBase<'_>) -> Result<u64>;

    /// Remove a layer. Refused while it has children (`HasChildren`) or is
    /// mounted (`Busy`); unknown ids are `NotFound`.
    fn remove(&self, id: &LayerId) -> Result<()>;

    /// Whether the layer exists.
    fn exists(&self, id: &LayerId) -> bool;

    /// Information about one layer.
    fn layer(&self, id: &LayerId) -> Result<LayerInfo>;

    /// All layers, sorted by id.
    fn layers(&self) -> Result<Vec<LayerInfo>>;

    /// Layers whose metadata cannot be read: (id, why). They are no
    /// layers to any other operation; `check` reports them.
    fn unreadable(&self) -> Result<Vec<(LayerId, String)>> {
        Ok(Vec::new())
    }

    /// Set a layer whose metadata cannot be read aside, with its content
    /// (`HOME/.quarantine/`): nothing is deleted, and the layer is no
    /// longer the driver's. Returns where it went.
    fn quarantine(&self, id: &LayerId) -> Result<std::path::PathBuf> {
        Err(crate::Error::unsupported(
            format!("quarantine of layer {id}"),
            "this driver keeps no metadata files",
        ))
    }

    /// The mount counts of the layers that are mounted (absent: 0), read
    /// at once: what a listing of many layers asks, without reading every
    /// layer's metadata.
    fn mount_counts(&self) -> Result<std::collections::HashMap<LayerId, u32>> {
        Ok(self
            .layers()?
            .into_iter()
            .filter(|l| l.mount_count > 0)
            .map(|l| (l.id, l.mount_count))
            .collect())
    }

    /// Key/value pairs describing the driver and its root.
    fn status(&self) -> Pairs;

    /// Key/value pairs describing one layer (paths, parent, depth...).
    fn metadata(&self, id: &LayerId) -> Result<Pairs>;

    /// Unmount everything this driver has mounted under its root.
    fn cleanup(&self) -> Result<()>;
}

/// Driver-specific options from the command line or a runtime config
/// (`key=value`). Drivers refuse keys they do not know.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverOptions(pub BTreeMap<String, String>);

impl DriverOptions {
    /// Parse `key=value` items.
    pub fn parse<I: IntoIterator<Item = S>, S: AsRef<str>>(items: I) -> Result<Self> {
        let mut m = BTreeMap::new();
        for it in items {
            let it = it.as_ref();
            let (k, v) = it.split_once('=').ok_or_else(|| {
                Error::invalid(format!("driver option {it:?}"), "expected key=value")
            })?;
            m.insert(k.trim().to_string(), v.trim().to_string());
        }
        Ok(DriverOptions(m))
    }

    /// Take a boolean option; error on a value that is not a boolean.
    pub fn take_bool(&mut self, key: &str) -> Result<Option<bool>> {
        match self.0.remove(key) {
            None => Ok(None),
            Some(v) => match v.as_str() {
                "1" | "true" | "yes" | "on" => Ok(Some(true)),
                "0" | "false" | "no" | "off" => Ok(Some(false)),
                _ => Err(Error::invalid(
                    format!("driver option {key}={v}"),
                    "expected true or false",
                )),
            },
        }
    }

    /// Remove and return the option `key`.
    pub fn take(&mut self, key: &str) -> Option<String> {
        self.0.remove(key)
    }

    /// Error on any option left after the driver took the ones it knows.
    pub fn finish(self, driver: &str) -> Result<()> {
        if let Some(k) = self.0.keys().next() {
            return Err(Error::invalid(
                format!("driver option {k:?}"),
                format!("not an option of driver {driver}"),
            ));
        }
        Ok(())
    }
}
