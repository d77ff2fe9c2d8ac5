//! containerd's filter language (`containerd/filters`), as List requests
//! carry it: `kind==active,labels."containerd.io/gc.root"==x`. Selectors
//! joined by `,` must all match; the filters of one request are
//! alternatives (any may match). Operators: `==`, `!=`, `~=` (a regular
//! expression, quoted with `"`, `/` or `|`), or none (the field is present).
//!
//! Written by hand: no crate parses this grammar. It follows containerd
//! 1.6's scanner and parser (`filters/scanner.go`, `parser.go`) and the
//! snapshot adaptor of its metadata store (`metadata/adaptors.go`).

use regex::Regex;

use strata_store::snapshots::SnapshotInfo;

/// A filter that does not parse: the offending filter and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter {input:?}: {reason} at byte {pos}")]
pub struct ParseError {
    /// The filter as given.
    pub input: String,
    /// Where in it.
    pub pos: usize,
    /// What is wrong.
    pub reason: String,
}

#[derive(Debug, Clone)]
enum Op {
    Present,
    Equal(String),
    NotEqual(String),
    Matches(Regex),
}

#[derive(Debug, Clone)]
struct Selector {
    path: Vec<String>,
    op: Op,
}

/// Alternatives of conjunctions of selectors.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    any: Vec<Vec<Selector>>,
}

impl Filters {
    /// Parse the filters of one request (none: everything matches).
    pub fn parse(filters: &[String]) -> Result<Filters, ParseError> {
        let mut any = Vec::new();
        for f in filters.iter().filter(|f| !f.is_empty()) {
            any.push(Parser::new(f).selectors()?);
        }
        Ok(Filters { any })
    }

    /// Whether `info` passes.
    pub fn matches(&self, info: &SnapshotInfo) -> bool {
        self.any.is_empty()
            || self
                .any
                .iter()
                .any(|all| all.iter().all(|s| s.matches(info)))
    }
}

impl Selector {
    fn matches(&self, info: &SnapshotInfo) -> bool {
        let (value, present) = field(info, &self.path);
        match &self.op {
            Op::Present => present,
            Op::Equal(v) => present && value == *v,
            Op::NotEqual(v) => value != *v,
            Op::Matches(re) => re.is_match(&value),
        }
    }
}

/// containerd's snapshot adaptor: `kind`, `name`, `parent`, `labels.K`.
fn field(info: &SnapshotInfo, path: &[String]) -> (String, bool) {
    match path.first().map(String::as_str) {
        Some("kind") => (info.kind.as_str().to_string(), true),
        Some("name") => (info.key.clone(), true),
        Some("parent") => (info.parent.clone().unwrap_or_default(), true),
        Some("labels") if path.len() > 1 => match info.labels.get(&path[1..].join(".")) {
            Some(v) => (v.clone(), true),
            None => (String::new(), false),
        },
        _ => (String::new(), false),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Eof,
    Field(String),
    Value(String),
    /// The quote character and the unquoted text.
    Quoted(char, String),
    Sep(char),
    Operator(String),
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
    /// After an operator, the next bare word is a value.
    value: bool,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Parser {
            input,
            pos: 0,
            value: false,
        }
    }

    fn err(&self, pos: usize, reason: impl Into<String>) -> ParseError {
        ParseError {
            input: self.input.to_string(),
            pos,
            reason: reason.into(),
        }
    }

    fn peek_char(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek_char()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    /// The next token and where it starts.
    fn scan(&mut self) -> Result<(usize, Tok), ParseError> {
        while self.peek_char().is_some_and(char::is_whitespace) {
            self.bump();
        }
        let start = self.pos;
        let Some(c) = self.bump() else {
            return Ok((start, Tok::Eof));
        };
        let tok = match c {
            '\0' => return Err(self.err(start, "unexpected NUL")),
            '"' | '/' | '|' => Tok::Quoted(c, self.quoted(start, c)?),
            ',' | '.' => {
                self.value = false;
                Tok::Sep(c)
            }
            '=' | '!' | '~' => {
                while matches!(self.peek_char(), Some('=' | '!' | '~')) {
                    self.bump();
                }
                self.value = true;
                Tok::Operator(self.input[start..self.pos].to_string())
            }
            _ if self.value => {
                while self
                    .peek_char()
                    .is_some_and(|c| c != ',' && !c.is_whitespace())
                {
                    self.bump();
                }
                self.value = false;
                Tok::Value(self.input[start..self.pos].to_string())
            }
            c if is_field_char(c) => {
                while self.peek_char().is_some_and(is_field_char) {
                    self.bump();
                }
                Tok::Field(self.input[start..self.pos].to_string())
            }
            c => return Err(self.err(start, format!("unexpected {c:?}"))),
        };
        Ok((start, tok))
    }

    fn peek(&mut self) -> Result<Tok, ParseError> {
        let (pos, value) = (self.pos, self.value);
        let t = self.scan().map(|(_, t)| t);
        (self.pos, self.value) = (pos, value);
        t
    }

    /// A quoted string (Go escapes); `q` is its quote character.
    fn quoted(&mut self, start: usize, q: char) -> Result<String, ParseError> {
        let mut out = String::new();
        loop {
            let c = self
                .bump()
                .ok_or_else(|| self.err(start, "quoted literal not terminated"))?;
            match c {
                '\n' => return Err(self.err(start, "quoted literal not terminated")),
                c if c == q => return Ok(out),
                '\\' => out.push(self.escape(q)?),
                c => out.push(c),
            }
        }
    }

    fn escape(&mut self, q: char) -> Result<char, ParseError> {
        let at = self.pos;
        let c = self
            .bump()
            .ok_or_else(|| self.err(at, "illegal escape sequence"))?;
        let simple = match c {
            'a' => '\x07',
            'b' => '\x08',
            'f' => '\x0c',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'v' => '\x0b',
            '\\' => '\\',
            c if c == q || c == '"' || c == '/' || c == '|' => c,
            '0'..='7' => return self.digits(at, c.to_string(), 8, 2),
            'x' => return self.digits(at, String::new(), 16, 2),
            'u' => return self.digits(at, String::new(), 16, 4),
            'U' => return self.digits(at, String::new(), 16, 8),
            _ => return Err(self.err(at, "illegal escape sequence")),
        };
        Ok(simple)
    }

    fn digits(
        &mut self,
        at: usize,
        mut s: String,
        radix: u32,
        n: usize,
    ) -> Result<char, ParseError> {
        for _ in 0..n {
            match self.bump() {
                Some(c) if c.is_digit(radix) => s.push(c),
                _ => return Err(self.err(at, "illegal numeric escape sequence")),
            }
        }
        u32::from_str_radix(&s, radix)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(|| self.err(at, "escape is not a character"))
    }

    fn selectors(&mut self) -> Result<Vec<Selector>, ParseError> {
        let mut all = vec![self.selector()?];
        loop {
            match self.peek()? {
                Tok::Eof => return Ok(all),
                Tok::Sep(',') => {
                    self.scan()?;
                    all.push(self.selector()?);
                }
                t => return Err(self.err(self.pos, format!("unexpected input {t:?}"))),
            }
        }
    }

    fn selector(&mut self) -> Result<Selector, ParseError> {
        let path = self.fieldpath()?;
        if matches!(self.peek()?, Tok::Eof | Tok::Sep(_)) {
            return Ok(Selector {
                path,
                op: Op::Present,
            });
        }
        let (at, t) = self.scan()?;
        let Tok::Operator(op) = t else {
            return Err(self.err(at, r#"expected an operator ("=="|"!="|"~=")"#));
        };
        let (vat, v) = self.scan()?;
        let value = match v {
            Tok::Value(s) | Tok::Field(s) | Tok::Quoted('"', s) => s,
            // `/re/` and `|re|` only for regular expressions
            Tok::Quoted(_, s) if op == "~=" => s,
            Tok::Quoted(..) => return Err(self.err(vat, "invalid quote encountered")),
            _ => return Err(self.err(vat, "expected value or quoted")),
        };
        let op = match op.as_str() {
            "==" => Op::Equal(value),
            "!=" => Op::NotEqual(value),
            "~=" => Op::Matches(Regex::new(&value).map_err(|e| self.err(vat, e.to_string()))?),
            o => return Err(self.err(at, format!("unsupported operator {o:?}"))),
        };
        Ok(Selector { path, op })
    }

    fn fieldpath(&mut self) -> Result<Vec<String>, ParseError> {
        let mut path = vec![self.field()?];
        while self.peek()? == Tok::Sep('.') {
            self.scan()?;
            path.push(self.field()?);
        }
        Ok(path)
    }

    fn field(&mut self) -> Result<String, ParseError> {
        match self.scan()? {
            (_, Tok::Field(s) | Tok::Quoted('"', s)) => Ok(s),
            (at, Tok::Quoted(..)) => Err(self.err(at, "invalid quote encountered")),
            (at, _) => Err(self.err(at, "expected field or quoted")),
        }
    }
}

fn is_field_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use strata_store::snapshots::Kind;

    fn info(key: &str, kind: Kind, parent: &str, labels: &[(&str, &str)]) -> SnapshotInfo {
        SnapshotInfo {
            key: key.into(),
            parent: (!parent.is_empty()).then(|| parent.into()),
            kind,
            created: 0,
            updated: 0,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn names(fs: &[&str], all: &[SnapshotInfo]) -> Vec<String> {
        let f = Filters::parse(&fs.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        all.iter()
            .filter(|i| f.matches(i))
            .map(|i| i.key.clone())
            .collect()
    }

    /// The table of containerd's own `checkWalk` test.
    #[test]
    fn containerds_walk_table() {
        let gc = ("containerd.io/gc.root", "check-walk");
        let all = [
            info("a-np", Kind::Active, "", &[gc]),
            info("p", Kind::Committed, "", &[gc]),
            info("a", Kind::Active, "p", &[gc]),
            info("v", Kind::View, "p", &[gc]),
            info("p-wl", Kind::Committed, "", &[gc, ("l", "1")]),
            info("a-wl", Kind::Active, "p-wl", &[gc, ("l", "2")]),
            info("v-wl", Kind::View, "p-wl", &[gc, ("l", "3")]),
            info("a-np-wl", Kind::Active, "", &[gc, ("l", "2")]),
            info("other", Kind::Active, "", &[]),
        ];
        let rows: &[(&[&str], &[&str])] = &[
            (
                &[r#"labels."containerd.io/gc.root"==check-walk"#],
                &["a-np", "p", "a", "v", "p-wl", "a-wl", "v-wl", "a-np-wl"],
            ),
            (
                &[r#"kind==active,labels."containerd.io/gc.root"==check-walk"#],
                &["a-np", "a", "a-wl", "a-np-wl"],
            ),
            (
                &["kind==view,labels.\"containerd.io/gc.root\"==check-walk"],
                &["v", "v-wl"],
            ),
            (&["name==p", "name==a-np-wl"], &["p", "a-np-wl"]),
            (&["name==a-wl,labels.l"], &["a-wl"]),
            (&["parent==p"], &["a", "v"]),
            (
                &[r#"parent!="",labels."containerd.io/gc.root"==check-walk"#],
                &["a", "v", "a-wl", "v-wl"],
            ),
            (&["labels.l"], &["p-wl", "a-wl", "v-wl", "a-np-wl"]),
            (&["labels.l==2"], &["a-wl", "a-np-wl"]),
            (&["name~=/^a-.*wl$/"], &["a-wl", "a-np-wl"]),
            (&["name~=\"^p\""], &["p", "p-wl"]),
            (
                &[],
                &[
                    "a-np", "p", "a", "v", "p-wl", "a-wl", "v-wl", "a-np-wl", "other",
                ],
            ),
        ];
        for (fs, want) in rows {
            assert_eq!(names(fs, &all), *want, "filters {fs:?}");
        }
    }

    #[test]
    fn bad_filters_name_the_filter_and_the_place() {
        for bad in [
            "kind==",
            "kind=>x",
            "labels.\"unterminated",
            "==x",
            "kind==a,",
            "name~=\"(\"",
            "name==/x/",
            "labels./k/",
        ] {
            let e = Filters::parse(&[bad.to_string()]).unwrap_err();
            assert_eq!(e.input, bad);
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn quoted_values_take_go_escapes() {
        let all = [info("a\tb", Kind::Active, "", &[("k", "x\"y")])];
        assert_eq!(names(&["name==\"a\\tb\""], &all), ["a\tb"]);
        assert_eq!(names(&["labels.k==\"x\\\"y\""], &all), ["a\tb"]);
        assert_eq!(names(&["name==\"a\\x09b\""], &all), ["a\tb"]);
    }
}
