#!/usr/bin/env bash
# The main job on the bundled example: build a small layer stack with the
# `strata` CLI, run a container layer on it, change it, and show the diff.
set -euo pipefail
cd "$(dirname "$0")/.."
./ci/setup.sh
cargo build --release --locked --bins -q
S=$PWD/target/release/strata
work=$(mktemp -d /tmp/strata-example.XXXXXX)
export STRATA_ROOT=$work/root
cleanup() {
  set +x
  "$S" driver cleanup 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
set -x
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=2024-01-01 -C examples/hello/rootfs -cf "$work/base.tar" .
"$S" layer apply base "$work/base.tar"
"$S" layer create app --parent base --rw
view=$("$S" layer mount app)
ls -l "$view" "$view/app"
echo 'strata-demo' > "$view/etc/hostname"
rm "$view/etc/passwd"
mkdir -p "$view/var/log" && echo started > "$view/var/log/app.log"
"$S" layer changes app
"$S" layer diff app -o "$work/app.tar"
tar -tvf "$work/app.tar"
"$S" layer unmount app
"$S" layer apply committed --parent base "$work/app.tar"
"$S" layer changes committed
"$S" layer ls
"$S" driver status
