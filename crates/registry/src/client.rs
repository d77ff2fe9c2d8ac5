//! Requests to a registry: the scheme (HTTPS, or plain HTTP where allowed),
//! authentication on 401 (once per scope, then cached), redirects followed
//! by hand so that the registry's `Authorization` never goes to another
//! place (blob storage), and registry errors turned into [`Error`]s that
//! name the registry.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ureq::http::{Method, Response};

use crate::auth::{self, Challenge, Token};
use crate::creds::{self, Secret};
use crate::endpoint::{Endpoint, Scheme};
use crate::error::{Error, Result};

/// How a client is made.
#[derive(Debug, Clone, Default)]
pub struct ClientOpts {
    /// Registries plain HTTP is allowed for (besides loopback ones).
    pub insecure: Vec<String>,
    /// Credential files to read instead of the usual ones.
    pub auth_files: Option<Vec<std::path::PathBuf>>,
}

/// A body to send.
pub enum Body<'a> {
    /// Nothing.
    Empty,
    /// Bytes in memory.
    Bytes(&'a [u8]),
    /// A stream of this many bytes.
    Reader(&'a mut (dyn Read + Send), u64),
}

impl std::fmt::Debug for Body<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Empty => f.write_str("Empty"),
            Body::Bytes(b) => write!(f, "Bytes({})", b.len()),
            Body::Reader(_, n) => write!(f, "Reader({n})"),
        }
    }
}

/// One request: method, path (`/v2/...`, or an absolute URL the registry
/// gave, as upload locations are), the scopes its token needs, headers.
#[derive(Debug)]
pub struct Req<'a> {
    /// The method.
    pub method: Method,
    /// `/v2/...` or an absolute URL.
    pub path: String,
    /// Token scopes (`repository:NAME:pull`).
    pub scopes: Vec<String>,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Body<'a>,
}

impl<'a> Req<'a> {
    /// A request without a body.
    pub fn new(method: Method, path: impl Into<String>, scope: impl Into<String>) -> Self {
        Req {
            method,
            path: path.into(),
            scopes: vec![scope.into()],
            headers: Vec::new(),
            body: Body::Empty,
        }
    }

    /// With a header.
    pub fn header(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.headers.push((k, v.into()));
        self
    }
}

/// A registry client; share it between threads.
#[derive(Debug)]
pub struct Client {
    agent: ureq::Agent,
    opts: ClientOpts,
    schemes: Mutex<HashMap<String, Scheme>>,
    secrets: Mutex<HashMap<String, Option<Secret>>>,
    tokens: Mutex<HashMap<(String, String), Token>>,
    basic: Mutex<HashMap<String, bool>>,
}

/// The registry's own error message, if its body has one.
fn registry_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let e = v.get("errors")?.get(0)?;
    let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
    let msg = e.get("message").and_then(|m| m.as_str()).unwrap_or("");
    Some(
        format!("{code}: {msg}")
            .trim_matches([':', ' '])
            .to_string(),
    )
}

impl Client {
    /// A client with the system's TLS roots.
    pub fn new(opts: ClientOpts) -> Client {
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_recv_body(Some(Duration::from_secs(120)))
            .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build()
            .new_agent();
        Client {
            agent,
            opts,
            schemes: Mutex::default(),
            secrets: Mutex::default(),
            tokens: Mutex::default(),
            basic: Mutex::default(),
        }
    }

    /// The endpoint of `registry`.
    pub fn endpoint(&self, registry: &str) -> Endpoint {
        Endpoint::new(registry, &self.opts.insecure)
    }

    fn secret(&self, registry: &str) -> Result<Option<Secret>> {
        let mut m = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = m.get(registry) {
            return Ok(s.clone());
        }
        let s = match &self.opts.auth_files {
            Some(f) => creds::lookup_in(f, registry)?,
            None => creds::lookup(registry)?,
        };
        m.insert(registry.to_string(), s.clone());
        Ok(s)
    }

    /// Use `secret` for `registry` (login checks it before saving).
    pub fn set_secret(&self, registry: &str, secret: Secret) {
        let mut m = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(registry.to_string(), Some(secret));
    }

    /// HTTPS unless it fails and plain HTTP is allowed (loopback or named
    /// insecure), decided once per registry.
    fn scheme(&self, ep: &Endpoint) -> Result<Scheme> {
        if let Some(s) = self
            .schemes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ep.registry)
        {
            return Ok(*s);
        }
        let probe = |s: Scheme| {
            let req = ureq::http::Request::get(format!("{}/v2/", ep.base(s))).body(());
            req.map_err(|e| e.to_string())
                .and_then(|r| self.agent.run(r).map_err(|e| e.to_string()))
        };
        let s = match probe(Scheme::Https) {
            Ok(_) => Scheme::Https,
            Err(e) if ep.plain_http_allowed => {
                tracing::debug!(registry = ep.registry, "HTTPS failed ({e}); plain HTTP");
                probe(Scheme::Http).map_err(|e2| {
                    Error::transport(&ep.registry, format!("unreachable: HTTPS: {e}; HTTP: {e2}"))
                })?;
                Scheme::Http
            }
            Err(e) => return Err(Error::transport(&ep.registry, e)),
        };
        self.schemes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ep.registry.clone(), s);
        Ok(s)
    }

    fn cached_auth(&self, ep: &Endpoint, scopes: &[String]) -> Result<Option<String>> {
        if self
            .basic
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ep.registry)
            == Some(&true)
        {
            return Ok(match self.secret(&ep.registry)? {
                Some(Secret::Password { username, password }) => {
                    Some(auth::basic_header(&username, &password))
                }
                _ => None,
            });
        }
        let key = (ep.registry.clone(), scopes.join(" "));
        let t = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        Ok(t.get(&key)
            .filter(|t| t.expires > Instant::now())
            .map(|t| t.header.clone()))
    }

    /// Answer a 401 for `scopes`: returns the `Authorization` to retry with.
    fn authenticate(&self, ep: &Endpoint, scopes: &[String], challenge: &str) -> Result<String> {
        let secret = self.secret(&ep.registry)?;
        match auth::parse_challenge(challenge) {
            Some(Challenge::Basic) => match secret {
                Some(Secret::Password { username, password }) => {
                    self.basic
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(ep.registry.clone(), true);
                    Ok(auth::basic_header(&username, &password))
                }
                _ => Err(Error::Unauthorized {
                    registry: ep.registry.clone(),
                    reason: format!(
                        "the registry wants a user name and password: strata login {}",
                        ep.registry
                    ),
                }),
            },
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let mut want: Vec<&str> = scopes.iter().map(String::as_str).collect();
                if want.is_empty() {
                    want.extend(scope.as_deref());
                }
                let t = auth::fetch_token(
                    &self.agent,
                    &ep.registry,
                    &realm,
                    service.as_deref(),
                    &want,
                    secret.as_ref(),
                )?;
                let h = t.header.clone();
                self.tokens
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert((ep.registry.clone(), scopes.join(" ")), t);
                Ok(h)
            }
            None => Err(Error::Unauthorized {
                registry: ep.registry.clone(),
                reason: format!("unsupported authentication challenge {challenge:?}"),
            }),
        }
    }

    fn url(&self, ep: &Endpoint, path: &str) -> Result<String> {
        if path.starts_with("http://") || path.starts_with("https://") {
            if path.starts_with("http://") {
                ep.check_plain()?;
            }
            return Ok(path.to_string());
        }
        let s = self.scheme(ep)?;
        if s == Scheme::Http {
            ep.check_plain()?;
        }
        Ok(format!("{}{path}", ep.base(s)))
    }

    fn run(
        &self,
        url: &str,
        req: &mut Req<'_>,
        auth: Option<&str>,
    ) -> std::result::Result<Response<ureq::Body>, ureq::Error> {
        let mut b = ureq::http::Request::builder()
            .method(req.method.clone())
            .uri(url);
        for (k, v) in &req.headers {
            b = b.header(*k, v.as_str());
        }
        if let Some(a) = auth {
            b = b.header("Authorization", a);
        }
        let r = match &mut req.body {
            Body::Empty => b.body(ureq::SendBody::none()).map(|r| self.agent.run(r)),
            Body::Bytes(d) => b
                .header("Content-Length", d.len().to_string())
                .body(*d)
                .map(|r| self.agent.run(r)),
            Body::Reader(rd, n) => b
                .header("Content-Length", n.to_string())
                .body(ureq::SendBody::from_reader(rd))
                .map(|r| self.agent.run(r)),
        };
        r.map_err(ureq::Error::Http)?
    }

    /// Send `req`: authenticated (once more after a 401 when the body can
    /// be sent again), redirects followed without the registry's
    /// credentials. Any status is returned; see [`Client::check`].
    pub fn send(&self, ep: &Endpoint, mut req: Req<'_>) -> Result<Response<ureq::Body>> {
        let url = self.url(ep, &req.path)?;
        let mut auth = self.cached_auth(ep, &req.scopes)?;
        let t = |e: ureq::Error| Error::transport(&ep.registry, e.to_string());
        let mut resp = self.run(&url, &mut req, auth.as_deref()).map_err(t)?;
        if resp.status() == 401 && !matches!(req.body, Body::Reader(..)) {
            let ch = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            auth = Some(self.authenticate(ep, &req.scopes, &ch)?);
            resp = self.run(&url, &mut req, auth.as_deref()).map_err(t)?;
        }
        let mut hops = 0;
        while resp.status().is_redirection() && matches!(req.method, Method::GET | Method::HEAD) {
            let Some(loc) = resp.headers().get("location").and_then(|v| v.to_str().ok()) else {
                break;
            };
            hops += 1;
            if hops > 10 {
                return Err(Error::transport(&ep.registry, "more than 10 redirects"));
            }
            let next = absolute(&url, loc);
            if next.starts_with("http://") && !url.starts_with("http://") {
                return Err(Error::transport(
                    &ep.registry,
                    format!("refusing a redirect from HTTPS to plain HTTP ({next})"),
                ));
            }
            // never the registry's credentials to another place
            resp = self.run(&next, &mut req, None).map_err(t)?;
        }
        Ok(resp)
    }

    /// `resp` when its status is one of `ok`, else the registry's error
    /// naming `what`.
    pub fn check(
        &self,
        ep: &Endpoint,
        mut resp: Response<ureq::Body>,
        ok: &[u16],
        what: &str,
    ) -> Result<Response<ureq::Body>> {
        let s = resp.status().as_u16();
        if ok.contains(&s) {
            return Ok(resp);
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 10)
            .read_to_vec()
            .unwrap_or_default();
        let msg = registry_message(&body).unwrap_or_else(|| format!("HTTP {s}"));
        Err(match s {
            401 | 403 => Error::Unauthorized {
                registry: ep.registry.clone(),
                reason: format!("{what}: {msg}"),
            },
            404 => Error::NotFound {
                registry: ep.registry.clone(),
                what: format!("{what} ({msg})"),
            },
            _ => Error::transport(&ep.registry, format!("{what}: {msg}")),
        })
    }

    /// Read a small body (manifests, configs) of at most `limit` bytes.
    pub fn read_small(
        &self,
        ep: &Endpoint,
        mut resp: Response<ureq::Body>,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>> {
        resp.body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| Error::transport(&ep.registry, format!("{what}: {e}")))
    }

    /// Check that the registry answers and `registry`'s credentials work
    /// (for `login`).
    pub fn ping(&self, registry: &str) -> Result<()> {
        let ep = self.endpoint(registry);
        let r = self.send(&ep, Req::new(Method::GET, "/v2/", ""))?;
        self.check(&ep, r, &[200], "/v2/").map(|_| ())
    }
}

/// `loc` relative to `base`.
fn absolute(base: &str, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        return loc.to_string();
    }
    let origin_end = base
        .find("://")
        .and_then(|i| base[i + 3..].find('/').map(|j| i + 3 + j))
        .unwrap_or(base.len());
    if loc.starts_with('/') {
        format!("{}{loc}", &base[..origin_end])
    } else {
        let dir = base.rfind('/').map_or(base, |i| &base[..=i]);
        format!("{dir}{loc}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve_against_the_request() {
        assert_eq!(
            absolute("http://h:1/v2/x/blobs/y", "/store/z?a=1"),
            "http://h:1/store/z?a=1"
        );
        assert_eq!(absolute("http://h:1/v2/x", "https://s3/b"), "https://s3/b");
        assert_eq!(absolute("http://h:1/v2/x/y", "z"), "http://h:1/v2/x/z");
    }

    #[test]
    fn registry_errors_are_read() {
        let b = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
        assert_eq!(
            registry_message(b).as_deref(),
            Some("MANIFEST_UNKNOWN: manifest unknown")
        );
        assert_eq!(registry_message(b"<html>"), None);
    }
}
