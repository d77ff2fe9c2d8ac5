//! The `strata` command line.

pub mod container;
pub mod image;
pub mod layer;
pub mod system;
pub mod table;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Container image layer storage.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, propagate_version = true)]
pub struct Cli {
    /// Root directory of the store [env: STRATA_ROOT; default /var/lib/strata,
    /// or $XDG_DATA_HOME/strata when not root]
    #[arg(long, global = true, env = "STRATA_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Storage driver: overlay2, btrfs, vfs or auto
    #[arg(
        long,
        global = true,
        env = "STRATA_DRIVER",
        default_value = "auto",
        value_name = "NAME"
    )]
    pub driver: String,

    /// Driver option key=value (repeatable)
    #[arg(long = "storage-opt", global = true, value_name = "KEY=VALUE")]
    pub storage_opt: Vec<String>,

    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Low-level layer operations on the driver
    #[command(subcommand)]
    Layer(layer::LayerCmd),
    /// The storage driver
    #[command(subcommand)]
    Driver(DriverCmd),
    /// Images
    #[command(subcommand)]
    Image(image::ImageCmd),
    /// Containers (read-write layers on images)
    #[command(subcommand)]
    Container(container::ContainerCmd),
    /// List containers
    Ps(container::PsArgs),
    /// Show disk usage (like docker system df)
    Df {
        /// Per image and container details
        #[arg(short, long)]
        verbose: bool,
        /// table or json
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Remove layers no image or container uses
    Prune {
        /// table or json
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Verify store metadata against the driver and the mounts
    Check {
        /// Fix what can be fixed
        #[arg(long)]
        repair: bool,
        /// table or json
        #[arg(long, default_value = "table")]
        format: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DriverCmd {
    /// Show the driver's status
    Status {
        /// Output format: table or json
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Unmount everything the driver mounted under the root
    Cleanup,
}

/// Set up logging: quiet by default (warnings), `-v` for more, RUST_LOG wins.
pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

impl Cli {
    pub fn root(&self) -> PathBuf {
        self.root.clone().unwrap_or_else(strata::default_root)
    }

    pub fn open_driver(&self) -> anyhow::Result<Box<dyn strata_core::Driver>> {
        let opts = strata_core::DriverOptions::parse(&self.storage_opt)?;
        Ok(strata::open(&self.driver, &self.root(), opts)?)
    }
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Layer(c) => layer::run(&cli, c),
        Command::Image(c) => image::run(&cli, c),
        Command::Container(c) => container::run(&cli, c),
        Command::Ps(a) => container::ps(&cli, a),
        Command::Df { verbose, format } => system::df(&cli, *verbose, format),
        Command::Prune { format } => system::prune(&cli, format),
        Command::Check { repair, format } => {
            if system::check(&cli, *repair, format)? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        Command::Driver(DriverCmd::Cleanup) => Ok(cli.open_driver()?.cleanup()?),
        Command::Driver(DriverCmd::Status { format }) => {
            let d = cli.open_driver()?;
            let s = d.status();
            if format == "json" {
                let m: serde_json::Map<String, serde_json::Value> = s
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                let w = s.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
                for (k, v) in s {
                    println!("{k:<w$}  {v}");
                }
            }
            Ok(())
        }
    }
}
