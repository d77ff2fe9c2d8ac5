//! Can overlay2 run with its root here? The kernel must have overlayfs, we
//! must be root, the root must not itself be on overlayfs, and a real test
//! mount must hold a whiteout.

use std::path::Path;

use strata_core::error::IoContext;
use strata_core::state::remove_plain_dir;
use strata_core::{Error, Result, fsx, mounts};

use crate::mount;
use crate::plan::{Api, Lower, MountPlan};

const OVERLAYFS_MAGIC: u64 = 0x794c_7630;

#[allow(clippy::disallowed_methods)] // /proc, not layer content
fn kernel_has_overlay() -> bool {
    let has = || {
        std::fs::read_to_string("/proc/filesystems")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split_whitespace().last() == Some("overlay"))
    };
    if has() {
        return true;
    }
    // the module may load on first use
    let _ = std::process::Command::new("modprobe")
        .arg("overlay")
        .status();
    has()
}

/// Can overlay2 run with its root at `root`?
pub fn supported(root: &Path) -> Result<()> {
    if !kernel_has_overlay() {
        return Err(Error::unsupported(
            "overlay2",
            "the kernel has no overlay file system",
        ));
    }
    if !fsx::is_root() {
        return Err(Error::unsupported(
            "overlay2",
            "mounting overlays needs root",
        ));
    }
    fsx::mkdir_p(root, 0o711).ctx("create root", root)?;
    let st = rustix::fs::statfs(root).ctx("statfs", root)?;
    if st.f_type as u64 == OVERLAYFS_MAGIC {
        return Err(Error::unsupported(
            format!("overlay2 on {}", root.display()),
            "the root is itself on overlayfs; overlay on overlay is refused (use vfs, or a root on ext4/xfs/btrfs/tmpfs)",
        ));
    }
    let t = root.join(format!(
        ".overlay2-check.{}",
        strata_core::state::unique_suffix()
    ));
    let r = test_mount(root, &t);
    let _ = mounts::unmount_all_under(&t);
    let _ = remove_plain_dir(&t);
    r
}

/// A real test mount in `t`: two lowers, an upper, and a delete through
/// the overlay that must leave a whiteout (d_type, xattrs and mknod work).
#[allow(clippy::disallowed_methods)] // a scratch tree of ours, not layer content
fn test_mount(root: &Path, t: &Path) -> Result<()> {
    let refuse = |why: String| Error::unsupported(format!("overlay2 on {}", root.display()), why);
    for d in ["l1", "l2", "u", "w", "m"] {
        fsx::mkdir_p(&t.join(d), 0o755).ctx("create", t.join(d))?;
    }
    std::fs::write(t.join("l1/f"), b"x").ctx("write", t.join("l1/f"))?;
    let lower = |d: &str| Lower {
        diff: t.join(d),
        link: t.join(d),
    };
    let plan = MountPlan::Overlay {
        lowers: vec![lower("l2"), lower("l1")],
        upper: Some((t.join("u"), t.join("w"))),
        target: t.join("m"),
    };
    let api = if mount::new_api_available(t) {
        Api::New
    } else {
        Api::Legacy
    };
    mount::execute(&plan, api, t)
        .map_err(|e| refuse(format!("a test overlay mount failed: {e}")))?;
    let res = std::fs::remove_file(t.join("m/f"));
    let _ = mounts::unmount_path(&t.join("m"));
    res.map_err(|e| {
        refuse(format!(
            "the backing file system cannot hold overlay whiteouts: {e}"
        ))
    })?;
    let wst = rustix::fs::statat(
        rustix::fs::CWD,
        t.join("u/f"),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .ctx("stat", t.join("u/f"))?;
    if !fsx::is_whiteout(&wst) {
        return Err(refuse(
            "deleting through the test overlay did not leave a whiteout".into(),
        ));
    }
    Ok(())
}
