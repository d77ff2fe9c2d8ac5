//! Resolution rules, with and without openat2.

#![allow(clippy::disallowed_methods)] // scratch dirs of the tests

use super::*;
use std::os::fd::AsFd;

#[test]
fn normalize_rules() {
    assert_eq!(normalize(b"/etc//passwd").unwrap(), b"etc/passwd");
    assert_eq!(normalize(b"./a/./b/../c/").unwrap(), b"a/c");
    assert_eq!(normalize(b"./").unwrap(), b"");
    assert_eq!(
        normalize(b"../x").unwrap_err().kind(),
        crate::ErrorKind::PathEscape
    );
    assert_eq!(
        normalize(b"a/../../x").unwrap_err().kind(),
        crate::ErrorKind::PathEscape
    );
    assert!(normalize(b"a\0b").is_err());
}

fn walk_both(f: impl Fn(&Resolver<'_>)) {
    for use2 in [true, false] {
        let t = tempfile::tempdir().unwrap();
        let fd = fsx::open_dir_path(t.path()).unwrap();
        let mut r = Resolver::new(fd.as_fd(), t.path());
        r.use_openat2 = use2 && openat2_available();
        f(&r);
    }
}

#[test]
fn symlinks_stay_in_root() {
    walk_both(|r| {
        let outside = tempfile::tempdir().unwrap();
        let root = r.root_path;
        std::os::unix::fs::symlink(outside.path(), root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../..", root.join("up")).unwrap();
        let d = r
            .dir(b"abs/sub", Missing::Create, &mut ())
            .unwrap()
            .unwrap();
        // the absolute target was re-rooted inside the layer
        let expect = normalize(outside.path().as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(d.path, join(&expect, b"sub"));
        assert!(root.join(std::str::from_utf8(&d.path).unwrap()).is_dir());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        let d = r.dir(b"up/x", Missing::Create, &mut ()).unwrap().unwrap();
        assert_eq!(d.path, b"x");
        assert!(root.join("x").is_dir());
    });
}

#[test]
fn symlink_loops_are_errors() {
    walk_both(|r| {
        std::os::unix::fs::symlink("b", r.root_path.join("a")).unwrap();
        std::os::unix::fs::symlink("a", r.root_path.join("b")).unwrap();
        let e = r.dir(b"a/x", Missing::Create, &mut ()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(Errno::LOOP.raw_os_error()));
    });
}

#[test]
fn whiteout_named_dirs_are_not_created_through_symlinks() {
    walk_both(|r| {
        std::os::unix::fs::symlink(".wh.a", r.root_path.join("l")).unwrap();
        let e = r.dir(b"l/x", Missing::Create, &mut ()).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains(".wh.a"), "{e}");
        assert!(!r.root_path.join(".wh.a").exists());
        // an existing directory behind the link is fine
        std::fs::create_dir(r.root_path.join("d")).unwrap();
        std::os::unix::fs::symlink("d", r.root_path.join("m")).unwrap();
        assert_eq!(
            r.dir(b"m", Missing::Create, &mut ()).unwrap().unwrap().path,
            b"d"
        );
    });
}

#[test]
fn missing_stop_returns_none() {
    walk_both(|r| {
        assert!(r.dir(b"no/such", Missing::Stop, &mut ()).unwrap().is_none());
        assert!(!r.root_path.join("no").exists());
        std::fs::write(r.root_path.join("file"), b"").unwrap();
        let e = r.dir(b"file/x", Missing::Create, &mut ()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(Errno::NOTDIR.raw_os_error()));
    });
}
