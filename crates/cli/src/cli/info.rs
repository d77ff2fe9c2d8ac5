//! `strata info` and `strata version`, as `docker info` and `docker
//! version`: what a bug report or a script asks first.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::{Cli, TableOrJson};

/// `info` / `system info`
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Output: table or json
    #[arg(long, value_enum, default_value_t = TableOrJson::Table)]
    pub format: TableOrJson,
}

/// The store's counts, its driver and the driver's status.
pub fn info(cli: &Cli, a: &InfoArgs) -> Result<()> {
    let s = cli.open_store()?;
    let containers = s.containers()?.len();
    let images = s.images()?.len();
    let layers = s.layers()?.len();
    let driver = s.driver().name();
    let status = s.driver().status();
    let root = s.root().display().to_string();
    if a.format == TableOrJson::Json {
        let st: serde_json::Map<String, serde_json::Value> =
            status.into_iter().map(|(k, v)| (k, json!(v))).collect();
        let v = json!({
            "Containers": containers, "Images": images, "ImageLayers": layers,
            "Driver": driver, "DriverStatus": st, "StrataRootDir": root,
            "SchemaVersion": strata_store::SCHEMA_VERSION,
            "ServerVersion": env!("CARGO_PKG_VERSION"),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("Containers: {containers}");
    println!("Images: {images}");
    println!("Image Layers: {layers}");
    println!("Storage Driver: {driver}");
    for (k, v) in status {
        if k != "Driver" && k != "Root" {
            println!(" {k}: {v}");
        }
    }
    println!("Strata Root Dir: {root}");
    println!("Store Schema: {}", strata_store::SCHEMA_VERSION);
    println!("Version: {}", env!("CARGO_PKG_VERSION"));
    Ok(())
}

/// The version of this build (no store is opened).
pub fn version() {
    println!("Version:      {}", env!("CARGO_PKG_VERSION"));
    println!("Store schema: {}", strata_store::SCHEMA_VERSION);
    println!("Drivers:      overlay2, btrfs, vfs");
    println!(
        "OS/Arch:      {}/{}",
        std::env::consts::OS,
        std::env::consts::ARCH
    );
}
