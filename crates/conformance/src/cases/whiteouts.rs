//! Whiteouts and opaque directories, applied from tars and made by a running container: they hide lower content only.

use super::prelude::*;

/// The cases of this room, in the order they are reported.
pub(super) fn cases() -> Vec<Case> {
    vec![
        case!(
            whiteout_applied,
            NONE,
            "a whiteout deletes a lower file and a lower tree"
        ),
        case!(
            opaque_dir_applied,
            NONE,
            "an opaque marker hides the lower directory's content but keeps the layer's own"
        ),
        case!(
            whiteout_then_recreate_same_layer,
            NONE,
            "whiteout followed by re-creation in one layer"
        ),
        case!(
            whiteout_does_not_hide_same_layer,
            NONE,
            "a whiteout never hides an entry of its own layer"
        ),
        case!(
            opaque_root_hides_all_below,
            NONE,
            "an opaque marker at a layer's root hides every layer below, for children too"
        ),
        case!(
            whiteout_spares_own_entries_in_lower_dirs,
            NONE,
            "whiting out or emptying a lower directory keeps what this layer put inside"
        ),
        case!(
            whiteout_edge_forms,
            NONE,
            "dir over own file, whiteouts in a whited-out dir, markers in a base layer, links to hidden files"
        ),
        case!(
            delete_lower_recreate_upper,
            NONE,
            "deleted in one layer, re-created in the next"
        ),
        case!(
            move_file_out_of_lower,
            NONE,
            "a file moved out of a lower directory"
        ),
        case!(
            chown_lower_file,
            PRIV,
            "chown of a lower file survives commit"
        ),
        case!(
            dir_permission_change_survives_commit,
            NONE,
            "a directory's mode change survives diff and apply"
        ),
        case!(
            whiteouts_from_running_mount,
            NONE,
            "rm, rm -r, mv and rm -rf + mkdir in a mounted rw layer give the right diff"
        ),
    ]
}

pub(super) fn whiteout_applied(c: &mut Ctx<'_>) -> Result<()> {
    let up = vec![
        dir("etc"),
        whiteout("etc/passwd"),
        dir("var"),
        dir("var/lib"),
        whiteout("var/lib/app"),
    ];
    c.apply("base", None, &base_tree())?;
    c.apply("top", Some("base"), &up)?;
    c.with_mount("top", |p| {
        ensure!(!p.join("etc/passwd").exists(), "whited-out file visible");
        ensure!(!p.join("var/lib/app").exists(), "whited-out tree visible");
        ensure!(p.join("etc/hostname").exists(), "sibling vanished");
        Ok(())
    })?;
    same_listing("view", &c.view("top")?, &c.reference(&[&base_tree(), &up])?)
}

pub(super) fn opaque_dir_applied(c: &mut Ctx<'_>) -> Result<()> {
    let up = vec![
        dir("var"),
        dir("var/lib"),
        dir("var/lib/app"),
        opaque("var/lib/app"),
        file("var/lib/app/only", "mine"),
        dir("var/lib/app/sub"),
    ];
    c.apply("base", None, &base_tree())?;
    c.apply("top", Some("base"), &up)?;
    c.with_mount("top", |p| {
        let mut names: Vec<String> = std::fs::read_dir(p.join("var/lib/app"))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        names.sort();
        ensure!(names == ["only", "sub"], "opaque dir shows {names:?}");
        ensure!(
            std::fs::read_dir(p.join("var/lib/app/sub"))?.count() == 0,
            "lower content under a re-created dir of an opaque dir"
        );
        Ok(())
    })?;
    same_listing("view", &c.view("top")?, &c.reference(&[&base_tree(), &up])?)?;
    let d = c.diff("top")?;
    c.apply_bytes("copy", Some("base"), &d)?;
    same_listing("opaque round trip", &c.view("copy")?, &c.view("top")?)
}

pub(super) fn whiteout_then_recreate_same_layer(c: &mut Ctx<'_>) -> Result<()> {
    let up = vec![
        dir("var"),
        dir("var/lib"),
        whiteout("var/lib/app"),
        dir("var/lib/app"),
        file("var/lib/app/fresh", "f"),
        dir("etc"),
        whiteout("etc/passwd"),
        file("etc/passwd", "new passwd\n"),
    ];
    c.apply("base", None, &base_tree())?;
    c.apply("top", Some("base"), &up)?;
    c.with_mount("top", |p| {
        let names: Vec<_> = std::fs::read_dir(p.join("var/lib/app"))?.collect();
        ensure!(
            names.len() == 1,
            "re-created dir shows lower entries: {names:?}"
        );
        ensure!(
            std::fs::read(p.join("etc/passwd"))? == b"new passwd\n",
            "re-created file"
        );
        Ok(())
    })?;
    same_listing("view", &c.view("top")?, &c.reference(&[&base_tree(), &up])?)
}

pub(super) fn whiteout_does_not_hide_same_layer(c: &mut Ctx<'_>) -> Result<()> {
    // OCI: whiteouts apply to lower layers only, even when they come after
    let up = vec![
        dir("etc"),
        file("etc/mine", "m"),
        whiteout("etc/mine"),
        whiteout("etc/passwd"),
    ];
    c.apply("base", None, &base_tree())?;
    c.apply("top", Some("base"), &up)?;
    c.with_mount("top", |p| {
        ensure!(
            p.join("etc/mine").exists(),
            "a whiteout hid an entry of its own layer"
        );
        ensure!(!p.join("etc/passwd").exists(), "lower file not deleted");
        Ok(())
    })
}

/// Apply `up` on "base" as layer `name`; its view must be the reference,
/// and its diff, applied on "base" again, must give that view back.
pub(super) fn view_and_round_trip(
    c: &mut Ctx<'_>,
    name: &str,
    lower: &[&[E]],
    up: &[E],
) -> Result<()> {
    view_and_round_trip_on(c, name, "base", lower, up)
}

/// [`view_and_round_trip`] on the layer `parent` (whose layers, bottom
/// first, are `lower`).
pub(super) fn view_and_round_trip_on(
    c: &mut Ctx<'_>,
    name: &str,
    parent: &str,
    lower: &[&[E]],
    up: &[E],
) -> Result<()> {
    c.apply(name, Some(parent), up)?;
    let mut all = lower.to_vec();
    all.push(up);
    let want = c.reference(&all)?;
    same_listing(&format!("{name} view"), &c.view(name)?, &want)?;
    let d = c.diff(name)?;
    let again = format!("{name}-again");
    c.apply_bytes(&again, Some(parent), &d)?;
    same_listing(&format!("{name} diff re-applied"), &c.view(&again)?, &want)
}

pub(super) fn opaque_root_hides_all_below(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    let top = vec![
        opaque(""),
        file("only", "o"),
        dir("etc"),
        file("etc/new", "n"),
    ];
    view_and_round_trip(c, "top", &[&base_tree()], &top)?;
    c.with_mount("top", |p| {
        let mut names: Vec<String> = std::fs::read_dir(p)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        names.sort();
        ensure!(names == ["etc", "only"], "root shows {names:?}");
        ensure!(!p.join("etc/hostname").exists(), "lower etc content shows");
        Ok(())
    })?;
    let ch = c.changes("top")?;
    for want in ["A /only", "D /usr", "D /var", "D /etc/hostname"] {
        ensure!(ch.iter().any(|l| l == want), "changes lack {want}: {ch:?}");
    }
    // a child (read-only and read-write) still sees only what `top` shows
    let child = vec![file("child", "c")];
    c.apply("child", Some("top"), &child)?;
    same_listing(
        "child view",
        &c.view("child")?,
        &c.reference(&[&base_tree(), &top, &child])?,
    )?;
    drv(c
        .d
        .create_rw(&id("rw"), Some(&id("child")), &CreateOpts::default()))?;
    same_listing(
        "rw view",
        &c.view("rw")?,
        &c.reference(&[&base_tree(), &top, &child])?,
    )?;
    // a root marker in a layer with nothing below hides nothing
    c.apply("lone", None, &[opaque(""), file("x", "x")])?;
    same_listing(
        "lone",
        &c.view("lone")?,
        &c.reference(&[&[file("x", "x")]])?,
    )
}

pub(super) fn whiteout_spares_own_entries_in_lower_dirs(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    let b = base_tree();
    // new entry in a lower dir, then that dir whited out: the entry stays
    let w1 = vec![file("var/lib/app/new", "n"), whiteout("var/lib/app")];
    view_and_round_trip(c, "w1", &[&b], &w1)?;
    c.with_mount("w1", |p| {
        let n: Vec<_> = std::fs::read_dir(p.join("var/lib/app"))?.collect();
        ensure!(n.len() == 1, "whited-out dir keeps {} entries", n.len());
        Ok(())
    })?;
    // the same, two lower directories further up, with an opaque marker
    let w2 = vec![file("var/lib/app/sub/new", "n"), opaque("var")];
    view_and_round_trip(c, "w2", &[&b], &w2)?;
    c.with_mount("w2", |p| {
        ensure!(p.join("var/lib/app/sub/new").exists(), "own entry hidden");
        ensure!(!p.join("var/lib/app/a").exists(), "lower entry shows");
        Ok(())
    })?;
    // whiteouts inside a lower dir, then the dir itself: nothing left
    let w3 = vec![
        whiteout("var/lib/app/a"),
        whiteout("var/lib/app/sub/c"),
        whiteout("var/lib/app"),
    ];
    view_and_round_trip(c, "w3", &[&b], &w3)?;
    // ... or with a new entry kept, and the listing of every name stats
    let w4 = vec![
        whiteout("var/lib/app/a"),
        file("var/lib/app/new", "n"),
        whiteout("var/lib/app"),
        whiteout("usr/bin/tool"),
        opaque(""),
    ];
    view_and_round_trip(c, "w4", &[&b], &w4)?;
    // a link this layer makes between names a lower layer already linked,
    // then an opaque root: the link is this layer's and stays (found by
    // fuzz_whiteouts)
    let pair = vec![file("a", "a"), dir("b"), hardlink("b/a", "a")];
    c.apply("pair", Some("base"), &pair)?;
    let w5 = vec![hardlink("b/a", "/a"), opaque("")];
    view_and_round_trip_on(c, "w5", "pair", &[&b, &pair], &w5)?;
    c.with_mount("w5", |p| {
        ensure!(p.join("b/a").exists(), "own link hidden by the opaque root");
        ensure!(!p.join("a").exists(), "lower entry shows");
        Ok(())
    })
}

pub(super) fn whiteout_edge_forms(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    let b = base_tree();
    // a file of this layer over a lower dir, then a dir there: empty
    let e1 = vec![file("var/lib/app", "f"), dir("var/lib/app")];
    view_and_round_trip(c, "e1", &[&b], &e1)?;
    c.with_mount("e1", |p| {
        let n = std::fs::read_dir(p.join("var/lib/app"))?.count();
        ensure!(n == 0, "lower content came back under a re-made dir: {n}");
        Ok(())
    })?;
    // a hardlink to a lower file this layer hid: not found
    let r = c.apply(
        "e2",
        Some("base"),
        &[opaque("etc"), hardlink("etc/p2", "etc/passwd")],
    );
    expect_kind(r, ErrorKind::NotFound, "hardlink to a hidden file")?;
    ensure!(!c.d.exists(&id("e2")), "e2: layer left");
    // an entry replaces the symlink its parent path went through: the next
    // entry under that path fails, on every backend alike
    c.apply("sym", None, &[symlink("c", "/")])?;
    let r = c.apply("e3", Some("sym"), &[file("c/c", "x"), file("c/a", "y")]);
    ensure!(
        r.is_err(),
        "an entry under a path that is now a file applied"
    );
    ensure!(!c.d.exists(&id("e3")), "e3: layer left");
    // whiteouts and opaque markers in a base layer hide nothing and leave
    // no trace (no overlay xattr, no whiteout device)
    let e4 = vec![
        opaque("d"),
        dir("d"),
        file("d/f", "f"),
        whiteout("x"),
        whiteout("d/y"),
    ];
    c.apply("e4", None, &e4)?;
    same_listing(
        "markers in a base layer",
        &c.view("e4")?,
        &c.reference(&[&e4])?,
    )?;
    // a link to itself, to a lower symlink: nothing changes
    c.apply("e5", Some("sym"), &[hardlink("c", "c")])?;
    same_listing(
        "a link to itself",
        &c.view("e5")?,
        &c.reference(&[&[symlink("c", "/")][..], &[hardlink("c", "c")][..]])?,
    )?;
    // a dir over a lower symlink (a loop, and one into the lower's tree):
    // whiteouts below it look through nothing (found by fuzz_whiteouts)
    let loops = vec![symlink("a", "a"), symlink("s", "etc")];
    c.apply("loops", Some("base"), &loops)?;
    let e6 = vec![
        dir("a"),
        file("a/c/c", "c"),
        whiteout("a/c/a"),
        dir("s"),
        whiteout("s/passwd"),
        file("s/own", "o"),
    ];
    view_and_round_trip_on(c, "e6", "loops", &[&b, &loops], &e6)?;
    c.with_mount("e6", |p| {
        ensure!(
            p.join("etc/passwd").exists(),
            "a whiteout under a dir that replaced a symlink hid the symlink's target"
        );
        Ok(())
    })
}

pub(super) fn delete_lower_recreate_upper(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    c.apply(
        "mid",
        Some("base"),
        &[dir("var"), dir("var/lib"), whiteout("var/lib/app")],
    )?;
    let top = vec![
        dir("var"),
        dir("var/lib"),
        dir("var/lib/app"),
        file("var/lib/app/z", "z"),
    ];
    c.apply("top", Some("mid"), &top)?;
    c.with_mount("top", |p| {
        let n: Vec<_> = std::fs::read_dir(p.join("var/lib/app"))?.collect();
        ensure!(n.len() == 1, "deleted lower entries came back: {n:?}");
        Ok(())
    })?;
    let got = c.changes("top")?;
    ensure!(
        got == set(&["C /var", "C /var/lib", "A /var/lib/app", "A /var/lib/app/z"]),
        "changes {got:?}"
    );
    Ok(())
}

pub(super) fn move_file_out_of_lower(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    drv(c
        .d
        .create_rw(&id("top"), Some(&id("base")), &CreateOpts::default()))?;
    c.with_mount("top", |p| {
        Ok(std::fs::rename(p.join("var/lib/app/a"), p.join("moved-a"))?)
    })?;
    let got = c.changes("top")?;
    ensure!(
        got == set(&[
            "A /moved-a",
            "C /var",
            "C /var/lib",
            "C /var/lib/app",
            "D /var/lib/app/a"
        ]),
        "changes {got:?}"
    );
    let d = c.diff("top")?;
    c.apply_bytes("copy", Some("base"), &d)?;
    same_listing("moved round trip", &c.view("copy")?, &c.view("top")?)
}

pub(super) fn chown_lower_file(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    drv(c
        .d
        .create_rw(&id("top"), Some(&id("base")), &CreateOpts::default()))?;
    c.with_mount("top", |p| {
        Ok(std::os::unix::fs::lchown(
            p.join("etc/passwd"),
            Some(42),
            Some(43),
        )?)
    })?;
    let got = c.changes("top")?;
    ensure!(got == set(&["C /etc", "C /etc/passwd"]), "changes {got:?}");
    let d = c.diff("top")?;
    c.apply_bytes("copy", Some("base"), &d)?;
    c.with_mount("copy", |p| {
        let m = std::fs::symlink_metadata(p.join("etc/passwd"))?;
        ensure!(
            m.uid() == 42 && m.gid() == 43,
            "owner after commit: {}:{}",
            m.uid(),
            m.gid()
        );
        ensure!(
            std::fs::read(p.join("etc/passwd"))? == b"root:x:0:0:root:/root:/bin/sh\n",
            "content after chown"
        );
        Ok(())
    })
}

pub(super) fn dir_permission_change_survives_commit(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    drv(c
        .d
        .create_rw(&id("top"), Some(&id("base")), &CreateOpts::default()))?;
    c.with_mount("top", |p| {
        Ok(std::fs::set_permissions(
            p.join("var/lib/app"),
            std::fs::Permissions::from_mode(0o700),
        )?)
    })?;
    let got = c.changes("top")?;
    ensure!(
        got.contains(&"C /var/lib/app".to_string()),
        "mode change of a dir not reported: {got:?}"
    );
    let d = c.diff("top")?;
    c.apply_bytes("copy", Some("base"), &d)?;
    c.with_mount("copy", |p| {
        let m = std::fs::symlink_metadata(p.join("var/lib/app"))?;
        ensure!(
            m.mode() & 0o7777 == 0o700,
            "dir mode after commit: {:o}",
            m.mode() & 0o7777
        );
        ensure!(
            p.join("var/lib/app/sub/c").exists(),
            "children of the dir lost"
        );
        Ok(())
    })
}

pub(super) fn whiteouts_from_running_mount(c: &mut Ctx<'_>) -> Result<()> {
    let base = vec![
        dir("a"),
        file("a/rm-me", "1"),
        file("a/keep", "2"),
        dir("tree"),
        dir("tree/sub"),
        file("tree/sub/x", "x"),
        file("mv-src", "moving"),
        dir("opq"),
        file("opq/old1", "o1"),
        file("opq/old2", "o2"),
    ];
    c.apply("base", None, &base)?;
    drv(c
        .d
        .create_rw(&id("rw"), Some(&id("base")), &CreateOpts::default()))?;
    c.with_mount("rw", |p| {
        std::fs::remove_file(p.join("a/rm-me"))?;
        std::fs::remove_dir_all(p.join("tree"))?;
        std::fs::rename(p.join("mv-src"), p.join("a/mv-dst"))?;
        std::fs::remove_dir_all(p.join("opq"))?;
        std::fs::create_dir(p.join("opq"))?;
        std::fs::write(p.join("opq/new"), "n")?;
        Ok(())
    })?;
    let d = c.diff("rw")?;
    let paths = tar_paths(&d)?;
    for want in [
        "a/.wh.rm-me",
        ".wh.tree",
        ".wh.mv-src",
        "a/mv-dst",
        "opq/new",
    ] {
        ensure!(paths.contains(want), "diff lacks {want}: {paths:?}");
    }
    ensure!(
        !paths.iter().any(|p| p.starts_with("tree/")),
        "deleted tree's children in the diff: {paths:?}"
    );
    let opaque = paths.contains("opq/.wh..wh..opq");
    let each = paths.contains("opq/.wh.old1") && paths.contains("opq/.wh.old2");
    ensure!(
        opaque || each,
        "re-created dir neither opaque nor whiting out its old entries: {paths:?}"
    );
    ensure!(
        !tar_entries(&d)?.iter().any(|(_, k, _)| *k == 'c'),
        "diff holds a device (backend whiteout form)"
    );
    c.apply_bytes("copy", Some("base"), &d)?;
    same_listing("view after re-apply", &c.view("copy")?, &c.view("rw")?)?;
    let ch = c.changes("rw")?;
    for want in [
        "D /a/rm-me",
        "D /tree",
        "D /mv-src",
        "A /a/mv-dst",
        "D /opq/old1",
        "D /opq/old2",
        "A /opq/new",
    ] {
        ensure!(
            ch.contains(&want.to_string()),
            "changes lack {want}: {ch:?}"
        );
    }
    Ok(())
}
