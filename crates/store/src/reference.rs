//! Names (`repository:tag`), container names, and times as Docker shows
//! them.

use crate::error::{Error, Result};

/// `name` -> `name:latest`; checks the characters Docker allows.
pub fn normalize_tag(r: &str) -> Result<String> {
    let bad = |why: &str| Error::BadReference(r.to_string(), why.to_string());
    if r.is_empty() || r.len() > 255 {
        return Err(bad("must be 1 to 255 characters"));
    }
    if r.contains('@') {
        return Err(bad("a digest reference is not a tag"));
    }
    // the tag is after the last ':' that follows the last '/'
    let last_slash = r.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (name, tag) = match r[last_slash..].rfind(':') {
        Some(i) => (&r[..last_slash + i], &r[last_slash + i + 1..]),
        None => (r, "latest"),
    };
    if name.is_empty() {
        return Err(bad("empty repository name"));
    }
    if tag.is_empty()
        || tag.len() > 128
        || !tag
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        || !tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(bad("invalid tag (letters, digits, _ . -; at most 128)"));
    }
    for part in name.split('/') {
        if part.is_empty() {
            return Err(bad("empty path component"));
        }
    }
    let path = &name[name
        .find('/')
        .map(|i| i + 1)
        .filter(|_| {
            name.split('/')
                .next()
                .is_some_and(|h| h.contains('.') || h.contains(':') || h == "localhost")
        })
        .unwrap_or(0)..];
    if !path
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-' | '/'))
    {
        return Err(bad(
            "repository names must be lowercase letters, digits and _ . - /",
        ));
    }
    // Docker's familiar form: docker.io/library/alpine -> alpine
    let name = name
        .strip_prefix("docker.io/")
        .or_else(|| name.strip_prefix("index.docker.io/"))
        .unwrap_or(name);
    let name = name
        .strip_prefix("library/")
        .filter(|n| !n.contains('/'))
        .unwrap_or(name);
    Ok(format!("{name}:{tag}"))
}

/// Split `name:tag` (as stored) into repository and tag.
pub fn split_tag(t: &str) -> (&str, &str) {
    let last_slash = t.rfind('/').map(|i| i + 1).unwrap_or(0);
    match t[last_slash..].rfind(':') {
        Some(i) => (&t[..last_slash + i], &t[last_slash + i + 1..]),
        None => (t, "latest"),
    }
}

/// Docker's rule for container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn check_container_name(n: &str) -> Result<()> {
    let ok = !n.is_empty()
        && n.len() <= 128
        && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadReference(
            n.to_string(),
            "container names are [a-zA-Z0-9][a-zA-Z0-9_.-]*".into(),
        ))
    }
}

/// Parse an RFC 3339 time (`2024-01-01T00:00:00Z`, fractions and offsets
/// allowed) to seconds since the epoch.
pub fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || (b[10] != b'T' && b[10] != b't' && b[10] != b' ')
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<i64>().ok());
    let (y, mo, d, h, mi, se) = (
        n(0..4)?,
        n(5..7)?,
        n(8..10)?,
        n(11..13)?,
        n(14..16)?,
        n(17..19)?,
    );
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        let k = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
        rest = &r[k..];
    }
    let off = match rest {
        "" | "Z" | "z" => 0,
        r if (r.starts_with('+') || r.starts_with('-')) && r.len() == 6 => {
            let sign = if r.starts_with('-') { -1 } else { 1 };
            sign * (r[1..3].parse::<i64>().ok()? * 3600 + r[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - off)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Seconds since the epoch as RFC 3339 UTC.
pub fn format_time(t: i64) -> String {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    let z = days + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// "2 days ago", as Docker's CREATED columns.
pub fn ago(t: i64, now: i64) -> String {
    let d = (now - t).max(0);
    let unit = |n: i64, u: &str| {
        if n == 1 {
            format!(
                "{} {u} ago",
                if u == "hour" {
                    "An".to_string()
                } else {
                    "1".to_string()
                }
            )
        } else {
            format!("{n} {u}s ago")
        }
    };
    match d {
        0..=1 => "Less than a second ago".into(),
        2..=59 => format!("{d} seconds ago"),
        60..=3599 => {
            let m = d / 60;
            if m == 1 {
                "About a minute ago".into()
            } else {
                format!("{m} minutes ago")
            }
        }
        3600..=86399 => {
            let h = d / 3600;
            if h == 1 {
                "About an hour ago".into()
            } else {
                format!("{h} hours ago")
            }
        }
        86400..=1_209_599 => unit(d / 86400, "day"),
        1_209_600..=5_183_999 => unit(d / 604_800, "week"),
        5_184_000..=63_071_999 => unit(d / 2_592_000, "month"),
        _ => unit(d / 31_536_000, "year"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_normalise_like_docker() {
        assert_eq!(normalize_tag("alpine").unwrap(), "alpine:latest");
        assert_eq!(normalize_tag("example/app:1.0").unwrap(), "example/app:1.0");
        assert_eq!(
            normalize_tag("localhost:5000/app").unwrap(),
            "localhost:5000/app:latest"
        );
        assert_eq!(
            normalize_tag("registry.io:443/a/b:v2").unwrap(),
            "registry.io:443/a/b:v2"
        );
        assert!(normalize_tag("Upper").is_err());
        assert!(normalize_tag("a:").is_err());
        assert!(normalize_tag("a:-x").is_err());
        assert_eq!(
            split_tag("localhost:5000/app:v1"),
            ("localhost:5000/app", "v1")
        );
    }

    #[test]
    fn times_roundtrip() {
        let t = parse_time("2024-01-01T00:00:00Z").unwrap();
        assert_eq!(t, 1_704_067_200);
        assert_eq!(format_time(t), "2024-01-01T00:00:00Z");
        assert_eq!(
            parse_time("2024-01-01T01:00:00.123456789+01:00").unwrap(),
            t
        );
        assert_eq!(ago(t, t + 3 * 86400), "3 days ago");
        assert_eq!(ago(t, t + 2 * 365 * 86400), "2 years ago");
    }
}
