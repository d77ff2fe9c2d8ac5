//! Creating, filling, removing and reopening layers: refusals with the right error kinds, all-or-nothing applies, recovery after a crash.

use super::changes::upper_changes;
use super::prelude::*;

/// The cases of this room, in the order they are reported.
pub(super) fn cases() -> Vec<Case> {
    vec![
        case!(
            empty_layer_lifecycle,
            NONE,
            "an empty layer creates, mounts, unmounts and removes without residue"
        ),
        case!(
            remove_with_children_refused,
            NONE,
            "removing a parent is refused with HasChildren"
        ),
        case!(
            remove_mounted_refused,
            NONE,
            "removing a mounted layer is refused with Busy"
        ),
        case!(
            remove_unknown_not_found,
            NONE,
            "removing an unknown layer is NotFound"
        ),
        case!(
            create_unknown_parent_refused,
            NONE,
            "creating on an unknown parent is NotFound and leaves nothing"
        ),
        case!(
            create_duplicate_refused,
            NONE,
            "creating an existing id is AlreadyExists"
        ),
        case!(
            unknown_storage_option_refused,
            NONE,
            "an unknown storage option is InvalidInput"
        ),
        case!(
            interrupted_apply_cleaned_on_reopen,
            CHILD,
            "a process killed mid-apply leaves nothing after reopen"
        ),
        case!(
            parallel_creates_one_parent,
            NONE,
            "8 threads create children of one parent at once"
        ),
        case!(
            status_and_metadata,
            NONE,
            "status and metadata are non-empty"
        ),
        case!(
            cleanup_unmounts_everything,
            NONE,
            "cleanup unmounts everything the driver mounted"
        ),
        case!(
            apply_in_place_after_create,
            NONE,
            "apply_diff into a layer made by create"
        ),
        case!(
            failed_apply_leaves_nothing,
            NONE,
            "a broken diff fails with the entry named and leaves no layer"
        ),
        case!(
            rw_layer_on_rw_parent_refused_or_works,
            NONE,
            "layers on a read-write parent behave consistently"
        ),
        case!(
            reopen_keeps_layers,
            NONE,
            "reopening the driver keeps every layer and its parent"
        ),
        case!(
            lazy_apply_then_sync,
            NONE,
            "layers applied lazily and synced together look like applied ones, also after reopen"
        ),
    ]
}

pub(super) fn empty_layer_lifecycle(c: &mut Ctx<'_>) -> Result<()> {
    let before = residue(&c.root)?;
    drv(c.d.create(&id("empty"), None, &CreateOpts::default()))?;
    ensure!(
        c.d.exists(&id("empty")),
        "layer does not exist after create"
    );
    let n = c.with_mount("empty", |p| Ok(std::fs::read_dir(p)?.count()))?;
    ensure!(n == 0, "an empty layer's view has {n} entries");
    ensure!(
        c.d.changes(&id("empty"), DiffBase::Parent)?.is_empty(),
        "empty layer has changes"
    );
    drv(c.d.remove(&id("empty")))?;
    ensure!(!c.d.exists(&id("empty")), "layer exists after remove");
    ensure!(c.d.layers()?.is_empty(), "layers() not empty after remove");
    let after = residue(&c.root)?;
    ensure!(
        after == before,
        "residue after remove: {:?}",
        after.difference(&before).collect::<Vec<_>>()
    );
    let m = strata_core::mounts::mounts_under(&c.root)?;
    ensure!(m.is_empty(), "mounts left under the root: {m:?}");
    Ok(())
}

/// Every path under a root, as a set (to find leftovers).
pub(super) fn residue(root: &Path) -> Result<BTreeSet<String>> {
    let mut s = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap_or(&p).display().to_string();
            if rel.ends_with(".lock") || rel.contains("/.probe") {
                continue;
            }
            if e.file_type()?.is_dir() && !rel.contains("/.meta") {
                stack.push(p);
            }
            s.insert(rel);
        }
    }
    Ok(s)
}

pub(super) fn remove_with_children_refused(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    drv(c
        .d
        .create(&id("child"), Some(&id("base")), &CreateOpts::default()))?;
    let e = expect_kind(
        c.d.remove(&id("base")).map_err(anyhow::Error::from),
        ErrorKind::HasChildren,
        "remove parent",
    )?;
    ensure!(
        format!("{e:#}").contains("child"),
        "error does not name the child: {e:#}"
    );
    ensure!(c.d.exists(&id("base")), "parent gone after refused remove");
    same_listing(
        "parent intact",
        &c.view("base")?,
        &c.reference(&[&base_tree()])?,
    )?;
    drv(c.d.remove(&id("child")))?;
    drv(c.d.remove(&id("base")))
}

pub(super) fn remove_mounted_refused(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    let i = id("base");
    drv(c.d.mount(&i))?;
    expect_kind(
        c.d.remove(&i).map_err(anyhow::Error::from),
        ErrorKind::Busy,
        "remove mounted",
    )?;
    ensure!(c.d.exists(&i), "mounted layer removed");
    drv(c.d.unmount(&i))?;
    drv(c.d.remove(&i))
}

pub(super) fn remove_unknown_not_found(c: &mut Ctx<'_>) -> Result<()> {
    expect_kind(
        c.d.remove(&id("nope")).map_err(anyhow::Error::from),
        ErrorKind::NotFound,
        "remove unknown",
    )?;
    expect_kind(
        c.d.mount(&id("nope")).map_err(anyhow::Error::from),
        ErrorKind::NotFound,
        "mount unknown",
    )?;
    expect_kind(
        c.d.changes(&id("nope"), DiffBase::Parent)
            .map_err(anyhow::Error::from),
        ErrorKind::NotFound,
        "changes of unknown",
    )?;
    Ok(())
}

pub(super) fn create_unknown_parent_refused(c: &mut Ctx<'_>) -> Result<()> {
    expect_kind(
        c.d.create(&id("x"), Some(&id("ghost")), &CreateOpts::default())
            .map_err(anyhow::Error::from),
        ErrorKind::NotFound,
        "create on unknown parent",
    )?;
    expect_kind(
        c.apply("y", Some("ghost"), &[file("a", "a")]),
        ErrorKind::NotFound,
        "apply on unknown parent",
    )?;
    ensure!(
        !c.d.exists(&id("x")) && !c.d.exists(&id("y")),
        "layer left behind"
    );
    ensure!(c.d.layers()?.is_empty(), "layers listed");
    Ok(())
}

pub(super) fn create_duplicate_refused(c: &mut Ctx<'_>) -> Result<()> {
    drv(c.d.create(&id("dup"), None, &CreateOpts::default()))?;
    expect_kind(
        c.d.create(&id("dup"), None, &CreateOpts::default())
            .map_err(anyhow::Error::from),
        ErrorKind::AlreadyExists,
        "duplicate create",
    )?;
    expect_kind(
        c.d.create_rw(&id("dup"), None, &CreateOpts::default())
            .map_err(anyhow::Error::from),
        ErrorKind::AlreadyExists,
        "duplicate create_rw",
    )?;
    Ok(())
}

pub(super) fn unknown_storage_option_refused(c: &mut Ctx<'_>) -> Result<()> {
    let mut o = CreateOpts::default();
    o.storage_opts.insert("no-such-option".into(), "1".into());
    let e = expect_kind(
        c.d.create(&id("o"), None, &o).map_err(anyhow::Error::from),
        ErrorKind::InvalidInput,
        "unknown option",
    )?;
    ensure!(
        format!("{e:#}").contains("no-such-option"),
        "error does not name the option: {e:#}"
    );
    ensure!(
        !c.d.exists(&id("o")),
        "layer created despite the bad option"
    );
    Ok(())
}

pub(super) fn interrupted_apply_cleaned_on_reopen(c: &mut Ctx<'_>) -> Result<()> {
    use std::io::Write;
    let mut cmd =
        c.h.child_command()
            .ok_or_else(|| crate::Skip("no child process".into()))?;
    let mut child = cmd
        .env(
            crate::CHILD_ENV,
            format!("apply-stdin {} victim", c.root.display()),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut entries = vec![dir("data")];
    for i in 0..200 {
        entries.push(file(format!("data/f{i}"), vec![b'x'; 4096]));
    }
    let data = tar(&entries);
    let cut = data.len() / 2;
    {
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
        stdin.write_all(&data[..cut])?;
        stdin.flush()?;
        // let it work on what it has, then kill it mid-stream
        std::thread::sleep(std::time::Duration::from_millis(300));
        child.kill()?;
        let _ = child.wait();
    }
    c.reopen()?;
    ensure!(
        !c.d.exists(&id("victim")),
        "half-applied layer exists after reopen"
    );
    ensure!(
        c.d.layers()?.is_empty(),
        "layers after reopen: {:?}",
        c.d.layers()?
    );
    let left: Vec<String> = residue(&c.root)?
        .into_iter()
        .filter(|p| p.contains("victim"))
        .collect();
    ensure!(left.is_empty(), "leftovers of the killed apply: {left:?}");
    ensure!(
        strata_core::mounts::mounts_under(&c.root)?.is_empty(),
        "mounts left by the killed apply"
    );
    // and the id is usable
    c.apply("victim", None, &[file("ok", "ok")])?;
    Ok(())
}

pub(super) fn parallel_creates_one_parent(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    let d = &c.d;
    std::thread::scope(|s| -> Result<()> {
        let hs: Vec<_> = (0..8)
            .map(|i| {
                s.spawn(move || -> Result<()> {
                    let mut data = &tar(&[file(format!("child-{i}"), format!("{i}"))])[..];
                    d.apply_diff(&id(&format!("c{i}")), Some(&id("base")), &mut data)?;
                    d.create_rw(
                        &id(&format!("rw{i}")),
                        Some(&id("base")),
                        &CreateOpts::default(),
                    )?;
                    Ok(())
                })
            })
            .collect();
        for h in hs {
            h.join().map_err(|_| anyhow::anyhow!("thread panicked"))??;
        }
        Ok(())
    })?;
    for i in 0..8 {
        c.with_mount(&format!("c{i}"), |p| {
            ensure!(
                std::fs::read_to_string(p.join(format!("child-{i}")))? == i.to_string(),
                "child {i} content"
            );
            ensure!(
                p.join("etc/hostname").exists(),
                "child {i} lacks the parent's files"
            );
            Ok(())
        })?;
    }
    ensure!(
        c.d.layers()?.len() == 17,
        "layer count {}",
        c.d.layers()?.len()
    );
    Ok(())
}

pub(super) fn status_and_metadata(c: &mut Ctx<'_>) -> Result<()> {
    let s = c.d.status();
    ensure!(!s.is_empty(), "status is empty");
    ensure!(
        s.iter().all(|(k, v)| !k.is_empty() && !v.is_empty()),
        "empty status pair: {s:?}"
    );
    c.apply("base", None, &base_tree())?;
    let m = drv(c.d.metadata(&id("base")))?;
    ensure!(!m.is_empty(), "metadata is empty");
    let info = drv(c.d.layer(&id("base")))?;
    ensure!(info.parent.is_none() && !info.rw, "layer info {info:?}");
    expect_kind(
        c.d.metadata(&id("nope")).map_err(anyhow::Error::from),
        ErrorKind::NotFound,
        "metadata of unknown",
    )?;
    Ok(())
}

pub(super) fn cleanup_unmounts_everything(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    drv(c
        .d
        .create_rw(&id("rw"), Some(&id("base")), &CreateOpts::default()))?;
    drv(c.d.mount(&id("base")))?;
    drv(c.d.mount(&id("base")))?;
    drv(c.d.mount(&id("rw")))?;
    drv(c.d.cleanup())?;
    let m = strata_core::mounts::mounts_under(&c.root)?;
    ensure!(m.is_empty(), "mounts after cleanup: {m:?}");
    // counts were reset: the layers can be removed
    drv(c.d.remove(&id("rw")))?;
    drv(c.d.remove(&id("base")))
}

pub(super) fn apply_in_place_after_create(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    drv(c
        .d
        .create(&id("made"), Some(&id("base")), &CreateOpts::default()))?;
    c.apply_bytes(
        "made",
        Some("base"),
        &tar(&[dir("etc"), file("etc/added", "a")]),
    )?;
    c.with_mount("made", |p| {
        ensure!(
            p.join("etc/added").exists() && p.join("etc/hostname").exists(),
            "in-place apply"
        );
        Ok(())
    })?;
    // a failing in-place apply removes the layer
    drv(c
        .d
        .create(&id("made2"), Some(&id("base")), &CreateOpts::default()))?;
    let r = c.apply("made2", Some("base"), &[file("../escape", "x")]);
    ensure!(r.is_err(), "hostile in-place apply succeeded");
    ensure!(
        !c.d.exists(&id("made2")),
        "half-made layer left after failed in-place apply"
    );
    Ok(())
}

pub(super) fn failed_apply_leaves_nothing(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    let mut data = tar(&[file("ok1", "1"), file("ok2", "2")]);
    data.truncate(data.len() - 1024 - 512 - 300); // cut inside ok2's data... then the header
    let r = c.apply_bytes("broken", Some("base"), &data);
    ensure!(r.is_err(), "truncated tar applied");
    ensure!(!c.d.exists(&id("broken")), "layer of a failed apply exists");
    // an entry that cannot be applied: hardlink to nothing
    let r = c.apply(
        "broken2",
        Some("base"),
        &[file("fine", "f"), hardlink("bad", "does/not/exist")],
    );
    let e = r
        .err()
        .ok_or_else(|| anyhow::anyhow!("hardlink to nothing applied"))?;
    ensure!(
        format!("{e:#}").contains("bad"),
        "error does not name the entry: {e:#}"
    );
    ensure!(
        !c.d.exists(&id("broken2")),
        "layer of a failed apply exists"
    );
    ensure!(c.d.layers()?.len() == 1, "layers: {:?}", c.d.layers()?);
    Ok(())
}

pub(super) fn rw_layer_on_rw_parent_refused_or_works(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    drv(c
        .d
        .create_rw(&id("rw"), Some(&id("base")), &CreateOpts::default()))?;
    c.with_mount("rw", |p| Ok(std::fs::write(p.join("from-rw"), "x")?))?;
    // a child of a container layer (docker commit style): either works and
    // sees the container's files, or is refused with a clean error
    match c
        .d
        .create(&id("child"), Some(&id("rw")), &CreateOpts::default())
    {
        Ok(()) => c.with_mount("child", |p| {
            ensure!(
                p.join("from-rw").exists(),
                "child of a rw layer lacks its files"
            );
            Ok(())
        }),
        Err(e) => {
            ensure!(
                matches!(e.kind(), ErrorKind::Unsupported | ErrorKind::InvalidInput),
                "unexpected error kind {:?}: {e}",
                e.kind()
            );
            Ok(())
        }
    }
}

pub(super) fn reopen_keeps_layers(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    c.apply("top", Some("base"), &upper_changes())?;
    drv(c
        .d
        .create_rw(&id("rw"), Some(&id("top")), &CreateOpts::default()))?;
    let before = c.view("rw")?;
    let layers = c.d.layers()?;
    c.reopen()?;
    ensure!(c.d.layers()? == layers, "layers changed on reopen");
    same_listing("view after reopen", &c.view("rw")?, &before)
}

pub(super) fn lazy_apply_then_sync(c: &mut Ctx<'_>) -> Result<()> {
    let (base, top) = (base_tree(), upper_changes());
    let mut stats = Vec::new();
    for (name, parent, entries) in [("lbase", None, &base), ("ltop", Some("lbase"), &top)] {
        let data = crate::layer::tar(entries);
        let p = parent.map(id);
        stats.push(drv(c.d.apply_diff_lazy(
            &id(name),
            p.as_ref(),
            &mut &data[..],
            None,
        ))?);
        ensure!(
            c.d.exists(&id(name)),
            "{name} does not exist after a lazy apply"
        );
    }
    drv(c.d.sync_layers(&[id("lbase"), id("ltop")]))?;
    drv(c.d.sync_layers(&[]))?;
    ensure!(
        stats[1].diff_id == crate::layer::sha256(&crate::layer::tar(&top)),
        "a lazy apply's diffID is not the tar's digest"
    );
    let want = c.reference(&[&base[..], &top[..]])?;
    same_listing("lazily applied view", &c.view("ltop")?, &want)?;
    c.reopen()?;
    same_listing("lazily applied view after reopen", &c.view("ltop")?, &want)?;
    let e = c.d.sync_layers(&[id("nosuchlayer")]);
    ensure!(e.is_err(), "syncing an unknown layer succeeded");
    Ok(())
}
