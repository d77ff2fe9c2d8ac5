//! The low-level `strata layer` contract, and interoperability with GNU tar
//! and Python's tarfile.

// Tests inspect views and scratch directories by path, as a user would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn have(p: &str) -> bool {
    strata_conformance::fixture::have_program(p)
}

// Long on purpose: one scenario, step after step, each step's state
// feeding the next; cut into functions it would no longer read as the
// session it checks.
#[test]
fn apply_prints_one_json_line_and_failures_leave_nothing() {
    let e = Env::new("vfs");
    let src = e.root.join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/hello"), "hi\n").unwrap();
    let t = e.root.join("base.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&src)
        .arg("-cf")
        .arg(&t)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let out = e.ok(&["layer", "apply", "base", t.to_str().unwrap()]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id", "parent", "diff_id", "size"]);
    assert_eq!(v["id"], "base");
    assert!(v["parent"].is_null());
    assert_eq!(v["size"], 3);
    let data = std::fs::read(&t).unwrap();
    assert_eq!(
        v["diff_id"],
        strata_conformance::layer::sha256(&data).to_string()
    );
    // from stdin, on a parent
    let mut c = e.cmd_in(
        &e.root,
        &["layer", "apply", "child", "--parent", "base", "-"],
    );
    c.stdin(std::fs::File::open(&t).unwrap());
    let o = c.output().unwrap();
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["parent"], "base");

    // failures: non-zero exit, a message naming the cause, no layer left
    let bad = e.root.join("bad.tar");
    let mut evil =
        strata_conformance::layer::tar(&[strata_conformance::layer::file("../../escape", "x")]);
    std::fs::write(&bad, &evil).unwrap();
    let err = e.fails(&["layer", "apply", "evil", bad.to_str().unwrap()]);
    assert!(
        err.contains("../../escape") && err.contains("escapes"),
        "{err}"
    );
    evil.truncate(300);
    std::fs::write(&bad, &evil).unwrap();
    let err = e.fails(&[
        "layer",
        "apply",
        "trunc",
        "--parent",
        "base",
        bad.to_str().unwrap(),
    ]);
    assert!(err.contains("truncated"), "{err}");
    let err = e.fails(&[
        "layer",
        "apply",
        "x",
        "--parent",
        "nope",
        t.to_str().unwrap(),
    ]);
    assert!(err.contains("nope"), "{err}");
    let err = e.fails(&["layer", "apply", "base", t.to_str().unwrap()]);
    assert!(err.contains("already"), "{err}");
    let ls = e.ok(&["layer", "ls"]);
    assert!(
        !ls.contains("evil") && !ls.contains("trunc") && ls.contains("child"),
        "{ls}"
    );
    let err = e.fails(&["layer", "rm", "base"]);
    assert!(err.contains("child"), "{err}");
    let err = e.fails(&["layer", "apply", "bad/id", t.to_str().unwrap()]);
    assert!(err.contains("bad/id"), "{err}");
}

#[test]
fn changes_mount_size_and_diff_contract() {
    let e = Env::new("vfs");
    let t = e.root.join("base.tar");
    std::fs::write(
        &t,
        strata_conformance::layer::tar(&[
            strata_conformance::layer::dir("etc"),
            strata_conformance::layer::file("etc/a", "aaa"),
            strata_conformance::layer::file("etc/b", "b"),
        ]),
    )
    .unwrap();
    e.ok(&["layer", "apply", "base", t.to_str().unwrap()]);
    e.ok(&["layer", "create", "c", "--parent", "base", "--rw"]);
    let p1 = e.ok(&["layer", "mount", "c"]);
    let p2 = e.ok(&["layer", "mount", "c"]);
    assert_eq!(p1, p2);
    let v = p1.trim();
    std::fs::write(format!("{v}/etc/new file"), "12345").unwrap();
    std::fs::remove_file(format!("{v}/etc/b")).unwrap();
    e.ok(&["layer", "unmount", "c"]);
    e.ok(&["layer", "unmount", "c"]);
    assert_eq!(
        e.ok(&["layer", "changes", "c"]),
        "C /etc\nD /etc/b\nA /etc/new file\n"
    );
    assert_eq!(e.ok(&["layer", "size", "c"]).trim(), "5");
    let d = e.root.join("c.tar");
    e.ok(&["layer", "diff", "c", "-o", d.to_str().unwrap()]);
    let names: Vec<String> = tar_members(&d).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["etc/", "etc/.wh.b", "etc/new file"]);
    // diff to stdout gives the same bytes
    let o = e.run_in(&e.root, &["layer", "diff", "c"]);
    assert_eq!(o.stdout, std::fs::read(&d).unwrap());
    let st = e.ok(&["driver", "status"]);
    assert!(st.contains("vfs"), "{st}");
    e.ok(&["layer", "rm", "c"]);
    e.ok(&["layer", "rm", "base"]);
    let err = e.fails(&["layer", "rm", "base"]);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn store_commands_leave_low_level_layers_alone() {
    let e = Env::new("vfs");
    e.ok(&["layer", "create", "mine"]);
    e.ok(&["image", "load", "-i", EXAMPLE]);
    e.ok(&["image", "ls"]);
    e.ok(&["prune"]);
    assert!(e.ok(&["check"]).contains("consistent"));
    assert!(e.ok(&["layer", "ls"]).contains("mine"));
}

#[test]
fn another_driver_on_a_used_root_is_refused() {
    let e = Env::new("vfs");
    e.ok(&["layer", "create", "x"]);
    let o = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("--root")
        .arg(&e.root)
        .args(["--driver", "overlay2", "layer", "ls"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("vfs") && err.contains("overlay2"), "{err}");
    // auto opens what was recorded
    let o = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("--root")
        .arg(&e.root)
        .args(["layer", "ls"])
        .output()
        .unwrap();
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains('x'));
}

#[test]
fn gnu_tar_reads_our_diffs_without_warnings() {
    if !have("tar") {
        eprintln!("skipping: no GNU tar");
        return;
    }
    let e = Env::new("vfs");
    use strata_conformance::layer::*;
    let long = format!("{}/{}", "d".repeat(140), "f".repeat(120));
    let l = vec![
        dir("d".repeat(140)),
        file(&long, "long name"),
        file("uni-✓", "u").mtime(MTIME, 123),
        symlink("ln", "t".repeat(200)),
        file("x", "x").xattr("user.k", "v"),
        sparse("sp", 1 << 20, vec![(65536, b"data".to_vec())]),
        file("hl-a", "shared"),
        hardlink("hl-b", "hl-a"),
        file("big-uid", "u").owner(3_000_000, 3_000_000),
    ];
    let t = e.root.join("in.tar");
    std::fs::write(&t, tar(&l)).unwrap();
    e.ok(&["layer", "apply", "l", t.to_str().unwrap()]);
    let d = e.root.join("out.tar");
    e.ok(&["layer", "diff", "l", "-o", d.to_str().unwrap()]);
    let x = e.root.join("extract");
    std::fs::create_dir(&x).unwrap();
    let o = Command::new("tar")
        .arg("-C")
        .arg(&x)
        .arg("--xattrs")
        .arg("-xvf")
        .arg(&d)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.trim().is_empty(), "GNU tar warned: {err}");
    assert_eq!(std::fs::read_to_string(x.join(&long)).unwrap(), "long name");
    let md = std::fs::metadata(x.join("sp")).unwrap();
    assert_eq!(md.len(), 1 << 20);
    let o = Command::new("tar").arg("-tvf").arg(&d).output().unwrap();
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn python_tar(dir: &Path, out: &Path, format: &str) -> bool {
    let script = format!(
        r#"
import tarfile, os, io
fmt = {{'gnu': tarfile.GNU_FORMAT, 'pax': tarfile.PAX_FORMAT}}['{format}']
with tarfile.open('{out}', 'w', format=fmt) as t:
    t.add('{dir}', arcname='.')
    ti = tarfile.TarInfo('generated/' + 'n' * 150)
    data = b'python ' * 10
    ti.size = len(data)
    ti.mtime = 1700000000
    t.addfile(ti, io.BytesIO(data))
    link = tarfile.TarInfo('generated/link')
    link.type = tarfile.SYMTYPE
    link.linkname = 'x' * 180
    t.addfile(link)
"#,
        out = out.display(),
        dir = dir.display()
    );
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

// Long on purpose: one scenario, step after step, each step's state
// feeding the next; cut into functions it would no longer read as the
// session it checks.
#[test]
fn tars_from_gnu_tar_and_python_apply() {
    let e = Env::new("vfs");
    let src = e.root.join("src");
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    std::fs::write(src.join("a/b/file"), "content\n").unwrap();
    std::fs::write(src.join("a/other"), vec![7u8; 100_000]).unwrap();
    std::os::unix::fs::symlink("b/file", src.join("a/link")).unwrap();
    std::fs::hard_link(src.join("a/b/file"), src.join("a/hard")).unwrap();
    let mut n = 0;
    let mut check = |t: &Path, extra: &[&str]| {
        n += 1;
        let id = format!("t{n}");
        e.ok(&["layer", "apply", &id, t.to_str().unwrap()]);
        let v = e.ok(&["layer", "mount", &id]);
        let v = Path::new(v.trim());
        assert_eq!(
            std::fs::read_to_string(v.join("a/b/file")).unwrap(),
            "content\n"
        );
        assert_eq!(
            std::fs::read_link(v.join("a/link")).unwrap(),
            Path::new("b/file")
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(v.join("a/hard")).unwrap().ino(),
            std::fs::metadata(v.join("a/b/file")).unwrap().ino()
        );
        for p in extra {
            assert!(v.join(p).symlink_metadata().is_ok(), "{p} missing");
        }
        e.ok(&["layer", "unmount", &id]);
    };
    if have("tar") {
        for fmt in ["gnu", "posix"] {
            let t = e.root.join(format!("gnu-{fmt}.tar"));
            let st = Command::new("tar")
                .arg("-C")
                .arg(&src)
                .arg(format!("--format={fmt}"))
                .arg("-cf")
                .arg(&t)
                .arg(".")
                .status()
                .unwrap();
            assert!(st.success());
            check(&t, &[]);
        }
        // sparse, as GNU tar writes it
        let sp = e.root.join("sparse-src");
        std::fs::create_dir_all(&sp).unwrap();
        let f = std::fs::File::create(sp.join("holes")).unwrap();
        f.set_len(64 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_at(b"end", (64 << 20) - 3).unwrap();
        for fmt in ["gnu", "posix"] {
            let t = e.root.join(format!("sparse-{fmt}.tar"));
            let st = Command::new("tar")
                .arg("-C")
                .arg(&sp)
                .arg("--sparse")
                .arg(format!("--format={fmt}"))
                .arg("-cf")
                .arg(&t)
                .arg(".")
                .status()
                .unwrap();
            assert!(st.success());
            assert!(
                std::fs::metadata(&t).unwrap().len() < 1 << 20,
                "GNU tar did not write a sparse entry"
            );
            let id = format!("sp-{fmt}");
            e.ok(&["layer", "apply", &id, t.to_str().unwrap()]);
            let v = e.ok(&["layer", "mount", &id]);
            let md = std::fs::metadata(Path::new(v.trim()).join("holes")).unwrap();
            use std::os::unix::fs::MetadataExt;
            assert_eq!(md.len(), 64 << 20);
            assert!(md.blocks() * 512 < 1 << 20, "{fmt}: holes filled");
            e.ok(&["layer", "unmount", &id]);
        }
    }
    if have("python3") {
        for fmt in ["gnu", "pax"] {
            let t = e.root.join(format!("py-{fmt}.tar"));
            assert!(python_tar(&src, &t, fmt));
            check(
                &t,
                &[&format!("generated/{}", "n".repeat(150)), "generated/link"],
            );
        }
    }
}
