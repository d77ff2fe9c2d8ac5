//! Hardlink groups across layers: a layer's diff, applied on its parent
//! elsewhere, must give the same view (the same groups) on every backend,
//! whichever way the link counts change; and names of one group that all
//! end up in a layer share one inode.

use super::prelude::*;

/// The cases of this room, in the order they are reported.
pub(super) fn cases() -> Vec<Case> {
    vec![
        case!(
            links_name_removed_round_trips,
            NONE,
            "a layer that removes one name of a hardlink group: its diff re-applied keeps the others linked"
        ),
        case!(
            links_name_added_round_trips,
            NONE,
            "a layer that links new names (also in other dirs) to a lower file round-trips"
        ),
        case!(
            links_file_modified_round_trips,
            NONE,
            "a layer that rewrites one name of a group round-trips"
        ),
        case!(
            links_across_dirs_round_trip,
            NONE,
            "links added and removed across directories round-trip"
        ),
        case!(
            links_relinked_in_one_layer_share_an_inode,
            NONE,
            "names of a lower group that all end up in the top layer (self link, link to the other name) are one inode"
        ),
    ]
}

fn group() -> Vec<E> {
    vec![
        file("x", "shared\n"),
        hardlink("y", "x"),
        dir("dir3"),
        hardlink("dir3/x3", "x"),
        file("lone", "l\n"),
    ]
}

/// Apply `up` on "base" (made of `group()`); its diff, applied on "base"
/// again, must show the same view, link groups included.
fn round_trip(c: &mut Ctx<'_>, up: &[E]) -> Result<()> {
    c.apply("base", None, &group())?;
    c.apply("top", Some("base"), up)?;
    let want = c.view("top")?;
    let d = c.diff("top")?;
    c.apply_bytes("again", Some("base"), &d)?;
    same_listing("top's diff re-applied", &c.view("again")?, &want)
}

fn links_name_removed_round_trips(c: &mut Ctx<'_>) -> Result<()> {
    round_trip(c, &[whiteout("y")])?;
    let v = c.view("again")?;
    let x3 = v
        .iter()
        .find(|l| l.starts_with("/dir3/x3 "))
        .cloned()
        .unwrap_or_default();
    ensure!(
        x3.contains("link=/x"),
        "x and dir3/x3 are no longer one file: {x3}"
    );
    Ok(())
}

fn links_name_added_round_trips(c: &mut Ctx<'_>) -> Result<()> {
    round_trip(
        c,
        &[
            hardlink("z", "x"),
            dir("dir4"),
            hardlink("dir4/z4", "dir3/x3"),
        ],
    )
}

fn links_file_modified_round_trips(c: &mut Ctx<'_>) -> Result<()> {
    round_trip(c, &[file("y", "rewritten\n")])
}

fn links_across_dirs_round_trip(c: &mut Ctx<'_>) -> Result<()> {
    round_trip(
        c,
        &[
            dir("dir5"),
            hardlink("dir5/w", "x"),
            dir("dir3"),
            whiteout("dir3/x3"),
            hardlink("lone2", "lone"),
        ],
    )
}

fn links_relinked_in_one_layer_share_an_inode(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &[file("a", "A\n"), hardlink("b", "a")])?;
    c.apply(
        "top",
        Some("base"),
        &[hardlink("b", "b"), hardlink("c", "a")],
    )?;
    c.with_mount("top", |p| {
        let ino = |n: &str| -> Result<(u64, u64)> {
            let m = std::fs::symlink_metadata(p.join(n))?;
            Ok((m.ino(), m.nlink()))
        };
        let (a, b, cc) = (ino("a")?, ino("b")?, ino("c")?);
        ensure!(
            a.0 == b.0 && b.0 == cc.0,
            "a, b, c are not one inode: {a:?} {b:?} {cc:?}"
        );
        ensure!(a.1 == 3, "nlink {}", a.1);
        Ok(())
    })
}
