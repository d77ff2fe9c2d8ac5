//! `--filter KEY=VALUE`, as Docker takes it on `images` and `ps`:
//! `dangling=true|false`, `reference=PATTERN` (a glob over `name:tag`),
//! `label=KEY[=VALUE]`, `before=REF`, `since=REF`; for containers also
//! `name=`, `id=`, `ancestor=`. Several values of one key match any of
//! them; different keys must all match. An unknown key is a usage error.

use anyhow::Result;

use super::usage;

/// Parsed filters.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub dangling: Option<bool>,
    pub reference: Vec<String>,
    pub label: Vec<(String, Option<String>)>,
    pub before: Option<String>,
    pub since: Option<String>,
    pub name: Vec<String>,
    pub id: Vec<String>,
    pub ancestor: Vec<String>,
}

impl Filters {
    /// Parse `items`, accepting only the keys in `allowed`.
    pub fn parse(items: &[String], allowed: &[&str]) -> Result<Filters> {
        let mut f = Filters::default();
        for it in items {
            let (k, v) = it
                .split_once('=')
                .ok_or_else(|| usage(format!("bad filter {it:?}: expected KEY=VALUE")))?;
            if !allowed.contains(&k) {
                return Err(usage(format!(
                    "invalid filter {k:?} (valid: {})",
                    allowed.join(", ")
                )));
            }
            match k {
                "dangling" => {
                    f.dangling = Some(match v {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => {
                            return Err(usage(format!(
                                "invalid filter dangling={v:?}: true or false"
                            )));
                        }
                    })
                }
                "reference" => f.reference.push(v.to_string()),
                "label" => f.label.push(match v.split_once('=') {
                    Some((a, b)) => (a.to_string(), Some(b.to_string())),
                    None => (v.to_string(), None),
                }),
                "before" => f.before = Some(v.to_string()),
                "since" => f.since = Some(v.to_string()),
                "name" => f.name.push(v.to_string()),
                "id" => f.id.push(v.to_string()),
                "ancestor" => f.ancestor.push(v.to_string()),
                _ => {}
            }
        }
        Ok(f)
    }

    /// Do `labels` satisfy every `label=` filter?
    pub fn labels_match(&self, labels: &std::collections::HashMap<String, String>) -> bool {
        self.label.iter().all(|(k, v)| match v {
            None => labels.contains_key(k),
            Some(v) => labels.get(k) == Some(v),
        })
    }

    /// Does some tag match a `reference=` pattern (or are there none)?
    pub fn reference_matches(&self, tags: &[String]) -> bool {
        self.reference.is_empty() || tags.iter().any(|t| self.names(t))
    }

    /// Does the reference `r` (`repo:tag` or `repo@digest`) match a
    /// `reference=` pattern, whole or by its repository (or are there
    /// none)? A listing shows only the references that match, as Docker's.
    pub fn names(&self, r: &str) -> bool {
        let repo = match r.split_once('@') {
            Some((repo, _)) => repo,
            None => strata_store::reference::split_tag(r).0,
        };
        self.reference.is_empty() || self.reference.iter().any(|p| glob(p, r) || glob(p, repo))
    }
}

/// `path.Match`-like glob: `*` and `?` do not cross `/`, `[...]` sets.
pub fn glob(pattern: &str, s: &str) -> bool {
    fn m(p: &[char], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('*') => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != '/')
                .any(|i| m(&p[1..], &s[i..])),
            Some('?') => !s.is_empty() && s[0] != '/' && m(&p[1..], &s[1..]),
            Some('[') => {
                let Some(end) = p.iter().position(|&c| c == ']') else {
                    return !s.is_empty() && s[0] == '[' && m(&p[1..], &s[1..]);
                };
                let set = &p[1..end];
                let (neg, set) = match set.first() {
                    Some('^') | Some('!') => (true, &set[1..]),
                    _ => (false, set),
                };
                let Some(&c) = s.first() else { return false };
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        hit |= set[i] <= c && c <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= set[i] == c;
                        i += 1;
                    }
                }
                hit != neg && m(&p[end + 1..], &s[1..])
            }
            Some(&c) => !s.is_empty() && s[0] == c && m(&p[1..], &s[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = s.chars().collect();
    m(&p, &s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_like_path_match() {
        assert!(glob("strata/*", "strata/hello"));
        assert!(!glob("strata/*", "strata/a/b"));
        assert!(glob("*:v?", "app:v2"));
        assert!(glob("[a-c]pp", "bpp"));
        assert!(!glob("[^a-c]pp", "bpp"));
    }

    #[test]
    fn unknown_keys_are_usage_errors() {
        let e = Filters::parse(&["color=red".into()], &["dangling"]).unwrap_err();
        assert!(e.downcast_ref::<super::super::Usage>().is_some());
        let f = Filters::parse(&["dangling=true".into()], &["dangling"]).unwrap();
        assert_eq!(f.dangling, Some(true));
    }
}
