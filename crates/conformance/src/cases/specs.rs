//! Mounts as data: what a caller that mounts layers itself (containerd)
//! gets from `mount_specs`, and `usage`.

use super::prelude::*;
use crate::specs::mount_all;

/// The cases of this room, in the order they are reported.
pub(super) fn cases() -> Vec<Case> {
    vec![
        case!(
            mount_specs_read_write,
            PRIV,
            "mount specs of a container layer, mounted by the caller, write into the layer; nothing is counted"
        ),
        case!(
            mount_specs_read_only,
            PRIV,
            "mount specs of read-only layers (one, and a stack) refuse writes and show the view"
        ),
        case!(
            usage_counts_the_layer,
            NONE,
            "usage counts a layer's files (blocks, inodes once) and names unknown layers"
        ),
    ]
}

fn absolute(specs: &[strata_core::MountSpec]) -> Result<()> {
    ensure!(!specs.is_empty(), "no mounts");
    for s in specs {
        let paths = std::iter::once(s.source.as_str())
            .filter(|_| s.kind == "bind")
            .chain(s.options.iter().filter_map(|o| {
                o.strip_prefix("upperdir=")
                    .or_else(|| o.strip_prefix("workdir="))
                    .or_else(|| o.strip_prefix("lowerdir="))
            }))
            .flat_map(|v| v.split(':'));
        for p in paths {
            ensure!(p.starts_with('/'), "relative path {p:?} in {s:?}");
        }
    }
    Ok(())
}

fn mount_specs_read_write(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    for (name, parent) in [("c", Some("base")), ("solo", None)] {
        let pid = parent.map(id);
        drv(c
            .d
            .create_rw(&id(name), pid.as_ref(), &CreateOpts::default()))?;
        let specs = drv(c.d.mount_specs(&id(name)))?;
        absolute(&specs)?;
        ensure!(
            !specs.iter().any(|s| s.read_only()),
            "{name}: read-only {specs:?}"
        );
        let t = tempfile::tempdir_in(&c.root)?;
        {
            let _m = mount_all(&specs, t.path())?;
            std::fs::write(t.path().join("new"), "x")?;
            if parent.is_some() {
                std::fs::remove_file(t.path().join("etc/passwd"))?;
            }
        }
        ensure!(
            drv(c.d.layer(&id(name)))?.mount_count == 0,
            "{name}: mount_specs counted a mount"
        );
        let want: Vec<String> = if parent.is_some() {
            vec!["C /etc".into(), "D /etc/passwd".into(), "A /new".into()]
        } else {
            vec!["A /new".into()]
        };
        ensure!(
            c.changes(name)? == want,
            "{name}: changes {:?}",
            c.changes(name)?
        );
    }
    drv(c.d.commit(&id("c"), &id("img")))?;
    ensure!(
        c.changes("img")?.contains(&"A /new".to_string()),
        "commit lost the write"
    );
    Ok(())
}

fn mount_specs_read_only(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    c.apply("top", Some("base"), &[file("top", "t")])?;
    for name in ["base", "top"] {
        let specs = drv(c.d.mount_specs(&id(name)))?;
        absolute(&specs)?;
        ensure!(
            specs.iter().any(|s| s.read_only()),
            "{name}: writable {specs:?}"
        );
        let t = tempfile::tempdir_in(&c.root)?;
        let want = c.view(name)?;
        let _m = mount_all(&specs, t.path())?;
        let got = crate::listing::listing(
            t.path(),
            crate::listing::ListOpts {
                no_dir_mtime: true,
                ..Default::default()
            },
        )?;
        same_listing(&format!("{name} through its specs"), &got, &want)?;
        let e = std::fs::write(t.path().join("etc/new"), "x");
        ensure!(
            e.as_ref().err().and_then(|e| e.raw_os_error())
                == Some(rustix::io::Errno::ROFS.raw_os_error()),
            "{name}: write through a read-only spec: {e:?}"
        );
    }
    Ok(())
}

fn usage_counts_the_layer(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    drv(c
        .d
        .create_rw(&id("c"), Some(&id("base")), &CreateOpts::default()))?;
    let before = drv(c.d.usage(&id("c")))?;
    c.with_mount("c", |p| {
        std::fs::write(p.join("big"), vec![1u8; 1 << 20])?;
        std::fs::hard_link(p.join("big"), p.join("big2"))?;
        Ok(())
    })?;
    let after = drv(c.d.usage(&id("c")))?;
    ensure!(
        after.inodes == before.inodes + 1,
        "inodes {before:?} -> {after:?}"
    );
    ensure!(
        after.bytes >= before.bytes + (1 << 20) && after.bytes < before.bytes + (3 << 20),
        "bytes {before:?} -> {after:?}"
    );
    let e = c.d.usage(&id("nope")).err().map(|e| e.kind());
    ensure!(
        e == Some(ErrorKind::NotFound),
        "usage of an unknown layer: {e:?}"
    );
    Ok(())
}
