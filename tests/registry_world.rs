//! The registry tests' world: a scratch area with roots, private
//! credential locations, and helpers shared by registry_e2e and
//! registry_auth.

#![allow(dead_code, clippy::disallowed_methods, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use strata_conformance::fixture::{Backing, Scratch, have_program};
use strata_conformance::images::{Layer, layer_of, write_layout};
use strata_conformance::layer::{dir, file};
use strata_conformance::world::{Registry, skopeo_push};

/// A place to run `strata`: a scratch area, roots in it, private
/// credential locations.
pub struct World {
    pub scratch: Scratch,
    pub driver: &'static str,
    pub home: PathBuf,
}

pub fn can_run(what: &str) -> bool {
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
    pub fn new() -> World {
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

    pub fn dir(&self, name: &str) -> PathBuf {
        self.scratch.fresh_dir(name).unwrap()
    }

    pub fn cmd(&self, root: &Path, args: &[&str]) -> Command {
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

    pub fn run(&self, root: &Path, args: &[&str]) -> Output {
        self.cmd(root, args).output().unwrap()
    }

    pub fn ok(&self, root: &Path, args: &[&str]) -> String {
        let o = self.run(root, args);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "strata {args:?} failed: {out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    }

    pub fn fails(&self, root: &Path, args: &[&str]) -> String {
        let o = self.run(root, args);
        assert!(
            !o.status.success(),
            "strata {args:?} succeeded: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    pub fn inspect(&self, root: &Path, r: &str, field: &str) -> String {
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

    pub fn check_clean(&self, root: &Path) {
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

pub fn count(out: &str, s: &str) -> usize {
    out.matches(s).count()
}

pub fn push_layout(w: &World, reg: &Registry, name: &str, layers: &[Layer]) -> (String, String) {
    let layout = w.dir(&format!("layout-{}", name.replace('/', "-")));
    let md = write_layout(&layout, "1", layers);
    let r = reg.reference(&format!("{name}:1"));
    skopeo_push(&layout, &layout, "1", &r);
    (r, md.to_string())
}

pub fn small(tag: &str) -> Layer {
    layer_of(
        &[dir("app"), file(format!("app/{tag}"), format!("{tag}\n"))],
        true,
    )
}

// Long on purpose: one session, step after step, each step's state
// feeding the next (the user's view of pull, containers and push).
