//! How a runtime uses Strata as a library: open a driver and the store on
//! a root, load an image, create a container layer on it, mount it, write
//! through the mount, see the change, and clean up.
//!
//!     cargo run --example runtime -- /tmp/strata-example-root
//!
//! (as root for overlay2 or btrfs; otherwise `auto` picks vfs where it
//! must).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("strata-runtime-example"));
    strata::core::fsx::mkdir_p(&root, 0o700)?;
    // the driver `auto` picks here (btrfs on btrfs, else overlay2 where the
    // kernel has it, else vfs), and the store over it
    let driver = strata::open("auto", &root, strata::DriverOptions::default())?;
    println!("driver: {}", driver.name());
    let store = strata::Store::open(&root, driver)?;
    // an image: the bundled example (an OCI layout)
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/hello-image");
    let opts = strata::store::import::ImportOpts {
        tag: Some("example/hello:latest".into()),
        platform: None,
    };
    let images = store.import(
        strata::store::import::Input::Path(&example),
        &opts,
        &mut |_| {},
    )?;
    println!("image: {}", images[0].id);
    // a container: a read-write layer on the image, mounted
    let c = store.create_container("example-container", "example/hello:latest")?;
    let layer = strata::Store::container_layer(&c)?;
    let rootfs = store.driver().mount(&layer)?;
    println!("container {} mounted at {}", c.name, rootfs.display());
    std::fs::write(rootfs.join("hello-from-the-runtime"), "hi\n")?;
    for change in store
        .driver()
        .changes(&layer, strata::core::DiffBase::Parent)?
    {
        println!("  {change}");
    }
    store.driver().unmount(&layer)?;
    store.remove_container("example-container", false)?;
    println!(
        "removed; `strata --root {} images` still lists the image",
        root.display()
    );
    Ok(())
}
