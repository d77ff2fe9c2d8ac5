//! The distribution reference grammar (distribution/reference), by hand.
//!
//! Why not `oci_spec::distribution::Reference`, which this mirrors (same
//! results, same `docker.io/library/` split; a test below compares the
//! two): it matches one large regular expression that is compiled on first
//! use in every process. Its tag class `\w` is Unicode, which makes the
//! compilation cost ~25 ms here, half of a short command such as `image
//! inspect`, and lets non-ASCII tags through that Docker's grammar (Go's
//! ASCII `\w`) refuses. The grammar is small enough to check directly:
//!
//! ```text
//! reference        := name [ ":" tag ] [ "@" digest ]
//! name             := [domain '/'] path-component ['/' path-component]*
//! domain           := domain-component ['.' domain-component]* [':' [0-9]+]
//! domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
//! path-component   := alpha-numeric [separator alpha-numeric]*
//! alpha-numeric    := /[a-z0-9]+/
//! separator        := /[_.]|__|[-]*/
//! tag              := /[\w][\w.-]{0,127}/          (ASCII \w)
//! digest           := algorithm ":" hex
//! algorithm        := /[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*/
//! hex              := /[0-9a-fA-F]{32,}/
//! ```

const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
const NAME_MAX: usize = 255;

/// A parsed reference: registry, repository (`library/` added on Docker
/// Hub), tag (`latest` when neither tag nor digest is given), digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn tag_ok(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && is_word(b[0])
        && b.iter().all(|&c| is_word(c) || c == b'.' || c == b'-')
}

/// `alpha-numeric [separator alpha-numeric]*` with separators `_`, `.`,
/// `__` or any run of `-`.
fn path_component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    let mut first = true;
    while i < b.len() {
        if !first {
            // a separator, then at least one alpha-numeric
            let sep = match b[i] {
                b'.' => 1,
                b'_' if b.get(i + 1) == Some(&b'_') => 2,
                b'_' => 1,
                b'-' => b[i..].iter().take_while(|&&x| x == b'-').count(),
                _ => return false,
            };
            i += sep;
        }
        let run = b[i.min(b.len())..]
            .iter()
            .take_while(|&&x| alnum(x))
            .count();
        if run == 0 {
            return false;
        }
        i += run;
        first = false;
    }
    !first
}

fn remote_ok(r: &str) -> bool {
    r.split('/').all(path_component_ok)
}

fn domain_ok(d: &str) -> bool {
    let (host, port) = match d.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    host.split('.').all(|l| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    })
}

fn digest_ok(d: &str) -> bool {
    let Some((alg, hex)) = d.split_once(':') else {
        return false;
    };
    let alg_ok = alg.split(['-', '_', '+', '.']).all(|part| {
        let b = part.as_bytes();
        !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
    });
    alg_ok && hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The reason a reference does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bad {
    Empty,
    Format,
    Uppercase,
    NameTooLong,
    DigestFormat,
    DigestLength,
    DigestUnsupported,
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Bad::Empty => "repository name must have at least one component",
            Bad::Format => "expected [HOST[:PORT]/]NAME[:TAG][@DIGEST]",
            Bad::Uppercase => "repository name must be lowercase",
            Bad::NameTooLong => "repository name must not be more than 255 characters",
            Bad::DigestFormat => "invalid checksum digest format",
            Bad::DigestLength => "invalid checksum digest length",
            Bad::DigestUnsupported => "unsupported digest algorithm",
        })
    }
}

impl Reference {
    /// Parse `s` by the grammar above.
    pub(crate) fn parse(s: &str) -> Result<Reference, Bad> {
        if s.is_empty() {
            return Err(Bad::Empty);
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) if digest_ok(d) => (r, Some(d.to_string())),
            Some(_) => return Err(Bad::Format),
            None => (s, None),
        };
        // a tag follows the last ':' after the last '/'
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) if tag_ok(&rest[slash + i + 1..]) => {
                (&rest[..slash + i], Some(rest[slash + i + 1..].to_string()))
            }
            Some(_) => return Err(Bad::Format),
            None => (rest, None),
        };
        let name_ok = |name: &str| {
            remote_ok(name)
                || name
                    .split_once('/')
                    .is_some_and(|(d, r)| domain_ok(d) && remote_ok(r))
        };
        if !name_ok(name) {
            // as distribution/reference: say so when only case is wrong
            return Err(match name_ok(&name.to_ascii_lowercase()) {
                true => Bad::Uppercase,
                false => Bad::Format,
            });
        }
        let (registry, repository) = split_domain(name);
        if repository.len() > NAME_MAX {
            return Err(Bad::NameTooLong);
        }
        if let Some(d) = &digest {
            let want = match d.split_once(':') {
                Some(("sha256", _)) => 64,
                Some(("sha384", _)) => 96,
                Some(("sha512", _)) => 128,
                Some(_) => return Err(Bad::DigestUnsupported),
                None => return Err(Bad::DigestFormat),
            };
            if d.len() - d.find(':').map_or(0, |i| i + 1) != want {
                return Err(Bad::DigestLength);
            }
        }
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry host (`docker.io` for Docker Hub).
    pub(crate) fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository (`library/alpine`).
    pub(crate) fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag (`latest` when neither tag nor digest was given).
    pub(crate) fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest.
    pub(crate) fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `registry/repository[:tag][@digest]`.
    pub(crate) fn whole(&self) -> String {
        let mut s = format!("{}/{}", self.registry, self.repository);
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }
}

/// Docker's split of a name into registry and repository.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut rest) = match name.split_once('/') {
        Some((l, r)) if l.contains('.') || l.contains(':') || l == "localhost" => {
            (l.to_string(), r.to_string())
        }
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    if domain == DOCKER_HUB_LEGACY {
        domain = DOCKER_HUB.to_string();
    }
    if domain == DOCKER_HUB && !rest.contains('/') {
        rest = format!("library/{rest}");
    }
    (domain, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uppercase_names_are_named_as_such() {
        for r in ["Upper", "me/App:1", "host:5000/Team/app"] {
            assert_eq!(Reference::parse(r), Err(Bad::Uppercase), "{r}");
        }
        // the host may have capitals; a bad name with capitals is a format error
        assert!(Reference::parse("HOST.io/app").is_ok());
        assert_eq!(Reference::parse("Up per"), Err(Bad::Format));
    }

    /// The same answers as oci-spec's regular expression on a corpus of
    /// valid and invalid references (ASCII: where oci-spec's Unicode `\w`
    /// differs from Docker's grammar, Docker's is followed).
    #[test]
    fn agrees_with_oci_spec() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let mut corpus: Vec<String> = [
            "a",
            "ab",
            "alpine",
            "alpine:3",
            "alpine:latest",
            "library/alpine",
            "me/app:1.0",
            "docker.io/library/alpine:3",
            "index.docker.io/me/app",
            "localhost/app",
            "localhost:5000/app",
            "localhost:5000/a/b/c:v-1.2_x",
            "127.0.0.1:5000/team/app",
            "registry.io:443/a/b:v2",
            "ex_ample.com/x",
            "example.com/x",
            "Upper",
            "Upper/case",
            "upper/Case",
            "a:",
            "a:-x",
            "a:.x",
            "a:_x",
            "a-",
            ".a",
            "a..b",
            "a.b",
            "a__b",
            "a___b",
            "a--b",
            "a-b",
            "a_b",
            "a._b",
            "foo:bar/baz",
            "",
            "a//b",
            "/a",
            "a/",
            "host:port/x",
            "host:5000",
            "host:5000:tag",
            "a:b:c",
            "a@b",
            "a@",
            "@a",
            "a:t@",
            "x.y:1/z",
            "-a.com/x",
            "a-.com/x",
            "a.com-/x",
            "a..com/x",
            "a.com:/x",
            "a.com:12a/x",
            "A.COM/x",
            "a.com/X",
            "sub.a-b.com:1/x_y/z-w",
            "aa:aaaaaaa",
            "café",
            "a:café",
            "a b",
            "a\tb",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        corpus.push(format!("alpine@{d}"));
        corpus.push(format!("alpine:3@{d}"));
        corpus.push(format!("h.io:5/a/b@{d}"));
        corpus.push("alpine@sha256:abc".into());
        corpus.push(format!("alpine@sha512:{}", "a".repeat(128)));
        corpus.push(format!("alpine@sha384:{}", "a".repeat(64)));
        corpus.push(format!("alpine@md5:{}", "a".repeat(32)));
        corpus.push(format!("alpine@Sha256:{}", "a".repeat(64)));
        corpus.push(format!("alpine@sha256:{}", "A".repeat(64)));
        corpus.push(format!("alpine@sha256+b64:{}", "a".repeat(64)));
        corpus.push(format!("a:{}", "t".repeat(128)));
        corpus.push(format!("a:{}", "t".repeat(129)));
        corpus.push("a".repeat(255));
        corpus.push("a".repeat(256));
        corpus.push(format!("{}/{}", "a".repeat(200), "b".repeat(60)));
        for s in &corpus {
            let ours = Reference::parse(s);
            let theirs = oci_spec::distribution::Reference::try_from(s.as_str());
            match (&ours, &theirs) {
                (Ok(o), Ok(t)) => {
                    assert_eq!(
                        (o.registry(), o.repository(), o.tag(), o.digest()),
                        (t.registry(), t.repository(), t.tag(), t.digest()),
                        "{s:?}"
                    );
                    assert_eq!(o.whole(), t.whole(), "{s:?}");
                }
                (Err(_), Err(_)) => {}
                _ if !s.is_ascii() => assert!(ours.is_err(), "{s:?}: non-ASCII accepted"),
                _ => panic!("{s:?}: ours {ours:?}, oci-spec {theirs:?}"),
            }
        }
    }
}
