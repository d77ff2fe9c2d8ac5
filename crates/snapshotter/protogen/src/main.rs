//! Generate the snapshotter's gRPC code from the vendored protos.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let protos = base.join("proto");
    let out = base.join("src/proto");
    std::fs::create_dir_all(&out)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(&out)
        .compile_protos(
            &[protos.join("containerd/services/snapshots/v1/snapshots.proto")],
            &[protos],
        )?;
    Ok(())
}
