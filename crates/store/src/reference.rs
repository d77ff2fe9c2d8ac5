//! Names (`repository:tag`, `repository@digest`), container names, and
//! times as Docker shows them.
//!
//! References follow the distribution grammar (checked by hand in
//! `refgrammar`, as oci-spec's regular expression does, without its cost;
//! Docker's `docker.io/library/` normalisation), with the
//! checks Docker's `ParseNormalizedNamed` adds: a registry host must be a
//! host name (`ex_ample.com/x` is refused), and a bare 64-hex string is an
//! image ID, not a name. Tags are stored and shown in Docker's familiar
//! form (`alpine:latest`, `example.com/app:1`); [`full_name`] gives the
//! canonical one (`docker.io/library/alpine:latest`).
//!
//! Times are RFC 3339 through `jiff`; a malformed time is `None` (shown as
//! the text it was), never a panic.

use crate::refgrammar::Reference;

use crate::error::{Error, Result};

const DOCKER_HUB: &str = "docker.io";

fn bad(r: &str, why: impl Into<String>) -> Error {
    Error::BadReference {
        reference: r.to_string(),
        reason: why.into(),
    }
}

/// A registry host: DNS labels joined by `.`, an optional `:port`, or
/// `localhost`, or a bracketed IPv6 address.
fn valid_host(h: &str) -> bool {
    let (host, port) = match h.rsplit_once(':') {
        Some((a, p)) if !a.ends_with(']') || h.starts_with('[') => {
            if a.starts_with('[') && !a.ends_with(']') {
                (h, None)
            } else {
                (a, Some(p))
            }
        }
        _ => (h, None),
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Parse a reference as Docker's CLI does, with its extra checks.
fn parse(r: &str) -> Result<Reference> {
    if r.len() > 255 {
        return Err(bad(r, "longer than 255 characters"));
    }
    let hex = |s: &str| s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if hex(r) {
        return Err(bad(
            r,
            "a 64-character hexadecimal string is an image ID, not a name",
        ));
    }
    let parsed = Reference::parse(r).map_err(|e| bad(r, e.to_string()))?;
    // `Upper/app` parses with `Upper` as a host, but is no host: it is the
    // first component of a Docker Hub name
    if parsed.repository().bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(bad(
            r,
            format!(
                "repository name ({}) must be lowercase",
                parsed.repository()
            ),
        ));
    }
    // the host part, as the user wrote it
    if let Some((first, _)) = r.split_once('/')
        && (first.contains('.') || first.contains(':') || first == "localhost")
        && !valid_host(first)
    {
        return Err(bad(r, format!("{first:?} is not a valid registry host")));
    }
    Ok(parsed)
}

/// The repository in Docker's familiar form (`alpine`, `me/app`,
/// `host:5000/app`).
fn familiar_repo(p: &Reference) -> String {
    let repo = p.repository();
    if p.registry() == DOCKER_HUB {
        repo.strip_prefix("library/")
            .filter(|n| !n.contains('/'))
            .unwrap_or(repo)
            .to_string()
    } else {
        format!("{}/{repo}", p.registry())
    }
}

/// `name` -> `name:latest` in Docker's familiar form; refuses what the
/// distribution grammar refuses, and digest references.
pub fn normalize_tag(r: &str) -> Result<String> {
    if r.contains('@') {
        return Err(bad(r, "a digest reference is not a tag"));
    }
    let p = parse(r)?;
    let tag = p.tag().unwrap_or("latest");
    Ok(format!("{}:{tag}", familiar_repo(&p)))
}

/// `repo@sha256:...` in Docker's familiar form (a tag beside the digest is
/// dropped, as Docker does).
pub fn normalize_digest_ref(r: &str) -> Result<String> {
    let p = parse(r)?;
    let d = p.digest().ok_or_else(|| bad(r, "no digest"))?;
    Ok(format!("{}@{d}", familiar_repo(&p)))
}

/// A reference as a registry client needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// The registry host as written (`docker.io` for Docker Hub).
    pub registry: String,
    /// The repository in the registry (`library/alpine`).
    pub repository: String,
    /// The tag (`latest` when neither tag nor digest was given).
    pub tag: Option<String>,
    /// The digest, for `name@sha256:...`.
    pub digest: Option<String>,
    /// The repository in Docker's familiar form (`alpine`).
    pub familiar: String,
}

impl Named {
    /// `familiar:tag`, as tags are stored (none for a digest reference).
    pub fn familiar_tag(&self) -> Option<String> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(format!("{}:{t}", self.familiar)),
            (None, _) => None,
        }
    }

    /// The tag or digest to ask the registry for.
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

/// Parse a reference to pull or push, as `docker pull` does: `busybox` is
/// `docker.io/library/busybox:latest`.
pub fn parse_named(r: &str) -> Result<Named> {
    let p = parse(r)?;
    let digest = p.digest().map(str::to_string);
    let tag = match (p.tag(), &digest) {
        (Some(t), _) => Some(t.to_string()),
        (None, Some(_)) => None,
        (None, None) => Some("latest".to_string()),
    };
    Ok(Named {
        registry: p.registry().to_string(),
        repository: p.repository().to_string(),
        tag,
        digest,
        familiar: familiar_repo(&p),
    })
}

/// The canonical form of a familiar name: `docker.io/library/alpine:latest`.
pub fn full_name(familiar: &str) -> Result<String> {
    Ok(parse(familiar)?.whole())
}

/// Split `name:tag` (as stored) into repository and tag.
pub fn split_tag(t: &str) -> (&str, &str) {
    let last_slash = t.rfind('/').map_or(0, |i| i + 1);
    match t[last_slash..].rfind(':') {
        Some(i) => (&t[..last_slash + i], &t[last_slash + i + 1..]),
        None => (t, "latest"),
    }
}

/// Docker's rule for container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn check_container_name(n: &str) -> Result<()> {
    let ok = n.len() >= 2
        && n.len() <= 128
        && n.bytes().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadName {
            name: n.to_string(),
            reason: "container names are [a-zA-Z0-9][a-zA-Z0-9_.-]+ (2 to 128 characters)".into(),
        })
    }
}

/// An RFC 3339 time (`2024-01-01T00:00:00Z`, fractions and offsets
/// allowed) as seconds since the epoch; `None` when it is not one.
pub fn parse_time(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

/// Seconds since the epoch as RFC 3339 UTC.
pub fn format_time(t: i64) -> String {
    jiff::Timestamp::from_second(t)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| t.to_string())
}

/// "2 days ago", as Docker's CREATED columns.
pub fn ago(t: i64, now: i64) -> String {
    let d = now.saturating_sub(t).max(0);
    let unit = |n: i64, u: &str| match n {
        1 => format!("1 {u} ago"),
        n => format!("{n} {u}s ago"),
    };
    match d {
        0..=1 => "Less than a second ago".into(),
        2..=59 => format!("{d} seconds ago"),
        60..=119 => "About a minute ago".into(),
        120..=3599 => format!("{} minutes ago", d / 60),
        3600..=7199 => "About an hour ago".into(),
        7200..=86399 => format!("{} hours ago", d / 3600),
        86400..=1_209_599 => unit(d / 86400, "day"),
        1_209_600..=5_183_999 => unit(d / 604_800, "week"),
        5_184_000..=63_071_999 => unit(d / 2_592_000, "month"),
        _ => unit(d / 31_536_000, "year"),
    }
}

#[cfg(test)]
mod named_tests {
    use super::*;

    #[test]
    fn parse_named_follows_docker() {
        let n = parse_named("busybox").unwrap();
        assert_eq!(
            (n.registry.as_str(), n.repository.as_str(), n.reference()),
            ("docker.io", "library/busybox", "latest")
        );
        assert_eq!(n.familiar_tag().as_deref(), Some("busybox:latest"));
        let d = format!("sha256:{}", "a".repeat(64));
        let n = parse_named(&format!("127.0.0.1:5000/team/app@{d}")).unwrap();
        assert_eq!(n.registry, "127.0.0.1:5000");
        assert_eq!(n.repository, "team/app");
        assert_eq!(n.reference(), d);
        assert_eq!(n.familiar_tag(), None);
        assert!(parse_named("Upper/case").is_err());
        assert!(parse_named(&"a".repeat(64)).is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_normalise_like_docker() {
        assert_eq!(normalize_tag("alpine").unwrap(), "alpine:latest");
        assert_eq!(
            normalize_tag("docker.io/library/alpine:3").unwrap(),
            "alpine:3"
        );
        assert_eq!(
            normalize_tag("index.docker.io/me/app").unwrap(),
            "me/app:latest"
        );
        assert_eq!(normalize_tag("example/app:1.0").unwrap(), "example/app:1.0");
        assert_eq!(
            normalize_tag("localhost:5000/app").unwrap(),
            "localhost:5000/app:latest"
        );
        assert_eq!(
            normalize_tag("registry.io:443/a/b:v2").unwrap(),
            "registry.io:443/a/b:v2"
        );
        assert_eq!(
            full_name("alpine:latest").unwrap(),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(
            split_tag("localhost:5000/app:v1"),
            ("localhost:5000/app", "v1")
        );
    }

    #[test]
    fn references_docker_refuses_are_refused() {
        for r in [
            "Upper",
            "a:",
            "a:-x",
            "a-",
            ".a",
            "a..b",
            "foo:bar/baz",
            "ex_ample.com/x",
            "",
            "a//b",
            "host:port/x",
            &"a".repeat(256),
            &"ab".repeat(32),
        ] {
            let e = normalize_tag(r).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{r:?}: {e}");
        }
        assert!(normalize_tag("a@sha256:0").is_err());
    }

    #[test]
    fn digest_references() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            normalize_digest_ref(&format!("alpine@{d}")).unwrap(),
            format!("alpine@{d}")
        );
        assert_eq!(
            normalize_digest_ref(&format!("docker.io/library/alpine:3@{d}")).unwrap(),
            format!("alpine@{d}")
        );
        assert!(normalize_digest_ref("alpine@sha256:abc").is_err());
    }

    #[test]
    fn container_names() {
        assert!(check_container_name("web-1").is_ok());
        for bad in ["a", "-x", "a b", "x/y", ""] {
            assert!(check_container_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_roundtrip_and_malformed_ones_do_not_panic() {
        let t = parse_time("2024-01-01T00:00:00Z").unwrap();
        assert_eq!(t, 1_704_067_200);
        assert_eq!(format_time(t), "2024-01-01T00:00:00Z");
        assert_eq!(
            parse_time("2024-01-01T01:00:00.123456789+01:00").unwrap(),
            t
        );
        for bad in [
            "2024-01-01T00:00:00+0é00",
            "",
            "x",
            "2024-13-01T00:00:00Z",
            "2024-01-01T00:00:00é",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        assert_eq!(ago(t, t + 3 * 86400), "3 days ago");
        assert_eq!(ago(t, t + 2 * 365 * 86400), "2 years ago");
        assert_eq!(ago(t, t + 3700), "About an hour ago");
    }
}
