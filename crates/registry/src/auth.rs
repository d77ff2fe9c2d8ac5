//! Authentication: a registry answers 401 with a `WWW-Authenticate`
//! challenge. `Basic` means credentials on every request; `Bearer realm=,
//! service=, scope=` means a token from the realm: fetched with GET (Basic
//! credentials, Docker's default) or with the OAuth2 POST flow (an
//! identity token as refresh token, or user and password when the token
//! server does not answer GET). Tokens are cached per scope until they
//! expire.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use crate::creds::Secret;
use crate::error::{Error, Result};

/// A parsed challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// Credentials with every request.
    Basic,
    /// A token from `realm`.
    Bearer {
        /// The token server.
        realm: String,
        /// The service to ask a token for.
        service: Option<String>,
        /// The scope the registry asked for (when it says).
        scope: Option<String>,
    },
}

/// The first challenge Strata can answer in a `WWW-Authenticate` value.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let all = http_auth::parse_challenges(header).ok()?;
    for c in all {
        let param = |name: &str| {
            c.params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_unescaped())
        };
        if c.scheme.eq_ignore_ascii_case("bearer") {
            let realm = param("realm")?;
            return Some(Challenge::Bearer {
                realm,
                service: param("service"),
                scope: param("scope"),
            });
        }
        if c.scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
    }
    None
}

/// `Basic base64(user:password)`.
pub fn basic_header(username: &str, password: &str) -> String {
    format!(
        "Basic {}",
        STANDARD.encode(format!("{username}:{password}"))
    )
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// A bearer token and when it stops being good.
#[derive(Debug, Clone)]
pub struct Token {
    /// The `Authorization` value.
    pub header: String,
    /// When to fetch a new one.
    pub expires: Instant,
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// Fetch a token for `scopes` from the challenge's realm.
pub fn fetch_token(
    agent: &ureq::Agent,
    registry: &str,
    realm: &str,
    service: Option<&str>,
    scopes: &[&str],
    secret: Option<&Secret>,
) -> Result<Token> {
    let r = match secret {
        Some(Secret::IdentityToken(t)) => post_token(
            agent,
            realm,
            service,
            scopes,
            &[("grant_type", "refresh_token"), ("refresh_token", t)],
        ),
        Some(Secret::Password { username, password }) => {
            match get_token(
                agent,
                realm,
                service,
                scopes,
                Some(basic_header(username, password)),
            ) {
                // a token server that only speaks OAuth2
                Err(TokenError::Status(404 | 405)) => post_token(
                    agent,
                    realm,
                    service,
                    scopes,
                    &[
                        ("grant_type", "password"),
                        ("username", username),
                        ("password", password),
                    ],
                ),
                other => other,
            }
        }
        None => get_token(agent, realm, service, scopes, None),
    };
    r.map_err(|e| match e {
        TokenError::Status(401 | 403) => Error::Unauthorized {
            registry: registry.to_string(),
            reason: match secret {
                Some(_) => format!("the token server {realm} refused the credentials"),
                None => {
                    format!("the token server {realm} wants credentials: strata login {registry}")
                }
            },
        },
        TokenError::Status(s) => {
            Error::transport(registry, format!("token server {realm}: HTTP {s}"))
        }
        TokenError::Other(why) => {
            Error::transport(registry, format!("token server {realm}: {why}"))
        }
    })
}

enum TokenError {
    Status(u16),
    Other(String),
}

fn get_token(
    agent: &ureq::Agent,
    realm: &str,
    service: Option<&str>,
    scopes: &[&str],
    auth: Option<String>,
) -> std::result::Result<Token, TokenError> {
    let mut url = realm.to_string();
    let mut sep = if realm.contains('?') { '&' } else { '?' };
    if let Some(s) = service {
        url.push_str(&format!("{sep}service={}", enc(s)));
        sep = '&';
    }
    for s in scopes {
        url.push_str(&format!("{sep}scope={}", enc(s)));
        sep = '&';
    }
    let mut req = ureq::http::Request::get(&url);
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let req = req.body(()).map_err(|e| TokenError::Other(e.to_string()))?;
    read_token(agent.run(req))
}

fn post_token(
    agent: &ureq::Agent,
    realm: &str,
    service: Option<&str>,
    scopes: &[&str],
    grant: &[(&str, &str)],
) -> std::result::Result<Token, TokenError> {
    let scope = scopes.join(" ");
    let mut form: Vec<String> = grant
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    form.push(format!("client_id={}", enc("strata")));
    if let Some(s) = service {
        form.push(format!("service={}", enc(s)));
    }
    if !scope.is_empty() {
        form.push(format!("scope={}", enc(&scope)));
    }
    let req = ureq::http::Request::post(realm)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form.join("&"))
        .map_err(|e| TokenError::Other(e.to_string()))?;
    read_token(agent.run(req))
}

fn read_token(
    r: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> std::result::Result<Token, TokenError> {
    let mut resp = r.map_err(|e| TokenError::Other(e.to_string()))?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(TokenError::Status(status));
    }
    let body = resp
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_vec()
        .map_err(|e| TokenError::Other(e.to_string()))?;
    let t: TokenResponse = serde_json::from_slice(&body)
        .map_err(|e| TokenError::Other(format!("not a token response: {e}")))?;
    let tok = t
        .token
        .or(t.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| TokenError::Other("the response has no token".into()))?;
    // Docker's default lifetime is 60 s; renew a little early
    let life = t.expires_in.unwrap_or(60).max(10);
    Ok(Token {
        header: format!("Bearer {tok}"),
        expires: Instant::now() + Duration::from_secs(life - 5),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_parsed() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
                scope: Some("repository:a/b:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=\"x\""), None, "no realm");
    }
}
