//! Mount plans: what to mount, decided without touching the kernel, so that
//! unit tests can inspect them without root (STYLE habit 2). The
//! [`crate::mount`] module executes them.

use std::path::PathBuf;

/// Which kernel interface mounts overlays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Api {
    /// fsopen / fsconfig (`lowerdir+`, one lower at a time) / fsmount /
    /// move_mount: a stack is limited only by the kernel's own depth limit.
    New,
    /// mount(2) with a `lowerdir=` option string of short links: limited by
    /// the page size of mount options.
    Legacy,
}

impl Api {
    pub fn describe(self) -> &'static str {
        match self {
            Api::New => "new mount API (fsopen/fsconfig lowerdir+/fsmount/move_mount)",
            Api::Legacy => "mount(2) with short links (l/)",
        }
    }
}

/// One lower layer: its `diff/` and its short link (for mount(2)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lower {
    pub diff: PathBuf,
    pub link: PathBuf,
}

/// What to mount at `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountPlan {
    /// A bind mount of one directory (a single-layer view: overlayfs needs
    /// two lowers when there is no upper).
    Bind {
        source: PathBuf,
        target: PathBuf,
        read_only: bool,
    },
    /// An overlay: `lowers` top first; `upper` = (upperdir, workdir).
    Overlay {
        lowers: Vec<Lower>,
        upper: Option<(PathBuf, PathBuf)>,
        target: PathBuf,
    },
}

/// Options on every overlay mount: kernel defaults (or module parameters)
/// must not turn on features that native diff cannot read.
pub const FIXED_OPTIONS: [(&str, &str); 3] = [
    ("redirect_dir", "off"),
    ("metacopy", "off"),
    ("index", "off"),
];

impl MountPlan {
    pub fn target(&self) -> &PathBuf {
        match self {
            MountPlan::Bind { target, .. } | MountPlan::Overlay { target, .. } => target,
        }
    }

    pub fn read_only(&self) -> bool {
        match self {
            MountPlan::Bind { read_only, .. } => *read_only,
            MountPlan::Overlay { upper, .. } => upper.is_none(),
        }
    }

    /// The ordered `fsconfig` (key, value) steps of the new API.
    pub fn fsconfig_steps(&self) -> Vec<(String, String)> {
        let MountPlan::Overlay { lowers, upper, .. } = self else {
            return Vec::new();
        };
        let mut v = vec![("source".to_string(), "strata".to_string())];
        for l in lowers {
            v.push(("lowerdir+".into(), l.diff.display().to_string()));
        }
        if let Some((u, w)) = upper {
            v.push(("upperdir".into(), u.display().to_string()));
            v.push(("workdir".into(), w.display().to_string()));
        }
        for (k, val) in FIXED_OPTIONS {
            v.push((k.into(), val.into()));
        }
        v
    }

    /// The plan as containerd's `Mount`: absolute paths, `lowerdir=` with
    /// the lowers' `diff/` directories, nearest first (containerd shortens
    /// long option strings itself, and its unpacker writes into
    /// `upperdir`).
    pub fn spec(&self) -> strata_core::MountSpec {
        match self {
            MountPlan::Bind {
                source, read_only, ..
            } => strata_core::MountSpec::bind(source, *read_only),
            MountPlan::Overlay { lowers, upper, .. } => {
                let mut options = Vec::new();
                if let Some((u, w)) = upper {
                    options.push(format!("workdir={}", w.display()));
                    options.push(format!("upperdir={}", u.display()));
                }
                let lower: Vec<String> = lowers
                    .iter()
                    .map(|l| l.diff.display().to_string())
                    .collect();
                options.push(format!("lowerdir={}", lower.join(":")));
                options.extend(FIXED_OPTIONS.iter().map(|(k, v)| format!("{k}={v}")));
                strata_core::MountSpec {
                    kind: "overlay".into(),
                    source: "overlay".into(),
                    options,
                }
            }
        }
    }

    /// The option string of mount(2), with lowers as short links; paths
    /// under `home` are made relative to it (the mount runs there).
    pub fn legacy_data(&self, home: &std::path::Path) -> String {
        let MountPlan::Overlay { lowers, upper, .. } = self else {
            return String::new();
        };
        let rel =
            |p: &PathBuf| -> String { p.strip_prefix(home).unwrap_or(p).display().to_string() };
        let lower: Vec<String> = lowers.iter().map(|l| rel(&l.link)).collect();
        let mut s = format!("lowerdir={}", lower.join(":"));
        if let Some((u, w)) = upper {
            s.push_str(&format!(",upperdir={},workdir={}", rel(u), rel(w)));
        }
        for (k, v) in FIXED_OPTIONS {
            s.push_str(&format!(",{k}={v}"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lowers(n: usize) -> Vec<Lower> {
        (0..n)
            .map(|i| Lower {
                diff: PathBuf::from(format!("/r/overlay2/L{i}/diff")),
                link: PathBuf::from(format!("/r/overlay2/l/S{i}")),
            })
            .collect()
    }

    #[test]
    fn spec_is_containerds_mount_with_absolute_diff_dirs() {
        let p = MountPlan::Overlay {
            lowers: lowers(2),
            upper: Some(("/r/u".into(), "/r/w".into())),
            target: "/t".into(),
        };
        let s = p.spec();
        assert_eq!(s.kind, "overlay");
        assert_eq!(
            s.options,
            [
                "workdir=/r/w",
                "upperdir=/r/u",
                "lowerdir=/r/overlay2/L0/diff:/r/overlay2/L1/diff",
                "redirect_dir=off",
                "metacopy=off",
                "index=off"
            ]
        );
        assert!(!s.read_only());
        let v = MountPlan::Overlay {
            lowers: lowers(2),
            upper: None,
            target: "/t".into(),
        };
        assert!(v.spec().read_only());
        let b = MountPlan::Bind {
            source: "/r/L0/diff".into(),
            target: "/t".into(),
            read_only: true,
        };
        assert_eq!(b.spec().options, ["rbind", "ro"]);
    }

    #[test]
    fn new_api_appends_each_lower_in_order_and_fixes_features() {
        let p = MountPlan::Overlay {
            lowers: lowers(3),
            upper: Some(("/r/u".into(), "/r/w".into())),
            target: "/r/m".into(),
        };
        let s = p.fsconfig_steps();
        let keys: Vec<&str> = s.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "source",
                "lowerdir+",
                "lowerdir+",
                "lowerdir+",
                "upperdir",
                "workdir",
                "redirect_dir",
                "metacopy",
                "index"
            ]
        );
        assert_eq!(s[1].1, "/r/overlay2/L0/diff");
        assert_eq!(s[3].1, "/r/overlay2/L2/diff");
        assert!(!p.read_only());
    }

    #[test]
    fn legacy_uses_short_links_and_same_options() {
        let p = MountPlan::Overlay {
            lowers: lowers(2),
            upper: None,
            target: "/r/m".into(),
        };
        assert_eq!(
            p.legacy_data(std::path::Path::new("/r/overlay2")),
            "lowerdir=l/S0:l/S1,redirect_dir=off,metacopy=off,index=off"
        );
        assert_eq!(
            p.legacy_data(std::path::Path::new("/elsewhere")),
            "lowerdir=/r/overlay2/l/S0:/r/overlay2/l/S1,redirect_dir=off,metacopy=off,index=off"
        );
        assert!(p.read_only());
    }
}
