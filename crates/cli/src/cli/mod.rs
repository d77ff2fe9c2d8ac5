//! The `strata` command line: Docker's commands and names over the store,
//! and the low-level layer contract over the driver.
//!
//! Rooms: `image` and `container` (the Docker-like commands), `layer` and
//! `driver` (low level), `system` (df, prune, check), `format` (`--format`
//! and templates), `output` (`-o FILE`), `filter` (`--filter`),
//! `progress` (pull-like output), `table`.
//!
//! Exit status: 0 on success, 1 when the operation failed (the message
//! names the image, container, layer, path or reference), 2 on a usage
//! error. Arguments are checked before the root is touched.

// Argument docs here are clap's help text, written for users
// (`NAME[:TAG]`), not rustdoc links.
#![allow(rustdoc::broken_intra_doc_links)]

pub mod container;
pub mod filter;
pub mod format;
pub mod gofmt;
pub mod image;
pub mod info;
pub mod inspect;
pub mod layer;
pub mod output;
pub mod progress;
pub mod registry;
pub mod system;
pub mod table;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};

/// Container image layer storage, with the commands Docker users know.
#[derive(Debug, Parser)]
#[command(name = "strata", version, propagate_version = true)]
pub struct Cli {
    /// Root directory of the store (default /var/lib/strata, or
    /// $XDG_DATA_HOME/strata when not root)
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

    /// Driver option KEY=VALUE (repeatable)
    #[arg(long = "storage-opt", global = true, value_name = "KEY=VALUE")]
    pub storage_opt: Vec<String>,

    /// More log output: -v what each step does, -vv details; RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// Every command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage images
    #[command(subcommand)]
    Image(image::ImageCmd),
    /// Manage containers (read-write layers on images)
    #[command(subcommand)]
    Container(container::ContainerCmd),
    /// Low-level layer operations on the driver
    #[command(subcommand)]
    Layer(layer::LayerCmd),
    /// The storage driver
    #[command(subcommand)]
    Driver(DriverCmd),
    /// Disk usage, pruning and consistency
    #[command(subcommand)]
    System(system::SystemCmd),
    /// List images (image ls)
    Images(image::LsArgs),
    /// Remove images (image rm)
    Rmi(image::RmArgs),
    /// Give an image another name (image tag)
    Tag(image::TagArgs),
    /// Show an image's layers and how they were made (image history)
    History(image::HistoryArgs),
    /// Load images from an archive or standard input (image load)
    Load(image::LoadArgs),
    /// Pull an image from a registry (image pull)
    Pull(registry::PullArgs),
    /// Push an image to a registry (image push)
    Push(registry::PushArgs),
    /// Log in to a registry
    Login(registry::LoginArgs),
    /// Log out from a registry
    Logout(registry::LogoutArgs),
    /// Save an image to an archive or standard output (image save)
    Save(image::SaveArgs),
    /// Import a root file system tarball as a one-layer image (image import)
    Import(image::ImportArgs),
    /// Show containers' or images' details as JSON (or through a template)
    Inspect(inspect::InspectArgs),
    /// Create a container on an image; prints its ID (container create)
    Create(container::CreateArgs),
    /// Remove containers (container rm)
    Rm(container::RmArgs),
    /// Make a new image from a container's changes (container commit)
    Commit(container::CommitArgs),
    /// List a container's changed files (container diff)
    Diff(container::DiffArgs),
    /// Write a container's root file system as a tar (container export)
    Export(container::ExportArgs),
    /// List containers (container ls)
    Ps(container::PsArgs),
    /// Show disk usage (system df)
    Df(system::DfArgs),
    /// Remove layers no image or container uses
    Prune(system::LayerPruneArgs),
    /// Verify the store against the driver and the mounts (system check)
    Check(system::CheckArgs),
    /// Show the store's counts and its driver's status (system info)
    Info(info::InfoArgs),
    /// Show the version of this build
    Version,
    /// Print a shell completion script: bash, zsh or fish
    Completion {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `strata manpage > strata.1`
    Manpage,
}

/// `strata driver ...`
#[derive(Debug, Subcommand)]
pub enum DriverCmd {
    /// Show the driver's status
    Status {
        /// Output: table or json
        #[arg(long, value_enum, default_value_t = TableOrJson::Table)]
        format: TableOrJson,
    },
    /// Unmount everything the driver mounted under the root
    Cleanup,
}

/// `--format` of commands that print key/value pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TableOrJson {
    Table,
    Json,
}

/// A usage error found after parsing (exit status 2).
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Set up logging: warnings by default, `-v` for each step, `-vv` for
/// details; RUST_LOG wins. Colour only on a terminal.
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
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

impl Cli {
    /// The root: `--root`, `$STRATA_ROOT`, or the default.
    pub fn root(&self) -> PathBuf {
        self.root.clone().unwrap_or_else(strata::default_root)
    }

    /// Open the driver on the root.
    pub fn open_driver(&self) -> anyhow::Result<Box<dyn strata_core::Driver>> {
        let opts = strata_core::DriverOptions::parse(&self.storage_opt)?;
        Ok(strata::open(&self.driver, &self.root(), opts)?)
    }

    /// Open the store on the root.
    pub fn open_store(&self) -> anyhow::Result<strata_store::Store> {
        let d = self.open_driver()?;
        Ok(strata_store::Store::open(&self.root(), d)?)
    }
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Image(c) => image::run(&cli, c),
        Command::Container(c) => container::run(&cli, c),
        Command::Layer(c) => layer::run(&cli, c),
        Command::System(c) => system::run(&cli, c),
        Command::Images(a) => image::ls(&cli, a),
        Command::Rmi(a) => image::rm(&cli, a),
        Command::Tag(a) => image::tag(&cli, &a.source, &a.target),
        Command::History(a) => image::history(&cli, a),
        Command::Load(a) => image::load(&cli, a),
        Command::Pull(a) => registry::pull(&cli, a),
        Command::Push(a) => registry::push(&cli, a),
        Command::Login(a) => registry::login(a),
        Command::Logout(a) => registry::logout(a),
        Command::Save(a) => image::save(&cli, a),
        Command::Import(a) => image::import_rootfs(&cli, a),
        Command::Inspect(a) => inspect::inspect(&cli, a),
        Command::Create(a) => container::create(&cli, a),
        Command::Rm(a) => container::rm(&cli, a),
        Command::Commit(a) => container::commit(&cli, a),
        Command::Diff(a) => container::diff(&cli, a),
        Command::Export(a) => container::export(&cli, a),
        Command::Ps(a) => container::ps(&cli, a),
        Command::Df(a) => system::df(&cli, a),
        Command::Prune(a) => system::prune_layers(&cli, a),
        Command::Check(a) => system::check(&cli, a),
        Command::Info(a) => info::info(&cli, a),
        Command::Version => {
            info::version();
            Ok(())
        }
        Command::Completion { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "strata",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Manpage => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(())
        }
        Command::Driver(DriverCmd::Cleanup) => Ok(cli.open_driver()?.cleanup()?),
        Command::Driver(DriverCmd::Status { format }) => driver_status(&cli, *format),
    }
}

fn driver_status(cli: &Cli, format: TableOrJson) -> anyhow::Result<()> {
    let s = cli.open_driver()?.status();
    if format == TableOrJson::Json {
        let m: serde_json::Map<String, serde_json::Value> = s
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        println!("{}", serde_json::to_string_pretty(&m)?);
        return Ok(());
    }
    let w = s.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in s {
        println!("{k:<w$}  {v}");
    }
    Ok(())
}

/// A usage error (exit 2).
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

/// Print a name from an image (a tag, a command line of its history) for a
/// terminal: control characters are escaped, never sent raw.
pub fn safe(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() && c != '\t' {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// `rm` and `rmi`: remove each of `names` in turn with `remove`, printing
/// the lines it returns; a failure is reported on stderr, and the status
/// is 1 if any failed. With `force`, a name that does not exist is
/// reported but is no failure, as with `docker rm -f` and `docker rmi -f`
/// (scripts clean up with them whether or not the thing is there).
pub fn remove_each(
    names: &[String],
    force: bool,
    mut remove: impl FnMut(&str) -> strata_store::Result<Vec<String>>,
) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for n in names {
        match remove(n) {
            Ok(lines) => lines.iter().for_each(|l| println!("{}", safe(l))),
            Err(e) => {
                eprintln!("Error response: {e}");
                if !(force && e.kind() == strata_store::ErrorKind::NotFound) {
                    failed.push(safe(n));
                }
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("could not remove {}", failed.join(", "))
    }
}
