//! `strata image ls` / `strata images`.

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use clap::Args;
use serde_json::json;
use strata_store::reference::{ago, format_time, split_tag};
use strata_store::{ImageRecord, Store};

use crate::cli::filter::Filters;
use crate::cli::format::{self, Columns, Format, Row};
use crate::cli::table::human_size;
use crate::cli::{Cli, safe};

/// `image ls`
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Show digests
    #[arg(long)]
    pub digests: bool,
    /// Show full image IDs
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Accepted for Docker compatibility (there are no intermediate images)
    #[arg(short, long)]
    pub all: bool,
    /// Filter: dangling=, reference=, label=, before=, since= (repeatable)
    #[arg(short = 'f', long = "filter", value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// table, json, or a Go template (e.g. '{{.Repository}}:{{.Tag}}')
    #[arg(long, value_parser = format::parse, default_value = "table")]
    pub format: Format,
    /// Only the images of this repository (and tag), as
    /// `--filter reference=`
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub reference: Option<String>,
}

const COLS: Columns = &[
    ("Repository", "REPOSITORY"),
    ("Tag", "TAG"),
    ("ID", "IMAGE ID"),
    ("CreatedSince", "CREATED"),
    ("Size", "SIZE"),
];
const COLS_DIGESTS: Columns = &[
    ("Repository", "REPOSITORY"),
    ("Tag", "TAG"),
    ("Digest", "DIGEST"),
    ("ID", "IMAGE ID"),
    ("CreatedSince", "CREATED"),
    ("Size", "SIZE"),
];

/// When an image was created, for `CREATED` (a malformed time is shown as
/// it was written, escaped).
pub fn created_cells(img: &ImageRecord, now: i64) -> (String, String) {
    match (img.created, &img.created_text) {
        (Some(t), _) => (ago(t, now), format_time(t)),
        (None, Some(text)) => ("N/A".into(), safe(text)),
        (None, None) => ("N/A".into(), String::new()),
    }
}

/// The labels of an image's config.
pub fn labels(s: &Store, img: &ImageRecord) -> HashMap<String, String> {
    s.image_config(img)
        .ok()
        .and_then(|c| c.config().clone())
        .and_then(|c| c.labels().clone())
        .unwrap_or_default()
}

/// Images that pass `f`.
pub fn filtered(s: &Store, f: &Filters) -> Result<Vec<ImageRecord>> {
    let images = s.images()?;
    let bound = |r: &Option<String>| -> Result<Option<i64>> {
        match r {
            Some(r) => Ok(Some(s.find_image(r)?.created.unwrap_or(0))),
            None => Ok(None),
        }
    };
    let (before, since) = (bound(&f.before)?, bound(&f.since)?);
    let mut out = Vec::new();
    for i in images {
        let created = i.created.unwrap_or(0);
        let keep = f.dangling.is_none_or(|d| d == i.repo_tags.is_empty())
            && f.reference_matches(&i.repo_tags)
            && before.is_none_or(|b| created < b)
            && since.is_none_or(|b| created > b)
            && (f.label.is_empty() || f.labels_match(&labels(s, &i)));
        if keep {
            out.push(i);
        }
    }
    Ok(out)
}

fn rows(imgs: &[ImageRecord], no_trunc: bool, containers: &HashMap<String, usize>) -> Vec<Row> {
    let now = strata_store::now();
    let mut rows = Vec::new();
    for img in imgs {
        let names: Vec<(String, String)> = if img.repo_tags.is_empty() {
            // pulled by digest: the repository, without a tag (as Docker)
            let mut v: Vec<(String, String)> = img
                .repo_digests
                .iter()
                .filter_map(|d| d.split_once('@'))
                .map(|(r, _)| (r.to_string(), "<none>".to_string()))
                .collect();
            v.dedup();
            if v.is_empty() {
                v.push(("<none>".into(), "<none>".into()));
            }
            v
        } else {
            img.repo_tags
                .iter()
                .map(|t| {
                    let (r, g) = split_tag(t);
                    (r.to_string(), g.to_string())
                })
                .collect()
        };
        let (since, at) = created_cells(img, now);
        let id = if no_trunc {
            img.id.to_string()
        } else {
            img.id.short().to_string()
        };
        let n = containers.get(img.id.as_str()).copied().unwrap_or(0);
        for (repo, tag) in names {
            let digest = img
                .repo_digests
                .iter()
                .find_map(|d| d.strip_prefix(&format!("{repo}@")))
                .unwrap_or("<none>")
                .to_string();
            let mut ctx = BTreeMap::new();
            for (k, v) in [
                ("Repository", safe(&repo)),
                ("Tag", safe(&tag)),
                ("Digest", digest.clone()),
                ("ID", id.clone()),
                ("CreatedSince", since.clone()),
                ("CreatedAt", at.clone()),
                ("Size", human_size(img.size)),
                ("Containers", n.to_string()),
            ] {
                ctx.insert(k.to_string(), v);
            }
            let json = json!({
                "Repository": repo, "Tag": tag, "Digest": digest, "ID": img.id.to_string(),
                "CreatedAt": img.created.map(format_time), "Size": img.size, "Containers": n,
            });
            rows.push(Row { json, ctx });
        }
    }
    rows
}

/// `strata image ls`.
pub fn ls(cli: &Cli, a: &LsArgs) -> Result<()> {
    let mut filters = a.filter.clone();
    filters.extend(a.reference.iter().map(|r| format!("reference={r}")));
    let f = Filters::parse(
        &filters,
        &["dangling", "reference", "label", "before", "since"],
    )?;
    let s = cli.open_store()?;
    let mut imgs = filtered(&s, &f)?;
    for i in &mut imgs {
        i.repo_tags.retain(|t| f.names(t));
        i.repo_digests.retain(|d| f.names(d));
    }
    let mut out = std::io::stdout().lock();
    if a.quiet {
        let mut seen = std::collections::HashSet::new();
        for i in imgs.iter().filter(|i| seen.insert(i.id.clone())) {
            let id = if a.no_trunc {
                i.id.to_string()
            } else {
                i.id.short().to_string()
            };
            std::io::Write::write_all(&mut out, format!("{id}\n").as_bytes())?;
        }
        return Ok(());
    }
    let containers = s.containers_per_image()?;
    let cols = if a.digests { COLS_DIGESTS } else { COLS };
    format::print_rows(
        &mut out,
        &a.format,
        cols,
        &rows(&imgs, a.no_trunc, &containers),
    )
}
