//! Where a registry is reached: Docker Hub's API host, and HTTPS, or
//! plain HTTP only for loopback addresses and registries named insecure.

use crate::error::{Error, Result};

/// `docker.io` in references; its API lives elsewhere.
pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// Is `host` (with an optional port) a loopback address or `localhost`?
pub fn is_loopback(host: &str) -> bool {
    let h = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        }),
    };
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// One registry as the client talks to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The registry as references name it (`docker.io`, `host:5000`).
    pub registry: String,
    /// The host the API is on.
    pub host: String,
    /// Whether plain HTTP may be used (loopback, or named insecure).
    pub plain_http_allowed: bool,
}

impl Endpoint {
    /// The endpoint of `registry`; `insecure` lists registries the user
    /// allows plain HTTP for.
    pub fn new(registry: &str, insecure: &[String]) -> Endpoint {
        let host = if registry == DOCKER_HUB || registry == "index.docker.io" {
            DOCKER_HUB_API.to_string()
        } else {
            registry.to_string()
        };
        Endpoint {
            registry: registry.to_string(),
            plain_http_allowed: is_loopback(registry) || insecure.iter().any(|i| i == registry),
            host,
        }
    }

    /// The base URL for `scheme`.
    pub fn base(&self, scheme: Scheme) -> String {
        format!("{}://{}", scheme.as_str(), self.host)
    }

    /// Refuse plain HTTP where it is not allowed.
    pub fn check_plain(&self) -> Result<()> {
        if self.plain_http_allowed {
            Ok(())
        } else {
            Err(Error::Insecure {
                registry: self.registry.clone(),
            })
        }
    }
}

/// HTTPS or plain HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// TLS with the system's roots.
    Https,
    /// Plain HTTP (loopback or insecure registries only).
    Http,
}

impl Scheme {
    /// `https` or `http`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_insecure_decide_plain_http() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "example.com",
            "10.0.0.1:5000",
            "[2001:db8::1]:5000",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
        let e = Endpoint::new("10.0.0.1:5000", &[]);
        assert!(
            e.check_plain()
                .unwrap_err()
                .to_string()
                .contains("10.0.0.1:5000")
        );
        let e = Endpoint::new("10.0.0.1:5000", &["10.0.0.1:5000".into()]);
        assert!(e.check_plain().is_ok());
        assert_eq!(Endpoint::new("docker.io", &[]).host, "registry-1.docker.io");
    }
}
