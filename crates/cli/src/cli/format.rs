//! `--format`: `table` (the default), `json`, or a Go template as Docker
//! and Podman take it (`{{.ID}}`, `table {{.Repository}}\t{{.Tag}}`,
//! `{{json .}}`), rendered by `gtmpl`. Anything else is a usage error.
//!
//! A listing gives rows with two faces: [`Row::json`] (typed values, RFC
//! 3339 times: what `--format json` prints, as one array) and
//! [`Row::ctx`] (Docker's template context: display strings such as
//! `2 years ago` and `9.29MB`). A table is the context's columns, aligned.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use anyhow::{Result, anyhow};
use gtmpl::{Context, Func, Template, Value};
use gtmpl_value::FuncError;

/// How a listing or inspect command prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    /// A Go template; `table` prints a header row and aligns columns.
    Template {
        text: String,
        table: bool,
    },
}

/// `--format`'s parser: a usage error (exit 2) for anything else.
pub fn parse(s: &str) -> std::result::Result<Format, String> {
    let unescape = |t: &str| t.replace("\\t", "\t").replace("\\n", "\n");
    match s.trim() {
        "table" | "" => Ok(Format::Table),
        "json" => Ok(Format::Json),
        t if t.starts_with("table ") && t.contains("{{") => Ok(Format::Template {
            text: unescape(t.trim_start_matches("table ").trim_start()),
            table: true,
        }),
        t if t.contains("{{") => Ok(Format::Template {
            text: unescape(t),
            table: false,
        }),
        other => Err(format!(
            "unknown format {other:?}: use table, json, or a Go template such as '{{{{.ID}}}}'"
        )),
    }
}

/// One row of a listing.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// Typed values, Docker's keys.
    pub json: serde_json::Value,
    /// Docker's template context: display strings.
    pub ctx: BTreeMap<String, String>,
}

/// A listing's table: (context key, header) per default column.
pub type Columns = &'static [(&'static str, &'static str)];

fn to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => n
            .as_i64()
            .map(Value::from)
            .or_else(|| n.as_u64().map(Value::from))
            .or_else(|| n.as_f64().map(Value::from))
            .unwrap_or(Value::Nil),
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(to_value).collect()),
        serde_json::Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), to_value(v))).collect())
        }
    }
}

fn from_value(v: &Value) -> serde_json::Value {
    match v {
        Value::NoValue | Value::Nil | Value::Function(_) => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Number(n) => n
            .as_i64()
            .map(serde_json::Value::from)
            .or_else(|| n.as_u64().map(serde_json::Value::from))
            .or_else(|| n.as_f64().map(serde_json::Value::from))
            .unwrap_or(serde_json::Value::Null),
        Value::Array(a) => serde_json::Value::Array(a.iter().map(from_value).collect()),
        Value::Object(o) | Value::Map(o) => {
            // sorted keys: the same output every time
            let m: BTreeMap<&String, serde_json::Value> =
                o.iter().map(|(k, v)| (k, from_value(v))).collect();
            serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
    }
}

fn arg(a: &[Value], i: usize) -> std::result::Result<&Value, FuncError> {
    a.get(i)
        .ok_or(FuncError::AtLeastXArgs("function".into(), i + 1))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn f_json(a: &[Value]) -> std::result::Result<Value, FuncError> {
    let v = from_value(arg(a, 0)?);
    Ok(Value::String(v.to_string()))
}
fn f_join(a: &[Value]) -> std::result::Result<Value, FuncError> {
    let sep = text(arg(a, 1)?);
    let items: Vec<String> = match arg(a, 0)? {
        Value::Array(v) => v.iter().map(text).collect(),
        other => vec![text(other)],
    };
    Ok(Value::String(items.join(&sep)))
}
fn f_lower(a: &[Value]) -> std::result::Result<Value, FuncError> {
    Ok(Value::String(text(arg(a, 0)?).to_lowercase()))
}
fn f_upper(a: &[Value]) -> std::result::Result<Value, FuncError> {
    Ok(Value::String(text(arg(a, 0)?).to_uppercase()))
}
fn f_split(a: &[Value]) -> std::result::Result<Value, FuncError> {
    let s = text(arg(a, 0)?);
    let sep = text(arg(a, 1)?);
    Ok(Value::Array(
        s.split(&sep)
            .map(|x| Value::String(x.to_string()))
            .collect(),
    ))
}
fn f_truncate(a: &[Value]) -> std::result::Result<Value, FuncError> {
    let s = text(arg(a, 0)?);
    let n: usize = text(arg(a, 1)?).parse().unwrap_or(usize::MAX);
    Ok(Value::String(s.chars().take(n).collect()))
}

/// A template with Docker's extra functions (`json`, `join`, `lower`,
/// `upper`, `split`, `truncate`), printing lists and maps as Go does (see
/// [`super::gofmt`]).
fn template(text: &str) -> Result<Template> {
    let mut t = Template::default();
    let funcs: [(&str, Func); 7] = [
        ("json", f_json),
        ("join", f_join),
        ("lower", f_lower),
        ("upper", f_upper),
        ("split", f_split),
        ("truncate", f_truncate),
        ("gofmt", super::gofmt::f_gofmt),
    ];
    t.add_funcs(&funcs);
    t.parse(super::gofmt::printing_actions(text))
        .map_err(|e| anyhow!("--format template: {e}"))?;
    Ok(t)
}

/// A template's run-time error. gtmpl's "no field" error prints the
/// whole value in Rust's debug form; name the field and the fields there
/// are instead, as Docker's `map has no entry for key` does.
fn exec_error(e: gtmpl::error::ExecError) -> anyhow::Error {
    match e {
        gtmpl::error::ExecError::NoFiledFor(field, Value::Object(m) | Value::Map(m)) => {
            let mut keys: Vec<&str> = m.keys().map(String::as_str).collect();
            keys.sort_unstable();
            anyhow!(
                "--format template: no field {field:?} here (fields: {})",
                keys.join(", ")
            )
        }
        gtmpl::error::ExecError::NoFiledFor(field, _) => {
            anyhow!("--format template: no field {field:?} here (not an object)")
        }
        e => anyhow!("--format template: {e}"),
    }
}

fn ctx_value(row: &BTreeMap<String, String>, json: &serde_json::Value) -> Value {
    // the display strings, and what only the typed row has (lists, objects)
    let mut m: HashMap<String, Value> = HashMap::new();
    if let serde_json::Value::Object(o) = json {
        for (k, v) in o {
            m.insert(k.clone(), to_value(v));
        }
    }
    for (k, v) in row {
        m.insert(k.clone(), Value::String(v.clone()));
    }
    Value::Object(m)
}

/// Print rows: `cols` are the default table's columns.
pub fn print_rows(out: &mut dyn Write, fmt: &Format, cols: Columns, rows: &[Row]) -> Result<()> {
    match fmt {
        Format::Json => {
            let v: Vec<&serde_json::Value> = rows.iter().map(|r| &r.json).collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        Format::Table => {
            let head: Vec<&str> = cols.iter().map(|(_, h)| *h).collect();
            let mut t = super::table::Table::new(&head);
            for r in rows {
                t.row(
                    cols.iter()
                        .map(|(k, _)| r.ctx.get(*k).cloned().unwrap_or_default())
                        .collect(),
                );
            }
            write!(out, "{}", t.render())?;
        }
        Format::Template { text, table } => print_template(out, text, *table, cols, rows)?,
    }
    Ok(())
}

fn print_template(
    out: &mut dyn Write,
    text: &str,
    table: bool,
    cols: Columns,
    rows: &[Row],
) -> Result<()> {
    let t = template(text)?;
    let render = |v: Value| -> Result<String> { t.render(&Context::from(v)).map_err(exec_error) };
    let mut lines = Vec::new();
    if table {
        // the header: each column key rendered as its header
        let headers: HashMap<String, Value> = cols
            .iter()
            .map(|(k, h)| (k.to_string(), Value::String(h.to_string())))
            .collect();
        lines.push(render(Value::Object(headers))?);
    }
    for r in rows {
        lines.push(render(ctx_value(&r.ctx, &r.json))?);
    }
    if !table {
        for l in lines {
            writeln!(out, "{l}")?;
        }
        return Ok(());
    }
    let cells: Vec<Vec<String>> = lines
        .iter()
        .map(|l| l.split('\t').map(String::from).collect())
        .collect();
    let width = cells.iter().map(Vec::len).max().unwrap_or(0);
    let head: Vec<String> = (0..width)
        .map(|i| cells[0].get(i).cloned().unwrap_or_default())
        .collect();
    let head_refs: Vec<&str> = head.iter().map(String::as_str).collect();
    let mut tbl = super::table::Table::new(&head_refs);
    for c in &cells[1..] {
        tbl.row(
            (0..width)
                .map(|i| c.get(i).cloned().unwrap_or_default())
                .collect(),
        );
    }
    write!(out, "{}", tbl.render())?;
    Ok(())
}

/// Print one value per input (inspect): JSON array by default, or a
/// template per value.
pub fn print_values(out: &mut dyn Write, fmt: &Format, values: &[serde_json::Value]) -> Result<()> {
    match fmt {
        Format::Template { text, .. } => {
            let t = template(text)?;
            for v in values {
                let s = t.render(&Context::from(to_value(v))).map_err(exec_error)?;
                writeln!(out, "{s}")?;
            }
            Ok(())
        }
        _ => {
            writeln!(out, "{}", serde_json::to_string_pretty(values)?)?;
            Ok(())
        }
    }
}

/// What an inspect lookup found: the object, or the message for a name
/// that names none (`No such image: x`).
pub type Found = std::result::Result<serde_json::Value, String>;

/// Inspect each of `names` with `find` and print what was found; the
/// names that name nothing are reported after it, and fail the command,
/// as `docker inspect` does (a missing name does not hide the others).
/// Any other error stops at once.
pub fn inspect_each(
    fmt: &Format,
    names: &[String],
    mut find: impl FnMut(&str) -> Result<Found>,
) -> Result<()> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for n in names {
        match find(n)? {
            Ok(v) => found.push(v),
            Err(m) => missing.push((n, m)),
        }
    }
    print_values(&mut std::io::stdout().lock(), fmt, &found)?;
    match missing.as_slice() {
        [] => Ok(()),
        [(_, m)] => Err(anyhow!("{m}")),
        many => {
            many.iter()
                .for_each(|(_, m)| eprintln!("Error response: {m}"));
            let names: Vec<String> = many.iter().map(|(n, _)| super::safe(n)).collect();
            Err(anyhow!("could not inspect {}", names.join(", ")))
        }
    }
}

/// `find`'s answer for a store lookup: a NotFound error is a missing name.
pub fn found<T>(
    r: strata_store::Result<T>,
    inspect: impl FnOnce(T) -> Result<serde_json::Value>,
) -> Result<Found> {
    match r {
        Ok(x) => Ok(Ok(inspect(x)?)),
        Err(e) if e.kind() == strata_store::ErrorKind::NotFound => Ok(Err(e.to_string())),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        let mut ctx = BTreeMap::new();
        ctx.insert("ID".into(), "abc".into());
        ctx.insert("Repository".into(), "alpine".into());
        ctx.insert("Tag".into(), "latest".into());
        Row {
            json: serde_json::json!({"ID": "sha256:abc", "Size": 5}),
            ctx,
        }
    }

    const COLS: Columns = &[
        ("Repository", "REPOSITORY"),
        ("Tag", "TAG"),
        ("ID", "IMAGE ID"),
    ];

    fn render(f: &str) -> String {
        let mut out = Vec::new();
        print_rows(&mut out, &parse(f).unwrap(), COLS, &[row()]).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_missing_field_is_named_with_the_fields_there() {
        let v = serde_json::json!({"Id": "sha256:abc", "Config": {"Env": ["A=1"]}});
        let err = |f: &str| {
            let mut out = Vec::new();
            print_values(&mut out, &parse(f).unwrap(), std::slice::from_ref(&v))
                .unwrap_err()
                .to_string()
        };
        let e = err("{{.Nope}}");
        assert!(e.contains("\"Nope\"") && e.contains("Config, Id"), "{e}");
        assert!(!e.contains("String("), "no debug dump: {e}");
        let e = err("{{.Config.Nope}}");
        assert!(e.contains("(fields: Env)"), "{e}");
    }

    #[test]
    fn formats_parse_or_are_refused() {
        assert_eq!(parse("json").unwrap(), Format::Json);
        assert!(parse("yaml").is_err());
        assert!(parse("{{.ID").is_ok(), "checked when rendered");
        assert!(matches!(
            parse("table {{.ID}}"),
            Ok(Format::Template { table: true, .. })
        ));
    }

    #[test]
    fn templates_render_like_docker() {
        assert_eq!(render("{{.ID}}"), "abc\n");
        assert_eq!(render("{{.Repository}}:{{.Tag}}"), "alpine:latest\n");
        let t = render("table {{.Repository}}\\t{{.Tag}}");
        assert!(
            t.starts_with("REPOSITORY") && t.contains("TAG") && t.contains("alpine"),
            "{t}"
        );
        let j = render("{{json .}}");
        let v: serde_json::Value = serde_json::from_str(j.trim()).unwrap();
        assert_eq!(v["Repository"], "alpine");
        assert_eq!(render("{{lower \"AB\"}}"), "ab\n");
    }
}
