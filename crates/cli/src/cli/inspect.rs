//! `strata inspect`: containers and images by name, as `docker inspect`.

use anyhow::Result;
use clap::{Args, ValueEnum};
use strata_store::{ErrorKind, Store};

use super::format::{self, Format};
use super::{Cli, container, image};

/// What `--type` restricts `inspect` to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ObjectType {
    Container,
    Image,
}

/// `inspect`
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Containers or images: names, IDs or ID prefixes, NAME[:TAG]
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Only this kind of object
    #[arg(long = "type", value_enum)]
    pub kind: Option<ObjectType>,
    /// Include a container's sizes (SizeRw, SizeRootFs)
    #[arg(short, long)]
    pub size: bool,
    /// json, or a Go template (e.g. '{{.Id}}')
    #[arg(short, long, value_parser = format::parse, default_value = "json")]
    pub format: Format,
}

/// Each name is looked up as a container first, then as an image (as
/// Docker does); one that is neither is reported after the others are
/// printed, and fails the command.
pub fn inspect(cli: &Cli, a: &InspectArgs) -> Result<()> {
    let s = cli.open_store()?;
    format::inspect_each(&a.format, &a.names, |n| {
        Ok(one(&s, n, a)?.ok_or_else(|| format!("No such object: {n}")))
    })
}

fn one(s: &Store, name: &str, a: &InspectArgs) -> Result<Option<serde_json::Value>> {
    if a.kind != Some(ObjectType::Image) {
        match s.find_container(name) {
            Ok(c) => return Ok(Some(container::inspect_one(s, &c, a.size)?)),
            Err(e) if not_this(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if a.kind != Some(ObjectType::Container) {
        match s.find_image(name) {
            Ok(i) => return Ok(Some(image::inspect_one(s, &i)?)),
            Err(e) if not_this(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// The name does not name an object of this kind (missing, or not even
/// a valid name for it): try the next kind.
fn not_this(e: &strata_store::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::InvalidInput)
}
