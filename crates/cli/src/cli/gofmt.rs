//! Go's way of printing a value in a template. gtmpl prints a list or a
//! map in Rust's debug form (`[String("a")]`); Docker's templates, run by
//! Go's text/template, print `[a]` and `map[k:v]`, and scripts parse that
//! (`{{.RepoTags}}`, `{{.Config.Env}}`, `{{.Config.Labels}}`). gtmpl has no
//! hook for printing, so every action that prints gets `| gofmt` appended
//! before the template is parsed: `{{.RepoTags}}` becomes
//! `{{.RepoTags | gofmt}}`. Written by hand: no crate runs Go templates
//! with Go's printing.

use gtmpl::{FuncError, Value};

/// The words that start an action which does not print.
const CONTROL: &[&str] = &[
    "if", "else", "end", "range", "with", "define", "template", "block", "break", "continue",
];

/// `gofmt`: a list or a map as Go prints it; anything else unchanged.
pub fn f_gofmt(a: &[Value]) -> Result<Value, FuncError> {
    match a.last() {
        Some(v @ (Value::Array(_) | Value::Object(_) | Value::Map(_))) => {
            Ok(Value::String(go_string(v)))
        }
        Some(v) => Ok(v.clone()),
        None => Err(FuncError::AtLeastXArgs("gofmt".into(), 1)),
    }
}

/// `[a b]`, `map[k:v]` (keys sorted, as Go sorts them), recursively.
fn go_string(v: &Value) -> String {
    match v {
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(go_string).collect();
            format!("[{}]", items.join(" "))
        }
        Value::Object(m) | Value::Map(m) => {
            let mut kv: Vec<(&String, &Value)> = m.iter().collect();
            kv.sort_by(|a, b| a.0.cmp(b.0));
            let items: Vec<String> = kv
                .iter()
                .map(|(k, v)| format!("{k}:{}", go_string(v)))
                .collect();
            format!("map[{}]", items.join(" "))
        }
        Value::Nil => "<nil>".into(),
        other => other.to_string(),
    }
}

/// `text` with `| gofmt` appended to every action that prints. An
/// unterminated action is left as it is, for the parser to report.
pub fn printing_actions(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let action = &rest[i..];
        let Some(end) = action_end(action) else {
            out.push_str(action);
            return out;
        };
        out.push_str(&rewrite(&action[..end]));
        rest = &action[end..];
    }
    out.push_str(rest);
    out
}

/// The length of the action that starts `s` (`{{` through `}}`): quoted
/// strings, raw strings and character constants may hold `}}`, and a
/// comment runs to `*/`. All of these are ASCII, so the offsets fall on
/// character boundaries.
fn action_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let body = s[2..].strip_prefix('-').unwrap_or(&s[2..]).trim_start();
    let mut i = 2;
    if body.starts_with("/*") {
        i = s.find("*/")? + 2;
    }
    while i + 1 < b.len() {
        match b[i] {
            q @ (b'"' | b'\'') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
                i += 1;
            }
            b'}' if b[i + 1] == b'}' => return Some(i + 2),
            _ => i += 1,
        }
    }
    None
}

/// One action, `{{` through `}}`, with `| gofmt` appended if it prints.
fn rewrite(action: &str) -> String {
    let inner = &action[2..action.len() - 2];
    let trim_mark = |s: &str| s.chars().next().is_some_and(char::is_whitespace);
    let (pre, inner) = match inner.strip_prefix('-') {
        Some(r) if trim_mark(r) => ("-", r),
        _ => ("", inner),
    };
    let (inner, post) = match inner.strip_suffix('-') {
        Some(r) if r.chars().last().is_some_and(char::is_whitespace) => (r, "-"),
        _ => (inner, ""),
    };
    let words = inner.trim();
    let first: String = words
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if words.is_empty()
        || words.starts_with("/*")
        || CONTROL.contains(&first.as_str())
        || declares(words)
    {
        return action.to_string();
    }
    format!("{{{{{pre}{} | gofmt {post}}}}}", inner.trim_end())
}

/// `$x := ...`, `$x = ...` or `$i, $e := ...`: a declaration prints nothing.
fn declares(words: &str) -> bool {
    let mut rest = words;
    loop {
        let Some(r) = rest.strip_prefix('$') else {
            return false;
        };
        let r = r.trim_start_matches(|c: char| c.is_alphanumeric() || c == '_');
        let r = r.trim_start();
        if let Some(r) = r.strip_prefix(',') {
            rest = r.trim_start();
            continue;
        }
        return r.starts_with(":=") || (r.starts_with('=') && !r.starts_with("=="));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printing_actions_get_gofmt_and_the_rest_stay() {
        let cases = [
            ("{{.RepoTags}}", "{{.RepoTags | gofmt }}"),
            ("a {{ .X }} b", "a {{ .X | gofmt }} b"),
            ("{{- .X -}}", "{{- .X | gofmt -}}"),
            ("{{-3}}", "{{-3 | gofmt }}"),
            ("{{json .}}", "{{json . | gofmt }}"),
            ("{{if .X}}y{{else}}n{{end}}", "{{if .X}}y{{else}}n{{end}}"),
            (
                "{{range .L}}{{.}}{{end}}",
                "{{range .L}}{{. | gofmt }}{{end}}",
            ),
            ("{{$x := .Y}}{{$x}}", "{{$x := .Y}}{{$x | gofmt }}"),
            ("{{$i, $e := .Y}}", "{{$i, $e := .Y}}"),
            ("{{$x = .Y}}", "{{$x = .Y}}"),
            ("{{\"}}\"}}", "{{\"}}\" | gofmt }}"),
            ("{{`}}`}}", "{{`}}` | gofmt }}"),
            ("{{/* a }} comment */}}x", "{{/* a }} comment */}}x"),
            ("{{- /* c */ -}}", "{{- /* c */ -}}"),
            ("{{template \"t\" .}}", "{{template \"t\" .}}"),
            ("{{.X", "{{.X"),
            ("no actions", "no actions"),
        ];
        for (from, to) in cases {
            assert_eq!(printing_actions(from), to, "{from}");
        }
    }

    #[test]
    fn lists_and_maps_print_as_go_prints_them() {
        let m: std::collections::HashMap<String, Value> = [
            ("b".to_string(), Value::from(2i64)),
            (
                "a".to_string(),
                Value::Array(vec![Value::from("x"), Value::from("y")]),
            ),
        ]
        .into_iter()
        .collect();
        let got = f_gofmt(&[Value::Object(m)]).unwrap();
        assert_eq!(got, Value::String("map[a:[x y] b:2]".into()));
        let got = f_gofmt(&[Value::Array(vec![])]).unwrap();
        assert_eq!(got, Value::String("[]".into()));
        assert_eq!(f_gofmt(&[Value::from("s")]).unwrap(), Value::from("s"));
    }
}
