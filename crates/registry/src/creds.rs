//! Credentials from the files users already have, in this order:
//! `$REGISTRY_AUTH_FILE`, Strata's own (`strata login` writes
//! `$XDG_CONFIG_HOME/strata/auth.json`), containers' `auth.json`
//! (`$XDG_RUNTIME_DIR/containers/auth.json`) and Docker's
//! (`$DOCKER_CONFIG/config.json`, default `~/.docker/config.json`). All use
//! the same format: `{"auths": {"host": {"auth": base64("user:pass")}}}`,
//! or an `identitytoken` (an OAuth2 refresh token).
//!
//! Credential helpers (`credsStore`) are not run: Strata reads the files
//! only, and says so when a file names a helper for the registry.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

use crate::endpoint::DOCKER_HUB;
use crate::error::{Error, Result};

/// What a registry is logged in with.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// User name and password (or a personal access token).
    Password {
        /// The user.
        username: String,
        /// The password.
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken`).
    IdentityToken(String),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Password { username, .. } => write!(f, "Password({username}, ***)"),
            Secret::IdentityToken(_) => f.write_str("IdentityToken(***)"),
        }
    }
}

/// The key Docker uses for Docker Hub in its config.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A file's `auths` key as the registry it names.
fn key_registry(k: &str) -> String {
    let k = k
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB.into(),
        h => h.to_string(),
    }
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// The file `strata login` writes.
pub fn strata_auth_file() -> Option<PathBuf> {
    let cfg = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".config")))?;
    Some(cfg.join("strata/auth.json"))
}

/// Every file looked in, in order.
pub fn auth_files() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|v| !v.is_empty()) {
        v.push(PathBuf::from(f));
    }
    v.extend(strata_auth_file());
    if let Some(r) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        v.push(PathBuf::from(r).join("containers/auth.json"));
    }
    match std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        Some(d) => v.push(PathBuf::from(d).join("config.json")),
        None => v.extend(home().map(|h| h.join(".docker/config.json"))),
    }
    v
}

fn read_json(path: &Path) -> Result<Option<Map<String, Value>>> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(Error::Io {
                op: "read",
                path: path.to_path_buf(),
                err,
            });
        }
    };
    match serde_json::from_slice::<Value>(&data) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        _ => Err(Error::bad(
            path.display().to_string(),
            "not a JSON object of credentials",
        )),
    }
}

fn decode(path: &Path, registry: &str, entry: &Value) -> Result<Option<Secret>> {
    if let Some(t) = entry
        .get("identitytoken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        return Ok(Some(Secret::IdentityToken(t.to_string())));
    }
    let Some(a) = entry
        .get("auth")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
    else {
        return Ok(None);
    };
    let bad = || {
        Error::bad(
            path.display().to_string(),
            format!("the credentials for {registry} are not base64 of user:password"),
        )
    };
    let raw = STANDARD.decode(a.trim()).map_err(|_| bad())?;
    let s = String::from_utf8(raw).map_err(|_| bad())?;
    let (u, p) = s.split_once(':').ok_or_else(bad)?;
    Ok(Some(Secret::Password {
        username: u.to_string(),
        password: p.to_string(),
    }))
}

/// The credentials for `registry` in `files` (first match wins).
pub fn lookup_in(files: &[PathBuf], registry: &str) -> Result<Option<Secret>> {
    for f in files {
        let Some(m) = read_json(f)? else { continue };
        if let Some(auths) = m.get("auths").and_then(Value::as_object) {
            for (k, v) in auths {
                if key_registry(k) == registry
                    && let Some(s) = decode(f, registry, v)?
                {
                    tracing::debug!(registry, file = %f.display(), "credentials");
                    return Ok(Some(s));
                }
            }
        }
        let helper = m
            .get("credHelpers")
            .and_then(|h| h.get(registry))
            .or_else(|| m.get("credsStore"));
        if let Some(h) = helper.and_then(Value::as_str) {
            tracing::warn!(registry, file = %f.display(), helper = h, "credential helpers are not run; use `strata login`");
        }
    }
    Ok(None)
}

/// The credentials for `registry` in the usual files.
pub fn lookup(registry: &str) -> Result<Option<Secret>> {
    lookup_in(&auth_files(), registry)
}

fn key_for(registry: &str) -> String {
    if registry == DOCKER_HUB {
        DOCKER_HUB_KEY.to_string()
    } else {
        registry.to_string()
    }
}

fn write_json(path: &Path, m: Map<String, Value>) -> Result<()> {
    let io = |op: &'static str| {
        let path = path.to_path_buf();
        move |err| Error::Io { op, path, err }
    };
    if let Some(d) = path.parent() {
        strata_core::fsx::mkdir_p(d, 0o700).map_err(io("create"))?;
    }
    let data = serde_json::to_vec_pretty(&Value::Object(m))
        .map_err(|e| Error::bad(path.display().to_string(), e.to_string()))?;
    // a new file beside it (mode 0600), then rename
    strata_core::fsx::write_atomic(path, &data).map_err(io("write"))
}

/// Save credentials for `registry` in `file` (mode 0600), keeping what else
/// it holds.
pub fn save(file: &Path, registry: &str, username: &str, password: &str) -> Result<()> {
    let mut m = read_json(file)?.unwrap_or_default();
    let auths = m
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    if !auths.is_object() {
        *auths = Value::Object(Map::new());
    }
    let auth = STANDARD.encode(format!("{username}:{password}"));
    if let Some(a) = auths.as_object_mut() {
        a.retain(|k, _| key_registry(k) != registry);
        a.insert(key_for(registry), serde_json::json!({ "auth": auth }));
    }
    write_json(file, m)
}

/// Forget `registry` in `file`; `false` when it was not there.
pub fn forget(file: &Path, registry: &str) -> Result<bool> {
    let Some(mut m) = read_json(file)? else {
        return Ok(false);
    };
    let Some(a) = m.get_mut("auths").and_then(Value::as_object_mut) else {
        return Ok(false);
    };
    let before = a.len();
    a.retain(|k, _| key_registry(k) != registry);
    if a.len() == before {
        return Ok(false);
    }
    write_json(file, m)?;
    Ok(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::disallowed_methods)]
mod tests {
    use super::*;

    #[test]
    fn files_are_read_in_order_and_docker_hub_keys_match() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a.json");
        let b = t.path().join("b.json");
        std::fs::write(&a, r#"{"auths":{"example.com":{"identitytoken":"tok"}}}"#).unwrap();
        let hub = STANDARD.encode("me:pw");
        std::fs::write(
            &b,
            format!(r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{hub}"}},"example.com":{{"auth":"{hub}"}}}}}}"#),
        )
        .unwrap();
        let files = vec![a, b.clone()];
        assert_eq!(
            lookup_in(&files, "example.com").unwrap(),
            Some(Secret::IdentityToken("tok".into()))
        );
        assert_eq!(
            lookup_in(&files, "docker.io").unwrap(),
            Some(Secret::Password {
                username: "me".into(),
                password: "pw".into()
            })
        );
        assert_eq!(lookup_in(&files, "other.io").unwrap(), None);
        std::fs::write(&b, r#"{"auths":{"x.io":{"auth":"%%%"}}}"#).unwrap();
        let e = lookup_in(&[b], "x.io").unwrap_err().to_string();
        assert!(e.contains("x.io") && e.contains("b.json"), "{e}");
    }

    #[test]
    fn save_and_forget_keep_the_rest() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("sub/auth.json");
        save(&f, "docker.io", "u", "p").unwrap();
        save(&f, "example.com:5000", "v", "q").unwrap();
        save(&f, "docker.io", "u2", "p2").unwrap();
        let v: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        assert_eq!(v["auths"].as_object().unwrap().len(), 2);
        assert!(v["auths"][DOCKER_HUB_KEY]["auth"].is_string());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(forget(&f, "docker.io").unwrap());
        assert!(!forget(&f, "docker.io").unwrap());
        assert!(lookup_in(&[f], "example.com:5000").unwrap().is_some());
    }
}
