#!/usr/bin/env bash
# Install what a job needs on a fresh machine (idempotent), and only that:
#   ci/setup.sh example   the main job on the bundled example: nothing beyond
#                         the Rust toolchain and util-linux
#   ci/setup.sh test      the tests: file system tools for scratch file
#                         systems, skopeo/podman (interop), and the real
#                         components the snapshotter and registry tests start
#                         (containerd 1.6, runc, docker-registry 2.8, Go and
#                         containerd's sources for its snapshotter suite,
#                         busybox-static for test images, xz-utils for
#                         compressed archives)
# Packaged services are never started: policy-rc.d refuses them while
# installing, and the tests start their own instances.
set -euo pipefail
job=${1:-test}
need=()
want() { dpkg -s "$1" >/dev/null 2>&1 || need+=("$1"); }
want util-linux
if [ "$job" = test ]; then
  for p in btrfs-progs xfsprogs e2fsprogs skopeo podman containerd runc \
           docker-registry golang-go golang-github-containerd-containerd-dev \
           busybox-static xz-utils; do
    want "$p"
  done
elif [ "$job" != example ]; then
  echo "usage: ci/setup.sh example|test" >&2
  exit 2
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "ci/setup.sh: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    policy=/usr/sbin/policy-rc.d
    saved=""
    if [ -e "$policy" ]; then saved=$(mktemp); cp -p "$policy" "$saved"; fi
    printf '#!/bin/sh\n# ci/setup.sh: do not start packaged services\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    restore() { if [ -n "$saved" ]; then mv "$saved" "$policy"; else rm -f "$policy"; fi; }
    trap restore EXIT
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
    # a service that was enabled anyway stays stopped and disabled
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
      for s in containerd docker-registry; do
        systemctl disable --now "$s" >/dev/null 2>&1 || true
      done
    fi
  else
    echo "ci/setup.sh: not root; cannot install ${need[*]} (privileged tests will say they skip)" >&2
  fi
fi
if [ "$job" = test ] && [ "$(id -u)" = 0 ]; then
  modprobe overlay 2>/dev/null || true
  modprobe btrfs 2>/dev/null || true
  modprobe loop 2>/dev/null || true
fi
