//! `strata check`: verify the whole graph, and repair in one pass.
//!
//! Checked: every layer's chain ID against its parent and diffID, its
//! parent recorded, no parent cycles (in the store's records or in the
//! driver's), the driver holding each recorded layer with the same parent,
//! tar-splits and kept blobs present; every image's config and layers,
//! which must form one chain; every container's image and read-write
//! layer, sitting on the image's top layer; mount counts against the mount
//! table; snapshots against their layers (kind, parent). Driver layers
//! no record claims (made with `strata layer`) are
//! noted, not counted as problems: they are outside the store.
//!
//! Repair never removes what something live uses: a broken image is
//! removed only when no container uses it, a broken layer record only when
//! no image or layer uses it, and a driver layer whose metadata cannot be
//! read is set aside with its content (`.quarantine/`), never deleted.
//! Repairs converge in one pass. Every action is printed; a dry run prints
//! what would be done and does nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use strata_core::{Digest, LayerId, LayerInfo};

use crate::error::Result;
use crate::records::{ContainerRecord, ImageRecord, LayerRecord};
use crate::{CheckReport, Store, records};

/// How `check` runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOpts {
    /// Fix what can be fixed.
    pub repair: bool,
    /// With `repair`: say what would be done, do nothing.
    pub dry_run: bool,
}

/// A repair, in the order they are applied.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    DropContainer(String, String),
    DropImage(Digest),
    /// A layer record nothing uses (and its driver layer, when there is
    /// one and nothing else uses it).
    DropLayer(Digest),
    Unmount(std::path::PathBuf),
    /// A driver layer whose metadata cannot be read: set aside, with its
    /// content, never deleted.
    Quarantine(LayerId),
}

impl Action {
    fn describe(&self) -> String {
        match self {
            Action::DropContainer(_, name) => format!("remove the record of container {name}"),
            Action::DropImage(id) => format!("remove broken image {}", id.short()),
            Action::DropLayer(c) => format!("remove broken layer {c}"),
            Action::Unmount(p) => format!("unmount stray mount {}", p.display()),
            Action::Quarantine(id) => format!(
                "set driver layer {id} aside (its metadata cannot be read) under the driver's .quarantine/"
            ),
        }
    }
}

/// Everything loaded once: records and the driver's layers.
struct Graph {
    layers: BTreeMap<Digest, LayerRecord>,
    images: Vec<ImageRecord>,
    containers: Vec<ContainerRecord>,
    driver: HashMap<LayerId, LayerInfo>,
    intents: BTreeSet<String>,
    snapshots: Vec<crate::snapshots::SnapshotRow>,
    /// Driver layers whose metadata cannot be read.
    unreadable: Vec<(LayerId, String)>,
}

/// What the checks found.
#[derive(Default)]
struct Findings {
    problems: Vec<String>,
    actions: BTreeSet<Action>,
    broken_layers: BTreeSet<Digest>,
    notes: Vec<String>,
}

impl Findings {
    fn problem(&mut self, p: String, a: Option<Action>) {
        self.problems.push(p);
        if let Some(a) = a {
            self.actions.insert(a);
        }
    }
}

impl Store {
    /// Verify records against the driver and each other; with `repair`,
    /// fix what can be fixed safely, in one pass.
    pub fn check(&self, opts: CheckOpts) -> Result<CheckReport> {
        let _g = self.gc_lock()?;
        let mut rep = CheckReport::default();
        if opts.repair && !opts.dry_run {
            rep = self.recover()?;
        }
        let g = self.load_graph()?;
        let f = g.findings(self)?;
        rep.notes = f.notes;
        if !opts.repair {
            rep.problems.extend(f.problems);
            return Ok(rep);
        }
        // containers and images first, then layers children first
        let mut actions: Vec<&Action> = f.actions.iter().collect();
        actions.sort_by_key(|a| match a {
            Action::Quarantine(_) => (0, 0),
            Action::DropLayer(c) => (2, usize::MAX - g.driver_depth(c)),
            Action::Unmount(_) => (3, 0),
            _ => (1, 0),
        });
        for a in actions {
            if opts.dry_run {
                rep.repaired.push(format!("would {}", a.describe()));
                continue;
            }
            match self.apply_action(a, &g) {
                Ok(()) => rep.repaired.push(a.describe()),
                Err(e) => rep
                    .problems
                    .push(format!("could not {}: {e}", a.describe())),
            }
        }
        if opts.dry_run {
            rep.problems.extend(f.problems);
        } else {
            // what is left after the repairs
            let after = self.load_graph()?.findings(self)?;
            rep.problems.extend(after.problems);
        }
        Ok(rep)
    }

    fn load_graph(&self) -> Result<Graph> {
        let (layers, images, containers, intents, snapshots) = self.db.read("check", |tx| {
            Ok((
                records::layers(tx)?,
                records::images(tx)?,
                records::containers(tx)?,
                records::intents(tx)?,
                crate::snapshots::all_rows(tx)?,
            ))
        })?;
        Ok(Graph {
            layers: layers
                .into_iter()
                .map(|l| (l.chain_id.clone(), l))
                .collect(),
            images,
            containers,
            driver: self
                .driver
                .layers()?
                .into_iter()
                .map(|l| (l.id.clone(), l))
                .collect(),
            intents: intents.into_iter().map(|(c, _)| c).collect(),
            snapshots,
            unreadable: self.driver.unreadable()?,
        })
    }

    fn apply_action(&self, a: &Action, g: &Graph) -> Result<()> {
        match a {
            Action::DropContainer(id, _) => self
                .db
                .write("drop container", |tx| records::delete_container(tx, id)),
            Action::DropImage(id) => {
                self.db
                    .write("drop image", |tx| records::delete_image(tx, id))?;
                self.drop_blob_if_unused(id, None)
            }
            Action::DropLayer(c) => {
                let Some(l) = g.layers.get(c) else {
                    return Ok(());
                };
                let id = Self::cache_id(&l.cache_id)?;
                match self.remove_driver_layer(&id) {
                    Ok(_) => {}
                    // another driver layer sits on it: the driver layer
                    // stays (outside the store), the broken record goes
                    Err(crate::Error::Driver(e))
                        if e.kind() == strata_core::ErrorKind::HasChildren => {}
                    Err(e) => return Err(e),
                }
                self.finish_layer_removal(l)
            }
            Action::Quarantine(id) => self.driver.quarantine(id).map(|_| ()).map_err(Into::into),
            Action::Unmount(p) => {
                strata_core::mounts::unmount_path(p).map_err(|e| crate::Error::Io {
                    op: "unmount",
                    path: p.clone(),
                    err: e,
                })
            }
        }
    }
}

impl Graph {
    fn findings(&self, s: &Store) -> Result<Findings> {
        let mut f = Findings::default();
        for (id, why) in &self.unreadable {
            f.problem(
                format!("driver layer {id}: its metadata cannot be read ({why})"),
                Some(Action::Quarantine(id.clone())),
            );
        }
        self.check_layers(s, &mut f);
        self.check_cycles(&mut f);
        self.check_driver_cycles(&mut f);
        self.check_images(s, &mut f);
        self.check_containers(&mut f);
        for p in crate::snapshots::check_rows(&self.snapshots, &self.driver) {
            f.problem(p, None);
        }
        self.check_outside(&mut f);
        self.check_mounts(s, &mut f)?;
        self.sweep(&mut f);
        Ok(f)
    }

    /// Broken layers that no image left after this repair reaches (through
    /// its layers and their parents) go in the same pass, so that a repair
    /// converges at once: the layers of a dropped image, a parent cycle.
    fn sweep(&self, f: &mut Findings) {
        let dropped: BTreeSet<Digest> = f
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::DropImage(d) => Some(d.clone()),
                _ => None,
            })
            .collect();
        let mut live: BTreeSet<&Digest> = BTreeSet::new();
        let mut todo: Vec<&Digest> = self
            .images
            .iter()
            .filter(|i| !dropped.contains(&i.id))
            .flat_map(|i| i.layers.iter())
            .collect();
        while let Some(c) = todo.pop() {
            if live.insert(c)
                && let Some(p) = self.layers.get(c).and_then(|l| l.parent.as_ref())
            {
                todo.push(p);
            }
        }
        let dead: Vec<Digest> = f
            .broken_layers
            .iter()
            .filter(|c| !live.contains(c))
            .cloned()
            .collect();
        for c in dead {
            f.actions.insert(Action::DropLayer(c));
        }
    }

    /// How deep a recorded layer's driver layer sits (its driver chain),
    /// so that repairs remove children before their parents.
    fn driver_depth(&self, c: &Digest) -> usize {
        let mut n = 0;
        let mut cur = self
            .layers
            .get(c)
            .and_then(|l| LayerId::new(l.cache_id.clone()).ok());
        while let Some(id) = cur {
            n += 1;
            if n > self.driver.len() {
                break; // a driver cycle: reported elsewhere
            }
            cur = self.driver.get(&id).and_then(|d| d.parent.clone());
        }
        n
    }

    /// Is a layer record used: by an image, or as another record's parent?
    fn layer_used(&self, c: &Digest) -> bool {
        self.images.iter().any(|i| i.layers.contains(c))
            || self.layers.values().any(|l| l.parent.as_ref() == Some(c))
    }

    fn drop_layer(&self, c: &Digest) -> Option<Action> {
        (!self.layer_used(c)).then(|| Action::DropLayer(c.clone()))
    }

    fn check_layers(&self, s: &Store, f: &mut Findings) {
        for l in self.layers.values() {
            let c = &l.chain_id;
            let broken = |f: &mut Findings, p: String| {
                f.broken_layers.insert(c.clone());
                f.problem(p, self.drop_layer(c));
            };
            if Digest::chain(l.parent.as_ref(), &l.diff_id) != *c {
                broken(f, format!("layer {c} does not match its parent and diffID"));
            }
            if let Some(p) = &l.parent
                && !self.layers.contains_key(p)
            {
                broken(
                    f,
                    format!("layer {c} has a parent {p} that is not recorded"),
                );
            }
            let Ok(id) = LayerId::new(l.cache_id.clone()) else {
                broken(
                    f,
                    format!("layer {c} has an invalid driver id {:?}", l.cache_id),
                );
                continue;
            };
            match self.driver.get(&id) {
                None => broken(
                    f,
                    format!("layer {c} is recorded but the driver has no layer {id}"),
                ),
                Some(d) => {
                    let want = l
                        .parent
                        .as_ref()
                        .and_then(|p| self.layers.get(p))
                        .map(|p| p.cache_id.as_str());
                    if d.parent.as_ref().map(|p| p.as_str()) != want {
                        broken(
                            f,
                            format!(
                                "layer {c}: the driver's parent of {id} is not the recorded parent's layer"
                            ),
                        );
                    }
                }
            }
            if !s.tarsplit_path(c).exists() {
                f.problem(
                    format!("layer {c} has no tar-split (cannot be exported byte for byte)"),
                    None,
                );
            }
            if let Some(b) = &l.blob
                && !s.blob_path(&b.digest).exists()
            {
                f.problem(
                    format!("layer {c}: its kept blob {} is missing", b.digest),
                    None,
                );
            }
        }
    }

    /// Parent cycles among the store's records.
    fn check_cycles(&self, f: &mut Findings) {
        let mut done: BTreeSet<&Digest> = BTreeSet::new();
        for start in self.layers.keys() {
            let mut path: Vec<&Digest> = Vec::new();
            let mut cur = Some(start);
            while let Some(c) = cur {
                if done.contains(c) {
                    break;
                }
                if let Some(i) = path.iter().position(|p| *p == c) {
                    let cycle: Vec<String> = path[i..].iter().map(|d| d.to_string()).collect();
                    let used = path[i..]
                        .iter()
                        .any(|d| self.images.iter().any(|im| im.layers.contains(d)));
                    f.problems.push(format!(
                        "layers form a parent cycle: {}",
                        cycle.join(" -> ")
                    ));
                    for d in &path[i..] {
                        f.broken_layers.insert((*d).clone());
                        if !used {
                            f.actions.insert(Action::DropLayer((*d).clone()));
                        }
                    }
                    break;
                }
                path.push(c);
                cur = self.layers.get(c).and_then(|l| l.parent.as_ref());
            }
            done.extend(path);
        }
    }

    /// Parent cycles and missing parents among the driver's layers.
    fn check_driver_cycles(&self, f: &mut Findings) {
        for (id, info) in &self.driver {
            if info.parent.as_ref() == Some(id) {
                f.problem(format!("driver layer {id} is its own parent"), None);
                continue;
            }
            let mut seen = BTreeSet::new();
            let mut cur = info.parent.as_ref();
            while let Some(p) = cur {
                if !seen.insert(p) || p == id {
                    f.problem(
                        format!("driver layer {id} has a parent cycle through {p}"),
                        None,
                    );
                    break;
                }
                match self.driver.get(p) {
                    Some(pi) => cur = pi.parent.as_ref(),
                    None => {
                        f.problem(
                            format!("driver layer {id} has a parent {p} the driver does not have"),
                            None,
                        );
                        break;
                    }
                }
            }
        }
    }

    fn check_images(&self, s: &Store, f: &mut Findings) {
        for i in &self.images {
            let users = self.containers.iter().filter(|c| c.image == i.id).count();
            let drop = (users == 0).then(|| Action::DropImage(i.id.clone()));
            if !s.blob_path(&i.id).exists() {
                f.problem(
                    format!("image {} has no config blob", i.id.short()),
                    drop.clone(),
                );
            }
            let mut parent: Option<&Digest> = None;
            for c in &i.layers {
                let l = self.layers.get(c);
                let bad = match l {
                    None => Some("is missing"),
                    Some(_) if f.broken_layers.contains(c) => Some("is broken"),
                    Some(l) if l.parent.as_ref() != parent => {
                        Some("does not sit on the image's layer before it")
                    }
                    Some(_) => None,
                };
                if let Some(why) = bad {
                    let note = if users > 0 {
                        format!(" (kept: {users} container(s) use it)")
                    } else {
                        String::new()
                    };
                    f.problem(
                        format!("image {} needs layer {c}, which {why}{note}", i.id.short()),
                        drop.clone(),
                    );
                    break;
                }
                parent = Some(c);
            }
        }
    }

    fn check_containers(&self, f: &mut Findings) {
        for c in &self.containers {
            let Some(img) = self.images.iter().find(|i| i.id == c.image) else {
                f.problem(
                    format!(
                        "container {} uses image {}, which is not recorded",
                        c.name,
                        c.image.short()
                    ),
                    None,
                );
                continue;
            };
            let Ok(id) = LayerId::new(c.layer.clone()) else {
                f.problem(
                    format!("container {} has an invalid layer id {:?}", c.name, c.layer),
                    None,
                );
                continue;
            };
            let Some(d) = self.driver.get(&id) else {
                let a = Action::DropContainer(c.id.clone(), c.name.clone());
                f.problem(
                    format!("container {} has no read-write layer in the driver", c.name),
                    Some(a),
                );
                continue;
            };
            let want = img
                .layers
                .last()
                .and_then(|t| self.layers.get(t))
                .map(|l| l.cache_id.as_str());
            if d.parent.as_ref().map(|p| p.as_str()) != want {
                f.problem(
                    format!(
                        "container {}: its layer does not sit on its image's top layer",
                        c.name
                    ),
                    None,
                );
            }
        }
    }

    /// Driver layers no record claims: outside the store (`strata layer`).
    fn check_outside(&self, f: &mut Findings) {
        let claimed: BTreeSet<&str> = self
            .layers
            .values()
            .map(|l| l.cache_id.as_str())
            .chain(self.containers.iter().map(|c| c.layer.as_str()))
            .chain(self.snapshots.iter().map(|s| s.layer.as_str()))
            .chain(self.intents.iter().map(|s| s.as_str()))
            .collect();
        let outside: Vec<&LayerId> = self
            .driver
            .keys()
            .filter(|id| !claimed.contains(id.as_str()))
            .collect();
        if !outside.is_empty() {
            f.notes.push(format!(
                "{} driver layer(s) are not the store's (made with `strata layer`); prune and df leave them alone",
                outside.len()
            ));
        }
    }

    /// Mounts under the root that no counted layer accounts for.
    fn check_mounts(&self, s: &Store, f: &mut Findings) -> Result<()> {
        let mounted: Vec<&LayerId> = self
            .driver
            .values()
            .filter(|l| l.mount_count > 0)
            .map(|l| &l.id)
            .collect();
        let table = strata_core::mounts::mounts_under(s.root()).map_err(|e| crate::Error::Io {
            op: "read mounts",
            path: s.root().to_path_buf(),
            err: e,
        })?;
        for m in table {
            let p = m.mount_point.to_string_lossy();
            // temporary views of live operations are held in staging areas
            if p.contains("/.staging/") {
                continue;
            }
            if !mounted.iter().any(|id| p.contains(id.as_str())) {
                let a = Action::Unmount(m.mount_point.clone());
                f.problem(format!("stray mount {}", m.mount_point.display()), Some(a));
            }
        }
        Ok(())
    }
}
