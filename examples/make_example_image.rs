//! Builds the bundled example image (`examples/hello-image`, an OCI image
//! layout) from the files in `examples/hello/rootfs`, offline and
//! deterministically: `cargo run --example make_example_image -- DIR`.
//! Two gzip layers (the base files, then the app) and a config whose
//! history has an empty-layer step, like a small Dockerfile would make.

// Tests inspect views and scratch directories by path, as a user would.
#![allow(clippy::disallowed_methods)]

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use strata::core::archive::tar::{Kind, TarWriter, WriteHead};

const MTIME: i64 = 1_704_067_200; // 2024-01-01T00:00:00Z

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// A layer tar of `tops` (paths under `root`), with parent directories.
fn layer(root: &Path, tops: &[&str]) -> Result<Vec<u8>> {
    let mut w = TarWriter::new(Vec::new());
    let mut paths = Vec::new();
    for t in tops {
        let mut stack = vec![root.join(t)];
        while let Some(p) = stack.pop() {
            paths.push(p.clone());
            if p.is_dir() && !p.is_symlink() {
                for e in std::fs::read_dir(&p)? {
                    stack.push(e?.path());
                }
            }
        }
    }
    paths.sort();
    for p in paths {
        let rel = p.strip_prefix(root)?.to_string_lossy().into_owned();
        let md = std::fs::symlink_metadata(&p)?;
        let (kind, link, data) = if md.is_dir() {
            (Kind::Dir, String::new(), Vec::new())
        } else if md.file_type().is_symlink() {
            (
                Kind::Symlink,
                std::fs::read_link(&p)?.to_string_lossy().into_owned(),
                Vec::new(),
            )
        } else {
            (Kind::File, String::new(), std::fs::read(&p)?)
        };
        let mode = if md.is_dir() || md.mode() & 0o111 != 0 {
            0o755
        } else {
            0o644
        };
        let n = w.write_head(&WriteHead {
            path: rel.as_bytes(),
            kind,
            link: link.as_bytes(),
            mode: if kind == Kind::Symlink { 0o777 } else { mode },
            uid: 0,
            gid: 0,
            mtime: (MTIME, 0),
            size: data.len() as u64,
            dev_major: 0,
            dev_minor: 0,
            xattrs: &[],
            sparse: None,
        })?;
        if kind == Kind::File {
            w.write_data(&data)?;
            w.finish_data(n)?;
        }
    }
    Ok(w.finish()?.0)
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    // GzBuilder writes mtime 0 and no file name: the bytes are reproducible
    let mut e = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::best());
    e.write_all(data)?;
    Ok(e.finish()?)
}

fn main() -> Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "examples/hello-image".into());
    let out = Path::new(&out);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello/rootfs");
    let blobs = out.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let put = |data: &[u8]| -> Result<String> {
        let d = sha(data);
        std::fs::write(blobs.join(&d[7..]), data).with_context(|| format!("writing blob {d}"))?;
        Ok(d)
    };
    let mut diff_ids = Vec::new();
    let mut descs = Vec::new();
    for tops in [&["etc", "usr"][..], &["app"][..]] {
        let tar = layer(&root, tops)?;
        diff_ids.push(sha(&tar));
        let gz = gzip(&tar)?;
        let d = put(&gz)?;
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": d,
            "size": gz.len(),
        }));
    }
    let config = serde_json::json!({
        "created": "2024-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/app/hello.sh"],
            "WorkingDir": "/app",
            "Labels": {"org.opencontainers.image.title": "strata hello"}
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": "2024-01-01T00:00:00Z", "created_by": "ADD rootfs/etc rootfs/usr / # buildkit", "comment": "base files"},
            {"created": "2024-01-01T00:00:00Z", "created_by": "COPY app/ /app/ # buildkit"},
            {"created": "2024-01-01T00:00:00Z", "created_by": "CMD [\"/app/hello.sh\"]", "empty_layer": true}
        ]
    });
    let cbytes = serde_json::to_vec(&config)?;
    let cd = put(&cbytes)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cbytes.len()},
        "layers": descs,
    });
    let mbytes = serde_json::to_vec(&manifest)?;
    let md = put(&mbytes)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md,
            "size": mbytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "strata/hello:latest"}
        }]
    });
    std::fs::write(out.join("index.json"), serde_json::to_vec_pretty(&index)?)?;
    std::fs::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    println!("{md}");
    Ok(())
}
