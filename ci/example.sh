#!/usr/bin/env bash
# The main job on the bundled example image (examples/hello-image, built by
# `cargo run --example make_example_image`): import it, inspect it, run a
# container layer on it, change it, diff, commit, and show history and disk
# usage, on the driver `auto` picks for this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
./ci/setup.sh example
cargo build --release --locked -p strata-cli --bins -q
S=$PWD/target/release/strata
work=$(mktemp -d /var/tmp/strata-example.XXXXXX)
export STRATA_ROOT=$work/root
cleanup() {
  set +x
  "$S" driver cleanup 2>/dev/null || true
  "$S" prune >/dev/null 2>&1 || true
  "$S" container rm -f web >/dev/null 2>&1 || true
  "$S" image rm -f strata/hello:v2 strata/hello >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n\033[1m$ strata %s\033[0m\n' "$*"; "$S" "$@"; }

step image load -i examples/hello-image
step image load -i examples/hello-image         # again: every layer "Already exists"
step image ls --digests
step image inspect strata/hello
step image history strata/hello
step driver status
step container create web strata/hello
view=$("$S" container mount web)
echo "\$ (in the container) change /etc/hostname, delete /etc/passwd, add /var/log/app.log"
echo 'strata-demo' > "$view/etc/hostname"
rm "$view/etc/passwd"
mkdir -p "$view/var/log" && echo started > "$view/var/log/app.log"
step container diff web
step container unmount web
step ps --size
step container commit web strata/hello:v2 -m "configured by the example"
step image history strata/hello:v2
step image ls
step df --details
step image save strata/hello:v2 -o "$work/hello-v2.oci.tar"
tar -tvf "$work/hello-v2.oci.tar"
step check
