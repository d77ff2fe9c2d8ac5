//! Images made by skopeo and podman import into Strata; Strata's exports
//! load into them, with the same image IDs. Runs where skopeo and podman
//! are installed (ci/setup.sh installs them; under CI=true they must be).

// Tests inspect views and scratch directories by path, as a user would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::*;

fn tools() -> bool {
    let have = strata_conformance::fixture::have_program("skopeo")
        && strata_conformance::fixture::have_program("podman")
        && strata::core::fsx::is_root();
    if !have {
        if strata_conformance::under_ci() {
            panic!("CI=true: skopeo and podman (as root) must be available for the interop tests");
        }
        eprintln!("skipping interop tests: skopeo / podman / root missing");
    }
    have
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

// Long on purpose: one scenario, step after step, each step's state
// feeding the next; cut into functions it would no longer read as the
// session it checks.
#[test]
fn skopeo_and_podman_round_trips() {
    if !tools() {
        return;
    }
    let e = Env::new("vfs");
    e.ok(&["image", "load", "-i", EXAMPLE]);
    let oci = e.root.join("h.oci.tar");
    let docker = e.root.join("h.docker.tar");
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
        "strata/hello",
        "--format",
        "docker",
        "-o",
        docker.to_str().unwrap(),
    ]);

    // skopeo reads both, and writes both formats back
    let inspect = run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}", oci.display())));
    assert!(inspect.contains(EXAMPLE_DIGEST), "{inspect}");
    run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("docker-archive:{}", docker.display())));
    let sk_oci = e.root.join("skopeo-oci");
    let sk_docker = e.root.join("skopeo.docker.tar");
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci-archive:{}", oci.display()))
        .arg(format!("oci:{}:v1", sk_oci.display())));
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("docker-archive:{}", docker.display()))
        .arg(format!(
            "docker-archive:{}:skopeo/hello:v1",
            sk_docker.display()
        )));

    // podman, in a storage of its own
    let pr = e.root.join("podman-root");
    let prun = e.root.join("podman-run");
    let podman = || {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(&pr)
            .arg("--runroot")
            .arg(&prun)
            .arg("--storage-driver")
            .arg("vfs");
        c
    };
    run(podman().arg("load").arg("-i").arg(&oci));
    run(podman().arg("load").arg("-i").arg(&docker));
    let imgs = run(podman().args(["images", "--format", "{{.ID}} {{.Repository}}"]));
    assert!(
        imgs.contains("ee5e404c20b6") && imgs.contains("strata/hello"),
        "{imgs}"
    );
    let p_docker = e.root.join("podman.docker.tar");
    let p_oci = e.root.join("podman.oci.tar");
    run(podman()
        .arg("save")
        .arg("-o")
        .arg(&p_docker)
        .arg("strata/hello"));
    run(podman()
        .arg("save")
        .arg("--format")
        .arg("oci-archive")
        .arg("-o")
        .arg(&p_oci)
        .arg("strata/hello"));
    let _ = podman().args(["rmi", "-a", "-f"]).output();

    // everything they made imports, with the same image ID
    let other = e.another_root();
    e.ok_in(
        &other,
        &[
            "image",
            "load",
            "-i",
            sk_oci.to_str().unwrap(),
            "--tag",
            "skopeo/oci:v1",
        ],
    );
    e.ok_in(
        &other,
        &["image", "load", "-i", sk_docker.to_str().unwrap()],
    );
    e.ok_in(&other, &["image", "load", "-i", p_docker.to_str().unwrap()]);
    e.ok_in(
        &other,
        &[
            "image",
            "load",
            "-i",
            p_oci.to_str().unwrap(),
            "--tag",
            "podman/oci:v1",
        ],
    );
    let ls = e.ok_in(&other, &["image", "ls", "-q"]);
    assert_eq!(ls.trim(), "ee5e404c20b6", "{ls}");
    let names = e.ok_in(&other, &["image", "ls"]);
    assert!(
        names.contains("skopeo/hello") && names.contains("podman/oci"),
        "{names}"
    );
    assert!(e.ok_in(&other, &["check"]).contains("consistent"));
}
