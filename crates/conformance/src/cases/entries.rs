//! Every kind of tar entry reaches the view faithfully: types, modes, owners, times, xattrs, long names, holes, compression.

use super::prelude::*;

/// The cases of this room, in the order they are reported.
pub(super) fn cases() -> Vec<Case> {
    vec![
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
            root_dir_permissions,
            NONE,
            "the root directory's mode from ./ applies and survives"
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
            apply_gzip_and_zstd,
            NONE,
            "gzip and zstd diffs apply; diffID is the sha256 of the uncompressed tar"
        ),
    ]
}

pub(super) fn every_type_layer() -> Vec<E> {
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

pub(super) fn base_layer_every_entry_type(c: &mut Ctx<'_>) -> Result<()> {
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

pub(super) fn base_layer_unprivileged_types(c: &mut Ctx<'_>) -> Result<()> {
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

pub(super) fn user_xattrs_applied(c: &mut Ctx<'_>) -> Result<()> {
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

pub(super) fn long_names_gnu_and_pax(c: &mut Ctx<'_>) -> Result<()> {
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
pub(super) fn gnu_entry(ext: u8, name: &str, kind: u8, content: &[u8]) -> Vec<u8> {
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

pub(super) fn gnu_link_entry(name: &str, target: &str) -> Vec<u8> {
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

pub(super) fn sparse_8g_keeps_holes(c: &mut Ctx<'_>) -> Result<()> {
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

pub(super) fn odd_names(c: &mut Ctx<'_>) -> Result<()> {
    let comp255 = "n".repeat(255);
    // just under PATH_MAX (4095): longer is refused (hostile_deep_nesting)
    let mut deep = String::new();
    while deep.len() < 3700 {
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
        (3900..=4095).contains(&deep_file.len()),
        "test path not just under PATH_MAX: {}",
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

pub(super) fn apply_gzip_and_zstd(c: &mut Ctx<'_>) -> Result<()> {
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

pub(super) fn root_dir_permissions(c: &mut Ctx<'_>) -> Result<()> {
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
