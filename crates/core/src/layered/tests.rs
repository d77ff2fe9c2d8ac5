//! The skeleton over a fake backend: plain directories, copies of the
//! parent, no mounts (recorded instead). Runs without root.

#![allow(clippy::disallowed_methods)] // scratch dirs of the test

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::*;
use crate::copy::{TreeCopy, copy_tree};
use crate::error::IoContext;
use crate::state::{DriverState, LayerMeta, remove_plain_dir};
use crate::{ErrorKind, fsx};

#[derive(Debug, Default)]
struct Fake {
    home: PathBuf,
    max_depth: Option<usize>,
    mounts: Mutex<Vec<(String, PathBuf)>>,
    published: Mutex<Vec<String>>,
}

impl Backend for Fake {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            native_diff: false,
            max_depth: self.max_depth,
            shares_data: false,
            read_only_mounts: false,
            privileged: false,
            user_xattrs: false,
            trusted_xattrs: false,
        }
    }
    fn make_layer(&self, st: &DriverState, new: NewLayer<'_>) -> Result<()> {
        let dir = new.dir;
        fsx::mkdir_p(dir, 0o755).ctx("mkdir", dir)?;
        if let Some(p) = new.parent.first() {
            let src = fsx::open_dir_path(&st.layer_path(&p.id)).ctx("open", dir)?;
            let dst = fsx::open_dir_path(dir).ctx("open", dir)?;
            copy_tree(src.as_fd(), dst.as_fd(), TreeCopy::default()).ctx("copy", dir)?;
        }
        Ok(())
    }
    fn destroy(&self, dir: &Path) -> Result<()> {
        remove_plain_dir(dir)
    }
    fn publish(&self, _: &DriverState, meta: &LayerMeta) -> Result<()> {
        self.published.lock().unwrap().push(meta.id.to_string());
        Ok(())
    }
    fn forget(&self, _: &DriverState, meta: &LayerMeta) {
        self.published
            .lock()
            .unwrap()
            .retain(|p| p != meta.id.as_str());
    }
    fn view(&self, st: &DriverState, chain: &[LayerMeta]) -> Result<View> {
        View::dir(&st.layer_path(&chain[0].id))
    }
    fn mount_point(&self, st: &DriverState, meta: &LayerMeta) -> MountPoint {
        if meta.rw {
            MountPoint::Direct(st.layer_path(&meta.id))
        } else {
            MountPoint::At(self.home.join("mnt").join(meta.id.as_str()))
        }
    }
    fn mount(&self, _: &DriverState, chain: &[LayerMeta], target: &Path) -> Result<()> {
        self.mounts
            .lock()
            .unwrap()
            .push((chain[0].id.to_string(), target.to_path_buf()));
        Ok(())
    }
    fn mounts_dir(&self, _: &DriverState) -> PathBuf {
        self.home.join("mnt")
    }
    fn metadata(&self, _: &DriverState, _: &[LayerMeta]) -> Result<Pairs> {
        Ok(vec![("Fake".into(), "yes".into())])
    }
}

fn id(s: &str) -> LayerId {
    LayerId::new(s).unwrap()
}

fn open(root: &Path, max_depth: Option<usize>) -> Layered<Fake> {
    let home = root.join("fake");
    let st = DriverState::open("fake", root, "dir", &[]).unwrap();
    let b = Fake {
        home: home.clone(),
        max_depth,
        ..Fake::default()
    };
    Layered::open(root, st, b).unwrap()
}

/// A layer tar with the given files.
fn tar(files: &[(&str, &str)]) -> Vec<u8> {
    let mut w = crate::archive::tar::TarWriter::new(Vec::new());
    for (p, c) in files {
        let head = crate::archive::tar::WriteHead {
            path: p.as_bytes(),
            kind: crate::archive::tar::Kind::File,
            link: b"",
            mode: 0o644,
            uid: rustix::process::geteuid().as_raw().into(),
            gid: rustix::process::getegid().as_raw().into(),
            mtime: (1_700_000_000, 0),
            size: c.len() as u64,
            dev_major: 0,
            dev_minor: 0,
            xattrs: &[],
            sparse: None,
        };
        w.write_head(&head).unwrap();
        w.write_data(c.as_bytes()).unwrap();
        w.finish_data(c.len() as u64).unwrap();
    }
    w.finish().unwrap().0
}

fn apply(
    d: &Layered<Fake>,
    name: &str,
    parent: Option<&str>,
    files: &[(&str, &str)],
) -> Result<ApplyStats> {
    let data = tar(files);
    d.apply_diff(&id(name), parent.map(id).as_ref(), &mut &data[..])
}

#[test]
fn apply_builds_a_child_that_sees_its_parent() {
    let t = tempfile::tempdir().unwrap();
    let d = open(t.path(), None);
    let s = apply(&d, "base", None, &[("a", "1")]).unwrap();
    assert_eq!(s.entries, 1);
    apply(&d, "top", Some("base"), &[("b", "22")]).unwrap();
    let top = d.state().layer_path(&id("top"));
    assert_eq!(std::fs::read(top.join("a")).unwrap(), b"1");
    let ch: Vec<String> = d
        .changes(&id("top"), DiffBase::Parent)
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(ch, ["A /b"]);
    assert_eq!(d.diff_size(&id("top"), DiffBase::Parent).unwrap(), 2);
    let mut out = Vec::new();
    let ds = d.diff(&id("top"), DiffBase::Parent, &mut out).unwrap();
    assert_eq!((ds.entries, ds.method), (1, DiffMethod::Naive));
    assert_eq!(d.backend().published.lock().unwrap().len(), 2);
}

#[test]
fn a_failed_apply_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let d = open(t.path(), None);
    let mut data = tar(&[("a", "1"), ("b", "2")]);
    data.truncate(700); // in the middle of the second header
    let e = d.apply_diff(&id("x"), None, &mut &data[..]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(!d.exists(&id("x")));
    assert!(d.layers().unwrap().is_empty());
    assert!(
        d.backend().published.lock().unwrap().is_empty(),
        "publish undone"
    );
    let staging = std::fs::read_dir(t.path().join("fake/.staging"))
        .unwrap()
        .count();
    assert_eq!(staging, 0, "staging left behind");
    // in place: a layer made by create and a bad diff is removed
    d.create(&id("y"), None, &CreateOpts::default()).unwrap();
    assert!(d.apply_diff(&id("y"), None, &mut &data[..]).is_err());
    assert!(!d.exists(&id("y")));
}

#[test]
fn mounts_are_counted_and_unmounted_at_zero() {
    let t = tempfile::tempdir().unwrap();
    let d = open(t.path(), None);
    apply(&d, "ro", None, &[("a", "1")]).unwrap();
    let p1 = d.mount(&id("ro")).unwrap();
    let p2 = d.mount(&id("ro")).unwrap();
    assert_eq!(p1, p2);
    assert_eq!(d.layer(&id("ro")).unwrap().mount_count, 2);
    let e = d.remove(&id("ro")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy);
    d.unmount(&id("ro")).unwrap();
    d.unmount(&id("ro")).unwrap();
    d.unmount(&id("ro")).unwrap(); // one too many: no-op
    assert_eq!(d.layer(&id("ro")).unwrap().mount_count, 0);
    assert!(!p1.exists(), "mount point removed at zero");
    // a read-write layer is its own view
    d.create_rw(&id("rw"), Some(&id("ro")), &CreateOpts::default())
        .unwrap();
    assert_eq!(d.mount(&id("rw")).unwrap(), d.state().layer_path(&id("rw")));
    d.unmount(&id("rw")).unwrap();
}

#[test]
fn commit_in_place_keeps_the_view_and_moves_the_id() {
    let t = tempfile::tempdir().unwrap();
    let d = open(t.path(), None);
    apply(&d, "base", None, &[("a", "1")]).unwrap();
    d.create_rw(&id("c"), Some(&id("base")), &CreateOpts::default())
        .unwrap();
    std::fs::write(d.state().layer_path(&id("c")).join("new"), "x").unwrap();
    let ino = std::fs::metadata(d.state().layer_path(&id("c")).join("new"))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    d.commit(&id("c"), &id("img")).unwrap();
    assert!(!d.exists(&id("c")));
    let info = d.layer(&id("img")).unwrap();
    assert!(!info.rw);
    assert_eq!(info.parent, Some(id("base")));
    let moved = std::fs::metadata(d.state().layer_path(&id("img")).join("new")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::ino(&moved), ino, "no copy");
    let ch: Vec<String> = d
        .changes(&id("img"), DiffBase::Parent)
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(ch, ["A /new"]);
    // refusals: read-only source, taken target, mounted source
    assert_eq!(
        d.commit(&id("img"), &id("z")).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    d.create_rw(&id("c2"), Some(&id("img")), &CreateOpts::default())
        .unwrap();
    assert_eq!(
        d.commit(&id("c2"), &id("base")).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    d.mount(&id("c2")).unwrap();
    assert_eq!(
        d.commit(&id("c2"), &id("z")).unwrap_err().kind(),
        ErrorKind::Busy
    );
    d.unmount(&id("c2")).unwrap();
    d.commit(&id("c2"), &id("z")).unwrap();
}

#[test]
fn removal_respects_children_and_depth_is_bounded() {
    let t = tempfile::tempdir().unwrap();
    let d = open(t.path(), Some(2));
    apply(&d, "a", None, &[]).unwrap();
    apply(&d, "b", Some("a"), &[]).unwrap();
    let e = apply(&d, "c", Some("b"), &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MaxDepth);
    assert_eq!(
        d.remove(&id("a")).unwrap_err().kind(),
        ErrorKind::HasChildren
    );
    d.remove(&id("b")).unwrap();
    d.remove(&id("a")).unwrap();
    assert_eq!(d.remove(&id("a")).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn reopen_repairs_what_a_dead_operation_left() {
    let t = tempfile::tempdir().unwrap();
    {
        let d = open(t.path(), None);
        apply(&d, "a", None, &[("f", "1")]).unwrap();
        d.mount(&id("a")).unwrap(); // the fake mounts nothing: the count is stale
        // a dead build: metadata written, staging never renamed
        let st = d.state();
        let dead = st.home.join(".staging").join("b.dead");
        std::fs::create_dir_all(&dead).unwrap();
        st.write_meta(&LayerMeta::new(&id("b"), None, false))
            .unwrap();
        // a layer directory without metadata
        std::fs::create_dir_all(st.layer_path(&id("orphan"))).unwrap();
    }
    let d = open(t.path(), None);
    assert_eq!(d.layers().unwrap().len(), 1);
    assert!(!d.state().layer_path(&id("orphan")).exists());
    assert!(!t.path().join("fake/.staging/b.dead").exists());
    assert_eq!(
        d.layer(&id("a")).unwrap().mount_count,
        0,
        "stale count reset"
    );
}

#[test]
fn status_and_metadata_combine_common_and_backend_lines() {
    let t = tempfile::tempdir().unwrap();
    let d = open(t.path(), None);
    apply(&d, "a", None, &[]).unwrap();
    let keys: Vec<String> = d.status().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["Driver", "Root", "Backing Filesystem", "Layers"]);
    let m = d.metadata(&id("a")).unwrap();
    assert_eq!(m[0], ("Fake".to_string(), "yes".to_string()));
    assert!(m.iter().any(|(k, v)| k == "Parent" && v == "-"));
}

#[test]
fn chains_stay_right_through_the_cache() {
    let t = tempfile::tempdir().unwrap();
    let d = open(t.path(), None);
    let ids =
        |v: Vec<LayerMeta>| -> Vec<String> { v.into_iter().map(|m| m.id.to_string()).collect() };
    apply(&d, "a", None, &[]).unwrap();
    apply(&d, "b", Some("a"), &[]).unwrap();
    apply(&d, "c", Some("b"), &[]).unwrap();
    let st = d.state();
    assert_eq!(ids(st.chain(&id("c")).unwrap()), ["c", "b", "a"]);
    assert_eq!(ids(st.chain(&id("c")).unwrap()), ["c", "b", "a"], "a hit");
    // c goes and comes back on another parent: its node is not reused
    d.remove(&id("c")).unwrap();
    assert_eq!(
        d.state().chain(&id("c")).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    apply(&d, "c", Some("a"), &[]).unwrap();
    assert_eq!(ids(st.chain(&id("c")).unwrap()), ["c", "a"]);
    // a new child finds its parent's cached chain
    apply(&d, "d", Some("b"), &[]).unwrap();
    assert_eq!(ids(st.chain(&id("d")).unwrap()), ["d", "b", "a"]);
    // metadata rewritten into a loop is still refused for the layer whose
    // own file changed
    let mut m = st.meta(&id("a")).unwrap();
    m.parent = Some(id("d"));
    st.write_meta(&m).unwrap();
    assert_eq!(st.chain(&id("a")).unwrap_err().kind(), ErrorKind::Corrupt);
}
