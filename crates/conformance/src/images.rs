//! Small images for end-to-end tests, written as OCI layouts that skopeo
//! pushes: busybox-static as the base layer, and layers of entries.

// Tests read /bin/busybox and write layouts by path.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use std::path::Path;

use crate::layer::{self, E, dir, file, symlink};
use strata_core::Digest;

/// One layer: its tar, and whether it is stored gzipped.
#[derive(Debug)]
pub struct Layer {
    pub tar: Vec<u8>,
    pub gzip: bool,
}

/// The base layer: `/bin/busybox` from busybox-static, `sh` and a few
/// applets as symlinks, and `/etc/gone` (hidden again by a later layer).
pub fn busybox_layer() -> Layer {
    let bb = std::fs::read("/bin/busybox")
        .unwrap_or_else(|e| panic!("/bin/busybox (busybox-static): {e}"));
    let mut entries: Vec<E> = vec![
        dir("bin"),
        file("bin/busybox", bb).mode(0o755),
        dir("etc"),
        file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        file("etc/gone", "this file is whited out by the next layer\n"),
        dir("tmp").mode(0o1777),
    ];
    for applet in ["sh", "cat", "ls", "test", "echo", "sleep"] {
        entries.push(symlink(format!("bin/{applet}"), "busybox"));
    }
    Layer {
        tar: layer::tar(&entries),
        gzip: true,
    }
}

/// A layer of `entries`.
pub fn layer_of(entries: &[E], gzip: bool) -> Layer {
    Layer {
        tar: layer::tar(entries),
        gzip,
    }
}

fn put(blobs: &Path, data: &[u8]) -> Digest {
    let d = Digest::of(data);
    std::fs::write(blobs.join(d.hex()), data).unwrap();
    d
}

/// Write an OCI layout at `out` holding one image tagged `tag`; returns
/// the manifest digest.
pub fn write_layout(out: &Path, tag: &str, layers: &[Layer]) -> Digest {
    write_layout_for(out, tag, layers, "linux", "amd64")
}

/// [`write_layout`] for a platform.
pub fn write_layout_for(out: &Path, tag: &str, layers: &[Layer], os: &str, arch: &str) -> Digest {
    let blobs = out.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(out.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        diff_ids.push(Digest::of(&l.tar).to_string());
        let (blob, mt) = if l.gzip {
            (
                layer::gzip(&l.tar),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        } else {
            (l.tar.clone(), "application/vnd.oci.image.layer.v1.tar")
        };
        let d = put(&blobs, &blob);
        descs.push(
            serde_json::json!({"mediaType": mt, "digest": d.to_string(), "size": blob.len()}),
        );
    }
    let config = serde_json::json!({
        "architecture": arch,
        "os": os,
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": layers.iter().map(|_| serde_json::json!({"created_by": "strata test"})).collect::<Vec<_>>(),
    });
    let config = serde_json::to_vec(&config).unwrap();
    let cd = put(&blobs, &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let md = put(&blobs, &manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md.to_string(),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(out.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    md
}

/// Deterministic, incompressible bytes (a big layer that takes a while to
/// unpack).
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// Write an OCI layout whose `tag` is an index of one image per platform
/// (`os/arch`, layers); returns the index digest and each manifest's.
pub fn write_index_layout(
    out: &Path,
    tag: &str,
    images: &[(&str, &str, Vec<Layer>)],
) -> (Digest, Vec<Digest>) {
    let mut entries = Vec::new();
    let mut digests = Vec::new();
    for (i, (os, arch, layers)) in images.iter().enumerate() {
        let sub = out.join(format!(".part{i}"));
        let md = write_layout_for(&sub, tag, layers, os, arch);
        let blobs = out.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        for e in std::fs::read_dir(sub.join("blobs/sha256"))
            .unwrap()
            .flatten()
        {
            let _ = std::fs::rename(e.path(), blobs.join(e.file_name()));
        }
        let size = std::fs::metadata(blobs.join(md.hex())).unwrap().len();
        std::fs::remove_dir_all(&sub).unwrap();
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md.to_string(),
            "size": size,
            "platform": {"os": os, "architecture": arch},
        }));
        digests.push(md);
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }))
    .unwrap();
    let idx = put(&out.join("blobs/sha256"), &index);
    std::fs::write(out.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": idx.to_string(),
            "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(out.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    (idx, digests)
}
