//! `strata image ...`: images as Docker users know them.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::json;
use strata_store::import::Event;
use strata_store::reference::{self, ago, format_time, parse_time};
use strata_store::{Store, export::Format};

use super::Cli;
use super::layer::human_size;
use super::table::Table;

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Import a docker save archive, an OCI layout directory or an OCI archive
    Import {
        path: PathBuf,
        /// Also tag the image NAME[:TAG]
        #[arg(long)]
        tag: Option<String>,
        /// Only print the image ID
        #[arg(short, long)]
        quiet: bool,
    },
    /// List images
    #[command(alias = "list")]
    Ls {
        /// Show digests
        #[arg(long)]
        digests: bool,
        /// Show full image IDs
        #[arg(long)]
        no_trunc: bool,
        /// Only show image IDs
        #[arg(short, long)]
        quiet: bool,
        /// table or json
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Show an image's details as JSON
    Inspect { refs: Vec<String> },
    /// Show an image's history
    History {
        r#ref: String,
        #[arg(long)]
        no_trunc: bool,
        /// Print sizes in bytes
        #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set)]
        human: bool,
        /// table or json
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Give an image another name
    Tag { source: String, target: String },
    /// Remove images (untag; delete when no tag is left)
    #[command(alias = "remove")]
    Rm {
        refs: Vec<String>,
        /// Remove even if the image has several names
        #[arg(short, long)]
        force: bool,
    },
    /// Write an image to an archive
    Export {
        r#ref: String,
        #[arg(short, long)]
        output: PathBuf,
        /// oci or docker
        #[arg(long, default_value = "oci")]
        format: String,
    },
}

pub fn open_store(cli: &Cli) -> Result<Store> {
    let d = cli.open_driver()?;
    Ok(Store::open(&cli.root(), d)?)
}

fn created_of(cfg: &serde_json::Value) -> i64 {
    cfg.get("created")
        .and_then(|v| v.as_str())
        .and_then(parse_time)
        .unwrap_or(0)
}

/// Import progress, like `docker pull`: a bar per layer on a terminal,
/// plain lines otherwise.
struct Progress {
    tty: bool,
    multi: indicatif::MultiProgress,
    bars: HashMap<String, indicatif::ProgressBar>,
    quiet: bool,
}

impl Progress {
    fn event(&mut self, e: Event) {
        if self.quiet {
            if let Event::Done { id, .. } = e {
                println!("{id}");
            }
            return;
        }
        match e {
            Event::AlreadyExists { short } => self.line(&format!("{short}: Already exists")),
            Event::Layer { short, size } => {
                if self.tty {
                    let b = self.multi.add(indicatif::ProgressBar::new(size));
                    b.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{msg}: Loading [{wide_bar}] {bytes}/{total_bytes}",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                    );
                    b.set_message(short.clone());
                    self.bars.insert(short, b);
                } else {
                    println!("{short}: Loading layer {}", human_size(size));
                }
            }
            Event::Progress { short, done, .. } => {
                if let Some(b) = self.bars.get(&short) {
                    b.set_position(done);
                }
            }
            Event::Complete { short } => {
                if let Some(b) = self.bars.remove(&short) {
                    b.finish_and_clear();
                }
                self.line(&format!("{short}: Pull complete"));
            }
            Event::Done { digest, id, tags } => {
                self.line(&format!("Digest: {digest}"));
                if tags.is_empty() {
                    self.line(&format!("Loaded image ID: {id}"));
                }
                for t in tags {
                    self.line(&format!("Loaded image: {t}"));
                }
            }
        }
    }

    fn line(&self, s: &str) {
        if self.tty {
            let _ = self.multi.println(s);
        } else {
            println!("{s}");
        }
    }
}

pub fn run(cli: &Cli, cmd: &ImageCmd) -> Result<()> {
    let store = open_store(cli)?;
    let now = strata_store::now();
    match cmd {
        ImageCmd::Import { path, tag, quiet } => {
            let tty = std::io::stdout().is_terminal();
            let mut p = Progress {
                tty,
                multi: indicatif::MultiProgress::new(),
                bars: HashMap::new(),
                quiet: *quiet,
            };
            store
                .import(path, tag.as_deref(), &mut |e| p.event(e))
                .with_context(|| format!("importing {}", path.display()))?;
        }
        ImageCmd::Ls {
            digests,
            no_trunc,
            quiet,
            format,
        } => {
            let mut rows = Vec::new();
            for (img, cfg) in store.images_with_configs()? {
                let size = store.image_size(&img)?;
                let created = created_of(&cfg);
                let names: Vec<(String, String)> = if img.repo_tags.is_empty() {
                    vec![("<none>".into(), "<none>".into())]
                } else {
                    img.repo_tags
                        .iter()
                        .map(|t| {
                            let (r, g) = reference::split_tag(t);
                            (r.to_string(), g.to_string())
                        })
                        .collect()
                };
                for (repo, tag) in names {
                    let digest = img
                        .repo_digests
                        .iter()
                        .find(|d| d.starts_with(&format!("{repo}@")))
                        .and_then(|d| d.split('@').nth(1))
                        .unwrap_or("<none>")
                        .to_string();
                    rows.push((repo, tag, digest, img.id.clone(), created, size));
                }
            }
            rows.sort_by(|a, b| b.4.cmp(&a.4).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
            if *quiet {
                let mut seen = std::collections::HashSet::new();
                for r in rows {
                    if seen.insert(r.3.clone()) {
                        println!(
                            "{}",
                            if *no_trunc {
                                r.3.to_string()
                            } else {
                                r.3.short().to_string()
                            }
                        );
                    }
                }
            } else if format == "json" {
                let v: Vec<_> = rows
                    .iter()
                    .map(|r| json!({"Repository": r.0, "Tag": r.1, "Digest": r.2, "ID": r.3.to_string(), "CreatedAt": format_time(r.4), "Size": r.5}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let mut t = if *digests {
                    Table::new(&["REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE"])
                } else {
                    Table::new(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"])
                };
                for r in rows {
                    let id = if *no_trunc {
                        r.3.to_string()
                    } else {
                        r.3.short().to_string()
                    };
                    let mut cols = vec![r.0, r.1];
                    if *digests {
                        cols.push(r.2);
                    }
                    cols.extend([id, ago(r.4, now), human_size(r.5)]);
                    t.row(cols);
                }
                print!("{}", t.render());
            }
        }
        ImageCmd::Inspect { refs } => {
            if refs.is_empty() {
                bail!("image inspect needs at least one image");
            }
            let mut out = Vec::new();
            for r in refs {
                let img = store.find_image(r)?;
                let cfg = store.config(&img)?;
                let layers: Vec<String> = img
                    .layers
                    .iter()
                    .map(|c| {
                        store
                            .layer(c)
                            .ok()
                            .flatten()
                            .map(|l| l.diff_id.to_string())
                            .unwrap_or_default()
                    })
                    .collect();
                out.push(json!({
                    "Id": img.id.to_string(),
                    "RepoTags": img.repo_tags,
                    "RepoDigests": img.repo_digests,
                    "Parent": "",
                    "Comment": cfg.get("comment").cloned().unwrap_or(json!("")),
                    "Created": cfg.get("created").cloned().unwrap_or(json!("")),
                    "Author": cfg.get("author").cloned().unwrap_or(json!("")),
                    "Config": cfg.get("config").cloned().unwrap_or(json!({})),
                    "Architecture": cfg.get("architecture").cloned().unwrap_or(json!("")),
                    "Os": cfg.get("os").cloned().unwrap_or(json!("")),
                    "Size": store.image_size(&img)?,
                    "GraphDriver": {"Name": store.driver.name()},
                    "RootFS": {"Type": "layers", "Layers": layers},
                    "Metadata": {"LastTagTime": format_time(img.loaded)},
                }));
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        ImageCmd::History {
            r#ref,
            no_trunc,
            human,
            format,
        } => {
            let img = store.find_image(r#ref)?;
            let cfg = store.config(&img)?;
            let history: Vec<serde_json::Value> = cfg
                .get("history")
                .and_then(|h| h.as_array())
                .cloned()
                .unwrap_or_default();
            let mut layer_iter = img.layers.iter();
            let mut rows = Vec::new();
            for h in &history {
                let empty = h
                    .get("empty_layer")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false);
                let size = if empty {
                    0
                } else {
                    match layer_iter.next() {
                        Some(c) => store.layer(c)?.map(|l| l.size).unwrap_or(0),
                        None => 0,
                    }
                };
                let created = h
                    .get("created")
                    .and_then(|v| v.as_str())
                    .and_then(parse_time)
                    .unwrap_or(0);
                let by = h
                    .get("created_by")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string();
                let comment = h
                    .get("comment")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string();
                rows.push((created, by, size, comment));
            }
            // layers without history entries (some importers write none)
            for c in layer_iter {
                let size = store.layer(c)?.map(|l| l.size).unwrap_or(0);
                rows.push((created_of(&cfg), String::new(), size, String::new()));
            }
            rows.reverse();
            if format == "json" {
                let v: Vec<_> = rows
                    .iter()
                    .enumerate()
                    .map(|(i, r)| json!({"ID": if i == 0 { img.id.to_string() } else { "<missing>".into() }, "CreatedAt": format_time(r.0), "CreatedBy": r.1, "Size": r.2, "Comment": r.3}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let mut t = Table::new(&["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]);
                for (i, r) in rows.into_iter().enumerate() {
                    let id = if i == 0 {
                        if *no_trunc {
                            img.id.to_string()
                        } else {
                            img.id.short().to_string()
                        }
                    } else {
                        "<missing>".to_string()
                    };
                    let by = if *no_trunc || r.1.chars().count() <= 45 {
                        r.1
                    } else {
                        format!("{}…", r.1.chars().take(44).collect::<String>())
                    };
                    let size = if *human {
                        human_size(r.2)
                    } else {
                        r.2.to_string()
                    };
                    t.row(vec![id, ago(r.0, now), by, size, r.3]);
                }
                print!("{}", t.render());
            }
        }
        ImageCmd::Tag { source, target } => {
            let img = store.find_image(source)?;
            store.tag_image(&img.id, target)?;
        }
        ImageCmd::Rm { refs, force } => {
            if refs.is_empty() {
                bail!("image rm needs at least one image");
            }
            let mut failed = false;
            for r in refs {
                match store.remove_image(r, *force) {
                    Ok(lines) => {
                        for l in lines {
                            println!("{l}");
                        }
                    }
                    Err(e) => {
                        eprintln!("Error response: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                std::process::exit(1);
            }
        }
        ImageCmd::Export {
            r#ref,
            output,
            format,
        } => {
            let fmt = match format.as_str() {
                "oci" => Format::Oci,
                "docker" => Format::Docker,
                other => bail!("unknown export format {other:?} (oci or docker)"),
            };
            let dir = output
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let mut tmp = tempfile::Builder::new()
                .prefix(".strata-export.")
                .tempfile_in(dir)?;
            {
                let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
                store.export_image(r#ref, fmt, &mut w)?;
                w.flush()?;
            }
            tmp.as_file().sync_all()?;
            tmp.persist(output)
                .with_context(|| format!("writing {}", output.display()))?;
        }
    }
    Ok(())
}
