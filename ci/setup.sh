#!/usr/bin/env bash
# Install what the tests and the example need on a fresh machine (idempotent).
set -euo pipefail
need=()
command -v mkfs.btrfs >/dev/null 2>&1 || need+=(btrfs-progs)
command -v mkfs.xfs   >/dev/null 2>&1 || need+=(xfsprogs)
command -v mkfs.ext4  >/dev/null 2>&1 || need+=(e2fsprogs)
command -v findmnt    >/dev/null 2>&1 || need+=(util-linux)
# interoperability tests: images made by skopeo and podman, ours read by them
command -v skopeo     >/dev/null 2>&1 || need+=(skopeo)
command -v podman     >/dev/null 2>&1 || need+=(podman)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "ci/setup.sh: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "ci/setup.sh: not root; cannot install ${need[*]} (btrfs/xfs tests will be skipped)" >&2
  fi
fi
modprobe overlay 2>/dev/null || true
modprobe btrfs 2>/dev/null || true
modprobe loop 2>/dev/null || true
