//! Registry authentication against real registries on loopback: bearer
//! tokens from a token server of the test's (GET and the OAuth2 POST
//! flow), Basic auth against docker-registry's htpasswd, and a redirect to
//! blob storage that never sees the registry's credentials.

// Tests handle scratch files and programs by path, as a user would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

mod common;
mod registry_world;

use std::process::Command;

use common::net::{BlobStore, Mode, Proxy, TokenServer};
use registry_world::*;
use strata_conformance::fixture::have_program;
use strata_conformance::images::{busybox_layer, write_layout};
use strata_conformance::world::Registry;

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
