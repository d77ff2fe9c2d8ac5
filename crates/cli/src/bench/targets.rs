//! The backend configurations a bench measures.

use anyhow::{Result, bail};
use strata_conformance::fixture::Backing;

/// One backend configuration to measure.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: &'static str,
    pub driver: &'static str,
    pub backing: Backing,
    pub opts: Vec<String>,
    /// Options that force the naive diff (for native vs naive).
    pub naive_opts: Option<Vec<String>>,
}

/// The targets `which` names (`all`, or a comma list of names or drivers).
pub fn targets(which: &str) -> Result<Vec<Target>> {
    let loop_fs = |fs: &str| Backing::Loop {
        fstype: fs.into(),
        size_mb: 24576,
    };
    let all = vec![
        Target {
            name: "vfs",
            driver: "vfs",
            backing: loop_fs("ext4"),
            opts: vec![],
            naive_opts: None,
        },
        Target {
            name: "vfs@btrfs",
            driver: "vfs",
            backing: loop_fs("btrfs"),
            opts: vec![],
            naive_opts: None,
        },
        Target {
            name: "vfs@btrfs-copy",
            driver: "vfs",
            backing: loop_fs("btrfs"),
            opts: vec!["vfs.no_reflink=true".into()],
            naive_opts: None,
        },
        Target {
            name: "overlay2",
            driver: "overlay2",
            backing: loop_fs("ext4"),
            opts: vec![],
            naive_opts: Some(vec!["overlay2.naive_diff=true".into()]),
        },
        Target {
            name: "btrfs",
            driver: "btrfs",
            backing: loop_fs("btrfs"),
            opts: vec![],
            naive_opts: Some(vec!["btrfs.naive_diff=true".into()]),
        },
    ];
    if which == "all" {
        return Ok(all);
    }
    let v: Vec<Target> = all
        .into_iter()
        .filter(|t| which.split(',').any(|w| w == t.name || w == t.driver))
        .collect();
    if v.is_empty() {
        bail!(
            "unknown bench target {which:?} (vfs, vfs@btrfs, vfs@btrfs-copy, overlay2, btrfs, all)"
        );
    }
    Ok(v)
}
