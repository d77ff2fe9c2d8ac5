//! A layer's tar is re-created byte for byte from its tar-split and the
//! layer's files.

// Tests inspect views and scratch directories by path, as a user would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

use std::os::fd::AsFd;

use strata_conformance::layer::*;
use strata_core::{Driver, DriverOptions, LayerId};
use strata_store::tarsplit::{SplitWriter, assemble};

fn roundtrip(entries: &[E], extra_tail: usize) {
    let t = tempfile::tempdir().unwrap();
    let d = strata_vfs::open(t.path(), DriverOptions::default()).unwrap();
    let mut data = tar(entries);
    data.extend(std::iter::repeat_n(0u8, extra_tail));
    let mut split = SplitWriter::new(Vec::new()).unwrap();
    let id = LayerId::new("l").unwrap();
    d.apply_diff_split(&id, None, &mut &data[..], Some(&mut split))
        .unwrap();
    let skel = split.finish().unwrap();
    let view = d.mount(&id).unwrap();
    let fd = strata_core::fsx::open_dir_path(&view).unwrap();
    let mut out = Vec::new();
    let (n, digest) = assemble(&skel[..], fd.as_fd(), &view, &mut out).unwrap();
    d.unmount(&id).unwrap();
    assert_eq!(n as usize, data.len());
    if out != data {
        let at = out.iter().zip(&data).position(|(a, b)| a != b);
        panic!(
            "re-created tar differs at byte {at:?} (len {} vs {})",
            out.len(),
            data.len()
        );
    }
    assert_eq!(digest, sha256(&data).to_string());
}

#[test]
fn plain_layer_roundtrips() {
    roundtrip(
        &[
            dir("etc"),
            file("etc/a", "hello"),
            file("etc/b", ""),
            symlink("l", "etc/a"),
            hardlink("h", "etc/a"),
        ],
        0,
    );
}

#[test]
fn long_names_sparse_and_trailing_bytes_roundtrip() {
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(150));
    roundtrip(
        &[
            dir("d".repeat(120)),
            file(&long, "x".repeat(5000)),
            sparse(
                "s",
                1 << 20,
                vec![(4096, b"abc".to_vec()), (8192, vec![7u8; 10000])],
            ),
            file("x", vec![1u8; 513]).xattr("user.k", "v"),
        ],
        4096,
    );
}
