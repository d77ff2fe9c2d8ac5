//! Mount reference counts, in one process and across processes, read-only views, stale state after a crash.

use super::prelude::*;

/// The cases of this room, in the order they are reported.
pub(super) fn cases() -> Vec<Case> {
    vec![
        case!(
            mount_refcount,
            NONE,
            "mount twice: same path; one unmount keeps it; the second unmounts"
        ),
        case!(
            mount_refcount_two_processes,
            CHILD,
            "mount counts are shared between processes"
        ),
        case!(
            readonly_mount_refuses_writes,
            RO,
            "a read-only layer's view refuses writes"
        ),
        case!(
            stale_mount_state_repaired_on_reopen,
            RO,
            "a view unmounted behind the driver's back is detected on reopen"
        ),
        case!(
            parallel_mount_unmount,
            NONE,
            "threads mount and unmount one layer concurrently"
        ),
    ]
}

pub(super) fn mount_refcount(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    let i = id("base");
    let p1 = drv(c.d.mount(&i))?;
    let p2 = drv(c.d.mount(&i))?;
    ensure!(
        p1 == p2,
        "two mounts give different paths: {} {}",
        p1.display(),
        p2.display()
    );
    drv(c.d.unmount(&i))?;
    ensure!(
        p1.join("etc/hostname").exists(),
        "view gone after the first of two unmounts"
    );
    drv(c.d.unmount(&i))?;
    let still = strata_core::mounts::mounts_under(&c.root)?;
    ensure!(
        still.is_empty(),
        "mounted after the last unmount: {still:?}"
    );
    // the driver can remove it now
    drv(c.d.remove(&i))
}

pub(super) fn child_run(c: &Ctx<'_>, op: &str, name: &str) -> Result<String> {
    let mut cmd =
        c.h.child_command()
            .ok_or_else(|| crate::Skip("no child process".into()))?;
    let out = cmd
        .env(
            crate::CHILD_ENV,
            format!("{op} {} {name}", c.root.display()),
        )
        .output()
        .context("running the child process")?;
    ensure!(
        out.status.success(),
        "child {op} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub(super) fn mount_refcount_two_processes(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    let i = id("base");
    let p = drv(c.d.mount(&i))?;
    let other = child_run(c, "mount", "base")?;
    ensure!(
        Path::new(&other) == p,
        "other process got {other}, we have {}",
        p.display()
    );
    drv(c.d.unmount(&i))?;
    ensure!(
        p.join("etc/hostname").exists(),
        "the other process's reference was dropped"
    );
    expect_kind(
        c.d.remove(&i).map_err(anyhow::Error::from),
        ErrorKind::Busy,
        "remove while the other process holds a mount",
    )?;
    child_run(c, "unmount", "base")?;
    ensure!(
        strata_core::mounts::mounts_under(&c.root)?.is_empty(),
        "still mounted"
    );
    drv(c.d.remove(&i))
}

pub(super) fn readonly_mount_refuses_writes(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    c.with_mount("base", |p| {
        let r = std::fs::write(p.join("etc/hostname"), "x");
        ensure!(r.is_err(), "write into a read-only layer's view succeeded");
        ensure!(
            std::fs::write(p.join("newfile"), "x").is_err(),
            "create in a read-only view succeeded"
        );
        Ok(())
    })?;
    same_listing(
        "read-only layer unchanged",
        &c.view("base")?,
        &c.reference(&[&base_tree()])?,
    )
}

pub(super) fn stale_mount_state_repaired_on_reopen(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    let p = drv(c.d.mount(&id("base")))?;
    // an administrator (or a reboot) unmounts the view behind our back
    let was_mount = strata_core::mounts::is_mounted(&p)?;
    if was_mount {
        strata_core::mounts::unmount_path(&p)?;
    }
    c.reopen()?;
    let p2 = drv(c.d.mount(&id("base")))?;
    ensure!(
        p2.join("etc/hostname").exists(),
        "the view after reopen is empty"
    );
    drv(c.d.unmount(&id("base")))?;
    if was_mount {
        // the lost reference was dropped on reopen: the layer is free again
        ensure!(
            !strata_core::mounts::is_mounted(&p2)?,
            "still mounted after the last unmount"
        );
        drv(c.d.remove(&id("base")))?;
    }
    Ok(())
}

pub(super) fn parallel_mount_unmount(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    drv(c
        .d
        .create_rw(&id("rw"), Some(&id("base")), &CreateOpts::default()))?;
    let d = &c.d;
    std::thread::scope(|s| -> Result<()> {
        let hs: Vec<_> = (0..6)
            .map(|t| {
                s.spawn(move || -> Result<()> {
                    let name = if t % 2 == 0 { "base" } else { "rw" };
                    for _ in 0..20 {
                        let p = d.mount(&id(name))?;
                        ensure!(
                            p.join("etc/hostname").exists(),
                            "view without content while mounted"
                        );
                        d.unmount(&id(name))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in hs {
            h.join().map_err(|_| anyhow::anyhow!("thread panicked"))??;
        }
        Ok(())
    })?;
    ensure!(
        strata_core::mounts::mounts_under(&c.root)?.is_empty(),
        "mounts left after balanced mount/unmount"
    );
    drv(c.d.remove(&id("rw")))?;
    drv(c.d.remove(&id("base")))
}
