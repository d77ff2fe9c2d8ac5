//! The command line a Docker user trusts: each defect of the CLI issue as a
//! regression test, and a Docker user's session end to end.

// Tests handle outputs, FIFOs and scratch roots by path, as a user would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use common::{EXAMPLE, Env, code, loaded};

#[test]
fn output_targets_are_never_replaced() {
    let e = loaded();
    let dir = e.scratch.path();
    // a FIFO is written through
    let fifo = dir.join("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let f2 = fifo.clone();
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::fs::File::open(&f2)
            .unwrap()
            .read_to_end(&mut v)
            .unwrap();
        v.len()
    });
    e.ok(&["save", "strata/hello", "-o", fifo.to_str().unwrap()]);
    assert!(
        reader.join().unwrap() > 1024,
        "the archive went through the FIFO"
    );
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo(),
        "the FIFO is still a FIFO"
    );
    // a symlink stays a symlink; its target gets the archive
    let target = dir.join("target");
    let link = dir.join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    std::fs::write(&target, "").unwrap();
    e.ok(&["save", "strata/hello", "-o", link.to_str().unwrap()]);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(std::fs::metadata(&target).unwrap().len() > 1024);
    // a directory is an error naming it
    let err = e.fails(&["save", "strata/hello", "-o", dir.to_str().unwrap()]);
    assert!(err.contains("is a directory"), "{err}");
    // /dev/null stays a device (root only can damage it)
    if strata::core::fsx::is_root() {
        e.ok(&["save", "strata/hello", "-o", "/dev/null"]);
        let m = std::fs::symlink_metadata("/dev/null").unwrap();
        assert!(
            std::os::unix::fs::FileTypeExt::is_char_device(&m.file_type()),
            "/dev/null was replaced"
        );
    }
}

use std::os::unix::fs::FileTypeExt;

#[test]
fn low_level_rm_respects_the_store() {
    let e = loaded();
    let layers: Vec<serde_json::Value> =
        serde_json::from_str(&e.ok(&["layer", "ls", "--format", "json"])).unwrap();
    let id = layers[0]["id"].as_str().unwrap().to_string();
    let err = e.fails(&["layer", "rm", &id]);
    assert!(
        err.contains("strata/hello") || err.contains("image"),
        "names the user: {err}"
    );
    assert_eq!(
        e.ok(&["images", "-q"]).lines().count(),
        1,
        "the image is intact"
    );
    let o = e.run_in(&e.root, &["check", "--repair", "--dry-run"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_closed_pipe_ends_quietly() {
    let e = loaded();
    let mut c = e.cmd_in(&e.root, &["image", "inspect", "strata/hello"]);
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 4];
    out.read_exact(&mut buf).unwrap();
    drop(out);
    let o = child.wait_with_output().unwrap();
    assert!(
        code(&o) == 0 || code(&o) == 141 || o.status.code().is_none(),
        "exit {:?}",
        o.status
    );
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn usage_errors_exit_2_and_touch_nothing() {
    let e = loaded();
    let o = e.run_in(&e.root, &["images", "--format", "yaml"]);
    assert_eq!(code(&o), 2, "unknown --format");
    for bad in [
        "a-",
        ".a",
        "a..b",
        "foo:bar/baz",
        "ex_ample.com/x",
        "Upper/case",
    ] {
        let o = e.run_in(&e.root, &["image", "tag", "strata/hello", bad]);
        assert!(!o.status.success(), "{bad} was accepted");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("invalid reference format"), "{bad}: {err}");
        // it says what was expected, once
        assert_eq!(err.matches("invalid reference format").count(), 1, "{err}");
        assert!(err.contains(bad), "{err}");
    }
    let fresh = e.scratch.path().join("never-made");
    let o = e.run_in(&fresh, &["image", "inspect"]);
    assert_eq!(code(&o), 2);
    assert!(!fresh.exists(), "a usage error made the root");
}

#[test]
fn ps_shows_the_reference_given() {
    let e = loaded();
    let id = e.ok(&["images", "-q"]).trim().to_string();
    e.ok(&["container", "create", "byid", &id[..8]]);
    let out = e.ok(&["ps", "--format", "{{.Image}}"]);
    assert_eq!(out.trim(), &id[..8]);
}

/// Two containers with the same changes on the same image commit to one
/// chain ID: the second commit reuses the layer (with `--rm` too) instead
/// of failing on the duplicate.
#[test]
fn identical_commits_share_their_layer() {
    let e = loaded();
    let before = e.ok(&["check"]);
    e.ok(&["container", "create", "ca", "strata/hello"]);
    e.ok(&["container", "create", "cb", "strata/hello"]);
    e.ok(&["container", "create", "cc", "strata/hello"]);
    e.ok(&["container", "commit", "ca", "x:1"]);
    e.ok(&["container", "commit", "cb", "x:2"]);
    e.ok(&["container", "commit", "--rm", "cc", "x:3"]);
    let layers = |t: &str| e.ok(&["image", "inspect", "--format", "{{json .RootFS.Layers}}", t]);
    assert_eq!(layers("x:1"), layers("x:3"));
    assert_eq!(layers("x:2"), layers("x:3"));
    let ps = e.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(!ps.contains("cc"), "the committed container stays: {ps}");
    assert!(e.ok(&["check"]).contains("consistent"));
    // nothing is left of the duplicate
    e.ok(&["container", "rm", "ca", "cb"]);
    e.ok(&["image", "rm", "x:1", "x:2", "x:3"]);
    assert_eq!(e.ok(&["check"]), before);
}

/// `load` takes compressed archives as `docker load` does (gzip, xz), from
/// a file or standard input; a layer diff may be xz-compressed too.
#[test]
fn compressed_archives_and_layers_load() {
    let e = loaded();
    let id = e.ok(&["images", "-q", "--no-trunc"]).trim().to_string();
    let dir = e.scratch.path();
    let plain = dir.join("hello.tar");
    e.ok(&["save", "strata/hello", "-o", plain.to_str().unwrap()]);
    for (tool, ext) in [("gzip", "gz"), ("xz", "xz")] {
        let st = Command::new(tool).arg("-k").arg(&plain).status().unwrap();
        assert!(st.success(), "{tool}");
        let packed = dir.join(format!("hello.tar.{ext}"));
        let other = Env::new("vfs");
        other.ok(&["load", "-q", "-i", packed.to_str().unwrap()]);
        assert_eq!(
            other.ok(&["images", "-q", "--no-trunc"]).trim(),
            id,
            "{tool} -i"
        );
        let again = Env::new("vfs");
        let mut c = again
            .cmd_in(&again.root, &["load", "-q"])
            .stdin(std::fs::File::open(&packed).unwrap())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        assert!(c.wait().unwrap().success(), "{tool} from standard input");
        assert_eq!(
            again.ok(&["images", "-q", "--no-trunc"]).trim(),
            id,
            "{tool} stdin"
        );
    }
    // an xz layer diff
    let t = strata_conformance::layer::tar(&[strata_conformance::layer::file("x", "xz")]);
    let lt = dir.join("l.tar");
    std::fs::write(&lt, &t).unwrap();
    assert!(
        Command::new("xz")
            .arg("-k")
            .arg(&lt)
            .status()
            .unwrap()
            .success()
    );
    e.ok(&[
        "layer",
        "apply",
        "xzl",
        dir.join("l.tar.xz").to_str().unwrap(),
    ]);
    let l = e.ok(&["layer", "diff", "xzl"]);
    assert!(l.len() >= 512, "the layer holds the file");
}

/// `container create` takes Docker's `--name NAME IMAGE`, Strata's `NAME
/// IMAGE`, and makes a name up for a bare `IMAGE`; both names at once is a
/// usage error (exit 2) that creates nothing.
#[test]
fn create_takes_dockers_name_flag() {
    let e = loaded();
    e.ok(&["container", "create", "--name", "web", "strata/hello"]);
    e.ok(&["container", "create", "db", "strata/hello"]);
    e.ok(&["container", "create", "strata/hello"]);
    let names = e.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    let mut v: Vec<&str> = names.lines().collect();
    v.sort();
    assert_eq!(v.len(), 3, "{names}");
    assert!(v.contains(&"web") && v.contains(&"db"), "{names}");
    assert!(v.iter().any(|n| n.starts_with("strata_")), "{names}");
    let o = e.run_in(
        &e.root,
        &["container", "create", "--name", "a1", "b1", "strata/hello"],
    );
    assert_eq!(code(&o), 2, "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(e.ok(&["ps", "-a", "-q"]).lines().count(), 3);
}

/// Docker's top-level forms: `create`, `diff`, `export`, `commit`, `rm`,
/// `tag`, `history` do what their `container` / `image` forms do, and `inspect` finds
/// containers and images.
#[test]
fn dockers_top_level_forms() {
    let e = loaded();
    let id = e.ok(&["create", "--name", "web", "strata/hello"]);
    assert_eq!(
        e.ok(&["ps", "-q", "--no-trunc", "--filter", "name=web"])
            .trim(),
        id.trim()
    );
    // inspect: a container first, then an image; --type restricts it
    let both = e.ok(&["inspect", "-f", "{{.Id}}", "web", "strata/hello"]);
    let image_id = e.ok(&["image", "inspect", "-f", "{{.Id}}", "strata/hello"]);
    assert_eq!(both, format!("{}\n{}", id.trim(), image_id), "{both}");
    let err = e.fails(&["inspect", "--type", "image", "web"]);
    assert!(err.contains("No such object: web"), "{err}");
    assert!(
        e.fails(&["inspect", "nosuch"])
            .contains("No such object: nosuch")
    );
    // diff and export see a change made in the container
    let merged = e.ok(&["container", "mount", "web"]);
    std::fs::write(std::path::Path::new(merged.trim()).join("added"), "x").unwrap();
    e.ok(&["container", "unmount", "web"]);
    assert_eq!(e.ok(&["diff", "web"]), "A /added\n");
    let tar = e.scratch.path().join("web.tar");
    e.ok(&["export", "web", "-o", tar.to_str().unwrap()]);
    let names = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&tar)
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&names.stdout);
    assert!(
        names.lines().any(|l| l.trim_start_matches("./") == "added"),
        "{names}"
    );
    e.ok(&["commit", "web", "snap:1"]);
    e.ok(&["tag", "snap:1", "snap:2"]);
    let ids = e.ok(&["images", "-q", "--filter", "reference=snap"]);
    let mut ids: Vec<&str> = ids.lines().collect();
    ids.dedup();
    assert_eq!(ids.len(), 1, "both tags name one image: {ids:?}");
    let history = e.ok(&["history", "-q", "snap:2"]);
    assert_eq!(
        history.lines().count(),
        e.ok(&["history", "-q", "strata/hello"]).lines().count() + 1,
        "{history}"
    );
    e.ok(&["rm", "web"]);
    assert!(e.ok(&["ps", "-a", "-q"]).trim().is_empty());
    let err = e.fails(&["rm", "web"]);
    assert!(err.contains("web"), "{err}");
    let err = e.fails(&["tag", "nosuch", "x:1"]);
    assert!(err.contains("nosuch"), "{err}");
}

#[test]
fn force_forgives_only_what_is_not_there() {
    let e = loaded();
    e.ok(&["create", "--name", "web", "strata/hello"]);
    // as `docker rm -f` / `docker rmi -f`: a missing name is reported on
    // stderr, the others are removed, and the status is 0
    e.ok(&["tag", "strata/hello", "spare:1"]);
    let o = e.run_in(&e.root, &["rmi", "-f", "nosuch", "spare:1"]);
    assert_eq!(code(&o), 0, "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("No such image: nosuch"));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "Untagged: spare:1\n");
    let o = e.run_in(&e.root, &["rm", "-f", "gone", "web"]);
    assert_eq!(code(&o), 0, "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("No such container: gone"));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "web\n");
    // without -f a missing name fails; with -f any other refusal still does
    let err = e.fails(&["rm", "gone"]);
    assert!(err.contains("could not remove gone"), "{err}");
    e.ok(&["create", "--name", "db", "strata/hello"]);
    let o = e.run_in(&e.root, &["rmi", "-f", "strata/hello", "nosuch"]);
    assert_eq!(code(&o), 1, "an image in use is not forgiven: {o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("could not remove strata/hello\n"), "{err}");
    assert!(
        e.ok(&["images", "-q"]).trim().len() >= 12,
        "the image stays"
    );
}

#[test]
fn save_takes_several_images() {
    let e = loaded();
    // a second image sharing the example's layers, and a second name
    e.ok(&["create", "--name", "web", "strata/hello"]);
    e.ok(&["commit", "web", "derived:1"]);
    e.ok(&["tag", "strata/hello", "alias:1"]);
    let want = e.ok(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
    for format in ["oci", "docker"] {
        let out = e.scratch.path().join(format!("all-{format}.tar"));
        let o = out.to_str().unwrap();
        // named twice (by tag and by ID): the image goes once, both names
        let id = e.ok(&["images", "-q", "strata/hello"]);
        let all = ["strata/hello", "derived:1", "alias:1", id.trim()];
        let mut args = vec!["save", "--format", format, "-o", o];
        args.extend(all);
        e.ok(&args);
        let other = Env::new("vfs");
        other.ok(&["load", "-q", "-i", o]);
        let got = other.ok(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
        let sorted = |s: &str| {
            let mut v: Vec<String> = s.lines().map(str::to_string).collect();
            v.sort();
            v
        };
        assert_eq!(sorted(&got), sorted(&want), "{format}");
        // every blob once: the shared layers are not repeated
        let names = Command::new("tar").arg("-tf").arg(&out).output().unwrap();
        let names = String::from_utf8_lossy(&names.stdout).into_owned();
        let mut uniq: Vec<&str> = names.lines().collect();
        uniq.sort_unstable();
        uniq.dedup();
        assert_eq!(uniq.len(), names.lines().count(), "{format}: {names}");
    }
}

#[test]
fn login_needs_a_password() {
    let e = Env::new("vfs");
    // an empty standard input is refused before any connection (port 1:
    // nothing listens there, so a connection would say "unreachable")
    let mut c = e
        .cmd_in(
            &e.root,
            &["login", "-u", "me", "--password-stdin", "127.0.0.1:1"],
        )
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = String::new();
    c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!c.wait().unwrap().success());
    assert!(err.contains("password required"), "{err}");
    assert!(!err.contains("unreachable"), "{err}");
}

#[test]
fn junk_input_is_named_not_echoed() {
    let e = Env::new("vfs");
    let junk = e.scratch.path().join("junk");
    std::fs::write(&junk, b"root:x:0:0:SECRET-LINE\n\x1b[2J\x00\x01binary").unwrap();
    let err = e.fails(&["load", "-i", junk.to_str().unwrap()]);
    assert!(err.contains("is not an image archive"), "{err}");
    assert!(
        !err.contains("SECRET-LINE") && !err.contains('\x1b'),
        "{err:?}"
    );
    // `import` of it: the error names the file, and no image is made
    let err = e.fails(&["import", junk.to_str().unwrap(), "junk:1"]);
    assert!(err.contains(junk.to_str().unwrap()), "{err}");
    assert!(!err.contains("SECRET-LINE"), "{err:?}");
    assert!(e.ok(&["images", "-q"]).trim().is_empty());
}

// Long on purpose: one user's session, step after step.
#[test]
fn a_docker_users_session() {
    let e = Env::new("vfs");
    // load < archive (docker save's layout made by us first)
    let seed = Env::new("vfs");
    seed.ok(&["load", "-q", "-i", EXAMPLE]);
    let tar = e.scratch.path().join("hello.tar");
    seed.ok(&[
        "save",
        "--format",
        "docker",
        "strata/hello",
        "-o",
        tar.to_str().unwrap(),
    ]);
    let mut c = e.cmd_in(&e.root, &["load"]);
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(&tar).unwrap())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success()
            && String::from_utf8_lossy(&o.stdout).contains("Loaded image: strata/hello:latest")
    );
    assert_eq!(
        e.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .trim(),
        "strata/hello:latest"
    );
    // save | load into another root: the same ID
    let id = e
        .ok(&["image", "inspect", "-f", "{{.Id}}", "strata/hello"])
        .trim()
        .to_string();
    let other = e.another_root();
    let mut save = e
        .cmd_in(&e.root, &["save", "strata/hello"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let o = e
        .cmd_in(&other, &["load", "-q"])
        .stdin(save.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(save.wait().unwrap().success() && o.status.success());
    assert_eq!(
        e.ok_in(
            &other,
            &["image", "inspect", "-f", "{{.Id}}", "strata/hello"]
        )
        .trim(),
        id
    );
    // import a flat rootfs tarball
    let rootfs = e.scratch.path().join("rootfs.tar");
    std::fs::write(
        &rootfs,
        strata_conformance::layer::tar(&[strata_conformance::layer::file(
            "etc/os-release",
            "ID=test\n",
        )]),
    )
    .unwrap();
    e.ok(&["import", rootfs.to_str().unwrap(), "flat:1"]);
    assert_eq!(
        e.ok(&["image", "history", "-q", "flat:1"]).lines().count(),
        1
    );
    // filters, prunes, templates
    let refs = e.ok(&[
        "images",
        "--filter",
        "reference=flat",
        "--format",
        "{{.Repository}}",
    ]);
    assert_eq!(refs.trim(), "flat");
    e.ok(&["container", "create", "web", "strata/hello"]);
    assert_eq!(
        e.ok(&["ps", "--filter", "name=web", "-q"]).lines().count(),
        1
    );
    e.ok(&["container", "prune", "-f"]);
    assert!(e.ok(&["ps", "-q"]).trim().is_empty());
    e.ok(&["rmi", "flat:1"]);
    e.ok(&["image", "prune", "-a", "-f"]);
    assert!(e.ok(&["images", "-q"]).trim().is_empty());
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} --root {} --driver vfs images | head -c 1",
            env!("CARGO_BIN_EXE_strata"),
            e.root.display()
        ))
        .output()
        .unwrap();
    assert!(o.status.success() && !String::from_utf8_lossy(&o.stderr).contains("panicked"));
}
