//! Hostile layers: escapes, backend forms, broken streams, absurd numbers. A canary outside the root must stay untouched.

use super::prelude::*;

/// The cases of this room, in the order they are reported.
pub(super) fn cases() -> Vec<Case> {
    vec![
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
    ]
}

/// Canary directory outside the root: nothing may appear in it.
pub(super) fn canary(c: &Ctx<'_>) -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix("strata-canary.")
        .tempdir_in(c.root.parent().unwrap_or(Path::new("/tmp")))?)
}

pub(super) fn canary_empty(t: &tempfile::TempDir) -> Result<()> {
    let n: Vec<_> = std::fs::read_dir(t.path())?.collect();
    ensure!(
        n.is_empty(),
        "something was written outside the root: {n:?}"
    );
    Ok(())
}

pub(super) fn hostile_dotdot_refused(c: &mut Ctx<'_>) -> Result<()> {
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

pub(super) fn hostile_symlink_escape_contained(c: &mut Ctx<'_>) -> Result<()> {
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

pub(super) fn hostile_lower_symlink_contained(c: &mut Ctx<'_>) -> Result<()> {
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

pub(super) fn hostile_hardlink_escape_refused(c: &mut Ctx<'_>) -> Result<()> {
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

pub(super) fn hostile_backend_forms_refused(c: &mut Ctx<'_>) -> Result<()> {
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

pub(super) fn hostile_whiteout_tricks(c: &mut Ctx<'_>) -> Result<()> {
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

pub(super) fn truncated_and_corrupt_refused(c: &mut Ctx<'_>) -> Result<()> {
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
pub(super) fn raw_header(
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

pub(super) fn hostile_numeric_fields(c: &mut Ctx<'_>) -> Result<()> {
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

pub(super) fn hostile_duplicate_conflicting_entries(c: &mut Ctx<'_>) -> Result<()> {
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

pub(super) fn hostile_deep_nesting(c: &mut Ctx<'_>) -> Result<()> {
    // one entry 10,000 levels deep, and 10,000 directory entries
    let deep = vec!["a"; 10_000].join("/");
    let r = c.apply("one", None, &[file(format!("{deep}/f"), "deep")]);
    let e = expect_kind(r, ErrorKind::InvalidInput, "a 20,000-byte path")?;
    ensure!(
        format!("{e:#}").contains("PATH_MAX") && format!("{e:#}").contains("tar entry a/a/a"),
        "the error does not name the entry and the limit: {e:#}"
    );
    ensure!(!c.d.exists(&id("one")), "layer left");
    // one byte past PATH_MAX is refused too
    let p = format!(
        "{}{}",
        format!("{}/", "b".repeat(200)).repeat(20),
        "c".repeat(76)
    );
    ensure!(p.len() == 4096, "test path is {} bytes", p.len());
    let r = c.apply("two", None, &[file(&p, "x")]);
    expect_kind(r, ErrorKind::InvalidInput, "a 4,096-byte path")?;
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

pub(super) fn hostile_opaque_and_names(c: &mut Ctx<'_>) -> Result<()> {
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
