//! Executing mount plans, and probing what this kernel can do.
//!
//! Everything goes through rustix's safe wrappers of the mount syscalls
//! (the one unsafe call, giving a thread its own cwd, is in `sys`). A
//! failed new-API call carries the kernel's own messages, read back from
//! the fs context.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::CWD;
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, fsconfig_create,
    fsconfig_set_string, fsmount, fsopen, mount, move_mount,
};
use strata_core::{Error, Result, mounts};

use crate::plan::{Api, MountPlan};

/// Messages the kernel left in an fs context (`e overlayfs: ...`).
fn context_messages(fs: BorrowedFd<'_>) -> String {
    let mut msgs = Vec::new();
    let mut buf = [0u8; 1024];
    for _ in 0..32 {
        match rustix::io::read(fs, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => msgs.push(String::from_utf8_lossy(&buf[..n]).trim().to_string()),
        }
    }
    msgs.join("; ")
}

fn fail(op: &'static str, target: &Path, e: Errno, kernel: String) -> Error {
    let mut source = std::io::Error::from(e);
    if !kernel.is_empty() {
        source = std::io::Error::new(source.kind(), format!("{source} (kernel: {kernel})"));
    }
    Error::io(op, target, source)
}

/// Mount `plan` with `api`. Relative short links of a legacy mount are
/// resolved in `home` (the driver's directory).
pub fn execute(plan: &MountPlan, api: Api, home: &Path) -> Result<()> {
    match plan {
        MountPlan::Bind {
            source,
            target,
            read_only,
        } => {
            mounts::bind(source, target, *read_only).map_err(|e| Error::io("bind mount", target, e))
        }
        MountPlan::Overlay { target, .. } => match api {
            Api::New => mount_new(plan, target),
            Api::Legacy => {
                let data = std::ffi::CString::new(plan.legacy_data(home))
                    .map_err(|_| Error::invalid("mount options", "contain a NUL byte"))?;
                if data.as_bytes().len() >= 4096 {
                    return Err(Error::unsupported(
                        format!("mounting {} with mount(2)", target.display()),
                        format!(
                            "the option string is {} bytes; the page size allows 4095",
                            data.as_bytes().len()
                        ),
                    ));
                }
                let flags = if plan.read_only() {
                    MountFlags::RDONLY
                } else {
                    MountFlags::empty()
                };
                // mount(2) in a thread of its own whose cwd is `home`, so
                // that `l/SHORT` paths resolve; the process cwd is untouched
                let dir = strata_core::fsx::open_dir_path(home)
                    .map_err(|e| Error::io("open", home, e))?;
                let target2 = target.clone();
                let r = std::thread::scope(|s| {
                    s.spawn(|| -> std::result::Result<(), (Errno, &'static str)> {
                        crate::sys::private_cwd(dir.as_fd()).map_err(|e| {
                            (Errno::from_io_error(&e).unwrap_or(Errno::INVAL), "chdir")
                        })?;
                        mount(c"strata", &target2, c"overlay", flags, data.as_c_str())
                            .map_err(|e| (e, "mount"))
                    })
                    .join()
                });
                match r {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err((e, "chdir"))) => {
                        Err(fail("private cwd for mount(2)", target, e, String::new()))
                    }
                    Ok(Err((e, _))) => {
                        Err(fail("mount overlay (mount(2))", target, e, String::new()))
                    }
                    Err(_) => Err(Error::invalid("mount", "the mount thread panicked")),
                }
            }
        },
    }
}

fn mount_new(plan: &MountPlan, target: &Path) -> Result<()> {
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| fail("fsopen overlay", target, e, String::new()))?;
    for (k, v) in plan.fsconfig_steps() {
        if let Err(e) = fsconfig_set_string(&fs, k.as_str(), v.as_str()) {
            let msg = context_messages(fs.as_fd());
            return Err(fail("fsconfig", target, e, format!("{k}={v}: {msg}")));
        }
    }
    if let Err(e) = fsconfig_create(&fs) {
        let msg = context_messages(fs.as_fd());
        return Err(fail("fsconfig create overlay", target, e, msg));
    }
    let attrs = if plan.read_only() {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    } else {
        MountAttrFlags::empty()
    };
    let mnt: OwnedFd = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs).map_err(|e| {
        let msg = context_messages(fs.as_fd());
        fail("fsmount overlay", target, e, msg)
    })?;
    move_mount(
        &mnt,
        c"",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| fail("move_mount overlay", target, e, String::new()))
}

/// Does this kernel have the new mount API with `lowerdir+` for overlay?
pub fn new_api_available(scratch_dir: &Path) -> bool {
    let Ok(fs) = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) else {
        return false;
    };
    fsconfig_set_string(&fs, "lowerdir+", scratch_dir.display().to_string().as_str()).is_ok()
}
