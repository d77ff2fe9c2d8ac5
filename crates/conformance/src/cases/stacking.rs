//! Children see their parents, copy on write, deep stacks.

use super::prelude::*;

/// The cases of this room, in the order they are reported.
pub(super) fn cases() -> Vec<Case> {
    vec![
        case!(
            child_sees_parent,
            NONE,
            "a child layer sees its parent's files"
        ),
        case!(
            copy_on_write,
            NONE,
            "writes in a child never reach the parent"
        ),
        case!(
            deep_stack_64,
            NONE,
            "64 layers each adding a file: all visible at the top"
        ),
        case!(
            deep_stack_128,
            NONE,
            "128-layer stack mounts and reads, or is refused cleanly at the driver's maximum"
        ),
        case!(
            deep_stack_400,
            NONE,
            "400-layer stack mounts and reads, or is refused cleanly at the driver's maximum"
        ),
    ]
}

pub(super) fn child_sees_parent(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    drv(c
        .d
        .create_rw(&id("child"), Some(&id("base")), &CreateOpts::default()))?;
    same_listing("child view", &c.view("child")?, &c.view("base")?)
}

pub(super) fn copy_on_write(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    let before = c.view("base")?;
    drv(c
        .d
        .create_rw(&id("child"), Some(&id("base")), &CreateOpts::default()))?;
    c.with_mount("child", |p| {
        std::fs::write(p.join("etc/hostname"), "changed\n")?;
        std::fs::remove_file(p.join("etc/passwd"))?;
        std::fs::remove_dir_all(p.join("var/lib/app"))?;
        std::fs::write(p.join("new"), "new")?;
        std::fs::set_permissions(
            p.join("usr/bin/tool"),
            std::fs::Permissions::from_mode(0o700),
        )?;
        Ok(())
    })?;
    same_listing("parent after child writes", &c.view("base")?, &before)?;
    c.with_mount("child", |p| {
        ensure!(
            std::fs::read(p.join("etc/hostname"))? == b"changed\n",
            "child lost its write"
        );
        ensure!(!p.join("etc/passwd").exists(), "child's delete not visible");
        Ok(())
    })
}

pub(super) fn stack(c: &Ctx<'_>, n: usize) -> Result<()> {
    let mut parent: Option<String> = None;
    let mut all: Vec<Vec<E>> = Vec::new();
    for i in 0..n {
        let name = format!("l{i:03}");
        let l = vec![
            dir("layers"),
            file(format!("layers/f{i:03}"), format!("layer {i}\n")),
        ];
        c.apply(&name, parent.as_deref(), &l)?;
        all.push(l);
        parent = Some(name);
    }
    let top = parent.unwrap_or_default();
    c.with_mount(&top, |p| {
        for i in 0..n {
            let got = std::fs::read_to_string(p.join(format!("layers/f{i:03}")))
                .with_context(|| format!("file of layer {i}"))?;
            ensure!(got == format!("layer {i}\n"), "layer {i} content");
        }
        ensure!(
            std::fs::read_dir(p.join("layers"))?.count() == n,
            "file count"
        );
        Ok(())
    })
}

pub(super) fn deep_stack_64(c: &mut Ctx<'_>) -> Result<()> {
    stack(c, 64)
}

pub(super) fn deep_stack_n(c: &Ctx<'_>, n: usize) -> Result<()> {
    match c.caps.max_depth {
        Some(max) if max < n => {
            // build up to the maximum, then the next one must be refused
            stack(c, max)?;
            let top = format!("l{:03}", max - 1);
            let r = c.apply("over", Some(&top), &[file("x", "x")]);
            let e = expect_kind(
                r.map(|_| ()),
                ErrorKind::MaxDepth,
                "layer beyond the maximum depth",
            )?;
            ensure!(
                e.to_string().contains(&max.to_string())
                    || format!("{e:#}").contains(&max.to_string()),
                "MaxDepth error does not name the limit: {e:#}"
            );
            ensure!(!c.d.exists(&id("over")), "refused layer exists");
            Ok(())
        }
        _ => stack(c, n),
    }
}

pub(super) fn deep_stack_128(c: &mut Ctx<'_>) -> Result<()> {
    deep_stack_n(c, 128)
}

pub(super) fn deep_stack_400(c: &mut Ctx<'_>) -> Result<()> {
    deep_stack_n(c, 400)
}
