//! `strata-snapshotter --root DIR --driver NAME --address SOCK`: serve
//! containerd's Snapshots service until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use strata_snapshotter::server::{Socket, serve};
use tracing_subscriber::EnvFilter;

/// containerd's proxy snapshotter over Strata's drivers.
#[derive(Debug, Parser)]
#[command(name = "strata-snapshotter", version)]
struct Args {
    /// Root directory (shared with the `strata` command line)
    #[arg(long, value_name = "DIR", env = "STRATA_ROOT")]
    root: Option<PathBuf>,
    /// Storage driver: overlay2, btrfs, vfs or auto
    #[arg(long, default_value = "auto", value_name = "NAME")]
    driver: String,
    /// The unix socket to serve on (containerd's proxy_plugins address)
    #[arg(
        long,
        value_name = "SOCK",
        default_value = "/run/strata/snapshotter.sock"
    )]
    address: PathBuf,
    /// Never fetch layers from registries for containerd (containerd then
    /// downloads and unpacks every layer itself)
    #[arg(long)]
    no_fetch: bool,
    /// Allow plain HTTP for REGISTRY when fetching (repeatable; loopback
    /// registries always may)
    #[arg(long = "insecure-registry", value_name = "REGISTRY")]
    insecure: Vec<String>,
    /// Driver option KEY=VALUE (repeatable)
    #[arg(long = "storage-opt", value_name = "KEY=VALUE")]
    storage_opt: Vec<String>,
    /// More log output: -v what each call does, -vv details; RUST_LOG overrides
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let level = ["warn,strata_snapshotter=info", "info", "debug"][usize::from(args.verbose.min(2))];
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata-snapshotter: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> strata_snapshotter::Result<()> {
    let root = args.root.unwrap_or_else(strata::default_root);
    let opts = strata_core::DriverOptions::parse(&args.storage_opt)?;
    let driver = strata::open(&args.driver, &root, opts)?;
    tracing::info!(driver = driver.name(), root = %root.display(), "opened");
    let store = Arc::new(strata_store::Store::open(&root, driver)?);
    let socket = Socket::bind(&args.address)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata-snapshotter")
        .build()
        .map_err(|err| strata_snapshotter::Error::Io {
            op: "start the runtime",
            path: args.address.clone(),
            err,
        })?;
    let fetcher = (!args.no_fetch).then(|| {
        strata_snapshotter::fetch::Fetcher::new(strata_registry::Client::new(
            strata_registry::ClientOpts {
                insecure: args.insecure.clone(),
                auth_files: None,
            },
        ))
    });
    rt.block_on(serve(store, fetcher, socket))
}
