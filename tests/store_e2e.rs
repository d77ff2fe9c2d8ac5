//! End-to-end: the `strata` image and container commands over every
//! driver (overlay2 and btrfs as root; under CI=true they must run).

// Tests inspect views and scratch directories by path, as a user would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

fn lines_with(out: &str, pat: &str) -> usize {
    out.lines().filter(|l| l.contains(pat)).count()
}

// Long on purpose: one scenario, step after step, each step's state
// feeding the next; cut into functions it would no longer read as the
// session it checks.
fn image_workflow(driver: &'static str) {
    if unavailable(driver).is_some() {
        return;
    }
    let e = Env::new(driver);

    // import, like docker pull
    let out = e.ok(&["image", "load", "-i", EXAMPLE]);
    assert_eq!(lines_with(&out, "Pull complete"), 2, "{out}");
    assert!(out.contains(&format!("Digest: {EXAMPLE_DIGEST}")), "{out}");
    let layers_before = e.ok(&["layer", "ls", "--format", "json"]);
    // importing again touches no layer
    let out = e.ok(&["image", "load", "-i", EXAMPLE]);
    assert_eq!(lines_with(&out, "Already exists"), 2, "{out}");
    assert_eq!(e.ok(&["layer", "ls", "--format", "json"]), layers_before);

    // ls, inspect, history
    let ls = e.ok(&["image", "ls"]);
    assert!(ls.starts_with("REPOSITORY"), "{ls}");
    assert!(
        ls.contains("strata/hello") && ls.contains("latest") && ls.contains("ee5e404c20b6"),
        "{ls}"
    );
    let ls = e.ok(&["image", "ls", "--digests"]);
    assert!(ls.contains(EXAMPLE_DIGEST), "{ls}");
    let inspect: serde_json::Value =
        serde_json::from_str(&e.ok(&["image", "inspect", "strata/hello"])).unwrap();
    let i = &inspect[0];
    assert_eq!(i["RootFS"]["Type"], "layers");
    assert_eq!(i["RootFS"]["Layers"].as_array().unwrap().len(), 2);
    assert_eq!(i["RepoTags"][0], "strata/hello:latest");
    assert!(
        i["RepoDigests"][0]
            .as_str()
            .unwrap()
            .ends_with(EXAMPLE_DIGEST)
    );
    assert_eq!(i["Config"]["Cmd"][0], "/app/hello.sh");
    let h = e.ok(&["image", "history", "strata/hello"]);
    let rows: Vec<&str> = h.lines().collect();
    assert_eq!(rows.len(), 4, "{h}");
    assert!(
        rows[1].starts_with("ee5e404c20b6") && rows[1].contains("CMD") && rows[1].contains(" 0B"),
        "{h}"
    );
    assert!(
        rows[2].starts_with("<missing>") && rows[3].contains("base files"),
        "{h}"
    );

    // a container: change, diff, commit
    e.ok(&["container", "create", "web", "strata/hello"]);
    let view = e.ok(&["container", "mount", "web"]).trim().to_string();
    std::fs::write(format!("{view}/etc/motd"), "welcome\n").unwrap();
    std::fs::remove_file(format!("{view}/etc/passwd")).unwrap();
    std::fs::write(format!("{view}/app/hello.sh"), "#!/bin/sh\necho changed\n").unwrap();
    let diff = e.ok(&["container", "diff", "web"]);
    for want in ["A /etc/motd", "D /etc/passwd", "C /app/hello.sh"] {
        assert!(diff.lines().any(|l| l == want), "{want} not in {diff}");
    }
    e.ok(&["container", "unmount", "web"]);
    let ps = e.ok(&["ps", "--size"]);
    assert!(ps.contains("web") && ps.contains("(virtual "), "{ps}");
    let new_id = e
        .ok(&[
            "container",
            "commit",
            "web",
            "strata/hello:v2",
            "-m",
            "second",
        ])
        .trim()
        .to_string();
    assert!(new_id.starts_with("sha256:"), "{new_id}");
    let h = e.ok(&["image", "history", "strata/hello:v2"]);
    assert_eq!(h.lines().count(), 5, "{h}");
    assert!(h.lines().nth(1).unwrap().contains("second"), "{h}");
    // the container's filesystem as a tar
    let exp = e.root.join("web.tar");
    e.ok(&["container", "export", "web", "-o", exp.to_str().unwrap()]);
    let names: Vec<String> = tar_members(&exp).into_iter().map(|(n, _)| n).collect();
    assert!(
        names.iter().any(|n| n == "etc/motd") && !names.iter().any(|n| n == "etc/passwd"),
        "{names:?}"
    );

    // layers shared by two images are stored once
    let df: serde_json::Value = serde_json::from_str(&e.ok(&["df", "--format", "json"])).unwrap();
    assert_eq!(df["Layers"]["Total"], 3, "{df}");
    assert_eq!(df["Images"]["Total"], 2);

    // export (OCI and docker) and import elsewhere: the same IDs, blobs
    // byte for byte
    let oci = e.root.join("hello.oci.tar");
    let docker = e.root.join("v2.docker.tar");
    e.ok(&[
        "image",
        "export",
        "strata/hello",
        "-o",
        oci.to_str().unwrap(),
    ]);
    e.ok(&[
        "image",
        "export",
        "strata/hello:v2",
        "--format",
        "docker",
        "-o",
        docker.to_str().unwrap(),
    ]);
    for (name, data) in tar_members(&oci) {
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            let orig = std::fs::read(format!("{EXAMPLE}/blobs/sha256/{hex}")).unwrap();
            assert_eq!(orig, data, "blob {hex} differs from the imported one");
        }
    }
    let other = e.another_root();
    e.ok_in(&other, &["image", "load", "-i", oci.to_str().unwrap()]);
    e.ok_in(&other, &["image", "load", "-i", docker.to_str().unwrap()]);
    let ids = |root: &std::path::Path| {
        let v: serde_json::Value =
            serde_json::from_str(&e.ok_in(root, &["image", "ls", "--format", "json"])).unwrap();
        let mut ids: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| format!("{} {}", x["Tag"], x["ID"]))
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&other), ids(&e.root));
    assert!(e.ok_in(&other, &["check"]).contains("consistent"));

    // removing one image keeps the other intact
    e.fails(&["image", "rm", "strata/hello"]); // a container uses it
    let out = e.ok(&["image", "rm", "strata/hello:v2"]);
    assert!(
        out.contains("Untagged: strata/hello:v2") && out.contains("Deleted: sha256:"),
        "{out}"
    );
    let v = e.ok(&["container", "mount", "web"]).trim().to_string();
    assert!(std::path::Path::new(&format!("{v}/etc/hostname")).exists());
    e.ok(&["container", "unmount", "web"]);
    let df: serde_json::Value = serde_json::from_str(&e.ok(&["df", "--format", "json"])).unwrap();
    assert_eq!(df["Layers"]["Total"], 2, "{df}");
    e.ok(&["container", "rm", "web"]);
    let out = e.ok(&["image", "rm", "strata/hello"]);
    assert!(out.contains("Deleted:"), "{out}");
    assert!(e.ok(&["layer", "ls", "--format", "json"]).trim() == "[]");
    assert!(e.ok(&["check"]).contains("consistent"));
}

#[test]
fn image_workflow_vfs() {
    image_workflow("vfs");
}

#[test]
fn image_workflow_overlay2() {
    image_workflow("overlay2");
}

#[test]
fn image_workflow_btrfs() {
    image_workflow("btrfs");
}

#[test]
fn corrupted_blob_is_refused_and_nothing_registered() {
    let e = Env::new("vfs");
    let bad = e.root.join("bad-layout");
    copy_dir(std::path::Path::new(EXAMPLE), &bad);
    // flip one byte of the second layer blob (the first imports fine)
    let blob =
        bad.join("blobs/sha256/5337553ce41f3a075a9ebd26481136436347d99deabf194a56a2a96684b8a512");
    let mut data = std::fs::read(&blob).unwrap();
    let n = data.len();
    data[n - 3] ^= 0xff;
    std::fs::write(&blob, &data).unwrap();
    let err = e.fails(&["image", "load", "-i", bad.to_str().unwrap()]);
    assert!(
        err.contains("5337553ce41f3a075a9ebd26481136436347d99deabf194a56a2a96684b8a512"),
        "{err}"
    );
    assert_eq!(e.ok(&["image", "ls", "-q"]).trim(), "");
    assert_eq!(e.ok(&["layer", "ls", "--format", "json"]).trim(), "[]");
    // a config that does not match its digest
    let bad2 = e.root.join("bad-config");
    copy_dir(std::path::Path::new(EXAMPLE), &bad2);
    let cfg =
        bad2.join("blobs/sha256/ee5e404c20b6ae7eeb47f635ea2176e411efab7c039bc1c936e9267d511b2923");
    let s = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("amd64", "arm64");
    std::fs::write(&cfg, s).unwrap();
    let err = e.fails(&["image", "load", "-i", bad2.to_str().unwrap()]);
    assert!(err.contains("ee5e404c20b6"), "{err}");
    assert_eq!(e.ok(&["layer", "ls", "--format", "json"]).trim(), "[]");
}

#[test]
fn interrupted_imports_leave_a_store_that_opens() {
    // a bigger image so that a kill lands in the middle
    let e = Env::new("vfs");
    let layout = e.root.join("big-layout");
    make_big_layout(&layout);
    let root = e.another_root();
    for i in 0..8u64 {
        let mut child = e
            .cmd_in(&root, &["image", "load", "-i", layout.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20 + i * 37 % 200));
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
            rustix::process::Signal::KILL,
        );
        let _ = child.wait();
        let out = e.run_in(&root, &["check"]);
        assert!(
            out.status.success(),
            "check after kill {i}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let out = e.ok_in(&root, &["image", "load", "-i", layout.to_str().unwrap()]);
    assert!(out.contains("Loaded image"), "{out}");
    assert!(e.ok_in(&root, &["check"]).contains("consistent"));
}
