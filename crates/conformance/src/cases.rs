//! The cases. Each describes layers as data (see [`crate::layer`]),
//! drives the driver through the trait, and asserts views, changes and
//! diffs; views are compared with a reference built by the core engine in a
//! plain directory.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use strata_core::archive::tarfmt::{Kind, TarReader};
use strata_core::{CreateOpts, DiffBase, ErrorKind};

use crate::layer::*;
use crate::{Ctx, id, require, same_listing};

/// Requirements of a case on the driver's capabilities.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    pub privileged: bool,
    pub user_xattrs: bool,
    pub trusted_xattrs: bool,
    pub read_only_mounts: bool,
    pub child_process: bool,
}

/// One named case.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: &'static str,
    pub about: &'static str,
    pub needs: Needs,
    pub run: fn(&mut Ctx<'_>) -> Result<()>,
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

const NONE: Needs = Needs {
    privileged: false,
    user_xattrs: false,
    trusted_xattrs: false,
    read_only_mounts: false,
    child_process: false,
};
const PRIV: Needs = Needs {
    privileged: true,
    ..NONE
};
const XATTR: Needs = Needs {
    user_xattrs: true,
    ..NONE
};
const RO: Needs = Needs {
    read_only_mounts: true,
    ..NONE
};
const CHILD: Needs = Needs {
    child_process: true,
    ..NONE
};

macro_rules! case {
    ($name:ident, $needs:expr, $about:expr) => {
        Case {
            name: stringify!($name),
            about: $about,
            needs: $needs,
            run: $name,
        }
    };
}

/// Every case, in the order they are reported.
pub fn cases() -> Vec<Case> {
    vec![
        case!(
            empty_layer_lifecycle,
            NONE,
            "an empty layer creates, mounts, unmounts and removes without residue"
        ),
        case!(
            base_layer_every_entry_type,
            PRIV,
            "files, dirs, symlinks, hardlinks, fifos, devices, modes, owners, ns mtimes, xattrs, long names"
        ),
        case!(
            base_layer_unprivileged_types,
            NONE,
            "files, dirs, symlinks, hardlinks, fifos, modes and ns mtimes as any user"
        ),
        case!(
            user_xattrs_applied,
            XATTR,
            "user.* xattrs of files, dirs reach the view"
        ),
        case!(
            long_names_gnu_and_pax,
            NONE,
            "GNU and PAX long names and long link targets"
        ),
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
        case!(
            diff_roundtrip,
            NONE,
            "diff -> apply on a fresh parent gives an identical tree"
        ),
        case!(
            diff_roundtrip_privileged,
            PRIV,
            "round trip with owners, devices and setuid bits"
        ),
        case!(changes_add, NONE, "an added file is A, its directory C"),
        case!(changes_modify_content, NONE, "content change is C"),
        case!(
            changes_modify_same_size_same_mtime,
            NONE,
            "content change with equal size and mtime is still C"
        ),
        case!(changes_modify_mode, NONE, "mode change is C"),
        case!(changes_modify_owner, PRIV, "owner change is C"),
        case!(changes_modify_mtime, NONE, "mtime change is C"),
        case!(changes_modify_xattr, XATTR, "xattr change is C"),
        case!(changes_delete_file, NONE, "deleted file is D"),
        case!(changes_delete_dir_tree, NONE, "deleted tree is one D"),
        case!(changes_file_to_dir, NONE, "file replaced by a directory"),
        case!(changes_dir_to_file, NONE, "directory replaced by a file"),
        case!(changes_rename, NONE, "rename is D + A"),
        case!(
            changes_new_hardlink,
            NONE,
            "a new hardlink is A and keeps its identity in the diff"
        ),
        case!(
            diff_size_counts_changed_bytes,
            NONE,
            "diff_size equals the bytes of added and changed files"
        ),
        case!(
            whiteout_applied,
            NONE,
            "a whiteout deletes a lower file and a lower tree"
        ),
        case!(
            opaque_dir_applied,
            NONE,
            "an opaque marker hides the lower directory's content but keeps the layer's own"
        ),
        case!(
            whiteout_then_recreate_same_layer,
            NONE,
            "whiteout followed by re-creation in one layer"
        ),
        case!(
            whiteout_does_not_hide_same_layer,
            NONE,
            "a whiteout never hides an entry of its own layer"
        ),
        case!(
            opaque_root_hides_all_below,
            NONE,
            "an opaque marker at a layer's root hides every layer below, for children too"
        ),
        case!(
            whiteout_spares_own_entries_in_lower_dirs,
            NONE,
            "whiting out or emptying a lower directory keeps what this layer put inside"
        ),
        case!(
            whiteout_edge_forms,
            NONE,
            "dir over own file, whiteouts in a whited-out dir, markers in a base layer, links to hidden files"
        ),
        case!(
            delete_lower_recreate_upper,
            NONE,
            "deleted in one layer, re-created in the next"
        ),
        case!(
            move_file_out_of_lower,
            NONE,
            "a file moved out of a lower directory"
        ),
        case!(
            chown_lower_file,
            PRIV,
            "chown of a lower file survives commit"
        ),
        case!(
            dir_permission_change_survives_commit,
            NONE,
            "a directory's mode change survives diff and apply"
        ),
        case!(
            root_dir_permissions,
            NONE,
            "the root directory's mode from ./ applies and survives"
        ),
        case!(
            whiteouts_from_running_mount,
            NONE,
            "rm, rm -r, mv and rm -rf + mkdir in a mounted rw layer give the right diff"
        ),
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
            parallel_mount_unmount,
            NONE,
            "threads mount and unmount one layer concurrently"
        ),
        case!(
            sparse_8g_keeps_holes,
            NONE,
            "an 8 GiB sparse file keeps its holes through apply, child and diff"
        ),
        case!(
            odd_names,
            NONE,
            "spaces, newlines, non-UTF-8 bytes, 255-byte names, 4000-byte paths"
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
            apply_gzip_and_zstd,
            NONE,
            "gzip and zstd diffs apply; diffID is the sha256 of the uncompressed tar"
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
            hostile_dotdot_refused,
            NONE,
            "`..` above the root fails the apply as PathEscape"
        ),
        case!(
            hostile_symlink_escape_contained,
            NONE,
            "entries written through an escaping symlink stay in the root"
        ),
        case!(
            hostile_lower_symlink_contained,
            NONE,
            "a symlink planted by a lower layer cannot lead writes out"
        ),
        case!(
            hostile_hardlink_escape_refused,
            NONE,
            "hardlinks to outside paths fail and touch nothing"
        ),
        case!(
            hostile_backend_forms_refused,
            NONE,
            "overlay xattrs and 0/0 char devices from a tar are refused"
        ),
        case!(
            hostile_whiteout_tricks,
            NONE,
            "whiteouts of ., .. and through symlinks are contained; no .wh. dirs via symlinks"
        ),
        case!(
            truncated_and_corrupt_refused,
            NONE,
            "truncated and corrupt archives are refused cleanly"
        ),
        case!(
            hostile_numeric_fields,
            NONE,
            "negative, overflowing and out-of-range numbers are refused or kept faithfully"
        ),
        case!(
            hostile_duplicate_conflicting_entries,
            NONE,
            "one path as file, dir, symlink, file again: the last entry wins, contained"
        ),
        case!(
            hostile_deep_nesting,
            NONE,
            "10,000-level nesting ends in a clean error or a contained tree, no crash"
        ),
        case!(
            hostile_opaque_and_names,
            NONE,
            "opaque markers through symlinks stay in the root; NUL in a PAX name is refused"
        ),
        case!(
            diff_against_ancestor,
            NONE,
            "diff against an older ancestor includes the changes of layers between"
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
    ]
}

// ------------------------------------------------------------------ helpers

fn kind_of(e: &anyhow::Error) -> Option<ErrorKind> {
    e.chain()
        .find_map(|c| c.downcast_ref::<strata_core::Error>())
        .map(|e| e.kind())
}

fn expect_kind<T: std::fmt::Debug>(
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

fn drv<T>(r: strata_core::Result<T>) -> Result<T> {
    Ok(r?)
}

/// The entries of a tar: (path, kind letter, link target).
fn tar_entries(data: &[u8]) -> Result<Vec<(String, char, String)>> {
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

fn tar_paths(data: &[u8]) -> Result<BTreeSet<String>> {
    Ok(tar_entries(data)?.into_iter().map(|(p, _, _)| p).collect())
}

/// Expected changes, in the order `changes` returns them (by path).
fn set(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort_by(|a, b| a.get(2..).cmp(&b.get(2..)).then(a.cmp(b)));
    v
}

fn base_tree() -> Vec<E> {
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
fn check_changes(c: &Ctx<'_>, upper: &[E], want: &[&str]) -> Result<()> {
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

// ------------------------------------------------------------------ cases

fn empty_layer_lifecycle(c: &mut Ctx<'_>) -> Result<()> {
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
fn residue(root: &Path) -> Result<BTreeSet<String>> {
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

fn every_type_layer() -> Vec<E> {
    let long = "d".repeat(120);
    vec![
        dir("").mode(0o755),
        file("plain", "hello\n").mtime(1_700_000_000, 123_456_789),
        file("empty", ""),
        file("setuid", "x").mode(0o4755),
        file("setgid", "x").mode(0o2755),
        dir("sticky").mode(0o1777),
        dir("owned").owner(1000, 1000).mode(0o750),
        file("owned/big-ids", "x").owner(4_000_000_000, 3_000_000_000),
        symlink("abs-link", "/etc/passwd"),
        symlink("rel-link", "plain"),
        symlink("dangling", "no/such/file"),
        hardlink("hard", "plain"),
        fifo("fifo").mode(0o600),
        chardev("null", 1, 3),
        blockdev("loop9", 7, 9),
        file("caps", "binary").xattr(
            "security.capability",
            [
                1u8, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        ),
        file("trusted", "t").xattr("trusted.strata.k", "v"),
        dir(format!("{long}/{long}")),
        file(format!("{long}/{long}/{}", "f".repeat(200)), "deep"),
        symlink("long-target", "t".repeat(300)),
        sparse(
            "sparse",
            1 << 20,
            vec![(4096, b"data".to_vec()), (1 << 19, b"more".to_vec())],
        ),
    ]
}

fn base_layer_every_entry_type(c: &mut Ctx<'_>) -> Result<()> {
    require(c.caps.trusted_xattrs, "trusted xattrs unavailable")?;
    let l = every_type_layer();
    let st = c.apply("base", None, &l)?;
    ensure!(st.diff_id == sha256(&tar(&l)), "diff_id mismatch");
    let want = c.reference(&[&l])?;
    let got = c.view("base")?;
    same_listing("view of base", &got, &want)?;
    c.with_mount("base", |p| {
        let m = std::fs::symlink_metadata(p.join("plain"))?;
        ensure!(
            m.mtime_nsec() == 123_456_789,
            "mtime ns lost: {}",
            m.mtime_nsec()
        );
        ensure!(
            std::fs::symlink_metadata(p.join("setuid"))?.mode() & 0o7777 == 0o4755,
            "setuid lost"
        );
        let o = std::fs::symlink_metadata(p.join("owned/big-ids"))?;
        ensure!(
            o.uid() == 4_000_000_000 && o.gid() == 3_000_000_000,
            "large ids lost: {}:{}",
            o.uid(),
            o.gid()
        );
        ensure!(
            std::fs::symlink_metadata(p.join("hard"))?.ino()
                == std::fs::symlink_metadata(p.join("plain"))?.ino(),
            "hardlink is not a hardlink"
        );
        let s = std::fs::symlink_metadata(p.join("sparse"))?;
        ensure!(
            s.len() == 1 << 20 && s.blocks() * 512 < 64 * 1024,
            "sparse file lost its holes: {} blocks",
            s.blocks()
        );
        ensure!(
            std::fs::read_link(p.join("abs-link"))? == Path::new("/etc/passwd"),
            "symlink target changed"
        );
        Ok(())
    })
}

fn base_layer_unprivileged_types(c: &mut Ctx<'_>) -> Result<()> {
    let (uid, gid) = (
        rustix::process::geteuid().as_raw() as u64,
        rustix::process::getegid().as_raw() as u64,
    );
    let l: Vec<E> = vec![
        file("plain", "hello\n").mtime(1_700_000_000, 987_654_321),
        file("exec", "#!/bin/sh\n").mode(0o755),
        dir("private").mode(0o700),
        file("private/x", "y").mode(0o600),
        symlink("rel", "plain"),
        symlink("abs", "/plain"),
        hardlink("hard", "plain"),
        fifo("fifo"),
        dir("sticky").mode(0o1777),
    ]
    .into_iter()
    .map(|e| e.owner(uid, gid))
    .collect();
    c.apply("base", None, &l)?;
    same_listing("view", &c.view("base")?, &c.reference(&[&l])?)
}

fn user_xattrs_applied(c: &mut Ctx<'_>) -> Result<()> {
    let l = vec![
        dir("d").xattr("user.dir", "on a dir"),
        file("d/f", "x")
            .xattr("user.a", "1")
            .xattr("user.bin", [0u8, 255, 10]),
    ];
    c.apply("base", None, &l)?;
    c.with_mount("base", |p| {
        let fd = strata_core::fsx::open_dir_path(&p.join("d"))?;
        let x = strata_core::fsx::xattrs(strata_core::fsx::XattrTarget::Fd(
            std::os::fd::AsFd::as_fd(&fd),
        ))?;
        ensure!(
            x.iter().any(|(k, v)| k == b"user.dir" && v == b"on a dir"),
            "dir xattr missing: {x:?}"
        );
        Ok(())
    })?;
    same_listing("view", &c.view("base")?, &c.reference(&[&l])?)
}

fn long_names_gnu_and_pax(c: &mut Ctx<'_>) -> Result<()> {
    // PAX names come from our writer; GNU long names are built by hand
    let long_dir = format!("{}/{}", "a".repeat(150), "b".repeat(150));
    let mut data = tar(&[
        dir("a".repeat(150)),
        dir(&long_dir),
        file(format!("{long_dir}/pax-file"), "p"),
    ]);
    data.truncate(data.len() - 1024);
    let gnu_name = format!("{long_dir}/gnu-file-{}", "g".repeat(100));
    data.extend(gnu_entry(b'L', &gnu_name, b'0', b"gnu content"));
    data.extend(gnu_link_entry(
        &format!("{long_dir}/gnu-link"),
        &"t".repeat(200),
    ));
    data.extend([0u8; 1024]);
    c.apply_bytes("base", None, &data)?;
    c.with_mount("base", |p| {
        let f = p.join(&gnu_name);
        ensure!(std::fs::read(&f)? == b"gnu content", "GNU long name file");
        ensure!(
            std::fs::read(p.join(&long_dir).join("pax-file"))? == b"p",
            "PAX long name file"
        );
        ensure!(
            std::fs::read_link(p.join(&long_dir).join("gnu-link"))?
                .as_os_str()
                .len()
                == 200,
            "GNU long link"
        );
        Ok(())
    })
}

/// A GNU long-name entry followed by the entry itself (ustar name cut).
fn gnu_entry(ext: u8, name: &str, kind: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut nm = name.as_bytes().to_vec();
    nm.push(0);
    let mut h = tar_header(b"././@LongLink", ext, nm.len() as u64);
    out.extend_from_slice(&h);
    out.extend_from_slice(&nm);
    out.resize(out.len().div_ceil(512) * 512, 0);
    h = tar_header(&name.as_bytes()[..99], kind, content.len() as u64);
    out.extend_from_slice(&h);
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn gnu_link_entry(name: &str, target: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut nm = name.as_bytes().to_vec();
    nm.push(0);
    out.extend_from_slice(&tar_header(b"././@LongLink", b'L', nm.len() as u64));
    out.extend_from_slice(&nm);
    out.resize(out.len().div_ceil(512) * 512, 0);
    let mut t = target.as_bytes().to_vec();
    t.push(0);
    out.extend_from_slice(&tar_header(b"././@LongLink", b'K', t.len() as u64));
    out.extend_from_slice(&t);
    out.resize(out.len().div_ceil(512) * 512, 0);
    let mut h = tar::Header::new_gnu();
    let _ = h.set_path(name.get(..99).unwrap_or(name));
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME as u64);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out
}

/// A raw GNU-format header (name may be up to 100 bytes, any bytes).
pub fn tar_header(name: &[u8], kind: u8, size: u64) -> [u8; 512] {
    let mut h = tar::Header::new_gnu();
    {
        let n = &mut h.as_old_mut().name;
        let k = name.len().min(100);
        n[..k].copy_from_slice(&name[..k]);
    }
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_mode(0o644);
    h.set_size(size);
    h.set_mtime(MTIME as u64);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    *h.as_bytes()
}

fn child_sees_parent(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    drv(c
        .d
        .create_rw(&id("child"), Some(&id("base")), &CreateOpts::default()))?;
    same_listing("child view", &c.view("child")?, &c.view("base")?)
}

fn copy_on_write(c: &mut Ctx<'_>) -> Result<()> {
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

fn stack(c: &Ctx<'_>, n: usize) -> Result<()> {
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

fn deep_stack_64(c: &mut Ctx<'_>) -> Result<()> {
    stack(c, 64)
}

fn deep_stack_n(c: &Ctx<'_>, n: usize) -> Result<()> {
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

fn deep_stack_128(c: &mut Ctx<'_>) -> Result<()> {
    deep_stack_n(c, 128)
}

fn deep_stack_400(c: &mut Ctx<'_>) -> Result<()> {
    deep_stack_n(c, 400)
}

fn upper_changes() -> Vec<E> {
    vec![
        dir("etc"),
        file("etc/hostname", "changed host\n"),
        whiteout("etc/passwd"),
        dir("var"),
        dir("var/lib"),
        whiteout("var/lib/app"),
        dir("new-dir"),
        file("new-dir/new-file", "fresh"),
        hardlink("new-dir/link", "new-dir/new-file"),
        symlink("new-dir/sym", "../etc/hostname"),
        dir("usr"),
        dir("usr/bin"),
        file("usr/bin/tool", "#!/bin/sh\necho v2\n").mode(0o700),
    ]
}

fn diff_roundtrip(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    c.apply("top", Some("base"), &upper_changes())?;
    let d = c.diff("top")?;
    c.apply_bytes("copy", Some("base"), &d)?;
    same_listing("round trip", &c.view("copy")?, &c.view("top")?)?;
    same_listing(
        "reference",
        &c.view("top")?,
        &c.reference(&[&base_tree(), &upper_changes()])?,
    )?;
    // and a base layer's full diff re-creates it from nothing
    let mut full = Vec::new();
    drv(c.d.diff(&id("top"), DiffBase::Empty, &mut full))?;
    c.apply_bytes("flat", None, &full)?;
    same_listing("flattened", &c.view("flat")?, &c.view("top")?)?;
    // deterministic: the same diff twice
    ensure!(c.diff("top")? == d, "diff output is not deterministic");
    Ok(())
}

fn diff_roundtrip_privileged(c: &mut Ctx<'_>) -> Result<()> {
    let base = vec![
        dir("dev"),
        chardev("dev/null", 1, 3),
        file("x", "x"),
        dir("home"),
    ];
    let up = vec![
        dir("dev"),
        chardev("dev/zero", 1, 5),
        blockdev("dev/sda", 8, 0),
        file("x", "x").owner(123, 456).mode(0o4711),
        dir("home"),
        dir("home/u").owner(1000, 1000).mode(0o700),
        file("home/u/f", "data").owner(1000, 1000),
    ];
    c.apply("base", None, &base)?;
    c.apply("top", Some("base"), &up)?;
    let d = c.diff("top")?;
    c.apply_bytes("copy", Some("base"), &d)?;
    same_listing("privileged round trip", &c.view("copy")?, &c.view("top")?)
}

fn changes_add(c: &mut Ctx<'_>) -> Result<()> {
    check_changes(
        c,
        &[dir("etc"), file("etc/new", "n")],
        &["C /etc", "A /etc/new"],
    )
}

fn changes_modify_content(c: &mut Ctx<'_>) -> Result<()> {
    check_changes(
        c,
        &[
            dir("etc"),
            file("etc/hostname", "another\n").mtime(MTIME + 5, 0),
        ],
        &["C /etc", "C /etc/hostname"],
    )
}

fn changes_modify_same_size_same_mtime(c: &mut Ctx<'_>) -> Result<()> {
    // "strata\n" -> "STRATA\n": equal size, equal (whole-second) mtime
    check_changes(
        c,
        &[dir("etc"), file("etc/hostname", "STRATA\n")],
        &["C /etc", "C /etc/hostname"],
    )
}

fn changes_modify_mode(c: &mut Ctx<'_>) -> Result<()> {
    check_changes(
        c,
        &[dir("etc"), file("etc/hostname", "strata\n").mode(0o600)],
        &["C /etc", "C /etc/hostname"],
    )
}

fn changes_modify_owner(c: &mut Ctx<'_>) -> Result<()> {
    check_changes(
        c,
        &[dir("etc"), file("etc/hostname", "strata\n").owner(7, 8)],
        &["C /etc", "C /etc/hostname"],
    )
}

fn changes_modify_mtime(c: &mut Ctx<'_>) -> Result<()> {
    check_changes(
        c,
        &[dir("etc"), file("etc/hostname", "strata\n").mtime(MTIME, 5)],
        &["C /etc", "C /etc/hostname"],
    )
}

fn changes_modify_xattr(c: &mut Ctx<'_>) -> Result<()> {
    check_changes(
        c,
        &[
            dir("etc"),
            file("etc/hostname", "strata\n").xattr("user.k", "v"),
        ],
        &["C /etc", "C /etc/hostname"],
    )
}

fn changes_delete_file(c: &mut Ctx<'_>) -> Result<()> {
    check_changes(
        c,
        &[dir("etc"), whiteout("etc/passwd")],
        &["C /etc", "D /etc/passwd"],
    )
}

fn changes_delete_dir_tree(c: &mut Ctx<'_>) -> Result<()> {
    check_changes(
        c,
        &[dir("var"), dir("var/lib"), whiteout("var/lib/app")],
        &["C /var", "C /var/lib", "D /var/lib/app"],
    )
}

fn changes_file_to_dir(c: &mut Ctx<'_>) -> Result<()> {
    check_changes(
        c,
        &[
            dir("etc"),
            whiteout("etc/hostname"),
            dir("etc/hostname"),
            file("etc/hostname/inside", "i"),
        ],
        &["C /etc", "C /etc/hostname", "A /etc/hostname/inside"],
    )
}

fn changes_dir_to_file(c: &mut Ctx<'_>) -> Result<()> {
    check_changes(
        c,
        &[
            dir("var"),
            dir("var/lib"),
            whiteout("var/lib/app"),
            file("var/lib/app", "now a file"),
        ],
        &["C /var", "C /var/lib", "C /var/lib/app"],
    )
}

fn changes_rename(c: &mut Ctx<'_>) -> Result<()> {
    // a rename in a running container: whiteout of the old name + the new
    c.apply("base", None, &base_tree())?;
    drv(c
        .d
        .create_rw(&id("top"), Some(&id("base")), &CreateOpts::default()))?;
    c.with_mount("top", |p| {
        Ok(std::fs::rename(
            p.join("etc/passwd"),
            p.join("etc/passwd.old"),
        )?)
    })?;
    let got = c.changes("top")?;
    ensure!(
        got == set(&["C /etc", "D /etc/passwd", "A /etc/passwd.old"]),
        "rename changes: {got:?}"
    );
    Ok(())
}

fn changes_new_hardlink(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    drv(c
        .d
        .create_rw(&id("top"), Some(&id("base")), &CreateOpts::default()))?;
    c.with_mount("top", |p| {
        Ok(std::fs::hard_link(
            p.join("etc/passwd"),
            p.join("etc/passwd.link"),
        )?)
    })?;
    let got = c.changes("top")?;
    ensure!(
        got.contains(&"A /etc/passwd.link".to_string()),
        "hardlink not added: {got:?}"
    );
    let d = c.diff("top")?;
    c.apply_bytes("copy", Some("base"), &d)?;
    c.with_mount("copy", |p| {
        let a = std::fs::symlink_metadata(p.join("etc/passwd"))?;
        let b = std::fs::symlink_metadata(p.join("etc/passwd.link"))?;
        ensure!(a.ino() == b.ino(), "hardlink identity lost through diff");
        Ok(())
    })
}

fn diff_size_counts_changed_bytes(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    c.apply(
        "top",
        Some("base"),
        &[
            dir("etc"),
            file("etc/hostname", "0123456789").mtime(MTIME + 1, 0),
            file("etc/new", "x".repeat(1000)),
            whiteout("etc/passwd"),
        ],
    )?;
    let n = drv(c.d.diff_size(&id("top"), DiffBase::Parent))?;
    ensure!(n == 1010, "diff_size {n}, want 1010");
    let full = drv(c.d.diff_size(&id("base"), DiffBase::Parent))?;
    let want: u64 = base_tree()
        .iter()
        .map(|e| match &e.node {
            Node::File(c) => c.len() as u64,
            _ => 0,
        })
        .sum();
    ensure!(full == want, "diff_size of base {full}, want {want}");
    Ok(())
}

fn whiteout_applied(c: &mut Ctx<'_>) -> Result<()> {
    let up = vec![
        dir("etc"),
        whiteout("etc/passwd"),
        dir("var"),
        dir("var/lib"),
        whiteout("var/lib/app"),
    ];
    c.apply("base", None, &base_tree())?;
    c.apply("top", Some("base"), &up)?;
    c.with_mount("top", |p| {
        ensure!(!p.join("etc/passwd").exists(), "whited-out file visible");
        ensure!(!p.join("var/lib/app").exists(), "whited-out tree visible");
        ensure!(p.join("etc/hostname").exists(), "sibling vanished");
        Ok(())
    })?;
    same_listing("view", &c.view("top")?, &c.reference(&[&base_tree(), &up])?)
}

fn opaque_dir_applied(c: &mut Ctx<'_>) -> Result<()> {
    let up = vec![
        dir("var"),
        dir("var/lib"),
        dir("var/lib/app"),
        opaque("var/lib/app"),
        file("var/lib/app/only", "mine"),
        dir("var/lib/app/sub"),
    ];
    c.apply("base", None, &base_tree())?;
    c.apply("top", Some("base"), &up)?;
    c.with_mount("top", |p| {
        let mut names: Vec<String> = std::fs::read_dir(p.join("var/lib/app"))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        names.sort();
        ensure!(names == ["only", "sub"], "opaque dir shows {names:?}");
        ensure!(
            std::fs::read_dir(p.join("var/lib/app/sub"))?.count() == 0,
            "lower content under a re-created dir of an opaque dir"
        );
        Ok(())
    })?;
    same_listing("view", &c.view("top")?, &c.reference(&[&base_tree(), &up])?)?;
    let d = c.diff("top")?;
    c.apply_bytes("copy", Some("base"), &d)?;
    same_listing("opaque round trip", &c.view("copy")?, &c.view("top")?)
}

fn whiteout_then_recreate_same_layer(c: &mut Ctx<'_>) -> Result<()> {
    let up = vec![
        dir("var"),
        dir("var/lib"),
        whiteout("var/lib/app"),
        dir("var/lib/app"),
        file("var/lib/app/fresh", "f"),
        dir("etc"),
        whiteout("etc/passwd"),
        file("etc/passwd", "new passwd\n"),
    ];
    c.apply("base", None, &base_tree())?;
    c.apply("top", Some("base"), &up)?;
    c.with_mount("top", |p| {
        let names: Vec<_> = std::fs::read_dir(p.join("var/lib/app"))?.collect();
        ensure!(
            names.len() == 1,
            "re-created dir shows lower entries: {names:?}"
        );
        ensure!(
            std::fs::read(p.join("etc/passwd"))? == b"new passwd\n",
            "re-created file"
        );
        Ok(())
    })?;
    same_listing("view", &c.view("top")?, &c.reference(&[&base_tree(), &up])?)
}

fn whiteout_does_not_hide_same_layer(c: &mut Ctx<'_>) -> Result<()> {
    // OCI: whiteouts apply to lower layers only, even when they come after
    let up = vec![
        dir("etc"),
        file("etc/mine", "m"),
        whiteout("etc/mine"),
        whiteout("etc/passwd"),
    ];
    c.apply("base", None, &base_tree())?;
    c.apply("top", Some("base"), &up)?;
    c.with_mount("top", |p| {
        ensure!(
            p.join("etc/mine").exists(),
            "a whiteout hid an entry of its own layer"
        );
        ensure!(!p.join("etc/passwd").exists(), "lower file not deleted");
        Ok(())
    })
}

/// Apply `up` on "base" as layer `name`; its view must be the reference,
/// and its diff, applied on "base" again, must give that view back.
fn view_and_round_trip(c: &mut Ctx<'_>, name: &str, lower: &[&[E]], up: &[E]) -> Result<()> {
    view_and_round_trip_on(c, name, "base", lower, up)
}

/// [`view_and_round_trip`] on the layer `parent` (whose layers, bottom
/// first, are `lower`).
fn view_and_round_trip_on(
    c: &mut Ctx<'_>,
    name: &str,
    parent: &str,
    lower: &[&[E]],
    up: &[E],
) -> Result<()> {
    c.apply(name, Some(parent), up)?;
    let mut all = lower.to_vec();
    all.push(up);
    let want = c.reference(&all)?;
    same_listing(&format!("{name} view"), &c.view(name)?, &want)?;
    let d = c.diff(name)?;
    let again = format!("{name}-again");
    c.apply_bytes(&again, Some(parent), &d)?;
    same_listing(&format!("{name} diff re-applied"), &c.view(&again)?, &want)
}

fn opaque_root_hides_all_below(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    let top = vec![
        opaque(""),
        file("only", "o"),
        dir("etc"),
        file("etc/new", "n"),
    ];
    view_and_round_trip(c, "top", &[&base_tree()], &top)?;
    c.with_mount("top", |p| {
        let mut names: Vec<String> = std::fs::read_dir(p)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        names.sort();
        ensure!(names == ["etc", "only"], "root shows {names:?}");
        ensure!(!p.join("etc/hostname").exists(), "lower etc content shows");
        Ok(())
    })?;
    let ch = c.changes("top")?;
    for want in ["A /only", "D /usr", "D /var", "D /etc/hostname"] {
        ensure!(ch.iter().any(|l| l == want), "changes lack {want}: {ch:?}");
    }
    // a child (read-only and read-write) still sees only what `top` shows
    let child = vec![file("child", "c")];
    c.apply("child", Some("top"), &child)?;
    same_listing(
        "child view",
        &c.view("child")?,
        &c.reference(&[&base_tree(), &top, &child])?,
    )?;
    drv(c
        .d
        .create_rw(&id("rw"), Some(&id("child")), &CreateOpts::default()))?;
    same_listing(
        "rw view",
        &c.view("rw")?,
        &c.reference(&[&base_tree(), &top, &child])?,
    )?;
    // a root marker in a layer with nothing below hides nothing
    c.apply("lone", None, &[opaque(""), file("x", "x")])?;
    same_listing(
        "lone",
        &c.view("lone")?,
        &c.reference(&[&[file("x", "x")]])?,
    )
}

fn whiteout_spares_own_entries_in_lower_dirs(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    let b = base_tree();
    // new entry in a lower dir, then that dir whited out: the entry stays
    let w1 = vec![file("var/lib/app/new", "n"), whiteout("var/lib/app")];
    view_and_round_trip(c, "w1", &[&b], &w1)?;
    c.with_mount("w1", |p| {
        let n: Vec<_> = std::fs::read_dir(p.join("var/lib/app"))?.collect();
        ensure!(n.len() == 1, "whited-out dir keeps {} entries", n.len());
        Ok(())
    })?;
    // the same, two lower directories further up, with an opaque marker
    let w2 = vec![file("var/lib/app/sub/new", "n"), opaque("var")];
    view_and_round_trip(c, "w2", &[&b], &w2)?;
    c.with_mount("w2", |p| {
        ensure!(p.join("var/lib/app/sub/new").exists(), "own entry hidden");
        ensure!(!p.join("var/lib/app/a").exists(), "lower entry shows");
        Ok(())
    })?;
    // whiteouts inside a lower dir, then the dir itself: nothing left
    let w3 = vec![
        whiteout("var/lib/app/a"),
        whiteout("var/lib/app/sub/c"),
        whiteout("var/lib/app"),
    ];
    view_and_round_trip(c, "w3", &[&b], &w3)?;
    // ... or with a new entry kept, and the listing of every name stats
    let w4 = vec![
        whiteout("var/lib/app/a"),
        file("var/lib/app/new", "n"),
        whiteout("var/lib/app"),
        whiteout("usr/bin/tool"),
        opaque(""),
    ];
    view_and_round_trip(c, "w4", &[&b], &w4)?;
    // a link this layer makes between names a lower layer already linked,
    // then an opaque root: the link is this layer's and stays (found by
    // fuzz_whiteouts)
    let pair = vec![file("a", "a"), dir("b"), hardlink("b/a", "a")];
    c.apply("pair", Some("base"), &pair)?;
    let w5 = vec![hardlink("b/a", "/a"), opaque("")];
    view_and_round_trip_on(c, "w5", "pair", &[&b, &pair], &w5)?;
    c.with_mount("w5", |p| {
        ensure!(p.join("b/a").exists(), "own link hidden by the opaque root");
        ensure!(!p.join("a").exists(), "lower entry shows");
        Ok(())
    })
}

fn whiteout_edge_forms(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    let b = base_tree();
    // a file of this layer over a lower dir, then a dir there: empty
    let e1 = vec![file("var/lib/app", "f"), dir("var/lib/app")];
    view_and_round_trip(c, "e1", &[&b], &e1)?;
    c.with_mount("e1", |p| {
        let n = std::fs::read_dir(p.join("var/lib/app"))?.count();
        ensure!(n == 0, "lower content came back under a re-made dir: {n}");
        Ok(())
    })?;
    // a hardlink to a lower file this layer hid: not found
    let r = c.apply(
        "e2",
        Some("base"),
        &[opaque("etc"), hardlink("etc/p2", "etc/passwd")],
    );
    expect_kind(r, ErrorKind::NotFound, "hardlink to a hidden file")?;
    ensure!(!c.d.exists(&id("e2")), "e2: layer left");
    // an entry replaces the symlink its parent path went through: the next
    // entry under that path fails, on every backend alike
    c.apply("sym", None, &[symlink("c", "/")])?;
    let r = c.apply("e3", Some("sym"), &[file("c/c", "x"), file("c/a", "y")]);
    ensure!(
        r.is_err(),
        "an entry under a path that is now a file applied"
    );
    ensure!(!c.d.exists(&id("e3")), "e3: layer left");
    // whiteouts and opaque markers in a base layer hide nothing and leave
    // no trace (no overlay xattr, no whiteout device)
    let e4 = vec![
        opaque("d"),
        dir("d"),
        file("d/f", "f"),
        whiteout("x"),
        whiteout("d/y"),
    ];
    c.apply("e4", None, &e4)?;
    same_listing(
        "markers in a base layer",
        &c.view("e4")?,
        &c.reference(&[&e4])?,
    )?;
    // a link to itself, to a lower symlink: nothing changes
    c.apply("e5", Some("sym"), &[hardlink("c", "c")])?;
    same_listing(
        "a link to itself",
        &c.view("e5")?,
        &c.reference(&[&[symlink("c", "/")][..], &[hardlink("c", "c")][..]])?,
    )?;
    // a dir over a lower symlink (a loop, and one into the lower's tree):
    // whiteouts below it look through nothing (found by fuzz_whiteouts)
    let loops = vec![symlink("a", "a"), symlink("s", "etc")];
    c.apply("loops", Some("base"), &loops)?;
    let e6 = vec![
        dir("a"),
        file("a/c/c", "c"),
        whiteout("a/c/a"),
        dir("s"),
        whiteout("s/passwd"),
        file("s/own", "o"),
    ];
    view_and_round_trip_on(c, "e6", "loops", &[&b, &loops], &e6)?;
    c.with_mount("e6", |p| {
        ensure!(
            p.join("etc/passwd").exists(),
            "a whiteout under a dir that replaced a symlink hid the symlink's target"
        );
        Ok(())
    })
}

fn delete_lower_recreate_upper(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    c.apply(
        "mid",
        Some("base"),
        &[dir("var"), dir("var/lib"), whiteout("var/lib/app")],
    )?;
    let top = vec![
        dir("var"),
        dir("var/lib"),
        dir("var/lib/app"),
        file("var/lib/app/z", "z"),
    ];
    c.apply("top", Some("mid"), &top)?;
    c.with_mount("top", |p| {
        let n: Vec<_> = std::fs::read_dir(p.join("var/lib/app"))?.collect();
        ensure!(n.len() == 1, "deleted lower entries came back: {n:?}");
        Ok(())
    })?;
    let got = c.changes("top")?;
    ensure!(
        got == set(&["C /var", "C /var/lib", "A /var/lib/app", "A /var/lib/app/z"]),
        "changes {got:?}"
    );
    Ok(())
}

fn move_file_out_of_lower(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    drv(c
        .d
        .create_rw(&id("top"), Some(&id("base")), &CreateOpts::default()))?;
    c.with_mount("top", |p| {
        Ok(std::fs::rename(p.join("var/lib/app/a"), p.join("moved-a"))?)
    })?;
    let got = c.changes("top")?;
    ensure!(
        got == set(&[
            "A /moved-a",
            "C /var",
            "C /var/lib",
            "C /var/lib/app",
            "D /var/lib/app/a"
        ]),
        "changes {got:?}"
    );
    let d = c.diff("top")?;
    c.apply_bytes("copy", Some("base"), &d)?;
    same_listing("moved round trip", &c.view("copy")?, &c.view("top")?)
}

fn chown_lower_file(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    drv(c
        .d
        .create_rw(&id("top"), Some(&id("base")), &CreateOpts::default()))?;
    c.with_mount("top", |p| {
        Ok(std::os::unix::fs::lchown(
            p.join("etc/passwd"),
            Some(42),
            Some(43),
        )?)
    })?;
    let got = c.changes("top")?;
    ensure!(got == set(&["C /etc", "C /etc/passwd"]), "changes {got:?}");
    let d = c.diff("top")?;
    c.apply_bytes("copy", Some("base"), &d)?;
    c.with_mount("copy", |p| {
        let m = std::fs::symlink_metadata(p.join("etc/passwd"))?;
        ensure!(
            m.uid() == 42 && m.gid() == 43,
            "owner after commit: {}:{}",
            m.uid(),
            m.gid()
        );
        ensure!(
            std::fs::read(p.join("etc/passwd"))? == b"root:x:0:0:root:/root:/bin/sh\n",
            "content after chown"
        );
        Ok(())
    })
}

fn dir_permission_change_survives_commit(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    drv(c
        .d
        .create_rw(&id("top"), Some(&id("base")), &CreateOpts::default()))?;
    c.with_mount("top", |p| {
        Ok(std::fs::set_permissions(
            p.join("var/lib/app"),
            std::fs::Permissions::from_mode(0o700),
        )?)
    })?;
    let got = c.changes("top")?;
    ensure!(
        got.contains(&"C /var/lib/app".to_string()),
        "mode change of a dir not reported: {got:?}"
    );
    let d = c.diff("top")?;
    c.apply_bytes("copy", Some("base"), &d)?;
    c.with_mount("copy", |p| {
        let m = std::fs::symlink_metadata(p.join("var/lib/app"))?;
        ensure!(
            m.mode() & 0o7777 == 0o700,
            "dir mode after commit: {:o}",
            m.mode() & 0o7777
        );
        ensure!(
            p.join("var/lib/app/sub/c").exists(),
            "children of the dir lost"
        );
        Ok(())
    })
}

fn root_dir_permissions(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &[dir("").mode(0o700), file("f", "f")])?;
    let mode = c.with_mount("base", |p| Ok(std::fs::metadata(p)?.mode() & 0o7777))?;
    ensure!(mode == 0o700, "root mode {mode:o}, want 700");
    c.apply("child", Some("base"), &[file("g", "g")])?;
    let mode = c.with_mount("child", |p| Ok(std::fs::metadata(p)?.mode() & 0o7777))?;
    ensure!(
        mode == 0o700,
        "child root mode {mode:o}, want 700 (inherited)"
    );
    let mut full = Vec::new();
    drv(c.d.diff(&id("base"), DiffBase::Empty, &mut full))?;
    c.apply_bytes("copy", None, &full)?;
    let mode = c.with_mount("copy", |p| Ok(std::fs::metadata(p)?.mode() & 0o7777))?;
    ensure!(mode == 0o700, "root mode after round trip {mode:o}");
    Ok(())
}

fn whiteouts_from_running_mount(c: &mut Ctx<'_>) -> Result<()> {
    let base = vec![
        dir("a"),
        file("a/rm-me", "1"),
        file("a/keep", "2"),
        dir("tree"),
        dir("tree/sub"),
        file("tree/sub/x", "x"),
        file("mv-src", "moving"),
        dir("opq"),
        file("opq/old1", "o1"),
        file("opq/old2", "o2"),
    ];
    c.apply("base", None, &base)?;
    drv(c
        .d
        .create_rw(&id("rw"), Some(&id("base")), &CreateOpts::default()))?;
    c.with_mount("rw", |p| {
        std::fs::remove_file(p.join("a/rm-me"))?;
        std::fs::remove_dir_all(p.join("tree"))?;
        std::fs::rename(p.join("mv-src"), p.join("a/mv-dst"))?;
        std::fs::remove_dir_all(p.join("opq"))?;
        std::fs::create_dir(p.join("opq"))?;
        std::fs::write(p.join("opq/new"), "n")?;
        Ok(())
    })?;
    let d = c.diff("rw")?;
    let paths = tar_paths(&d)?;
    for want in [
        "a/.wh.rm-me",
        ".wh.tree",
        ".wh.mv-src",
        "a/mv-dst",
        "opq/new",
    ] {
        ensure!(paths.contains(want), "diff lacks {want}: {paths:?}");
    }
    ensure!(
        !paths.iter().any(|p| p.starts_with("tree/")),
        "deleted tree's children in the diff: {paths:?}"
    );
    let opaque = paths.contains("opq/.wh..wh..opq");
    let each = paths.contains("opq/.wh.old1") && paths.contains("opq/.wh.old2");
    ensure!(
        opaque || each,
        "re-created dir neither opaque nor whiting out its old entries: {paths:?}"
    );
    ensure!(
        !tar_entries(&d)?.iter().any(|(_, k, _)| *k == 'c'),
        "diff holds a device (backend whiteout form)"
    );
    c.apply_bytes("copy", Some("base"), &d)?;
    same_listing("view after re-apply", &c.view("copy")?, &c.view("rw")?)?;
    let ch = c.changes("rw")?;
    for want in [
        "D /a/rm-me",
        "D /tree",
        "D /mv-src",
        "A /a/mv-dst",
        "D /opq/old1",
        "D /opq/old2",
        "A /opq/new",
    ] {
        ensure!(
            ch.contains(&want.to_string()),
            "changes lack {want}: {ch:?}"
        );
    }
    Ok(())
}

fn mount_refcount(c: &mut Ctx<'_>) -> Result<()> {
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

fn child_run(c: &Ctx<'_>, op: &str, name: &str) -> Result<String> {
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

fn mount_refcount_two_processes(c: &mut Ctx<'_>) -> Result<()> {
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

fn remove_with_children_refused(c: &mut Ctx<'_>) -> Result<()> {
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

fn remove_mounted_refused(c: &mut Ctx<'_>) -> Result<()> {
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

fn remove_unknown_not_found(c: &mut Ctx<'_>) -> Result<()> {
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

fn create_unknown_parent_refused(c: &mut Ctx<'_>) -> Result<()> {
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

fn create_duplicate_refused(c: &mut Ctx<'_>) -> Result<()> {
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

fn unknown_storage_option_refused(c: &mut Ctx<'_>) -> Result<()> {
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

fn readonly_mount_refuses_writes(c: &mut Ctx<'_>) -> Result<()> {
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

fn stale_mount_state_repaired_on_reopen(c: &mut Ctx<'_>) -> Result<()> {
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

fn interrupted_apply_cleaned_on_reopen(c: &mut Ctx<'_>) -> Result<()> {
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

fn parallel_creates_one_parent(c: &mut Ctx<'_>) -> Result<()> {
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

fn parallel_mount_unmount(c: &mut Ctx<'_>) -> Result<()> {
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

fn sparse_8g_keeps_holes(c: &mut Ctx<'_>) -> Result<()> {
    const G8: u64 = 8 << 30;
    let l = vec![sparse(
        "big",
        G8,
        vec![
            (0, b"head".to_vec()),
            (4 << 30, b"middle".to_vec()),
            (G8 - 4, b"tail".to_vec()),
        ],
    )];
    let data = tar(&l);
    ensure!(data.len() < 1 << 20, "test tar is not sparse");
    c.apply_bytes("base", None, &data)?;
    let check = |name: &str| -> Result<()> {
        c.with_mount(name, |p| {
            let m = std::fs::symlink_metadata(p.join("big"))?;
            ensure!(m.len() == G8, "{name}: size {}", m.len());
            ensure!(
                m.blocks() * 512 < 16 << 20,
                "{name}: holes filled ({} bytes allocated)",
                m.blocks() * 512
            );
            let mut f = std::fs::File::open(p.join("big"))?;
            let mut b = [0u8; 4];
            f.read_exact(&mut b)?;
            ensure!(&b == b"head", "{name}: head");
            Ok(())
        })
    };
    check("base")?;
    drv(c
        .d
        .create_rw(&id("child"), Some(&id("base")), &CreateOpts::default()))?;
    check("child")?;
    let mut full = Vec::new();
    drv(c.d.diff(&id("base"), DiffBase::Empty, &mut full))?;
    ensure!(
        full.len() < 1 << 20,
        "diff of a sparse file is {} bytes",
        full.len()
    );
    c.apply_bytes("copy", None, &full)?;
    check("copy")
}

fn odd_names(c: &mut Ctx<'_>) -> Result<()> {
    let comp255 = "n".repeat(255);
    let mut deep = String::new();
    while deep.len() < 3900 {
        deep.push_str(&"p".repeat(200));
        deep.push('/');
    }
    let mut l = vec![
        file("with space", "s"),
        file("new\nline", "n"),
        file(b"bad-\xff\xfe-utf8", "b"),
        file("unicodé ✓", "u"),
        file(&comp255, "long"),
        file(" leading", "l"),
        file("-dash", "d"),
    ];
    let mut acc = String::new();
    for part in deep.trim_end_matches('/').split('/') {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(part);
        l.push(dir(&acc));
    }
    let deep_file = format!("{acc}/{}", "z".repeat(150));
    ensure!(
        deep_file.len() >= 4000,
        "test path too short: {}",
        deep_file.len()
    );
    l.push(file(&deep_file, "deep"));
    c.apply("base", None, &l)?;
    same_listing("odd names", &c.view("base")?, &c.reference(&[&l])?)?;
    c.with_mount("base", |p| {
        ensure!(
            p.join(std::ffi::OsStr::from_bytes(b"bad-\xff\xfe-utf8"))
                .exists(),
            "non-UTF-8 name"
        );
        Ok(())
    })?;
    let mut full = Vec::new();
    drv(c.d.diff(&id("base"), DiffBase::Empty, &mut full))?;
    c.apply_bytes("copy", None, &full)?;
    same_listing("odd names round trip", &c.view("copy")?, &c.view("base")?)
}

fn status_and_metadata(c: &mut Ctx<'_>) -> Result<()> {
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

fn cleanup_unmounts_everything(c: &mut Ctx<'_>) -> Result<()> {
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

fn apply_gzip_and_zstd(c: &mut Ctx<'_>) -> Result<()> {
    let plain = tar(&base_tree());
    let want = sha256(&plain);
    for (name, data) in [
        ("plain", plain.clone()),
        ("gz", gzip(&plain)),
        ("zst", zstd(&plain)),
    ] {
        let st = c.apply_bytes(name, None, &data)?;
        ensure!(
            st.diff_id == want,
            "{name}: diff_id {} want {want}",
            st.diff_id
        );
        ensure!(
            st.tar_bytes == plain.len() as u64,
            "{name}: tar bytes {}",
            st.tar_bytes
        );
    }
    same_listing("gzip view", &c.view("gz")?, &c.view("plain")?)?;
    same_listing("zstd view", &c.view("zst")?, &c.view("plain")?)?;
    // bytes after the end-of-archive blocks count for the diffID too
    let mut padded = plain.clone();
    padded.extend([0u8; 10240]);
    let st = c.apply_bytes("padded", None, &padded)?;
    ensure!(st.diff_id == sha256(&padded), "trailing padding not hashed");
    Ok(())
}

fn apply_in_place_after_create(c: &mut Ctx<'_>) -> Result<()> {
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

fn failed_apply_leaves_nothing(c: &mut Ctx<'_>) -> Result<()> {
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

/// Canary directory outside the root: nothing may appear in it.
fn canary(c: &Ctx<'_>) -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix("strata-canary.")
        .tempdir_in(c.root.parent().unwrap_or(Path::new("/tmp")))?)
}

fn canary_empty(t: &tempfile::TempDir) -> Result<()> {
    let n: Vec<_> = std::fs::read_dir(t.path())?.collect();
    ensure!(
        n.is_empty(),
        "something was written outside the root: {n:?}"
    );
    Ok(())
}

fn hostile_dotdot_refused(c: &mut Ctx<'_>) -> Result<()> {
    let can = canary(c)?;
    let name = can
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for (i, p) in [
        format!("../{name}/pwned"),
        format!("a/../../{name}/pwned"),
        "../../../../../../../../tmp/pwned-strata".to_string(),
    ]
    .iter()
    .enumerate()
    {
        let r = c.apply(&format!("h{i}"), None, &[dir("a"), file(p, "x")]);
        expect_kind(r, ErrorKind::PathEscape, &format!("entry {p}"))?;
        ensure!(
            !c.d.exists(&id(&format!("h{i}"))),
            "layer of a refused apply exists"
        );
    }
    // hardlink target with ..
    let r = c.apply(
        "h9",
        None,
        &[file("a", "a"), hardlink("l", "../../etc/passwd")],
    );
    expect_kind(r, ErrorKind::PathEscape, "hardlink ..")?;
    ensure!(!Path::new("/tmp/pwned-strata").exists(), "escaped to /tmp");
    canary_empty(&can)?;
    // an absolute name is taken as relative to the root
    c.apply("abs", None, &[dir("/etc"), file("/etc/abs", "in root")])?;
    c.with_mount("abs", |p| {
        ensure!(
            std::fs::read(p.join("etc/abs"))? == b"in root",
            "absolute name not rooted"
        );
        Ok(())
    })
}

fn hostile_symlink_escape_contained(c: &mut Ctx<'_>) -> Result<()> {
    let can = canary(c)?;
    let target = can.path().display().to_string();
    let l = vec![
        symlink("evil", &target),
        file("evil/pwned", "x"),
        symlink("up", "../../../../../../../.."),
        file(format!("up{target}/pwned2"), "y"),
        symlink("loop", "loop"),
    ];
    c.apply("base", None, &l)?;
    canary_empty(&can)?;
    c.with_mount("base", |p| {
        let inside = p.join(target.trim_start_matches('/')).join("pwned");
        ensure!(
            inside.exists(),
            "write through the symlink did not land inside the root"
        );
        Ok(())
    })?;
    let r = c.apply("l2", None, &[symlink("loop", "loop"), file("loop/x", "x")]);
    ensure!(r.is_err(), "write through a symlink loop succeeded");
    canary_empty(&can)
}

fn hostile_lower_symlink_contained(c: &mut Ctx<'_>) -> Result<()> {
    let can = canary(c)?;
    let target = can.path().display().to_string();
    c.apply(
        "base",
        None,
        &[symlink("evil", &target), symlink("etc", "/evil")],
    )?;
    c.apply(
        "top",
        Some("base"),
        &[
            file("evil/pwned", "x"),
            dir("etc/sub"),
            file("etc/sub/f", "f"),
        ],
    )?;
    canary_empty(&can)?;
    let want = c.reference(&[
        &[symlink("evil", &target), symlink("etc", "/evil")],
        &[
            file("evil/pwned", "x"),
            dir("etc/sub"),
            file("etc/sub/f", "f"),
        ],
    ])?;
    same_listing("view", &c.view("top")?, &want)?;
    // a whiteout through the planted symlink deletes inside the root only
    std::fs::write(can.path().join("precious"), "keep")?;
    c.apply(
        "wh",
        Some("top"),
        &[whiteout("evil/precious"), whiteout("etc/sub")],
    )?;
    ensure!(
        can.path().join("precious").exists(),
        "a whiteout through a symlink deleted outside the root"
    );
    std::fs::remove_file(can.path().join("precious"))?;
    Ok(())
}

fn hostile_hardlink_escape_refused(c: &mut Ctx<'_>) -> Result<()> {
    let can = canary(c)?;
    std::fs::write(can.path().join("secret"), "secret")?;
    let t = can.path().join("secret").display().to_string();
    // an absolute target is rooted: it does not exist inside, so it fails
    let r = c.apply("h1", None, &[hardlink("x", &t)]);
    ensure!(r.is_err(), "hardlink to an absolute outside path applied");
    ensure!(!c.d.exists(&id("h1")), "layer left");
    // through a symlink leading out
    let r = c.apply(
        "h2",
        None,
        &[
            symlink("out", can.path().display().to_string()),
            hardlink("x", "out/secret"),
        ],
    );
    if r.is_ok() {
        // acceptable only if the link resolved inside the root (no such file there)
        bail!("hardlink through an escaping symlink applied");
    }
    // to /proc
    let r = c.apply("h3", None, &[hardlink("x", "/proc/self/environ")]);
    ensure!(r.is_err(), "hardlink to /proc applied");
    // a hardlink to a symlink links the symlink itself
    c.apply("h4", None, &[symlink("s", &t), hardlink("x", "s")])?;
    c.with_mount("h4", |p| {
        ensure!(
            std::fs::symlink_metadata(p.join("x"))?
                .file_type()
                .is_symlink(),
            "hardlink followed the symlink"
        );
        Ok(())
    })?;
    ensure!(
        std::fs::read(can.path().join("secret"))? == b"secret",
        "outside file changed"
    );
    ensure!(
        std::fs::metadata(can.path().join("secret"))?.nlink() == 1,
        "outside file got a link"
    );
    Ok(())
}

fn hostile_backend_forms_refused(c: &mut Ctx<'_>) -> Result<()> {
    let r = c.apply("x1", None, &[dir("d").xattr("trusted.overlay.opaque", "y")]);
    expect_kind(r, ErrorKind::InvalidInput, "trusted.overlay xattr")?;
    let r = c.apply(
        "x2",
        None,
        &[file("f", "f").xattr("user.overlay.redirect", "/etc")],
    );
    expect_kind(r, ErrorKind::InvalidInput, "user.overlay xattr")?;
    let r = c.apply("x3", None, &[chardev("wh", 0, 0)]);
    expect_kind(r, ErrorKind::InvalidInput, "0/0 char device")?;
    let r = c.apply("x4", None, &[file("f", "f").xattr("security.ima", "x")]);
    expect_kind(r, ErrorKind::InvalidInput, "security.ima xattr")?;
    ensure!(c.d.layers()?.is_empty(), "layers left: {:?}", c.d.layers()?);
    Ok(())
}

fn hostile_whiteout_tricks(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    for (i, name) in [".wh..", ".wh...", "etc/.wh.."].iter().enumerate() {
        let r = c.apply(&format!("w{i}"), Some("base"), &[file(name, "")]);
        ensure!(r.is_err(), "whiteout {name} applied");
        ensure!(!c.d.exists(&id(&format!("w{i}"))), "layer left");
    }
    // whiteout with a `..` path: refused as an escape
    let r = c.apply("w9", Some("base"), &[file("../.wh.etc", "")]);
    expect_kind(r, ErrorKind::PathEscape, "whiteout above the root")?;
    // a symlink to a missing `.wh.` name must not make that directory (it
    // would read back as a whiteout): refused, from this layer or a lower one
    let through: [(&str, Vec<E>); 3] = [
        ("s0", vec![symlink("wl", ".wh.x"), file("wl/f", "f")]),
        ("s1", vec![symlink("wl", ".wh.x"), opaque("wl")]),
        ("s2", vec![symlink("wl", "etc/.wh.y"), file("wl/z", "z")]),
    ];
    for (name, layer) in through {
        let r = c.apply(name, Some("base"), &layer);
        expect_kind(
            r,
            ErrorKind::InvalidInput,
            "a .wh. directory through a symlink",
        )?;
        ensure!(!c.d.exists(&id(name)), "{name}: layer left");
    }
    c.apply("sl", Some("base"), &[symlink("wl", ".wh.x")])?;
    let r = c.apply("s3", Some("sl"), &[file("wl/f", "f")]);
    expect_kind(
        r,
        ErrorKind::InvalidInput,
        "a .wh. directory through a lower symlink",
    )?;
    ensure!(!c.d.exists(&id("s3")), "s3: layer left");
    // a whiteout under a parent that exists nowhere hides nothing and makes
    // nothing: every backend shows the same tree
    c.apply(
        "wm",
        Some("base"),
        &[whiteout("nodir/x"), whiteout("wl2/y")],
    )?;
    same_listing(
        "whiteout under a missing parent",
        &c.view("wm")?,
        &c.reference(&[&base_tree()])?,
    )?;
    same_listing(
        "base intact",
        &c.view("base")?,
        &c.reference(&[&base_tree()])?,
    )
}

fn truncated_and_corrupt_refused(c: &mut Ctx<'_>) -> Result<()> {
    let good = tar(&base_tree());
    let mut bad_ck = good.clone();
    bad_ck[0] ^= 0x55; // first header's name changes, checksum no longer matches
    let mut bad_size = tar(&[file("f", "abc")]);
    // size field claims far more than the data holds
    let fake = format!("{:011o}\0", 1u64 << 30);
    bad_size[124..136].copy_from_slice(fake.as_bytes());
    let h = tar::Header::from_byte_slice(&bad_size[..512]);
    let _ = h;
    let mut hb = [0u8; 512];
    hb.copy_from_slice(&bad_size[..512]);
    let hh = tar::Header::from_byte_slice(&hb);
    let mut owned = hh.clone();
    owned.set_cksum();
    bad_size[..512].copy_from_slice(owned.as_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("half", good[..good.len() / 2].to_vec()),
        ("mid-header", good[..700].to_vec()),
        ("checksum", bad_ck),
        ("size", bad_size),
        (
            "garbage",
            b"this is not a tar archive at all, not even close".repeat(20),
        ),
        ("gzip-truncated", gzip(&good)[..100].to_vec()),
        (
            "zstd-garbage",
            [&[0x28u8, 0xb5, 0x2f, 0xfd][..], &[0xff; 64][..]].concat(),
        ),
    ];
    for (i, (what, data)) in cases.iter().enumerate() {
        let name = format!("t{i}");
        let r = c.apply_bytes(&name, None, data);
        ensure!(r.is_err(), "{what}: applied");
        ensure!(!c.d.exists(&id(&name)), "{what}: layer left");
    }
    ensure!(c.d.layers()?.is_empty(), "layers left");
    Ok(())
}

/// A raw ustar header with the given numeric fields (as raw bytes).
fn raw_header(
    name: &str,
    kind: u8,
    size_field: &[u8],
    uid_field: &[u8],
    mtime_field: &[u8],
) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    let _ = h.set_path(name);
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_mode(0o644);
    h.set_size(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME as u64);
    let b = h.as_mut_bytes();
    b[124..124 + size_field.len()].copy_from_slice(size_field);
    b[108..108 + uid_field.len()].copy_from_slice(uid_field);
    b[136..136 + mtime_field.len()].copy_from_slice(mtime_field);
    h.set_cksum();
    h.as_bytes().to_vec()
}

fn hostile_numeric_fields(c: &mut Ctx<'_>) -> Result<()> {
    let can = canary(c)?;
    // base-256 numbers: a negative mtime, a size of 2^95, a uid of 2^64-1
    let mut neg_mtime = vec![0xffu8; 12];
    neg_mtime[11] = 0xfe;
    let mut huge_size = vec![0x80u8; 12];
    huge_size[1] = 0x7f;
    let mut huge_uid = vec![0xffu8; 8];
    huge_uid[0] = 0x80;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "negative mtime",
            raw_header("f", b'0', b"00000000000\0", b"0000000\0", &neg_mtime),
        ),
        (
            "huge size",
            raw_header("f", b'0', &huge_size, b"0000000\0", b"00000000000\0"),
        ),
        (
            "huge uid",
            raw_header("f", b'0', b"00000000000\0", &huge_uid, b"00000000000\0"),
        ),
        (
            "garbage size",
            raw_header("f", b'0', b"9z9z9z9z9z9\0", b"0000000\0", b"00000000000\0"),
        ),
    ];
    for (i, (what, h)) in cases.into_iter().enumerate() {
        let mut data = h;
        data.extend([0u8; 1024]);
        let name = format!("n{i}");
        match c.apply_bytes(&name, None, &data) {
            Err(_) => ensure!(
                !c.d.exists(&id(&name)),
                "{what}: layer left after a refusal"
            ),
            Ok(_) => {
                // accepted: then faithfully (a negative mtime stays negative)
                c.with_mount(&name, |p| {
                    let m = std::fs::symlink_metadata(p.join("f"))?;
                    ensure!(
                        what != "negative mtime" || m.mtime() < 0,
                        "{what}: mtime {}",
                        m.mtime()
                    );
                    Ok(())
                })?;
            }
        }
    }
    // PAX: a uid beyond 32 bits and a size larger than the data
    let big_uid = tar(&[file("f", "x").owner(1 << 40, 0)]);
    expect_kind(
        c.apply_bytes("p1", None, &big_uid),
        ErrorKind::InvalidInput,
        "uid 2^40",
    )?;
    let mut short = tar(&[file("f", "x".repeat(100))]);
    short.truncate(512 + 50);
    ensure!(
        c.apply_bytes("p2", None, &short).is_err(),
        "data shorter than its size applied"
    );
    ensure!(
        c.d.layers()?.iter().all(|l| l.id.as_str().starts_with('n')),
        "refused layers left"
    );
    canary_empty(&can)
}

fn hostile_duplicate_conflicting_entries(c: &mut Ctx<'_>) -> Result<()> {
    let can = canary(c)?;
    let l = vec![
        file("x", "first"),
        dir("x"),
        file("x/inner", "in a dir"),
        symlink("x", can.path().display().to_string()),
        file("x", "last"),
        dir("d"),
        file("d", "a file now"),
        symlink("s", "/"),
        dir("s"),
        file("s/f", "in s"),
    ];
    c.apply("base", None, &l)?;
    c.with_mount("base", |p| {
        ensure!(
            std::fs::read(p.join("x"))? == b"last",
            "last entry of x did not win"
        );
        ensure!(
            std::fs::symlink_metadata(p.join("d"))?.is_file(),
            "d is not the last entry's file"
        );
        ensure!(
            std::fs::symlink_metadata(p.join("s"))?.is_dir(),
            "s is not a directory"
        );
        ensure!(std::fs::read(p.join("s/f"))? == b"in s", "s/f");
        Ok(())
    })?;
    same_listing("duplicates", &c.view("base")?, &c.reference(&[&l])?)?;
    canary_empty(&can)
}

fn hostile_deep_nesting(c: &mut Ctx<'_>) -> Result<()> {
    // one entry 10,000 levels deep, and 10,000 directory entries
    let deep = vec!["a"; 10_000].join("/");
    let r = c.apply("one", None, &[file(format!("{deep}/f"), "deep")]);
    if r.is_ok() {
        bail!("a 20,000-byte path applied");
    }
    ensure!(!c.d.exists(&id("one")), "layer left");
    let mut entries = Vec::new();
    let mut p = String::new();
    for _ in 0..10_000 {
        if !p.is_empty() {
            p.push('/');
        }
        p.push('a');
        entries.push(dir(&p));
    }
    match c.apply("many", None, &entries) {
        Err(e) => {
            ensure!(!c.d.exists(&id("many")), "layer left after: {e:#}");
        }
        Ok(_) => {
            // contained; and it can be removed
            drv(c.d.remove(&id("many")))?;
        }
    }
    Ok(())
}

fn hostile_opaque_and_names(c: &mut Ctx<'_>) -> Result<()> {
    let can = canary(c)?;
    std::fs::write(can.path().join("keep"), "keep")?;
    let target = can.path().display().to_string();
    c.apply(
        "base",
        None,
        &[symlink("link", &target), dir("etc"), file("etc/x", "x")],
    )?;
    c.apply(
        "top",
        Some("base"),
        &[opaque("link"), file("link/.wh.keep", "")],
    )?;
    ensure!(
        can.path().join("keep").exists(),
        "an opaque marker or whiteout through a symlink reached outside"
    );
    // a NUL byte inside a PAX path
    let mut data = Vec::new();
    let rec = b"path=a\0b\n";
    let len = rec.len() + 3;
    let body = format!("{len} ")
        .into_bytes()
        .into_iter()
        .chain(rec.iter().copied())
        .collect::<Vec<u8>>();
    let mut ph = tar::Header::new_ustar();
    let _ = ph.set_path("pax");
    ph.set_entry_type(tar::EntryType::XHeader);
    ph.set_size(body.len() as u64);
    ph.set_mode(0o644);
    ph.set_uid(0);
    ph.set_gid(0);
    ph.set_mtime(0);
    ph.set_cksum();
    data.extend_from_slice(ph.as_bytes());
    data.extend_from_slice(&body);
    data.resize(data.len().div_ceil(512) * 512, 0);
    let mut fh = tar::Header::new_ustar();
    let _ = fh.set_path("placeholder");
    fh.set_size(0);
    fh.set_mode(0o644);
    fh.set_uid(0);
    fh.set_gid(0);
    fh.set_mtime(0);
    fh.set_cksum();
    data.extend_from_slice(fh.as_bytes());
    data.extend([0u8; 1024]);
    ensure!(
        c.apply_bytes("nul", None, &data).is_err(),
        "a name with NUL applied"
    );
    ensure!(!c.d.exists(&id("nul")), "layer left");
    std::fs::remove_file(can.path().join("keep"))?;
    Ok(())
}

fn diff_against_ancestor(c: &mut Ctx<'_>) -> Result<()> {
    c.apply("base", None, &base_tree())?;
    c.apply("mid", Some("base"), &[dir("etc"), file("etc/mid", "m")])?;
    c.apply(
        "top",
        Some("mid"),
        &[dir("etc"), file("etc/top", "t"), whiteout("etc/hostname")],
    )?;
    let ch: Vec<String> = drv(c.d.changes(&id("top"), DiffBase::Layer(&id("base"))))?
        .iter()
        .map(|c| c.to_string())
        .collect();
    ensure!(
        ch == set(&["C /etc", "A /etc/mid", "A /etc/top", "D /etc/hostname"]),
        "changes against ancestor: {ch:?}"
    );
    let mut d = Vec::new();
    drv(c.d.diff(&id("top"), DiffBase::Layer(&id("base")), &mut d))?;
    c.apply_bytes("squashed", Some("base"), &d)?;
    same_listing("squashed", &c.view("squashed")?, &c.view("top")?)
}

fn rw_layer_on_rw_parent_refused_or_works(c: &mut Ctx<'_>) -> Result<()> {
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

fn reopen_keeps_layers(c: &mut Ctx<'_>) -> Result<()> {
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
