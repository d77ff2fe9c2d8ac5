//! `strata image ...`: images as Docker users know them.
//!
//! Rooms: `list` (ls and its filters), `inspect` (inspect, history),
//! `manage` (load, save, import, tag, rm, prune, mount, diff).

mod inspect;
mod list;
mod manage;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

pub use inspect::graph_driver;
pub use inspect::history;
pub(crate) use inspect::inspect_one;
pub use list::{LsArgs, labels, ls};
pub use manage::confirm as manage_confirm;
pub use manage::tag;
pub use manage::{
    ImportArgs, LoadArgs, RmArgs, SaveArgs, import_rootfs, load, prune_images, rm, save,
};

use super::Cli;
use super::format::{self, Format};

/// `strata image ...`
#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Load images from a docker-archive, an OCI archive or an OCI layout
    /// (a file or directory given with -i, else standard input)
    Load(LoadArgs),
    /// Save an image to an archive (-o FILE, else standard output)
    #[command(alias = "export")]
    Save(SaveArgs),
    /// Pull an image from a registry
    Pull(super::registry::PullArgs),
    /// Push an image to a registry
    Push(super::registry::PushArgs),
    /// Make a one-layer image from a root file system tarball (docker import)
    Import(ImportArgs),
    /// List images
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show images' details as JSON (or through a template)
    Inspect(InspectArgs),
    /// Show an image's history
    History(HistoryArgs),
    /// Give an image another name
    Tag(TagArgs),
    /// Remove images (untag; delete when no tag is left)
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove unused images: dangling ones, or with -a every image no container uses
    Prune(PruneArgs),
    /// Mount an image's root file system read-only and print its path
    Mount {
        /// The image
        image: String,
    },
    /// Drop one mount reference of an image
    Unmount {
        /// The image
        image: String,
    },
    /// List the paths that differ from image A to image B (A / C / D)
    Diff {
        /// The image compared with
        a: String,
        /// The image whose changes are listed
        b: String,
    },
}

/// `image inspect`
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Images: NAME[:TAG], ID or ID prefix
    #[arg(required = true)]
    pub refs: Vec<String>,
    /// json, or a Go template (e.g. '{{.Id}}')
    #[arg(short, long, value_parser = format::parse, default_value = "json")]
    pub format: Format,
}

/// `image tag` / `tag`
#[derive(Debug, Args)]
pub struct TagArgs {
    /// The image: NAME[:TAG], ID or ID prefix
    pub source: String,
    /// The new name: NAME[:TAG]
    pub target: String,
}

/// `image history` / `history`
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The image
    pub image: String,
    /// Do not shorten IDs and commands
    #[arg(long)]
    pub no_trunc: bool,
    /// Sizes for humans (false: bytes)
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set)]
    pub human: bool,
    /// Only print image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// table, json, or a Go template
    #[arg(long, value_parser = format::parse, default_value = "table")]
    pub format: Format,
}

/// `image prune`
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Every image no container uses, not only dangling ones
    #[arg(short, long)]
    pub all: bool,
    /// Do not ask
    #[arg(short, long)]
    pub force: bool,
    /// Only images matching (until, label)
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
}

/// Run `strata image ...`.
pub fn run(cli: &Cli, cmd: &ImageCmd) -> Result<()> {
    match cmd {
        ImageCmd::Load(a) => load(cli, a),
        ImageCmd::Pull(a) => super::registry::pull(cli, a),
        ImageCmd::Push(a) => super::registry::push(cli, a),
        ImageCmd::Save(a) => save(cli, a),
        ImageCmd::Import(a) => import_rootfs(cli, a),
        ImageCmd::Ls(a) => ls(cli, a),
        ImageCmd::Inspect(a) => inspect::inspect(cli, a),
        ImageCmd::History(a) => inspect::history(cli, a),
        ImageCmd::Tag(a) => manage::tag(cli, &a.source, &a.target),
        ImageCmd::Rm(a) => rm(cli, a),
        ImageCmd::Prune(a) => manage::prune(cli, a),
        ImageCmd::Mount { image } => manage::mount(cli, image),
        ImageCmd::Unmount { image } => manage::unmount(cli, image),
        ImageCmd::Diff { a, b } => manage::diff(cli, a, b),
    }
}

/// A path option that may be `-` for the standard streams.
pub type PathArg = Option<PathBuf>;
