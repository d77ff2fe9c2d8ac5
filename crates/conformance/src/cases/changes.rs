//! `changes`, `diff` and `diff_size` against a parent or an older ancestor, and the diff -> apply round trip.

use super::Needs;
use super::prelude::*;

/// The cases of this room, in the order they are reported: the table's
/// rows first.
pub(super) fn cases() -> Vec<Case> {
    let rows = ROWS.iter().map(|r| Case {
        name: r.name,
        about: r.about,
        needs: r.needs,
        run: std::sync::Arc::new(move |c: &mut Ctx<'_>| check_changes(c, &(r.upper)(), r.want)),
    });
    rows.chain([
        case!(
            diff_roundtrip,
            NONE,
            "diff -> apply on a fresh parent gives an identical tree"
        ),
        case!(
            diff_roundtrip_privileged,
            PRIV,
            "round trip with owners, devices and setuid bits"
        ),
        case!(changes_rename, NONE, "rename is D + A"),
        case!(
            changes_new_hardlink,
            NONE,
            "a new hardlink is A and keeps its identity in the diff"
        ),
        case!(
            diff_size_counts_changed_bytes,
            NONE,
            "diff_size equals the bytes of added and changed files"
        ),
        case!(
            diff_against_ancestor,
            NONE,
            "diff against an older ancestor includes the changes of layers between"
        ),
    ])
    .collect()
}

/// One row of the change table: an upper layer applied on [`base_tree`],
/// the changes it must give, and a diff that re-applies to the same view.
struct Row {
    name: &'static str,
    needs: Needs,
    about: &'static str,
    upper: fn() -> Vec<E>,
    want: &'static [&'static str],
}

/// The simple change rows.
const ROWS: &[Row] = &[
    Row {
        name: "changes_add",
        needs: NONE,
        about: "an added file is A, its directory C",
        upper: || vec![dir("etc"), file("etc/new", "n")],
        want: &["C /etc", "A /etc/new"],
    },
    Row {
        name: "changes_modify_content",
        needs: NONE,
        about: "content change is C",
        upper: || {
            vec![
                dir("etc"),
                file("etc/hostname", "another\n").mtime(MTIME + 5, 0),
            ]
        },
        want: &["C /etc", "C /etc/hostname"],
    },
    // "strata\n" -> "STRATA\n": equal size, equal (whole-second) mtime
    Row {
        name: "changes_modify_same_size_same_mtime",
        needs: NONE,
        about: "content change with equal size and mtime is still C",
        upper: || vec![dir("etc"), file("etc/hostname", "STRATA\n")],
        want: &["C /etc", "C /etc/hostname"],
    },
    Row {
        name: "changes_modify_mode",
        needs: NONE,
        about: "mode change is C",
        upper: || vec![dir("etc"), file("etc/hostname", "strata\n").mode(0o600)],
        want: &["C /etc", "C /etc/hostname"],
    },
    Row {
        name: "changes_modify_owner",
        needs: PRIV,
        about: "owner change is C",
        upper: || vec![dir("etc"), file("etc/hostname", "strata\n").owner(7, 8)],
        want: &["C /etc", "C /etc/hostname"],
    },
    Row {
        name: "changes_modify_mtime",
        needs: NONE,
        about: "mtime change is C",
        upper: || vec![dir("etc"), file("etc/hostname", "strata\n").mtime(MTIME, 5)],
        want: &["C /etc", "C /etc/hostname"],
    },
    Row {
        name: "changes_modify_xattr",
        needs: XATTR,
        about: "xattr change is C",
        upper: || {
            vec![
                dir("etc"),
                file("etc/hostname", "strata\n").xattr("user.k", "v"),
            ]
        },
        want: &["C /etc", "C /etc/hostname"],
    },
    Row {
        name: "changes_delete_file",
        needs: NONE,
        about: "deleted file is D",
        upper: || vec![dir("etc"), whiteout("etc/passwd")],
        want: &["C /etc", "D /etc/passwd"],
    },
    Row {
        name: "changes_delete_dir_tree",
        needs: NONE,
        about: "deleted tree is one D",
        upper: || vec![dir("var"), dir("var/lib"), whiteout("var/lib/app")],
        want: &["C /var", "C /var/lib", "D /var/lib/app"],
    },
    Row {
        name: "changes_file_to_dir",
        needs: NONE,
        about: "file replaced by a directory",
        upper: || {
            vec![
                dir("etc"),
                whiteout("etc/hostname"),
                dir("etc/hostname"),
                file("etc/hostname/inside", "i"),
            ]
        },
        want: &["C /etc", "C /etc/hostname", "A /etc/hostname/inside"],
    },
    Row {
        name: "changes_dir_to_file",
        needs: NONE,
        about: "directory replaced by a file",
        upper: || {
            vec![
                dir("var"),
                dir("var/lib"),
                whiteout("var/lib/app"),
                file("var/lib/app", "now a file"),
            ]
        },
        want: &["C /var", "C /var/lib", "C /var/lib/app"],
    },
];

pub(super) fn upper_changes() -> Vec<E> {
    vec![
        dir("etc"),
        file("etc/hostname", "changed host\n"),
        whiteout("etc/passwd"),
        dir("var"),
        dir("var/lib"),
        whiteout("var/lib/app"),
        dir("new-dir"),
        file("new-dir/new-file", "fresh"),
        hardlink("new-dir/link", "new-dir/new-file"),
        symlink("new-dir/sym", "../etc/hostname"),
        dir("usr"),
        dir("usr/bin"),
        file("usr/bin/tool", "#!/bin/sh\necho v2\n").mode(0o700),
    ]
}

pub(super) fn diff_roundtrip(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    c.apply("top", Some("base"), &upper_changes())?;
    let d = c.diff("top")?;
    c.apply_bytes("copy", Some("base"), &d)?;
    same_listing("round trip", &c.view("copy")?, &c.view("top")?)?;
    same_listing(
        "reference",
        &c.view("top")?,
        &c.reference(&[&base_tree(), &upper_changes()])?,
    )?;
    // and a base layer's full diff re-creates it from nothing
    let mut full = Vec::new();
    drv(c.d.diff(&id("top"), DiffBase::Empty, &mut full))?;
    c.apply_bytes("flat", None, &full)?;
    same_listing("flattened", &c.view("flat")?, &c.view("top")?)?;
    // deterministic: the same diff twice
    ensure!(c.diff("top")? == d, "diff output is not deterministic");
    Ok(())
}

pub(super) fn diff_roundtrip_privileged(c: &mut Ctx<'_>) -> Result<()> {
    let base = vec![
        dir("dev"),
        chardev("dev/null", 1, 3),
        file("x", "x"),
        dir("home"),
    ];
    let up = vec![
        dir("dev"),
        chardev("dev/zero", 1, 5),
        blockdev("dev/sda", 8, 0),
        file("x", "x").owner(123, 456).mode(0o4711),
        dir("home"),
        dir("home/u").owner(1000, 1000).mode(0o700),
        file("home/u/f", "data").owner(1000, 1000),
    ];
    c.apply("base", None, &base)?;
    c.apply("top", Some("base"), &up)?;
    let d = c.diff("top")?;
    c.apply_bytes("copy", Some("base"), &d)?;
    same_listing("privileged round trip", &c.view("copy")?, &c.view("top")?)
}

pub(super) fn changes_rename(c: &mut Ctx<'_>) -> Result<()> {
    // a rename in a running container: whiteout of the old name + the new
    c.apply("base", None, &base_tree())?;
    drv(c
        .d
        .create_rw(&id("top"), Some(&id("base")), &CreateOpts::default()))?;
    c.with_mount("top", |p| {
        Ok(std::fs::rename(
            p.join("etc/passwd"),
            p.join("etc/passwd.old"),
        )?)
    })?;
    let got = c.changes("top")?;
    ensure!(
        got == set(&["C /etc", "D /etc/passwd", "A /etc/passwd.old"]),
        "rename changes: {got:?}"
    );
    Ok(())
}

pub(super) fn changes_new_hardlink(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    drv(c
        .d
        .create_rw(&id("top"), Some(&id("base")), &CreateOpts::default()))?;
    c.with_mount("top", |p| {
        Ok(std::fs::hard_link(
            p.join("etc/passwd"),
            p.join("etc/passwd.link"),
        )?)
    })?;
    let got = c.changes("top")?;
    ensure!(
        got.contains(&"A /etc/passwd.link".to_string()),
        "hardlink not added: {got:?}"
    );
    let d = c.diff("top")?;
    c.apply_bytes("copy", Some("base"), &d)?;
    c.with_mount("copy", |p| {
        let a = std::fs::symlink_metadata(p.join("etc/passwd"))?;
        let b = std::fs::symlink_metadata(p.join("etc/passwd.link"))?;
        ensure!(a.ino() == b.ino(), "hardlink identity lost through diff");
        Ok(())
    })
}

pub(super) fn diff_size_counts_changed_bytes(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    c.apply(
        "top",
        Some("base"),
        &[
            dir("etc"),
            file("etc/hostname", "0123456789").mtime(MTIME + 1, 0),
            file("etc/new", "x".repeat(1000)),
            whiteout("etc/passwd"),
        ],
    )?;
    let n = drv(c.d.diff_size(&id("top"), DiffBase::Parent))?;
    ensure!(n == 1010, "diff_size {n}, want 1010");
    let full = drv(c.d.diff_size(&id("base"), DiffBase::Parent))?;
    let want: u64 = base_tree()
        .iter()
        .map(|e| match &e.node {
            Node::File(c) => c.len() as u64,
            _ => 0,
        })
        .sum();
    ensure!(full == want, "diff_size of base {full}, want {want}");
    Ok(())
}

pub(super) fn diff_against_ancestor(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    c.apply("mid", Some("base"), &[dir("etc"), file("etc/mid", "m")])?;
    c.apply(
        "top",
        Some("mid"),
        &[dir("etc"), file("etc/top", "t"), whiteout("etc/hostname")],
    )?;
    let ch: Vec<String> = drv(c.d.changes(&id("top"), DiffBase::Layer(&id("base"))))?
        .iter()
        .map(|c| c.to_string())
        .collect();
    ensure!(
        ch == set(&["C /etc", "A /etc/mid", "A /etc/top", "D /etc/hostname"]),
        "changes against ancestor: {ch:?}"
    );
    let mut d = Vec::new();
    drv(c.d.diff(&id("top"), DiffBase::Layer(&id("base")), &mut d))?;
    c.apply_bytes("squashed", Some("base"), &d)?;
    same_listing("squashed", &c.view("squashed")?, &c.view("top")?)
}
