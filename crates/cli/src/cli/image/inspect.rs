//! `strata image inspect` and `strata image history`.

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::json;
use strata_store::reference::{ago, format_time, parse_time};
use strata_store::{ImageRecord, Store};

use super::{HistoryArgs, InspectArgs};
use crate::cli::format::{self, Columns, Row};
use crate::cli::table::human_size;
use crate::cli::{Cli, safe};

/// Metadata pairs every driver reports, left out of `GraphDriver.Data`.
const COMMON: [&str; 6] = [
    "Parent",
    "ReadWrite",
    "Depth",
    "Created",
    "MountCount",
    "Link",
];

/// `GraphDriver` of a driver layer, as Docker's inspect shows it.
pub fn graph_driver(s: &Store, cache_id: Option<&str>) -> serde_json::Value {
    let data: serde_json::Map<String, serde_json::Value> = cache_id
        .and_then(|c| strata_core::LayerId::new(c.to_string()).ok())
        .and_then(|id| s.driver().metadata(&id).ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, v)| !COMMON.contains(&k.as_str()) && v != "-")
        .map(|(k, v)| (k, json!(v)))
        .collect();
    json!({"Name": s.driver().name(), "Data": data})
}

/// Docker's `image inspect` object of one image.
pub(crate) fn inspect_one(s: &Store, img: &ImageRecord) -> Result<serde_json::Value> {
    let cfg = s.image_config(img)?;
    let raw: serde_json::Value = serde_json::from_slice(&s.blob(&img.id)?).unwrap_or_default();
    let layers: Vec<String> = cfg.rootfs().diff_ids().clone();
    let top = s.top_layer(img)?;
    let created = match (img.created, &img.created_text) {
        (Some(t), _) => json!(format_time(t)),
        (None, Some(text)) => json!(text),
        (None, None) => json!(""),
    };
    Ok(json!({
        "Id": img.id.to_string(),
        "RepoTags": img.repo_tags,
        "RepoDigests": img.repo_digests,
        "Parent": "",
        "Comment": raw.get("comment").cloned().unwrap_or(json!("")),
        "Created": created,
        "Author": cfg.author().clone().unwrap_or_default(),
        "Config": serde_json::to_value(cfg.config()).unwrap_or(json!({})),
        "Architecture": cfg.architecture().to_string(),
        "Os": cfg.os().to_string(),
        "Variant": cfg.variant().clone().unwrap_or_default(),
        "Size": img.size,
        "GraphDriver": graph_driver(s, top.as_ref().map(|l| l.cache_id.as_str())),
        "RootFS": {"Type": "layers", "Layers": layers},
        "Metadata": {"LastTagTime": format_time(img.loaded)},
    }))
}

/// `strata image inspect`.
pub fn inspect(cli: &Cli, a: &InspectArgs) -> Result<()> {
    let s = cli.open_store()?;
    format::inspect_each(&a.format, &a.refs, |r| {
        format::found(s.find_image(r), |i| inspect_one(&s, &i))
    })
}

const COLS: Columns = &[
    ("ID", "IMAGE"),
    ("CreatedSince", "CREATED"),
    ("CreatedBy", "CREATED BY"),
    ("Size", "SIZE"),
    ("Comment", "COMMENT"),
];

/// One history step: when, by what, its layer's size, its comment.
struct Step {
    created: Option<i64>,
    by: String,
    size: u64,
    comment: String,
}

/// The steps of an image, newest first; layers without a history entry
/// (some importers write none) get an empty one.
fn steps(s: &Store, img: &ImageRecord) -> Result<Vec<Step>> {
    let cfg = s.image_config(img)?;
    let mut layers = img.layers.iter();
    let mut v = Vec::new();
    for h in cfg.history().clone().unwrap_or_default() {
        let size = match (h.empty_layer().unwrap_or(false), layers.next()) {
            (false, Some(c)) => s.layer(c)?.map_or(0, |l| l.size),
            _ => 0,
        };
        v.push(Step {
            created: h.created().as_deref().and_then(parse_time),
            by: h.created_by().clone().unwrap_or_default(),
            size,
            comment: h.comment().clone().unwrap_or_default(),
        });
    }
    for c in layers {
        v.push(Step {
            created: img.created,
            by: String::new(),
            size: s.layer(c)?.map_or(0, |l| l.size),
            comment: String::new(),
        });
    }
    v.reverse();
    Ok(v)
}

/// `strata image history`.
pub fn history(cli: &Cli, a: &HistoryArgs) -> Result<()> {
    let s = cli.open_store()?;
    let img = s.find_image(&a.image)?;
    let now = strata_store::now();
    let mut rows = Vec::new();
    for (i, st) in steps(&s, &img)?.into_iter().enumerate() {
        let id = match (i, a.no_trunc) {
            (0, true) => img.id.to_string(),
            (0, false) => img.id.short().to_string(),
            _ => "<missing>".to_string(),
        };
        let by = safe(&st.by);
        let shown = if a.no_trunc || by.chars().count() <= 45 {
            by.clone()
        } else {
            format!("{}…", by.chars().take(44).collect::<String>())
        };
        let mut ctx = BTreeMap::new();
        ctx.insert("ID".into(), id.clone());
        ctx.insert(
            "CreatedSince".into(),
            st.created.map_or_else(|| "N/A".into(), |t| ago(t, now)),
        );
        ctx.insert(
            "CreatedAt".into(),
            st.created.map(format_time).unwrap_or_default(),
        );
        ctx.insert("CreatedBy".into(), shown);
        ctx.insert(
            "Size".into(),
            if a.human {
                human_size(st.size)
            } else {
                st.size.to_string()
            },
        );
        ctx.insert("Comment".into(), safe(&st.comment));
        let json = json!({
            "ID": if i == 0 { img.id.to_string() } else { id },
            "CreatedAt": st.created.map(format_time), "CreatedBy": st.by, "Size": st.size, "Comment": st.comment,
        });
        rows.push(Row { json, ctx });
    }
    let mut out = std::io::stdout().lock();
    if a.quiet {
        for r in &rows {
            std::io::Write::write_all(&mut out, format!("{}\n", r.ctx["ID"]).as_bytes())?;
        }
        return Ok(());
    }
    format::print_rows(&mut out, &a.format, COLS, &rows)
}
