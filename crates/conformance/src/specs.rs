//! Mounting a driver's [`MountSpec`]s the way containerd's `mount.All`
//! does, so that cases can check what an external caller would see.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rustix::mount::{self as m, MountFlags, UnmountFlags};
use strata_core::MountSpec;

/// Mounted specs; unmounted (in reverse) on drop.
#[derive(Debug)]
pub struct Mounted {
    target: PathBuf,
    count: usize,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        for _ in 0..self.count {
            if let Err(e) = m::unmount(&self.target, UnmountFlags::empty()) {
                tracing::warn!(target = %self.target.display(), "unmount: {e}");
            }
        }
    }
}

/// Mount `specs` one on another at `target` (an existing directory).
pub fn mount_all(specs: &[MountSpec], target: &Path) -> Result<Mounted> {
    let mut done = Mounted {
        target: target.to_path_buf(),
        count: 0,
    };
    for s in specs {
        mount_one(s, target).with_context(|| format!("mount {s:?} at {}", target.display()))?;
        done.count += 1;
    }
    Ok(done)
}

fn mount_one(s: &MountSpec, target: &Path) -> Result<()> {
    let ro = s.options.iter().any(|o| o == "ro");
    match s.kind.as_str() {
        "bind" => {
            m::mount_bind_recursive(Path::new(&s.source), target)?;
            if ro {
                let flags = MountFlags::BIND | MountFlags::RDONLY;
                m::mount_remount(target, flags, "")?;
            }
        }
        "overlay" => {
            let data: Vec<&str> = s
                .options
                .iter()
                .map(String::as_str)
                .filter(|o| *o != "ro" && *o != "rw")
                .collect();
            let flags = if ro {
                MountFlags::RDONLY
            } else {
                MountFlags::empty()
            };
            let data = std::ffi::CString::new(data.join(","))?;
            m::mount(s.source.as_str(), target, "overlay", flags, data.as_c_str())?;
        }
        other => bail!("mount type {other:?} is not one a driver returns"),
    }
    Ok(())
}
