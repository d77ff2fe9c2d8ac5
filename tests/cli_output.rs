//! What the command line prints, as Docker prints it: lists and maps in
//! Go templates, listing shortcuts (`images REPO`, `ps -n` / `-l`),
//! `inspect` of several names, `info` and `version`.

// Tests handle scratch roots by path, as a user would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

mod common;

use common::{code, loaded};

#[test]
fn templates_print_lists_and_maps_as_go_does() {
    let e = loaded();
    e.ok(&["tag", "strata/hello", "other:2"]);
    // `{{.RepoTags}}` as Docker prints it, not Rust's debug form
    let tags = e.ok(&["image", "inspect", "-f", "{{.RepoTags}}", "other:2"]);
    assert_eq!(tags, "[other:2 strata/hello:latest]\n");
    let rootfs = e.ok(&["image", "inspect", "-f", "{{- .RootFS -}}", "other:2"]);
    assert!(rootfs.starts_with("map[Layers:[sha256:"), "{rootfs}");
    assert!(rootfs.trim_end().ends_with("] Type:layers]"), "{rootfs}");
    // what does not print is left alone: control words, declarations,
    // strings holding braces, comments
    let t = "{{/* }} */}}{{$t := .RepoTags}}{{range $t}}<{{.}}>{{end}}{{if .Id}}{{\"}}\"}}{{end}}";
    assert_eq!(
        e.ok(&["image", "inspect", "-f", t, "other:2"]),
        "<other:2><strata/hello:latest>}}\n"
    );
}

#[test]
fn dockers_listing_shortcuts() {
    let e = loaded();
    e.ok(&["tag", "strata/hello", "other:2"]);
    // `images REPOSITORY[:TAG]`, as `--filter reference=`
    let repo = e.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}", "other"]);
    assert_eq!(repo, "other:2\n");
    assert_eq!(e.ok(&["images", "-q", "nosuch"]), "");
    // `ps -l` / `ps -n N`: the last made, newest first, even within one
    // second
    for n in ["c1", "c2", "c3"] {
        e.ok(&["create", "--name", n, "strata/hello"]);
    }
    let names = |args: &[&str]| {
        let mut a = vec!["ps", "--format", "{{.Names}}"];
        a.extend_from_slice(args);
        e.ok(&a)
    };
    assert_eq!(names(&["-l"]), "c3\n");
    assert_eq!(names(&["-n", "2"]), "c3\nc2\n");
    assert_eq!(names(&["-n", "-1"]), "c3\nc2\nc1\n");
    assert_eq!(names(&["-n", "2", "--filter", "name=c1"]), "c1\n");
}

#[test]
fn inspect_prints_what_it_finds_before_failing() {
    let e = loaded();
    e.ok(&["create", "--name", "web", "strata/hello"]);
    // as `docker inspect`: the objects found are printed, the missing
    // names reported, and the status is 1
    for args in [
        &["inspect", "-f", "{{.Name}}", "web", "nosuch"][..],
        &["container", "inspect", "-f", "{{.Name}}", "web", "nosuch"][..],
    ] {
        let o = e.run_in(&e.root, args);
        assert_eq!(code(&o), 1, "{args:?}: {o:?}");
        assert_eq!(String::from_utf8_lossy(&o.stdout), "/web\n", "{args:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("nosuch"),
            "{o:?}"
        );
    }
    let o = e.run_in(
        &e.root,
        &["image", "inspect", "nosuch", "strata/hello", "nada"],
    );
    assert_eq!(code(&o), 1, "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("No such image: nosuch"), "{err}");
    assert!(err.contains("No such image: nada"), "{err}");
}

#[test]
fn info_and_version() {
    let e = loaded();
    e.ok(&["create", "--name", "web", "strata/hello"]);
    let info = e.ok(&["info"]);
    assert!(info.contains("Containers: 1\n"), "{info}");
    assert!(info.contains("Images: 1\n"), "{info}");
    assert!(info.contains("Storage Driver: vfs\n"), "{info}");
    let root = format!("Strata Root Dir: {}\n", e.root.display());
    assert!(info.contains(&root), "{info}");
    let v: serde_json::Value =
        serde_json::from_str(&e.ok(&["system", "info", "--format", "json"])).unwrap();
    assert_eq!(v["Containers"], 1, "{v}");
    let layers = e.ok(&[
        "image",
        "inspect",
        "-f",
        "{{len .RootFS.Layers}}",
        "strata/hello",
    ]);
    assert_eq!(v["ImageLayers"].to_string(), layers.trim(), "{v}");
    let version = e.ok(&["version"]);
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
}
