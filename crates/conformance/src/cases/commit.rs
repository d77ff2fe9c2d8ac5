//! In-place commit: a read-write layer becomes a read-only one under a new
//! id, with the same view and no copy (containerd's Commit).

use super::prelude::*;

/// The cases of this room, in the order they are reported.
pub(super) fn cases() -> Vec<Case> {
    vec![
        case!(
            commit_keeps_view_and_changes,
            NONE,
            "a committed container layer shows the same view and changes, and its diff round-trips"
        ),
        case!(
            commit_copies_nothing,
            NONE,
            "commit keeps the inodes of the layer's files (O(1), no data copied)"
        ),
        case!(
            commit_refusals,
            NONE,
            "commit refuses read-only, mounted, parented, unknown and taken ids with the right kinds"
        ),
        case!(
            commit_then_stack,
            NONE,
            "a committed layer takes children and can be removed like an applied one"
        ),
    ]
}

/// A container layer `c` on the base tree, changed through its mount: a
/// file modified, one deleted, one added, a directory made.
fn changed_container(c: &Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    drv(c
        .d
        .create_rw(&id("c"), Some(&id("base")), &CreateOpts::default()))?;
    c.with_mount("c", |p| {
        std::fs::write(p.join("etc/hostname"), "changed\n")?;
        std::fs::remove_file(p.join("etc/passwd"))?;
        std::fs::create_dir(p.join("srv"))?;
        std::fs::write(p.join("srv/new"), vec![7u8; 1 << 20])?;
        Ok(())
    })
}

fn commit_keeps_view_and_changes(c: &mut Ctx<'_>) -> Result<()> {
    changed_container(c)?;
    let view = c.view("c")?;
    let changes = c.changes("c")?;
    drv(c.d.commit(&id("c"), &id("img")))?;
    ensure!(!c.d.exists(&id("c")), "the read-write layer still exists");
    let info = drv(c.d.layer(&id("img")))?;
    ensure!(!info.rw, "the committed layer is read-write");
    ensure!(info.parent == Some(id("base")), "parent: {:?}", info.parent);
    same_listing("view after commit", &c.view("img")?, &view)?;
    ensure!(c.changes("img")? == changes, "changes differ after commit");
    let d = c.diff("img")?;
    c.apply_bytes("again", Some("base"), &d)?;
    same_listing("diff of the committed layer", &c.view("again")?, &view)
}

fn commit_copies_nothing(c: &mut Ctx<'_>) -> Result<()> {
    changed_container(c)?;
    let ino = |name: &str| -> Result<u64> {
        c.with_mount(name, |p| {
            Ok(std::fs::symlink_metadata(p.join("srv/new"))?.ino())
        })
    };
    let before = ino("c")?;
    drv(c.d.commit(&id("c"), &id("img")))?;
    let after = ino("img")?;
    ensure!(
        before == after,
        "the file was copied: inode {before} became {after}"
    );
    Ok(())
}

fn commit_refusals(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    let rw = |n: &str, parent: &str| {
        drv(c
            .d
            .create_rw(&id(n), Some(&id(parent)), &CreateOpts::default()))
    };
    expect_kind(
        drv(c.d.commit(&id("base"), &id("x"))),
        ErrorKind::InvalidInput,
        "commit of a read-only layer",
    )?;
    expect_kind(
        drv(c.d.commit(&id("nope"), &id("x"))),
        ErrorKind::NotFound,
        "commit of an unknown layer",
    )?;
    rw("c", "base")?;
    expect_kind(
        drv(c.d.commit(&id("c"), &id("base"))),
        ErrorKind::AlreadyExists,
        "commit to a taken id",
    )?;
    let p = drv(c.d.mount(&id("c")))?;
    let r = expect_kind(
        drv(c.d.commit(&id("c"), &id("x"))),
        ErrorKind::Busy,
        "commit of a mounted layer",
    );
    drv(c.d.unmount(&id("c")))?;
    r?;
    ensure!(
        !p.join("etc").exists() || c.d.exists(&id("c")),
        "layer lost"
    );
    rw("child", "c")?;
    expect_kind(
        drv(c.d.commit(&id("c"), &id("x"))),
        ErrorKind::HasChildren,
        "commit of a layer with children",
    )?;
    ensure!(
        c.d.exists(&id("c")) && !c.d.exists(&id("x")),
        "a refusal changed layers"
    );
    Ok(())
}

fn commit_then_stack(c: &mut Ctx<'_>) -> Result<()> {
    changed_container(c)?;
    drv(c.d.commit(&id("c"), &id("img")))?;
    c.apply("top", Some("img"), &[file("top-file", "t")])?;
    let v = c.view("top")?;
    ensure!(
        v.iter().any(|l| l.starts_with("/srv/new "))
            && v.iter().any(|l| l.starts_with("/top-file ")),
        "the child does not see the committed layer: {v:?}"
    );
    drv(c
        .d
        .create_rw(&id("c2"), Some(&id("top")), &CreateOpts::default()))?;
    drv(c.d.commit(&id("c2"), &id("c"))).context("the old id is free again")?;
    for l in ["c", "top", "img", "base"] {
        drv(c.d.remove(&id(l))).with_context(|| format!("remove {l}"))?;
    }
    Ok(())
}
