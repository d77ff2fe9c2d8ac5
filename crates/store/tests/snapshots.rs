//! Snapshots as containerd's snapshotters keep them: the life cycle, the
//! errors containerd expects, label updates, and recovery of each
//! interrupted step.

// Tests inspect snapshot directories by path, as containerd would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

use std::path::Path;

use strata_core::{Driver, DriverOptions, LayerId};
use strata_store::snapshots::{Kind, Labels};
use strata_store::{ErrorKind, Store};

fn open(root: &Path) -> Store {
    let d = strata_vfs::open(root, DriverOptions::default()).unwrap();
    Store::open(root, Box::new(d)).unwrap()
}

fn labels(kv: &[(&str, &str)]) -> Labels {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The directory a vfs bind spec mounts (containerd writes through it).
fn source(specs: &[strata_core::MountSpec]) -> std::path::PathBuf {
    assert_eq!(specs.len(), 1, "{specs:?}");
    assert_eq!(specs[0].kind, "bind");
    specs[0].source.clone().into()
}

fn kind<T: std::fmt::Debug>(r: strata_store::Result<T>) -> ErrorKind {
    r.unwrap_err().kind()
}

#[test]
fn life_cycle_like_containerd() {
    let t = tempfile::tempdir().unwrap();
    let s = open(t.path());
    let m = s.snapshot_prepare("a", "", labels(&[("l", "1")])).unwrap();
    assert!(!m[0].read_only());
    std::fs::write(source(&m).join("foo"), "foo\n").unwrap();
    s.snapshot_commit("c1", "a", labels(&[("gc", "x")]))
        .unwrap();
    assert_eq!(kind(s.snapshot_stat("a")), ErrorKind::NotFound);
    let c1 = s.snapshot_stat("c1").unwrap();
    assert_eq!((c1.kind, c1.parent.clone()), (Kind::Committed, None));
    assert_eq!(
        c1.labels,
        labels(&[("gc", "x")]),
        "commit takes the request's labels"
    );
    assert_eq!(c1.created, c1.updated);

    let m = s.snapshot_prepare("b", "c1", Labels::new()).unwrap();
    assert_eq!(
        std::fs::read_to_string(source(&m).join("foo")).unwrap(),
        "foo\n"
    );
    let v = s.snapshot_view("v", "c1", Labels::new()).unwrap();
    assert!(v[0].read_only(), "{v:?}");
    let b = s.snapshot_stat("b").unwrap();
    assert_eq!((b.kind, b.parent.as_deref()), (Kind::Active, Some("c1")));
    let e = s.snapshot_remove("c1").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert!(e.to_string().contains("remove"), "{e}");
    let keys: Vec<String> = s.snapshots().unwrap().into_iter().map(|i| i.key).collect();
    assert_eq!(keys, ["b", "c1", "v"]);
    s.snapshot_remove("b").unwrap();
    s.snapshot_remove("v").unwrap();
    s.snapshot_remove("c1").unwrap();
    assert!(s.snapshots().unwrap().is_empty());
    assert!(
        s.driver().layers().unwrap().is_empty(),
        "layers left behind"
    );
    // keys are reusable, and a new prepare gets a new layer
    s.snapshot_prepare("a", "", Labels::new()).unwrap();
    s.snapshot_commit("c1", "a", Labels::new()).unwrap();
    let r = s.check(Default::default()).unwrap();
    assert!(r.problems.is_empty() && r.notes.is_empty(), "{r:?}");
}

#[test]
fn refusals_have_containerds_kinds() {
    let t = tempfile::tempdir().unwrap();
    let s = open(t.path());
    s.snapshot_prepare("a", "", Labels::new()).unwrap();
    assert_eq!(
        kind(s.snapshot_prepare("a", "", Labels::new())),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        kind(s.snapshot_view("a", "", Labels::new())),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        kind(s.snapshot_prepare("x", "nope", Labels::new())),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(s.snapshot_prepare("x", "a", Labels::new())),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(s.snapshot_prepare("", "", Labels::new())),
        ErrorKind::InvalidInput
    );
    s.snapshot_view("v", "", Labels::new()).unwrap();
    assert_eq!(
        kind(s.snapshot_commit("c", "v", Labels::new())),
        ErrorKind::FailedPrecondition
    );
    assert_eq!(
        kind(s.snapshot_commit("v", "a", Labels::new())),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        kind(s.snapshot_commit("c", "nope", Labels::new())),
        ErrorKind::NotFound
    );
    s.snapshot_commit("c", "a", Labels::new()).unwrap();
    assert_eq!(kind(s.snapshot_mounts("c")), ErrorKind::FailedPrecondition);
    assert_eq!(kind(s.snapshot_mounts("a")), ErrorKind::NotFound);
    assert_eq!(kind(s.snapshot_remove("a")), ErrorKind::NotFound);
    assert_eq!(kind(s.snapshot_usage("a")), ErrorKind::NotFound);
    // nothing half-made is left by the refusals
    assert_eq!(s.driver().layers().unwrap().len(), 2);
}

#[test]
fn update_changes_labels_only_by_containerds_rules() {
    let t = tempfile::tempdir().unwrap();
    let s = open(t.path());
    s.snapshot_prepare(
        "a",
        "",
        labels(&[("keep", "1"), ("l1", "v1"), ("l2", "v2")]),
    )
    .unwrap();
    let mut info = s.snapshot_stat("a").unwrap();
    let created = info.created;
    info.parent = Some("elsewhere".into());
    info.labels = labels(&[("l1", "updated"), ("l4", "v4")]);
    let u = s
        .snapshot_update(&info, &["labels.l1".into(), "labels.l2".into()])
        .unwrap();
    assert_eq!(u.labels, labels(&[("keep", "1"), ("l1", "updated")]));
    assert_eq!((u.parent, u.created), (None, created));
    assert!(u.updated > created);
    let all = s.snapshot_update(&info, &[]).unwrap();
    assert_eq!(all.labels, info.labels);
    let e = s.snapshot_update(&info, &["parent".into()]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_eq!(s.snapshot_stat("a").unwrap().labels, info.labels);
}

#[test]
fn usage_counts_the_snapshot() {
    let t = tempfile::tempdir().unwrap();
    let s = open(t.path());
    let m = s.snapshot_prepare("a", "", Labels::new()).unwrap();
    let before = s.snapshot_usage("a").unwrap();
    std::fs::write(source(&m).join("f"), vec![1u8; 256 << 10]).unwrap();
    let after = s.snapshot_usage("a").unwrap();
    assert_eq!(after.inodes, before.inodes + 1);
    assert!(
        after.bytes >= before.bytes + (256 << 10),
        "{before:?} {after:?}"
    );
}

fn db(root: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(root.join("store/store.db")).unwrap()
}

#[test]
fn interrupted_steps_are_finished_or_undone_on_open() {
    let t = tempfile::tempdir().unwrap();
    {
        let s = open(t.path());
        s.snapshot_prepare("a", "", Labels::new()).unwrap();
        s.snapshot_commit("base", "a", Labels::new()).unwrap();
        s.snapshot_prepare("work", "base", Labels::new()).unwrap();
        s.snapshot_prepare("gone", "base", Labels::new()).unwrap();
        s.snapshot_prepare("half", "base", Labels::new()).unwrap();
    }
    let c = db(t.path());
    let layer = |k: &str| -> String {
        c.query_row("SELECT layer FROM snapshots WHERE key = ?1", [k], |r| {
            r.get(0)
        })
        .unwrap()
    };
    // a crash while creating `half`, while removing `gone`, and after the
    // driver committed `work` into `done` but before the records said so
    c.execute(
        "UPDATE snapshots SET state = 'creating' WHERE key = 'half'",
        [],
    )
    .unwrap();
    c.execute(
        "UPDATE snapshots SET state = 'removing' WHERE key = 'gone'",
        [],
    )
    .unwrap();
    let (work, half) = (layer("work"), layer("half"));
    c.execute(
        "INSERT INTO snapshots (key, parent, kind, layer, created, updated, labels, state, origin)
         VALUES ('done', 'base', 'committed', 's99', 1, 1, '{}', 'committing', 'work')",
        [],
    )
    .unwrap();
    drop(c);
    {
        let d = strata_vfs::open(t.path(), DriverOptions::default()).unwrap();
        d.commit(
            &LayerId::new(work.clone()).unwrap(),
            &LayerId::new("s99").unwrap(),
        )
        .unwrap();
    }
    let s = open(t.path());
    let keys: Vec<String> = s.snapshots().unwrap().into_iter().map(|i| i.key).collect();
    assert_eq!(keys, ["base", "done"]);
    assert_eq!(s.snapshot_stat("done").unwrap().kind, Kind::Committed);
    assert!(!s.driver().exists(&LayerId::new(half).unwrap()));
    let r = s.check(Default::default()).unwrap();
    assert!(r.problems.is_empty() && r.notes.is_empty(), "{r:?}");
}

#[test]
fn an_interrupted_commit_before_the_driver_is_undone() {
    let t = tempfile::tempdir().unwrap();
    {
        let s = open(t.path());
        s.snapshot_prepare("work", "", Labels::new()).unwrap();
    }
    db(t.path())
        .execute(
            "INSERT INTO snapshots (key, parent, kind, layer, created, updated, labels, state, origin)
             VALUES ('done', NULL, 'committed', 's99', 1, 1, '{}', 'committing', 'work')",
            [],
        )
        .unwrap();
    let s = open(t.path());
    let keys: Vec<String> = s.snapshots().unwrap().into_iter().map(|i| i.key).collect();
    assert_eq!(keys, ["work"]);
    assert_eq!(s.snapshot_stat("work").unwrap().kind, Kind::Active);
}

#[test]
fn cleanup_removes_only_unclaimed_snapshot_layers() {
    let t = tempfile::tempdir().unwrap();
    let s = open(t.path());
    s.snapshot_prepare("a", "", Labels::new()).unwrap();
    s.snapshot_commit("base", "a", Labels::new()).unwrap();
    let d = s.driver();
    let id = |s: &str| LayerId::new(s).unwrap();
    // what a snapshotter killed between its driver work and its records
    // could leave, plus a layer of `strata layer` that is not ours
    d.create(&id("s500"), None, &Default::default()).unwrap();
    d.create_rw(&id("s501"), Some(&id("s500")), &Default::default())
        .unwrap();
    d.create(&id("mine"), None, &Default::default()).unwrap();
    let mut removed = s.snapshot_cleanup().unwrap();
    removed.sort();
    assert_eq!(removed, ["s500", "s501"]);
    let left: Vec<String> = d
        .layers()
        .unwrap()
        .into_iter()
        .map(|l| l.id.to_string())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&"mine".to_string()));
    assert!(s.snapshot_cleanup().unwrap().is_empty());
    // the store's own refusal to remove a snapshot's layer by hand
    let base = s
        .layer_user(&left.iter().find(|l| *l != "mine").unwrap().clone())
        .unwrap();
    assert_eq!(base.as_deref(), Some("snapshot \"base\""));
}

#[test]
fn a_layer_left_by_a_lost_row_is_skipped_and_reclaimed() {
    let t = tempfile::tempdir().unwrap();
    let s = open(t.path());
    s.snapshot_prepare("a", "", Labels::new()).unwrap();
    let d = s.driver();
    let id = |s: &str| LayerId::new(s).unwrap();
    // a power loss lost the rows (and the id sequence) of s2 and s3, not
    // their driver layers
    d.create(&id("s2"), None, &Default::default()).unwrap();
    d.create_rw(&id("s3"), Some(&id("s2")), &Default::default())
        .unwrap();
    let specs = s.snapshot_prepare("b", "", Labels::new()).unwrap();
    let b = source(&specs);
    assert!(
        b.to_string_lossy().contains("/s4"),
        "the ids whose layers exist are skipped: {}",
        b.display()
    );
    assert_eq!(s.snapshot_stat("b").unwrap().key, "b");
    let mut removed = s.snapshot_cleanup().unwrap();
    removed.sort();
    assert_eq!(removed, ["s2", "s3"], "Cleanup reclaims what no row claims");
    assert!(s.snapshot_mounts("b").is_ok() && s.snapshot_mounts("a").is_ok());
}

#[test]
fn mounts_of_a_snapshot_another_process_removed_are_not_served() {
    let t = tempfile::tempdir().unwrap();
    let s = open(t.path());
    s.snapshot_prepare("a", "", Labels::new()).unwrap();
    s.snapshot_commit("base", "a", Labels::new()).unwrap();
    let made = s.snapshot_prepare("x", "base", Labels::new()).unwrap();
    assert_eq!(s.snapshot_mounts("x").unwrap(), made, "the same mounts");
    // another store on the same root (another process) removes it
    open(t.path()).snapshot_remove("x").unwrap();
    assert_eq!(kind(s.snapshot_mounts("x")), ErrorKind::NotFound);
    // and a key made again gets its new layer's mounts
    let again = s.snapshot_prepare("x", "base", Labels::new()).unwrap();
    assert_ne!(source(&again), source(&made));
    assert_eq!(s.snapshot_mounts("x").unwrap(), again);
    s.snapshot_commit("top", "x", Labels::new()).unwrap();
    assert_eq!(kind(s.snapshot_mounts("x")), ErrorKind::NotFound);
}
