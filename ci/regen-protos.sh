#!/bin/sh
# Regenerate the snapshotter's gRPC code (crates/snapshotter/src/proto/)
# from the vendored containerd protos (crates/snapshotter/proto/). Needs
# protoc (Debian: protobuf-compiler). Normal builds use the checked-in code
# and need neither protoc nor the generator.
set -eu
cd "$(dirname "$0")/../crates/snapshotter/protogen"
command -v protoc >/dev/null || { apt-get install -y protobuf-compiler; }
cargo run --release --locked
cd .. && rustfmt --edition 2024 src/proto/*.rs
git diff --stat -- src/proto || true
