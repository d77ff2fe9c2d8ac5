//! `driver-test`: certify a storage driver on this machine by running the
//! conformance suite over it (and, with `bench`, measure it).

// The CLI and the bench touch their own files (outputs, workloads, scratch
// roots) and mounted views the way a user would; layer contents are the
// driver's business.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Parser;
use strata_conformance::fixture::Backing;
use strata_conformance::{Harness, Outcome, ScratchHarness, cases, run_case};
use strata_core::DriverOptions;

/// Run the Strata conformance suite over a storage driver (or, with
/// `bench`, measure the drivers).
#[derive(Debug, Parser)]
#[command(name = "driver-test", version, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Driver to test: vfs, overlay2, btrfs
    #[arg(long, default_value = "vfs")]
    driver: String,
    /// Make each case's root inside DIR (default: a fresh scratch file
    /// system suited to the driver, removed afterwards)
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// What the scratch file system is when --root is not given:
    /// tempdir, tmpfs, ext4, xfs, btrfs (default: per driver)
    #[arg(long)]
    backing: Option<String>,
    /// Run only cases whose name contains TEXT
    #[arg(long, value_name = "TEXT")]
    filter: Option<String>,
    /// List the cases and exit
    #[arg(long)]
    list: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Driver option key=value (repeatable)
    #[arg(long = "opt", value_name = "KEY=VALUE")]
    opts: Vec<String>,
    /// Print the names of the drivers this build has and exit
    #[arg(long)]
    list_drivers: bool,
    /// More log output
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

/// `--format` of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

/// `--format` of the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchFormat {
    Table,
    Json,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Measure backends on a workload, beside the plain tools
    Bench(BenchArgs),
    /// (internal) one timed operation in a process of its own
    #[command(hide = true)]
    BenchOp {
        #[arg(long)]
        driver: String,
        #[arg(long)]
        root: PathBuf,
        #[arg(long = "opt")]
        opts: Vec<String>,
        #[arg(last = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// vfs, vfs@btrfs, vfs@btrfs-copy, overlay2, btrfs (comma-separated) or all
    #[arg(long, default_value = "all")]
    driver: String,
    /// A workload built by make-workload.sh (default: a small synthetic one)
    #[arg(long, value_name = "DIR")]
    workload: Option<PathBuf>,
    /// Files in the synthetic workload's many-files layer
    #[arg(long, default_value_t = 2000)]
    synthetic_files: usize,
    /// Run in DIR instead of a fresh loop-mounted file system per backend
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value_t = BenchFormat::Table)]
    format: BenchFormat,
    /// Runs of each operation (median, min and max are reported)
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Also write the JSON to FILE
    #[arg(long, value_name = "FILE")]
    json_out: Option<PathBuf>,
    /// Print each figure as it is measured
    #[arg(short, long)]
    verbose: bool,
}

fn bench(a: BenchArgs) -> Result<i32> {
    use strata_cli::bench::{Bench, ratios, table, targets, workload::Workload};
    let tmp;
    let workload = match &a.workload {
        Some(d) => Workload::load(d)?,
        None => {
            tmp = tempfile::Builder::new()
                .prefix("strata-bench-workload.")
                .tempdir_in("/var/tmp")?;
            Workload::synthetic(tmp.path(), a.synthetic_files)?
        }
    };
    let t = targets(&a.driver)?;
    let mut b = Bench::new(workload.clone(), a.runs, a.root.clone(), a.verbose)?;
    let started = std::time::Instant::now();
    b.run(&t)?;
    let ratios = ratios(&b.records);
    let json = serde_json::json!({
        "workload": workload.description,
        "layers": workload.main.iter().map(|l| serde_json::json!({"name": l.name, "bytes": l.bytes})).collect::<Vec<_>>(),
        "runs": a.runs,
        "kernel": rustix::system::uname().release().to_string_lossy(),
        "seconds": started.elapsed().as_secs_f64(),
        "records": b.records,
        "ratios": ratios.iter().map(|(t, what, r)| serde_json::json!({"target": t, "ratio": what, "value": r})).collect::<Vec<_>>(),
    });
    if let Some(p) = &a.json_out {
        std::fs::write(p, serde_json::to_string_pretty(&json)?)?;
    }
    if a.format == BenchFormat::Json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!("workload: {} ({} runs each)", workload.description, a.runs);
        print!("{}", table(&b.records));
        if !ratios.is_empty() {
            println!();
            for (t, what, r) in ratios {
                println!("{t:<15} {what:<45} {r:.2}x");
            }
        }
    }
    Ok(0)
}

/// The scratch file system the driver asks for.
fn default_backing(fs: Option<&str>) -> Backing {
    match fs {
        Some("tmpfs") => Backing::Tmpfs,
        Some(fstype) => Backing::Loop {
            fstype: fstype.into(),
            size_mb: 16384,
        },
        None => Backing::TempDir,
    }
}

fn main() {
    let args = Args::parse();
    strata_cli::cli::init_logging(args.verbose);
    match run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("driver-test: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(args: Args) -> Result<i32> {
    match args.cmd {
        Some(Cmd::Bench(b)) => bench(b),
        Some(Cmd::BenchOp {
            driver,
            root,
            opts,
            args,
        }) => {
            strata_cli::bench::op::run(&driver, &root, &opts, &args)?;
            Ok(0)
        }
        None if args.list_drivers => {
            for n in strata::registry().names() {
                println!("{n}");
            }
            Ok(0)
        }
        None => certify(Args { cmd: None, ..args }),
    }
}

/// The counts of one run of the suite.
#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    skipped: usize,
    results: Vec<serde_json::Value>,
}

/// Run the conformance suite over `args.driver`.
fn certify(args: Args) -> Result<i32> {
    let registry = strata::registry();
    let factory = registry.factory(&args.driver)?;
    let opts = DriverOptions::parse(&args.opts)?;
    let backing = match (&args.root, &args.backing) {
        (Some(_), _) => Backing::TempDir,
        (None, Some(b)) => Backing::parse(b)?,
        (None, None) => default_backing(factory.scratch_fs()),
    };
    let name = args.driver.clone();
    let h = Arc::new(ScratchHarness::new(
        &args.driver,
        backing.clone(),
        args.root.clone(),
        move |root| strata::registry().factory(&name)?.open(root, opts.clone()),
    ));
    strata_conformance::child_main_if_requested(h.as_ref());

    let mut selected: Vec<_> = cases();
    if let Some(f) = &args.filter {
        selected.retain(|c| c.name.contains(f.as_str()));
    }
    if args.list {
        for c in &selected {
            println!("{:<45} {}", c.name, c.about);
        }
        return Ok(0);
    }
    if factory.needs_root() && !strata_core::fsx::is_root() {
        return skip_unprivileged(&args.driver);
    }
    let scratch = h.prepare()?;
    factory.supported(&scratch)?;
    let json = args.format == Format::Json;
    if !json {
        let on = match &args.root {
            Some(r) => r.display().to_string(),
            None => backing.describe(),
        };
        let n = selected.len();
        println!("driver-test: {n} cases over driver {} on {on}", args.driver);
    }
    let caps = {
        let r = h.new_root()?;
        let c = h.open(&r).map(|d| d.capabilities());
        strata_conformance::fixture::teardown_dir(&r)?;
        c?
    };
    let start = Instant::now();
    let tally = run_all(&h, &selected, &caps, json);
    report(&args.driver, &caps, &tally, start.elapsed(), json)?;
    drop(h);
    Ok(if tally.failed > 0 { 1 } else { 0 })
}

/// A privileged driver run by another user: skip, saying why (an error
/// under CI, which must run everything).
fn skip_unprivileged(driver: &str) -> Result<i32> {
    if strata_conformance::under_ci() {
        bail!("driver {driver} needs root (mounts), and CI=true forbids skipping it");
    }
    println!("driver-test: skipped: driver {driver} needs root (mounts); run as root");
    Ok(0)
}

fn run_all(
    h: &Arc<ScratchHarness>,
    selected: &[strata_conformance::Case],
    caps: &strata_core::Capabilities,
    json: bool,
) -> Tally {
    let mut t = Tally::default();
    for c in selected {
        let (outcome, took) = match c.unmet(caps, true) {
            Some(why) => (Outcome::Skipped(why), std::time::Duration::ZERO),
            None => run_case(h.clone(), c),
        };
        match &outcome {
            Outcome::Ok => t.passed += 1,
            Outcome::Failed(_) => t.failed += 1,
            Outcome::Skipped(_) => t.skipped += 1,
        }
        if !json {
            match &outcome {
                Outcome::Ok => println!("{} ... ok ({:.2}s)", c.name, took.as_secs_f64()),
                Outcome::Failed(r) => {
                    println!("{} ... FAILED: {}", c.name, r.replace('\n', "\n    "))
                }
                Outcome::Skipped(r) => println!("{} ... skipped: {r}", c.name),
            }
        }
        t.results.push(serde_json::json!({
            "name": c.name,
            "outcome": outcome,
            "seconds": took.as_secs_f64(),
        }));
    }
    t
}

fn report(
    driver: &str,
    caps: &strata_core::Capabilities,
    t: &Tally,
    took: std::time::Duration,
    json: bool,
) -> Result<()> {
    if json {
        let v = serde_json::json!({
            "driver": driver,
            "capabilities": caps,
            "cases": t.results,
            "passed": t.passed,
            "failed": t.failed,
            "skipped": t.skipped,
            "seconds": took.as_secs_f64(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if t.skipped > 0 {
            println!("{} skipped (see the reasons above)", t.skipped);
        }
        println!("{} passed, {} failed", t.passed, t.failed);
    }
    Ok(())
}
