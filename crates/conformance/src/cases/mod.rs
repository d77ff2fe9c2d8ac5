//! The cases, in rooms by topic. Each case describes layers as data (see
//! [`crate::layer`]), drives the driver through the trait, and asserts
//! views, changes and diffs; views are compared with a reference built by
//! the core engine in a plain directory. Each room lists its cases beside
//! their bodies; [`cases`] gathers them.
//!
//! Rooms: `lifecycle`, `entries`, `stacking`, `changes` (with the table of
//! simple change rows), `commit`, `links`, `specs` (mounts as data, usage), `whiteouts`, `mounts`,
//! `hostile`.

mod changes;
mod commit;
mod entries;
mod hostile;
mod lifecycle;
mod links;
mod mounts;
mod specs;
mod stacking;
mod whiteouts;

use std::sync::Arc;

use anyhow::Result;

use crate::Ctx;

/// Requirements of a case on the driver's capabilities.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    pub privileged: bool,
    pub user_xattrs: bool,
    pub trusted_xattrs: bool,
    pub read_only_mounts: bool,
    pub child_process: bool,
}

/// The body of a case.
pub type Run = Arc<dyn Fn(&mut Ctx<'_>) -> Result<()> + Send + Sync>;

/// One named case.
#[derive(Clone)]
pub struct Case {
    pub name: &'static str,
    pub about: &'static str,
    pub needs: Needs,
    pub run: Run,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case").field("name", &self.name).finish()
    }
}

impl Case {
    /// Why this case cannot run with these capabilities, if it cannot.
    pub fn unmet(&self, caps: &strata_core::Capabilities, have_child: bool) -> Option<String> {
        let n = self.needs;
        if n.privileged && !caps.privileged {
            return Some("needs root (devices, owners)".into());
        }
        if n.user_xattrs && !caps.user_xattrs {
            return Some("the file system has no user xattrs".into());
        }
        if n.trusted_xattrs && !caps.trusted_xattrs {
            return Some("trusted xattrs need root".into());
        }
        if n.read_only_mounts && !caps.read_only_mounts {
            return Some("the driver cannot mount read-only here (not root)".into());
        }
        if n.child_process && !have_child {
            return Some("the harness cannot start a second process".into());
        }
        None
    }
}

pub(super) const NONE: Needs = Needs {
    privileged: false,
    user_xattrs: false,
    trusted_xattrs: false,
    read_only_mounts: false,
    child_process: false,
};
pub(super) const PRIV: Needs = Needs {
    privileged: true,
    ..NONE
};
pub(super) const XATTR: Needs = Needs {
    user_xattrs: true,
    ..NONE
};
pub(super) const RO: Needs = Needs {
    read_only_mounts: true,
    ..NONE
};
pub(super) const CHILD: Needs = Needs {
    child_process: true,
    ..NONE
};

macro_rules! case {
    ($name:ident, $needs:expr, $about:expr) => {
        Case {
            name: stringify!($name),
            about: $about,
            needs: $needs,
            run: std::sync::Arc::new($name),
        }
    };
}

use case;

/// Every case, in the order they are reported.
pub fn cases() -> Vec<Case> {
    [
        lifecycle::cases(),
        entries::cases(),
        stacking::cases(),
        changes::cases(),
        commit::cases(),
        links::cases(),
        specs::cases(),
        whiteouts::cases(),
        mounts::cases(),
        hostile::cases(),
    ]
    .concat()
}

/// What every room uses.
mod prelude {
    pub(super) use std::collections::BTreeSet;
    pub(super) use std::io::Read;
    pub(super) use std::os::unix::ffi::OsStrExt;
    pub(super) use std::os::unix::fs::{MetadataExt, PermissionsExt};
    pub(super) use std::path::Path;

    pub(super) use anyhow::{Context, Result, bail, ensure};
    pub(super) use strata_core::archive::tar::{Kind, TarReader};
    pub(super) use strata_core::{CreateOpts, DiffBase, ErrorKind};

    pub(super) use super::helpers::*;
    pub(super) use super::{CHILD, Case, NONE, PRIV, RO, XATTR, case};
    pub(super) use crate::layer::*;
    pub(super) use crate::{Ctx, id, require, same_listing};
}

/// Helpers shared by the rooms.
mod helpers {
    use super::prelude::*;

    pub(super) fn kind_of(e: &anyhow::Error) -> Option<ErrorKind> {
        e.chain()
            .find_map(|c| c.downcast_ref::<strata_core::Error>())
            .map(|e| e.kind())
    }

    pub(super) fn expect_kind<T: std::fmt::Debug>(
        r: Result<T>,
        want: ErrorKind,
        what: &str,
    ) -> Result<anyhow::Error> {
        match r {
            Ok(v) => bail!("{what}: expected a {want:?} error, got success ({v:?})"),
            Err(e) => {
                ensure!(
                    kind_of(&e) == Some(want),
                    "{what}: expected {want:?}, got {:?}: {e:#}",
                    kind_of(&e)
                );
                Ok(e)
            }
        }
    }

    pub(super) fn drv<T>(r: strata_core::Result<T>) -> Result<T> {
        Ok(r?)
    }

    /// The entries of a tar: (path, kind letter, link target).
    pub(super) fn tar_entries(data: &[u8]) -> Result<Vec<(String, char, String)>> {
        let mut r = TarReader::new(data);
        let mut v = Vec::new();
        while let Some(h) = r.next_entry()? {
            let k = match h.kind {
                Kind::File => 'f',
                Kind::Dir => 'd',
                Kind::Symlink => 'l',
                Kind::Hardlink => 'h',
                Kind::Char => 'c',
                Kind::Block => 'b',
                Kind::Fifo => 'p',
            };
            v.push((
                String::from_utf8_lossy(&h.path)
                    .trim_end_matches('/')
                    .to_string(),
                k,
                String::from_utf8_lossy(&h.link).into_owned(),
            ));
        }
        Ok(v)
    }

    pub(super) fn tar_paths(data: &[u8]) -> Result<BTreeSet<String>> {
        Ok(tar_entries(data)?.into_iter().map(|(p, _, _)| p).collect())
    }

    /// Expected changes, in the order `changes` returns them (by path).
    pub(super) fn set(v: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        v.sort_by(|a, b| a.get(2..).cmp(&b.get(2..)).then(a.cmp(b)));
        v
    }

    pub(super) fn base_tree() -> Vec<E> {
        vec![
            dir("etc"),
            file("etc/hostname", "strata\n"),
            file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
            dir("usr"),
            dir("usr/bin"),
            file("usr/bin/tool", "#!/bin/sh\necho tool\n").mode(0o755),
            dir("var"),
            dir("var/lib"),
            dir("var/lib/app"),
            file("var/lib/app/a", "a"),
            file("var/lib/app/b", "bb"),
            dir("var/lib/app/sub"),
            file("var/lib/app/sub/c", "ccc"),
            dir("tmp").mode(0o1777),
            symlink("bin", "usr/bin"),
        ]
    }

    /// Apply `upper` on a base tree and check changes against the expected list.
    pub(super) fn check_changes(c: &Ctx<'_>, upper: &[E], want: &[&str]) -> Result<()> {
        c.apply("base", None, &base_tree())?;
        c.apply("top", Some("base"), upper)?;
        let got = c.changes("top")?;
        ensure!(
            got == set(want),
            "changes: got {got:?}, want {:?}",
            set(want)
        );
        // and the diff, applied on the base again, gives the same view
        let d = c.diff("top")?;
        c.apply_bytes("again", Some("base"), &d)?;
        same_listing("diff re-applied", &c.view("again")?, &c.view("top")?)?;
        Ok(())
    }
}
