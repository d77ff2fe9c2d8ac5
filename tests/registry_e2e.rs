//! Pull and push against real registries, started by the tests on
//! loopback with private config and storage: Debian's docker-registry 2.8,
//! plain and behind token authentication (a token server of the test's
//! that answers GET and the OAuth2 POST flow), and an HTTP proxy of the
//! test's that corrupts or cuts a blob. skopeo and podman check interop.

// Tests handle scratch files and programs by path, as a user would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::net::{BlobStore, Mode, Proxy, TokenServer};
use strata_conformance::fixture::{Backing, Scratch, have_program};
use strata_conformance::images::{
    Layer, busybox_layer, layer_of, noise, write_index_layout, write_layout,
};
use strata_conformance::layer::{dir, file};
use strata_conformance::world::{Registry, skopeo_push};

/// A place to run `strata`: a scratch area, roots in it, private
/// credential locations.
struct World {
    scratch: Scratch,
    driver: &'static str,
    home: PathBuf,
}

fn can_run(what: &str) -> bool {
    let missing: Vec<&str> = ["docker-registry", "skopeo", "openssl"]
        .into_iter()
        .filter(|p| !have_program(p))
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        !strata_conformance::under_ci(),
        "CI=true: {what} needs {missing:?} (./ci/setup.sh test)"
    );
    eprintln!("skipping {what}: it needs {missing:?}");
    false
}

impl World {
    fn new() -> World {
        let root = strata::core::fsx::is_root();
        let (driver, backing) = if root {
            ("overlay2", Backing::Tmpfs)
        } else {
            ("vfs", Backing::TempDir)
        };
        let scratch = Scratch::new(backing, None).unwrap();
        let home = scratch.fresh_dir("home").unwrap();
        World {
            scratch,
            driver,
            home,
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.scratch.fresh_dir(name).unwrap()
    }

    fn cmd(&self, root: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
        c.arg("--root")
            .arg(root)
            .args(["--driver", self.driver])
            .args(args);
        c.env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("XDG_RUNTIME_DIR", self.home.join("run"))
            .env_remove("DOCKER_CONFIG")
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("STRATA_ROOT")
            .env_remove("STRATA_DRIVER")
            .env_remove("RUST_LOG");
        c
    }

    fn run(&self, root: &Path, args: &[&str]) -> Output {
        self.cmd(root, args).output().unwrap()
    }

    fn ok(&self, root: &Path, args: &[&str]) -> String {
        let o = self.run(root, args);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "strata {args:?} failed: {out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    }

    fn fails(&self, root: &Path, args: &[&str]) -> String {
        let o = self.run(root, args);
        assert!(
            !o.status.success(),
            "strata {args:?} succeeded: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    fn inspect(&self, root: &Path, r: &str, field: &str) -> String {
        self.ok(
            root,
            &[
                "image",
                "inspect",
                "--format",
                &format!("{{{{.{field}}}}}"),
                r,
            ],
        )
        .trim()
        .to_string()
    }

    fn check_clean(&self, root: &Path) {
        let out = self.ok(root, &["check"]);
        assert!(!out.contains("problem"), "check: {out}");
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for r in std::fs::read_dir(self.scratch.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if r.file_name().to_string_lossy().starts_with("root") {
                let _ = self.cmd(&r.path(), &["driver", "cleanup"]).output();
            }
        }
    }
}

fn count(out: &str, s: &str) -> usize {
    out.matches(s).count()
}

fn push_layout(w: &World, reg: &Registry, name: &str, layers: &[Layer]) -> (String, String) {
    let layout = w.dir(&format!("layout-{}", name.replace('/', "-")));
    let md = write_layout(&layout, "1", layers);
    let r = reg.reference(&format!("{name}:1"));
    skopeo_push(&layout, &layout, "1", &r);
    (r, md.to_string())
}

fn small(tag: &str) -> Layer {
    layer_of(
        &[dir("app"), file(format!("app/{tag}"), format!("{tag}\n"))],
        true,
    )
}

// Long on purpose: one session, step after step, each step's state
// feeding the next (the user's view of pull, containers and push).
#[test]
fn pull_push_round_trip_and_interop() {
    if !can_run("the registry round trip") {
        return;
    }
    let w = World::new();
    let reg = Registry::start(&w.dir("registry"));
    let (a, a_digest) = push_layout(&w, &reg, "strata/a", &[busybox_layer(), small("a")]);
    let (b, _) = push_layout(&w, &reg, "strata/b", &[busybox_layer(), small("b")]);
    let root = w.dir("root1");
    let out = w.ok(&root, &["pull", &a]);
    assert_eq!(count(&out, "Pull complete"), 2, "{out}");
    assert!(out.contains(&format!("Digest: {a_digest}")), "{out}");
    assert!(
        out.contains(&format!("Status: Downloaded newer image for {a}")),
        "{out}"
    );
    w.ok(&root, &["container", "create", "c1", &a]);
    assert_eq!(w.ok(&root, &["container", "diff", "c1"]), "");
    let out = w.ok(&root, &["pull", &b]);
    assert_eq!(count(&out, "Already exists"), 1, "the shared base: {out}");
    assert_eq!(count(&out, "Pull complete"), 1, "{out}");
    let out = w.ok(&root, &["pull", &a]);
    assert!(
        out.contains(&format!("Status: Image is up to date for {a}")),
        "{out}"
    );
    // push under another name: blobs are mounted, digests unchanged
    let copy = reg.reference("copy/a:2");
    w.ok(&root, &["image", "tag", &a, &copy]);
    let out = w.ok(&root, &["push", &copy]);
    assert_eq!(count(&out, "Mounted from strata/a"), 2, "{out}");
    assert!(out.contains(&format!("2: digest: {a_digest}")), "{out}");
    let id = w.inspect(&root, &a, "Id");
    let root2 = w.dir("root2");
    w.ok(&root2, &["pull", &copy]);
    assert_eq!(
        w.inspect(&root2, &copy, "Id"),
        id,
        "the same image ID after push and pull"
    );
    let digests = w.inspect(&root2, &copy, "RepoDigests");
    assert!(digests.contains(&a_digest), "{digests}");
    let sk = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
        .arg(format!("docker://{copy}"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&sk.stdout).trim(), a_digest);
    // an image made here (a commit: a new layer, a new manifest) goes out
    // and comes back through skopeo and podman with its digest
    w.ok(&root, &["container", "mount", "c1"]);
    let mnt = w.ok(&root, &["container", "mount", "c1"]);
    std::fs::write(Path::new(mnt.trim()).join("app/new"), "made here\n").unwrap();
    w.ok(&root, &["container", "unmount", "c1"]);
    w.ok(&root, &["container", "unmount", "c1"]);
    let mine = reg.reference("strata/mine:1");
    w.ok(&root, &["container", "commit", "c1", &mine]);
    let out = w.ok(&root, &["push", &mine]);
    assert!(
        out.contains("Layer already exists") || out.contains("Mounted from"),
        "{out}"
    );
    assert!(out.contains(": Pushed"), "the new layer is uploaded: {out}");
    let pushed = out
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    let sk = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
        .arg(format!("docker://{mine}"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&sk.stdout).trim(),
        pushed,
        "skopeo sees the pushed digest"
    );
    let layout = w.dir("skopeo-out");
    let policy = layout.join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let st = Command::new("skopeo")
        .arg("--policy")
        .arg(&policy)
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{mine}"))
        .arg(format!("oci:{}:x", layout.join("out").display()))
        .status()
        .unwrap();
    assert!(st.success(), "skopeo copies the image strata pushed");
    if have_program("podman") && strata::core::fsx::is_root() {
        let p = w.dir("podman");
        let podman = |args: &[&str]| {
            Command::new("podman")
                .arg("--root")
                .arg(p.join("root"))
                .arg("--runroot")
                .arg(p.join("run"))
                .args(["--storage-driver", "vfs"])
                .args(args)
                .output()
                .unwrap()
        };
        let o = podman(&["pull", "--tls-verify=false", &mine]);
        assert!(
            o.status.success(),
            "podman pull: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = podman(&["image", "inspect", "--format", "{{.Digest}}", &mine]);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            pushed,
            "podman sees the pushed digest"
        );
        let _ = podman(&["rmi", "-a", "-f"]);
    }
    w.check_clean(&root);
    w.check_clean(&root2);
}

#[test]
fn pull_by_digest_and_by_platform() {
    if !can_run("pulls of a multi-platform image") {
        return;
    }
    let w = World::new();
    let reg = Registry::start(&w.dir("registry"));
    let layout = w.dir("layout-multi");
    let (idx, mds) = write_index_layout(
        &layout,
        "1",
        &[
            ("linux", "amd64", vec![small("amd64")]),
            ("linux", "arm64", vec![small("arm64")]),
        ],
    );
    let r = reg.reference("strata/multi:1");
    let policy = layout.join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let st = Command::new("skopeo")
        .arg("--policy")
        .arg(&policy)
        .args(["copy", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("docker://{r}"))
        .status()
        .unwrap();
    assert!(st.success());
    let root = w.dir("root1");
    let out = w.ok(&root, &["pull", &r]);
    assert!(
        out.contains(&format!("Digest: {idx}")),
        "the index digest is shown: {out}"
    );
    assert_eq!(w.inspect(&root, &r, "Architecture"), "amd64");
    let root2 = w.dir("root2");
    w.ok(&root2, &["pull", "--platform", "linux/arm64", &r]);
    assert_eq!(w.inspect(&root2, &r, "Architecture"), "arm64");
    let by_digest = reg.reference(&format!("strata/multi@{}", mds[1]));
    let root3 = w.dir("root3");
    let out = w.ok(&root3, &["pull", &by_digest]);
    assert!(out.contains(&format!("Digest: {}", mds[1])), "{out}");
    let ls = w.ok(&root3, &["images", "--digests"]);
    assert!(
        ls.contains(&mds[1].to_string()) && ls.contains("<none>"),
        "{ls}"
    );
    let e = w.fails(&root3, &["pull", "--platform", "linux/s390x", &r]);
    assert!(
        e.contains("linux/s390x") && e.contains("linux/arm64"),
        "{e}"
    );
}

#[test]
fn token_authentication() {
    if !can_run("pulls with token authentication") {
        return;
    }
    let w = World::new();
    let tdir = w.dir("token");
    let tokens = TokenServer::start(&tdir, "alice", "s3cret", "refresh-me");
    let rdir = w.dir("registry");
    let reg = strata_conformance::world::Registry::start_with(&rdir, &tokens.registry_auth());
    let layout = w.dir("layout");
    write_layout(&layout, "1", &[busybox_layer(), small("t")]);
    let r = reg.reference("private/app:1");
    let policy = layout.join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let st = Command::new("skopeo")
        .arg("--policy")
        .arg(&policy)
        .args([
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "alice:s3cret",
        ])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("docker://{r}"))
        .env("REGISTRY_AUTH_FILE", layout.join("auth.json"))
        .status()
        .unwrap();
    assert!(st.success(), "skopeo push with credentials");
    let root = w.dir("root1");
    let host = format!("127.0.0.1:{}", reg.port);
    let e = w.fails(&root, &["pull", &r]);
    assert!(
        e.contains(&host) && e.contains("unauthorized"),
        "no credentials: {e}"
    );
    let bad = tdir.join("bad-auth.json");
    std::fs::write(
        &bad,
        format!(
            r#"{{"auths":{{"{host}":{{"auth":"{}"}}}}}}"#,
            b64("alice:wrong")
        ),
    )
    .unwrap();
    let o = w
        .cmd(&root, &["pull", &r])
        .env("REGISTRY_AUTH_FILE", &bad)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains(&host) && e.contains("refused the credentials"),
        "wrong credentials: {e}"
    );
    // login checks and keeps the credentials; pull uses them (GET flow)
    let mut login = w.cmd(&root, &["login", "-u", "alice", "--password-stdin", &host]);
    let mut child = login
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"s3cret\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("Login Succeeded"));
    let gets = tokens.gets.load(std::sync::atomic::Ordering::Relaxed);
    w.ok(&root, &["pull", &r]);
    assert!(
        tokens.gets.load(std::sync::atomic::Ordering::Relaxed) > gets,
        "the GET token flow was used"
    );
    // an identity token: the OAuth2 POST flow
    let idt = tdir.join("id-auth.json");
    std::fs::write(
        &idt,
        format!(r#"{{"auths":{{"{host}":{{"identitytoken":"refresh-me"}}}}}}"#),
    )
    .unwrap();
    let root2 = w.dir("root2");
    let posts = tokens.posts.load(std::sync::atomic::Ordering::Relaxed);
    let o = w
        .cmd(&root2, &["pull", &r])
        .env("REGISTRY_AUTH_FILE", &idt)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        tokens.posts.load(std::sync::atomic::Ordering::Relaxed) > posts,
        "the POST token flow was used"
    );
    // push with the login's token
    let other = reg.reference("private/copy:1");
    w.ok(&root, &["image", "tag", &r, &other]);
    w.ok(&root, &["push", &other]);
    w.ok(&root, &["logout", &host]);
    assert!(w.fails(&root, &["push", &other]).contains("unauthorized"));
}

#[test]
fn basic_auth_and_redirects_without_credentials() {
    if !can_run("Basic authentication") || !have_program("python3") {
        return;
    }
    let w = World::new();
    let rdir = w.dir("registry");
    // a bcrypt entry, as htpasswd -B makes it
    let hash = Command::new("python3")
        .args([
            "-c",
            "import crypt; print(crypt.crypt('pw', crypt.mksalt(crypt.METHOD_BLOWFISH)))",
        ])
        .output()
        .unwrap();
    let htpasswd = rdir.join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("bob:{}", String::from_utf8_lossy(&hash.stdout).trim()),
    )
    .unwrap();
    let reg = Registry::start_with(
        &rdir,
        &format!(
            "auth:\n  htpasswd:\n    realm: strata-basic\n    path: {}\n",
            htpasswd.display()
        ),
    );
    let host = format!("127.0.0.1:{}", reg.port);
    let layout = w.dir("layout");
    let l2 = small("redirected");
    let gz = strata_conformance::layer::gzip(&l2.tar);
    let blob = strata_core::Digest::of(&gz);
    write_layout(&layout, "1", &[busybox_layer(), l2]);
    let policy = layout.join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let r = reg.reference("basic/app:1");
    let st = Command::new("skopeo")
        .arg("--policy")
        .arg(&policy)
        .args(["copy", "--dest-tls-verify=false", "--dest-creds", "bob:pw"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("docker://{r}"))
        .env("REGISTRY_AUTH_FILE", layout.join("auth.json"))
        .status()
        .unwrap();
    assert!(st.success());
    let auth = w.dir("auth").join("auth.json");
    // the registry's blob GET answers with a redirect to "blob storage",
    // which must not see the registry's credentials
    let store = BlobStore::start([(blob.to_string(), gz)].into_iter().collect());
    let proxy = Proxy::start(reg.port, blob.as_str(), Mode::RedirectTo(store.port));
    let via = format!("127.0.0.1:{}/basic/app:1", proxy.port);
    let proxied = format!("127.0.0.1:{}", proxy.port);
    std::fs::write(
        &auth,
        format!(
            r#"{{"auths":{{"{host}":{{"auth":"{0}"}},"{proxied}":{{"auth":"{0}"}}}}}}"#,
            b64("bob:pw")
        ),
    )
    .unwrap();
    let root = w.dir("root1");
    let o = w
        .cmd(&root, &["pull", &via])
        .env("REGISTRY_AUTH_FILE", &auth)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        store.hits.load(std::sync::atomic::Ordering::Relaxed) >= 1,
        "the redirect was followed"
    );
    assert!(
        !store
            .saw_authorization
            .load(std::sync::atomic::Ordering::Relaxed),
        "the registry's Authorization went to blob storage"
    );
    let root2 = w.dir("root2");
    let e = w.fails(&root2, &["pull", &r]);
    assert!(
        e.contains(&host) && e.contains("user name and password"),
        "no credentials: {e}"
    );
    w.check_clean(&root);
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn a_corrupted_blob_is_refused() {
    if !can_run("corrupted blobs") {
        return;
    }
    let w = World::new();
    let reg = Registry::start(&w.dir("registry"));
    let l2 = small("corrupt-me");
    let blob = strata_core::Digest::of(&strata_conformance::layer::gzip(&l2.tar));
    let (_, _) = push_layout(&w, &reg, "strata/c", &[busybox_layer(), l2]);
    let proxy = Proxy::start(reg.port, blob.as_str(), Mode::Corrupt);
    let r = format!("127.0.0.1:{}/strata/c:1", proxy.port);
    let root = w.dir("root1");
    let e = w.fails(&root, &["pull", &r]);
    assert!(
        e.contains("digest mismatch") && e.contains(blob.as_str()),
        "{e}"
    );
    assert!(
        w.ok(&root, &["images", "-q"]).trim().is_empty(),
        "no image is recorded"
    );
    let layers = w.ok(&root, &["layer", "ls", "--format", "json"]);
    let n: Vec<serde_json::Value> = serde_json::from_str(&layers).unwrap();
    assert_eq!(n.len(), 1, "only the good base layer is kept: {layers}");
    w.check_clean(&root);
}

#[test]
fn a_cut_connection_resumes_with_a_range() {
    if !can_run("resumed downloads") {
        return;
    }
    let w = World::new();
    let reg = Registry::start(&w.dir("registry"));
    // gzipped: skopeo would compress a plain tar, changing its digest
    let big = layer_of(&[file("big", noise(12 << 20, 3))], true);
    let gz = strata_conformance::layer::gzip(&big.tar);
    let blob = strata_core::Digest::of(&gz);
    let size = gz.len() as u64;
    push_layout(&w, &reg, "strata/big", &[busybox_layer(), big]);
    let proxy = Proxy::start(reg.port, blob.as_str(), Mode::CutOnce(3 << 20));
    let r = format!("127.0.0.1:{}/strata/big:1", proxy.port);
    let root = w.dir("root1");
    let out = w.ok(&root, &["pull", &r]);
    assert!(out.contains("Retrying in 1 second"), "{out}");
    let sent = proxy.sent.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        proxy.ranged.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "one resumed request"
    );
    assert!(
        sent >= size && sent < size + (size / 10),
        "bytes sent in all: {sent} for a blob of {size}"
    );
    println!(
        "cut at 3 MiB: {sent} bytes sent for a {size}-byte blob ({:.3}x)",
        sent as f64 / size as f64
    );
    w.check_clean(&root);
}

#[test]
fn a_killed_pull_leaves_a_clean_root() {
    if !can_run("killed pulls") {
        return;
    }
    let w = World::new();
    let reg = Registry::start(&w.dir("registry"));
    let big = layer_of(&[file("big", noise(24 << 20, 5))], true);
    let blob = strata_core::Digest::of(&strata_conformance::layer::gzip(&big.tar));
    push_layout(&w, &reg, "strata/slow", &[busybox_layer(), big]);
    let proxy = Proxy::start(reg.port, blob.as_str(), Mode::Slow(64 << 10));
    let r = format!("127.0.0.1:{}/strata/slow:1", proxy.port);
    let root = w.dir("root1");
    let mut child = w
        .cmd(&root, &["pull", &r])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    while proxy.sent.load(std::sync::atomic::Ordering::Relaxed) < 4 << 20 {
        assert!(
            Instant::now() < end && child.try_wait().unwrap().is_none(),
            "the pull did not get going"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    w.check_clean(&root);
    let r2 = reg.reference("strata/slow:1");
    let out = w.ok(&root, &["pull", &r2]);
    assert!(
        out.contains("Already exists") && out.contains("Pull complete"),
        "{out}"
    );
    w.check_clean(&root);
}
