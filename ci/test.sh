#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and conformance tests of every
# crate (overlay2 and btrfs for real when root), then driver-test per backend.
set -euo pipefail
cd "$(dirname "$0")/.."
./ci/setup.sh test
# strata mounts and loop devices that exist before this run: a killed earlier
# run's (the next Scratch sweeps those whose process is gone); only what this
# run adds counts as a leak below
strata_mounts() { { findmnt -rn -o TARGET,FSTYPE | awk '$1 ~ /strata/ {print}'; losetup -a | grep strata; } | sort || true; }
before=$(strata_mounts)
if [ -n "$before" ]; then echo "note: strata mounts present before this run:"; echo "$before"; fi
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo doc (warnings denied; strata-core has missing_docs denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --lib --no-deps --locked
echo "== cargo test"
cargo test --workspace --locked
echo "== driver-test"
cargo build --locked -p strata-cli --bin driver-test
for d in $(./target/debug/driver-test --list-drivers); do
  echo "-- driver-test --driver $d"
  ./target/debug/driver-test --driver "$d"
done
# the other rungs and backings: overlay2 on ext4, overlay2 through mount(2)
# with short links, vfs on btrfs (reflinks)
if [ "$(id -u)" = 0 ]; then
  echo "-- driver-test --driver overlay2 --backing ext4"
  ./target/debug/driver-test --driver overlay2 --backing ext4
  echo "-- driver-test --driver overlay2 --opt overlay2.mount_api=legacy"
  ./target/debug/driver-test --driver overlay2 --opt overlay2.mount_api=legacy
  echo "-- driver-test --driver vfs --backing btrfs"
  ./target/debug/driver-test --driver vfs --backing btrfs
fi
echo "== bench smoke (synthetic workload, no assertions on time)"
./target/debug/driver-test bench --driver all --runs 1 --synthetic-files 300 --format json > target/bench-smoke.json
python3 -c 'import json,sys; d=json.load(open("target/bench-smoke.json")); print(len(d["records"]), "figures from", sorted({r["target"] for r in d["records"]}))'
echo "== leftovers"
left=$(comm -13 <(echo "$before") <(strata_mounts) | sed '/^$/d')
if [ -n "$left" ]; then echo "mounts left behind:"; echo "$left"; exit 1; fi
echo "all tests passed"
